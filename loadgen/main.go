// Command loadgen runs and measures swarmgate engines.
//
//	loadgen                       run the default demo on an embedded engine over loopback
//	loadgen serve -listen ADDR …  serve WebSocket (raw echo) until SIGINT/SIGTERM
//	loadgen idle -target ADDR …   hold N idle connections and measure the server per connection
package main

import (
	"fmt"
	"os"
)

func main() {
	args := os.Args[1:]
	cmd := "demo"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "demo":
		err = demo(args)
	case "serve":
		err = serve(args)
	case "idle":
		err = idle(args)
	default:
		err = fmt.Errorf("unknown command %q (want serve, idle, or no command)", cmd)
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
