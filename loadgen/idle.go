package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/libp2p"
)

// idle holds N idle raw WebSocket connections to a server and reports what
// they cost the server per connection, measured from outside: resident
// memory from /proc/PID/status and goroutines from its /metrics.
func idle(args []string) error {
	fs := flag.NewFlagSet("idle", flag.ContinueOnError)
	target := fs.String("target", "", "server multiaddr, e.g. /ip4/127.0.0.1/tcp/4001/ws or …/tls/ws")
	path := fs.String("path", "/echo", "WebSocket path of the echo service")
	n := fs.Int("n", 10000, "connections to hold")
	par := fs.Int("par", 256, "dials in flight")
	pid := fs.Int("server-pid", 0, "server process id (for /proc RSS)")
	metrics := fs.String("server-metrics", "", "server /metrics URL (for go_goroutines); empty skips")
	settle := fs.Duration("settle", 3*time.Second, "wait after the last echo before measuring")
	name := fs.String("name", "server", "name of the server in the report")
	asJSON := fs.Bool("json", false, "print one JSON object instead of a Markdown table row")
	stack := fs.String("stack", "ws", "ws (raw WebSocket echo on -path) or libp2p (WebSocket + Noise + yamux, one ping each)")
	gcURL := fs.String("server-gc", "", "URL that makes the server collect garbage (pprof: /debug/pprof/heap?gc=1), fetched twice before each RSS reading so both servers are measured in steady state")
	tlsCurves := fs.String("tls-curves", "", "TLS key exchanges the client offers for /tls/ws targets (empty: Go's defaults)")
	tlsVerify := fs.Bool("tls-verify", false, "verify the server's certificate (off by default: loopback measurement against a self-signed certificate)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	curves, err := engine.ParseCurves(*tlsCurves)
	if err != nil {
		return err
	}
	addr, err := ma.NewMultiaddr(*target)
	if err != nil {
		return err
	}
	if *pid == 0 {
		return fmt.Errorf("idle: -server-pid is required")
	}
	e := engine.New(engine.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		TLSClient: &tls.Config{InsecureSkipVerify: !*tlsVerify, CurvePreferences: curves}})
	defer e.Close()

	open := func(n, par int) (any, error) {
		return openEchoed(e, addr, *path, n, par, make([]byte, 64))
	}
	if isTLSTarget(addr) {
		// openEchoed bounds dials, not TLS handshakes, which would pile up
		// past the server's handshake cap; batches of par bound both.
		open = func(n, par int) (any, error) {
			var all []*engine.Conn
			for len(all) < n {
				cs, err := openEchoed(e, addr, *path, min(par, n-len(all)), par, make([]byte, 64))
				if err != nil {
					return all, err
				}
				all = append(all, cs...)
			}
			return all, nil
		}
	}
	if *stack == "libp2p" {
		h, err := libp2p.NewOn(e, libp2p.Config{})
		if err != nil {
			return err
		}
		open = func(n, par int) (any, error) { return openPeers(h, addr, n, par, false) }
	}
	// Warm the server up with a few connections so one-time allocations
	// (pools, first-use tables) are not charged to the measured ones.
	warm, err := open(50, 16)
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	time.Sleep(*settle)
	collect(*gcURL)
	rss0, err := rssBytes(*pid)
	if err != nil {
		return err
	}
	g0 := goroutines(*metrics)
	start := time.Now()
	conns, err := open(*n, *par)
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	time.Sleep(*settle)
	collect(*gcURL)
	rss1, err := rssBytes(*pid)
	if err != nil {
		return err
	}
	g1 := goroutines(*metrics)
	if *asJSON {
		json.NewEncoder(os.Stdout).Encode(map[string]any{
			"server": *name, "stack": *stack, "conns": *n,
			"rss_bytes_per_conn":  float64(rss1-rss0) / float64(*n),
			"rss_added_bytes":     rss1 - rss0,
			"goroutines_per_conn": (g1 - g0) / float64(*n),
			"connect_seconds":     elapsed.Seconds(),
		})
	} else {
		fmt.Printf("| %s | %d | %.0f | %.1f | %.3f | %s |\n", *name, *n,
			float64(rss1-rss0)/float64(*n), float64(rss1-rss0)/(1<<20),
			(g1-g0)/float64(*n), elapsed.Round(time.Millisecond))
	}
	runtime.KeepAlive(warm)
	runtime.KeepAlive(conns)
	return nil
}

func goroutines(url string) float64 {
	if url == "" {
		return 0
	}
	v, err := scrapeGauge(url, "go_goroutines")
	if err != nil {
		return -1
	}
	return v
}

// collect asks the server to run two garbage collections (the second empties
// sync.Pool victim caches), then gives the scavenger a moment to return the
// freed pages.
func collect(url string) {
	if url == "" {
		return
	}
	for i := 0; i < 2; i++ {
		if resp, err := http.Get(url); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	time.Sleep(time.Second)
}

// isTLSTarget reports a /tls/ws or /wss multiaddr.
func isTLSTarget(m ma.Multiaddr) bool {
	for _, c := range m {
		if code := c.Protocol().Code; code == ma.P_TLS || code == ma.P_WSS {
			return true
		}
	}
	return false
}
