// Command swarmgate is the swarmgate server: a libp2p node over WebSocket
// (/ws, /tls/ws, /wss) built to hold hundreds of thousands of peers on one
// machine.
//
//	swarmgate -listen /ip4/0.0.0.0/tcp/4001/ws -key node.key [flags]   serve
//	swarmgate keygen -o FILE                                           create an identity key, print its peer ID
//	swarmgate version                                                  version, Go version, masking path
//	swarmgate healthcheck [-url URL]                                   exit 0 when the server answers (container HEALTHCHECK)
//
// Run `swarmgate -h` for the server's flags; every flag is also a key of
// the -config JSON file.
package main

import (
	"os"

	"github.com/swarmgate/swarmgate/internal/server"
)

// version is stamped at build time (-ldflags "-X main.version=v1.2.3");
// empty, the module version of the build or libp2p.Version is used.
var version string

func main() {
	args := os.Args[1:]
	if len(args) > 0 {
		switch args[0] {
		case "keygen":
			os.Exit(keygen(args[1:], os.Stdout, os.Stderr))
		case "version":
			os.Exit(printVersion(os.Stdout))
		case "healthcheck":
			os.Exit(healthcheck(args[1:], os.Stderr))
		}
	}
	server.Version = versionString()
	os.Exit(server.Main("swarmgate", args, os.Stdout, os.Stderr))
}
