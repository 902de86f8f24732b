package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgate/swarmgate/libp2p"
	"github.com/swarmgate/swarmgate/security"
	"github.com/swarmgate/swarmgate/simd"
)

// versionString is the stamped version, else the module's from the build
// information (go install …@v1.2.3), else libp2p.Version.
func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return libp2p.Version
}

// printVersion prints the version, the Go toolchain and the masking path
// this CPU selects.
func printVersion(w io.Writer) int {
	fmt.Fprintf(w, "swarmgate %s %s %s/%s mask=%s\n", versionString(), runtime.Version(), runtime.GOOS, runtime.GOARCH, simd.Impl())
	return 0
}

// keygen creates an identity key file (Ed25519, libp2p protobuf encoding,
// mode 0600) and prints its peer ID alone on stdout. An existing file is
// never replaced: its peer ID is printed, so a provisioning loop can run it
// again safely.
func keygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("swarmgate keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "key file to create (required)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: swarmgate keygen -o FILE")
		return 2
	}
	k, err := security.LoadOrCreateKey(*out)
	if err != nil {
		fmt.Fprintln(stderr, "swarmgate keygen:", err)
		return 1
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		fmt.Fprintln(stderr, "swarmgate keygen:", err)
		return 1
	}
	fmt.Fprintln(stdout, id)
	return 0
}

// healthcheckTimeout bounds the probe: a container runtime's HEALTHCHECK
// interval is seconds.
const healthcheckTimeout = 3 * time.Second

// healthcheck exits 0 when url answers HTTP 200 within healthcheckTimeout
// (the server's /healthz or /metrics on its -metrics address), 1 otherwise:
// the container HEALTHCHECK, where a distroless image has no curl.
func healthcheck(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("swarmgate healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:9464/healthz", "URL that answers 200 while the server is healthy")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	c := http.Client{Timeout: healthcheckTimeout}
	resp, err := c.Get(*url)
	if err != nil {
		fmt.Fprintln(stderr, "swarmgate healthcheck:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(stderr, "swarmgate healthcheck:", resp.Status)
		return 1
	}
	return 0
}
