// Command swarmgate is the swarmgate server: a libp2p node over WebSocket
// (/ws, /tls/ws, /wss) built to hold hundreds of thousands of peers on one
// machine.
//
//	swarmgate -listen /ip4/0.0.0.0/tcp/4001/ws -key node.key [flags]
//
// Run `swarmgate -h` for the flags; every flag is also a key of the
// -config JSON file.
package main

import (
	"os"

	"github.com/swarmgate/swarmgate/internal/server"
)

func main() {
	os.Exit(server.Main("swarmgate", os.Args[1:], os.Stdout, os.Stderr))
}
