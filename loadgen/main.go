// Command loadgen runs and measures swarmgate engines.
//
//	loadgen                       the default matrix against a `loadgen serve` child on loopback
//	loadgen run -target ADDR …    the same scenarios against any libp2p WebSocket server
//	loadgen serve -listen ADDR …  the swarmgate server (cmd/swarmgate), as the default run's child
//	loadgen idle -target ADDR …   hold N idle connections and measure the server per connection
//	loadgen demo                  an embedded engine and its own client in one process
//	loadgen report FILE.json      re-render a recorded report (Markdown, -html, -csv)
//	loadgen merge A.json B.json … combine the reports of generators that ran at once
package main

import (
	"fmt"
	"os"

	"github.com/swarmgate/swarmgate/internal/server"
)

func main() {
	args := os.Args[1:]
	cmd := ""
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "":
		err = matrix(args)
	case "demo":
		err = demo(args)
	case "run":
		err = runCmd(args)
	case "serve":
		// The same server as cmd/swarmgate, kept under loadgen for the
		// child server of the default run.
		os.Exit(server.Main("loadgen serve", args, os.Stdout, os.Stderr))
	case "idle":
		err = idle(args)
	case "report":
		err = renderCmd(args)
	case "merge":
		err = mergeCmd(args)
	default:
		err = fmt.Errorf("unknown command %q (want run, serve, idle, demo, report, merge, or no command)", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint(*m) }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }
