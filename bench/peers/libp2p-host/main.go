// Command libp2p-host is the reference libp2p-over-WebSocket peer: a
// go-libp2p v0.51.0 host restricted to WebSocket + Noise + yamux that serves
// identify, ping and /echo/1.0.0. Interop tests and load runs point their
// clients at it first, to tell a client bug from a server bug, and later at
// swarmgate itself with the same scripts.
//
// Output contract (other tools parse it):
//   - stdout: one line per listen address, with /p2p/<peer-id>, as soon as
//     the host listens. Nothing else is written to stdout.
//   - stderr: logs, including metrics_url=http://HOST:PORT/metrics.
//   - exit status 0 on SIGINT or SIGTERM.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof" // /debug/pprof on the metrics listener
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/insecure"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/websocket"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// EchoProtocol is the application protocol the interop and load clients use:
// the listener copies every byte back and closes its write side after the
// dialer's EOF.
const EchoProtocol = "/echo/1.0.0"

func main() {
	listen := flag.String("listen", "/ip4/127.0.0.1/tcp/0/ws", "comma-separated listen multiaddrs")
	metricsAddr := flag.String("metrics", "127.0.0.1:0", "HOST:PORT for /metrics and /debug/pprof (empty: off)")
	seed := flag.Uint64("seed", 0, "derive the Ed25519 identity from this seed (0: random identity)")
	plaintext := flag.Bool("insecure-plaintext", false, "also offer /plaintext/2.0.0 (measurement only: no encryption)")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("libp2p-host ")

	if err := run(*listen, *metricsAddr, *seed, *plaintext); err != nil {
		log.Printf("error: %v", err)
		os.Exit(1)
	}
}

func run(listen, metricsAddr string, seed uint64, plaintext bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	priv, err := identity(seed)
	if err != nil {
		return err
	}
	h, err := newHost(priv, strings.Split(listen, ","), plaintext)
	if err != nil {
		return err
	}
	defer h.Close()
	h.SetStreamHandler(EchoProtocol, echo)

	addrs, err := h.Network().InterfaceListenAddresses()
	if err != nil {
		return fmt.Errorf("listen addresses: %w", err)
	}
	self, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: h.ID(), Addrs: addrs})
	if err != nil {
		return err
	}
	for _, a := range self {
		fmt.Println(a)
	}
	log.Printf("peer_id=%s protocols=%v plaintext=%v", h.ID(), h.Mux().Protocols(), plaintext)

	if metricsAddr != "" {
		if err := serveMetrics(metricsAddr); err != nil {
			return err
		}
	}

	<-ctx.Done()
	log.Printf("signal received, closing")
	return nil
}

// newHost builds the host with exactly the stack a swarmgate server offers:
// WebSocket transport, Noise (plus plaintext when asked), yamux.
//
// Limits: this host is a load-test reference on loopback, so nothing in it
// may throttle or prune. The default resource manager caps connections and
// streams per peer and per IP (every loopback client shares 127.0.0.1), and
// the default connection manager trims above 192 connections; either would
// make go-libp2p look like it drops load that it would otherwise carry. We
// use the null resource manager (no accounting at all) and the null
// connection manager (never trims). Do not copy this for an internet-facing
// node.
func newHost(priv crypto.PrivKey, listen []string, plaintext bool) (host.Host, error) {
	opts := []libp2p.Option{
		libp2p.Identity(priv),
		libp2p.ListenAddrStrings(listen...),
		libp2p.Transport(websocket.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(&network.NullResourceManager{}),
		libp2p.ConnectionManager(&connmgr.NullConnMgr{}),
		libp2p.DisableRelay(),
		libp2p.Ping(true),
		libp2p.UserAgent(userAgent()),
	}
	if plaintext {
		opts = append(opts, libp2p.Security(insecure.ID, insecure.NewWithIdentity))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("libp2p host: %w", err)
	}
	return h, nil
}

// userAgent names go-libp2p and its version for identify's agentVersion
// (go-libp2p's default is the main module's path, which says nothing here).
func userAgent() string {
	v := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/libp2p/go-libp2p" {
				v = d.Version
			}
		}
	}
	return "github.com/libp2p/go-libp2p@" + v + " (swarmgate bench/peers libp2p-host)"
}

// identity returns a random Ed25519 key, or one derived from seed so that
// repeated runs (and recorded transcripts) keep the same peer ID.
func identity(seed uint64) (crypto.PrivKey, error) {
	if seed == 0 {
		priv, _, err := crypto.GenerateEd25519Key(nil)
		return priv, err
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seed)
	sum := sha256.Sum256(append([]byte("swarmgate bench/peers libp2p-host seed "), b[:]...))
	priv, _, err := crypto.GenerateEd25519Key(bytes.NewReader(sum[:]))
	return priv, err
}

// echo copies the stream back to the dialer. After the dialer's EOF it closes
// its write side (FIN), so the dialer reads exactly what it wrote, then EOF.
func echo(s network.Stream) {
	n, err := io.Copy(s, s)
	if err != nil {
		log.Printf("echo: peer=%s after %d bytes: %v", s.Conn().RemotePeer(), n, err)
		_ = s.Reset()
		return
	}
	if err := s.CloseWrite(); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

// serveMetrics serves the default Prometheus registry (go_goroutines,
// process_resident_memory_bytes, and go-libp2p's own metrics) and
// /debug/pprof on addr. Port 0 picks a free port; the URL goes to stderr.
func serveMetrics(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	http.Handle("/metrics", promhttp.Handler())
	log.Printf("metrics_url=http://%s/metrics", ln.Addr())
	go func() {
		if err := http.Serve(ln, nil); err != nil && !errors.Is(err, net.ErrClosed) {
			log.Printf("metrics server: %v", err)
		}
	}()
	return nil
}
