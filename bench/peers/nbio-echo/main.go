// Command nbio-echo is the event-driven comparison peer: a raw WebSocket echo
// server on lesismal/nbio (epoll poller, no goroutine per connection). Every
// message on /echo is sent back with its opcode. It prints its WebSocket
// multiaddr on stdout and serves /metrics and /debug/pprof on a separate
// net/http listener (so the profiled engine only carries echo traffic); the
// metrics URL is logged to stderr as metrics_url=…. Exits 0 on SIGINT/SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof" // /debug/pprof on the metrics listener
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/lesismal/nbio/logging"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:0", "TCP address for the WebSocket listener")
	metricsAddr := flag.String("metrics", "127.0.0.1:0", "HOST:PORT for /metrics and /debug/pprof (empty: off)")
	pollers := flag.Int("pollers", runtime.NumCPU(), "nbio poller goroutines (nbio's own default is NumCPU/4)")
	flag.Parse()
	// nbio logs to stdout by default; stdout carries only the address.
	logging.Output = os.Stderr
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("nbio-echo ")
	if err := run(*addr, *metricsAddr, *pollers); err != nil {
		log.Printf("error: %v", err)
		os.Exit(1)
	}
}

func run(addr, metricsAddr string, pollers int) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	up := websocket.NewUpgrader()
	up.CheckOrigin = func(*http.Request) bool { return true }
	// No idle read deadline: load runs hold idle connections for minutes.
	up.KeepaliveTime = 0
	// Known nbio v1.6.7 limitation: an empty data message (payload length
	// 0) is parsed but never passed to OnMessage or OnDataFrame, so it is
	// not echoed. libp2p never sends empty messages; raw-WebSocket load
	// generators must not either when pointed at this peer.
	up.OnMessage(func(c *websocket.Conn, op websocket.MessageType, data []byte) {
		if err := c.WriteMessage(op, data); err != nil {
			c.Close()
		}
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		if _, err := up.Upgrade(w, r, nil); err != nil {
			log.Printf("upgrade from %s: %v", r.RemoteAddr, err)
		}
	})

	// nbio opens its listeners itself; the Listen hook lets us learn the
	// port it got when addr asks for port 0.
	var (
		mu    sync.Mutex
		bound []net.Addr
	)
	engine := nbhttp.NewEngine(nbhttp.Config{
		Network: "tcp",
		Addrs:   []string{addr},
		Handler: mux,
		NPoller: pollers,
		Listen: func(network, a string) (net.Listener, error) {
			ln, err := net.Listen(network, a)
			if err == nil {
				mu.Lock()
				bound = append(bound, ln.Addr())
				mu.Unlock()
			}
			return ln, err
		},
	})
	if err := engine.Start(); err != nil {
		return fmt.Errorf("nbio engine: %w", err)
	}
	mu.Lock()
	for _, a := range bound {
		ta := a.(*net.TCPAddr)
		proto := "ip4"
		if ta.IP.To4() == nil {
			proto = "ip6"
		}
		fmt.Printf("/%s/%s/tcp/%d/ws\n", proto, ta.IP, ta.Port)
	}
	mu.Unlock()

	if metricsAddr != "" {
		ln, err := net.Listen("tcp", metricsAddr)
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
	}

	<-ctx.Done()
	log.Printf("signal received, closing")
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = engine.Shutdown(sctx)
	return nil
}
