package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/libp2p/go-libp2p/core/crypto"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/security"
)

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var listens multiFlag
	fs.Var(&listens, "listen", "listen multiaddr, e.g. /ip4/127.0.0.1/tcp/0/ws (repeatable)")
	echoPath := fs.String("ws-echo", "", "serve a raw WebSocket echo on this path")
	metricsAddr := fs.String("metrics", "", "serve Prometheus /metrics and /debug/pprof/ on HOST:PORT")
	maxMsg := fs.Int64("ws-max-message", 0, "largest WebSocket message accepted (0: codec default, 16 MiB)")
	keyFile := fs.String("key", "", "identity key file (libp2p protobuf encoding); created with a new Ed25519 key when absent; empty: a fresh key each run")
	profileRates := fs.Bool("profile-rates", false, "enable mutex and block profiling (1 in 100 events) for /debug/pprof")
	plaintext := fs.Bool("insecure-plaintext", false, "also offer /plaintext/2.0.0 (no authentication, no encryption): for measuring what Noise costs only")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(listens) == 0 {
		return fmt.Errorf("serve: at least one -listen is required")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *profileRates {
		runtime.SetMutexProfileFraction(100)
		runtime.SetBlockProfileRate(100_000) // one sample per 100 µs blocked
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	e := engine.New(engine.Config{Registerer: reg, Logger: log, MaxMessageSize: *maxMsg})
	defer e.Close()

	var key crypto.PrivKey
	if *keyFile != "" {
		var err error
		if key, err = security.LoadOrCreateKey(*keyFile); err != nil {
			return err
		}
	}
	host, err := engine.NewHost(e, engine.HostConfig{Key: key, InsecurePlaintext: *plaintext})
	if err != nil {
		return err
	}
	if err := host.HandleDefaults(); err != nil { // identify, ping, echo
		return err
	}
	// libp2p on every path (dialers use any), raw echo on -ws-echo.
	routes := engine.Routes{Paths: map[string]engine.Handler{}, Fallback: host.Handler()}
	if *echoPath != "" {
		routes.Paths[*echoPath] = engine.Echo
	}
	var addrs []ma.Multiaddr
	p2p := ma.StringCast("/p2p/" + host.ID().String())
	for _, s := range listens {
		addr, err := ma.NewMultiaddr(s)
		if err != nil {
			return err
		}
		l, err := e.Listen(addr, routes)
		if err != nil {
			return err
		}
		addrs = append(addrs, l.Addr())
		fmt.Println(l.Addr().Encapsulate(p2p))
	}
	host.SetListenAddrs(addrs)
	log.Info("libp2p host", "peer_id", host.ID().String())
	if *metricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		ln, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: mux}
		go func() {
			if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
				log.Error("metrics server", "err", err)
			}
		}()
		defer srv.Shutdown(context.Background())
		log.Info("metrics", "metrics_url", "http://"+ln.Addr().String()+"/metrics")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}
