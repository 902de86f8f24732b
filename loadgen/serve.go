package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
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
	"github.com/swarmgate/swarmgate/mux"
	"github.com/swarmgate/swarmgate/security"
)

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg := serveFlags(fs)
	if err := parseServeConfig(fs, cfg, args); err != nil {
		return err
	}
	if len(cfg.Listen) == 0 {
		return fmt.Errorf("serve: at least one -listen is required")
	}
	log := cfg.logger(os.Stderr)
	if cfg.ProfileRates {
		runtime.SetMutexProfileFraction(100)
		runtime.SetBlockProfileRate(100_000) // one sample per 100 µs blocked
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsScheduler)), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tlsCfg, err := serveTLS(ctx, log, cfg.TLSCert, cfg.TLSKey, cfg.TLSCurves)
	if err != nil {
		return err
	}
	proxies, err := cfg.trustedProxies() // validated by parseServeConfig
	if err != nil {
		return err
	}
	limits, err := cfg.limits()
	if err != nil {
		return err
	}
	e := engine.New(engine.Config{Registerer: reg, Logger: log, MaxMessageSize: cfg.WSMaxMessage, TLS: tlsCfg, Limits: limits, TrustedProxies: proxies})
	defer e.Close()

	var key crypto.PrivKey
	if cfg.Key != "" {
		var err error
		if key, err = security.LoadOrCreateKey(cfg.Key); err != nil {
			return err
		}
	}
	host, err := engine.NewHost(e, engine.HostConfig{Key: key, InsecurePlaintext: cfg.InsecurePlaintext, Mux: limits.MuxConfig(mux.Config{}), IdleTimeout: cfg.IdleTimeout})
	if err != nil {
		return err
	}
	if err := host.HandleDefaults(); err != nil { // identify, ping, echo
		return err
	}
	// libp2p on every path (dialers use any), raw echo on -ws-echo.
	routes := engine.Routes{Paths: map[string]engine.Handler{}, Fallback: host.Handler()}
	if cfg.WSEcho != "" {
		routes.Paths[cfg.WSEcho] = engine.Echo
	}
	var addrs []ma.Multiaddr
	p2p := ma.StringCast("/p2p/" + host.ID().String())
	for _, s := range cfg.Listen {
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
	if cfg.Metrics != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		ln, err := net.Listen("tcp", cfg.Metrics)
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
	// SIGHUP re-reads the flags and the -config file and applies the new
	// limits (the TLS certificate reloader listens for it too).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			fs2 := flag.NewFlagSet("serve", flag.ContinueOnError)
			fs2.SetOutput(io.Discard)
			fresh := serveFlags(fs2)
			if err := parseServeConfig(fs2, fresh, args); err != nil {
				log.Error("SIGHUP: configuration not reloaded", "err", err)
				continue
			}
			l, err := fresh.limits()
			if err != nil {
				log.Error("SIGHUP: limits not reloaded", "err", err)
				continue
			}
			e.SetLimits(l)
			in := e.Limits() // defaults applied
			log.Info("SIGHUP: limits reloaded", "max_conns", in.MaxConns, "max_conns_per_ip", in.MaxConnsPerIP,
				"max_conns_per_subnet", in.MaxConnsPerSubnet, "conn_rate_per_ip", in.ConnRatePerIP, "memory_budget", in.MemoryBudget)
		}
	}()
	<-ctx.Done()
	stop() // restore default signal handling
	// A second SIGINT or SIGTERM cuts the drain short.
	dctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	log.Info("shutting down: draining", "timeout", cfg.DrainTimeout.String(), "conns", e.OpenConns())
	if err := e.Drain(dctx, cfg.DrainTimeout); err != nil {
		log.Warn("drain incomplete", "err", err)
	}
	return nil
}

// serveTLS builds the server TLS configuration from the flags: curve
// preferences, and with -tls-cert a CertReloader that polls the files on
// one ticker for the process and reloads on SIGHUP.
func serveTLS(ctx context.Context, log *slog.Logger, certFile, keyFile, curves string) (*tls.Config, error) {
	ids, err := engine.ParseCurves(curves)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{CurvePreferences: ids}
	if certFile == "" && keyFile == "" {
		return cfg, nil
	}
	if certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("serve: -tls-cert and -tls-key go together")
	}
	r, err := engine.NewCertReloader(certFile, keyFile, log)
	if err != nil {
		return nil, err
	}
	cfg.GetCertificate = r.GetCertificate
	go r.Watch(ctx, engine.DefaultCertPollInterval)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := r.Reload(); err != nil {
					log.Error("TLS certificate reload on SIGHUP failed; keeping the previous one", "err", err)
				}
			}
		}
	}()
	return cfg, nil
}
