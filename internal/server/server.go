// Package server is the swarmgate server as operators run it: flags and
// the -config file, the identity key, TLS certificates, listeners, metrics
// and pprof, SIGHUP reload and SIGTERM drain. cmd/swarmgate is a thin main
// around Main, and loadgen runs the same code for its child server.
package server

import (
	"context"
	"crypto/tls"
	"errors"
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
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/libp2p"
	"github.com/swarmgate/swarmgate/libp2p/kad"
	"github.com/swarmgate/swarmgate/libp2p/relay"
	"github.com/swarmgate/swarmgate/security"
)

// Version is the server's version, announced in identify's agentVersion
// ("swarmgate/<Version>") and logged at start; cmd/swarmgate sets it from
// its build stamp. Empty: libp2p.Version.
var Version string

// Exit codes of Main.
const (
	ExitOK    = 0 // served and drained, or -h
	ExitError = 1 // a failure while starting or serving
	ExitUsage = 2 // bad flags or configuration
)

// Metrics HTTP server timeouts: a scrape or a pprof profile is a short
// request; a client that opens a connection and sends nothing is cut.
// pprof's /profile and /trace take their duration from the request (30 s
// by default), so the write timeout leaves room for a minute.
const (
	metricsReadHeaderTimeout = 5 * time.Second
	metricsWriteTimeout      = 90 * time.Second
	metricsIdleTimeout       = 60 * time.Second
)

// Main runs the server with args (without the program name) until SIGINT or
// SIGTERM, then drains. It prints each listen address with /p2p/ on its own
// stdout line as soon as it listens and logs to stderr. name is the command
// name for messages (swarmgate, or loadgen serve).
func Main(name string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed once, below
	cfg := Flags(fs)
	fs.Usage = func() {} // -h prints the usage once, to stdout, below
	if err := Parse(fs, cfg, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout, name, fs)
			return ExitOK
		}
		fmt.Fprintf(stderr, "%s: %v\nRun '%s -h' for the flags.\n", name, err, name)
		return ExitUsage
	}
	if len(cfg.Listen) == 0 {
		fmt.Fprintf(stderr, "%s: at least one -listen is required, e.g. -listen /ip4/0.0.0.0/tcp/4001/ws\nRun '%s -h' for the flags.\n", name, name)
		return ExitUsage
	}
	log := cfg.logger(stderr)
	if err := run(name, cfg, args, stdout, log); err != nil {
		log.Error("stopped", "err", err)
		return ExitError
	}
	return ExitOK
}

// usage prints the flags grouped by topic.
func usage(w io.Writer, name string, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: %s -listen MULTIADDR [flags]\n\n", name)
	fmt.Fprintf(w, "Serves libp2p (Noise, yamux, identify, ping) over WebSocket. Every flag is also a key\nof the -config JSON file; the command line wins. SIGHUP reloads limits and TLS files;\nSIGTERM drains.\n")
	seen := map[string]bool{}
	for _, g := range flagGroups {
		fmt.Fprintf(w, "\n%s:\n", g.title)
		for _, n := range g.names {
			if f := fs.Lookup(n); f != nil {
				printFlag(w, f)
				seen[n] = true
			}
		}
	}
	var rest []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		if !seen[f.Name] {
			rest = append(rest, f)
		}
	})
	if len(rest) > 0 {
		fmt.Fprintf(w, "\nOther:\n")
		for _, f := range rest {
			printFlag(w, f)
		}
	}
}

func printFlag(w io.Writer, f *flag.Flag) {
	kind, help := flag.UnquoteUsage(f)
	head := "  -" + f.Name
	if kind != "" {
		head += " " + kind
	}
	if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "[]" {
		head += " (default " + f.DefValue + ")"
	}
	fmt.Fprintf(w, "%s\n", head)
	for _, line := range wrap(help, 76) {
		fmt.Fprintf(w, "      %s\n", line)
	}
}

func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

// run serves until a signal, then drains.
func run(name string, cfg *Config, args []string, stdout io.Writer, log *slog.Logger) error {
	gc, gcFrom := cfg.applyGCPercent(os.Getenv)
	log.Info("Go GC target", "percent", gc, "from", gcFrom)
	if cfg.ProfileRates {
		runtime.SetMutexProfileFraction(100)
		runtime.SetBlockProfileRate(100_000) // one sample per 100 µs blocked
	}
	// Everything that can fail on the operator's input is checked before
	// the engine starts.
	var key crypto.PrivKey
	if cfg.Key != "" {
		var err error
		if key, err = security.LoadOrCreateKey(cfg.Key); err != nil {
			return fmt.Errorf("-key: %w", err)
		}
	}
	var addrs []ma.Multiaddr
	for _, s := range cfg.Listen {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return fmt.Errorf("-listen %q: %w", s, err)
		}
		addrs = append(addrs, a)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tlsCfg, err := serverTLS(ctx, log, cfg.TLSCert, cfg.TLSKey, cfg.TLSCurves)
	if err != nil {
		return err
	}
	proxies, err := cfg.trustedProxies() // validated by Parse
	if err != nil {
		return err
	}
	limits, err := cfg.limits()
	if err != nil {
		return err
	}
	warnFileLimit(log, limits.MaxConns)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsScheduler)), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	hcfg := libp2p.Config{
		Engine: engine.Config{Registerer: reg, Logger: log, MaxMessageSize: cfg.WSMaxMessage, TLS: tlsCfg,
			Limits: limits, TrustedProxies: proxies},
		Key:               key,
		Echo:              cfg.Echo,
		InsecurePlaintext: cfg.InsecurePlaintext,
		IdleTimeout:       cfg.IdleTimeout,
	}
	if cfg.WSEcho != "" {
		hcfg.Paths = map[string]engine.StageFunc{cfg.WSEcho: engine.Echo}
	}
	if Version != "" {
		hcfg.AgentVersion = "swarmgate/" + Version
	}
	host, err := libp2p.New(hcfg)
	if err != nil {
		return err
	}
	defer host.Close()
	p2p := ma.StringCast("/p2p/" + host.ID().String())
	for _, a := range addrs {
		bound, err := host.Listen(a)
		if err != nil {
			return listenError(a, err)
		}
		fmt.Fprintln(stdout, bound.Encapsulate(p2p))
	}
	if len(cfg.Announce) > 0 {
		var announce []ma.Multiaddr
		for _, s := range cfg.Announce {
			announce = append(announce, ma.StringCast(s)) // validated
		}
		host.SetListenAddrs(announce)
	}
	roles, err := attachRoles(cfg, host, reg)
	if err != nil {
		return err
	}
	defer roles.Close()
	if roles.kad != nil {
		var seeds []ma.Multiaddr
		for _, s := range cfg.DHTSeeds {
			seeds = append(seeds, ma.StringCast(s)) // validated
		}
		if err := roles.kad.KeepConnected(ctx, seeds, log); err != nil {
			return fmt.Errorf("-dht-seed: %w", err)
		}
	}
	log.Info("serving", "peer_id", host.ID().String(), "agent", host.AgentVersion(), "protocols", strings.Join(host.Protocols(), ","))
	var draining atomic.Bool
	if cfg.Metrics != "" {
		srv, url, err := serveMetrics(cfg.Metrics, reg, &draining, log)
		if err != nil {
			return fmt.Errorf("-metrics %s: %w", cfg.Metrics, err)
		}
		defer srv.Shutdown(context.Background())
		log.Info("metrics", "metrics_url", url)
	}
	// SIGHUP re-reads the flags and the -config file and applies the new
	// limits (the TLS certificate reloader listens for it too).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			reload(name, host.Engine(), args, log)
		}
	}()
	<-ctx.Done()
	stop() // restore default signal handling
	// A second SIGINT or SIGTERM cuts the drain short.
	dctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	draining.Store(true) // /healthz answers 503 from now on
	log.Info("shutting down: draining", "timeout", cfg.DrainTimeout.String(), "conns", host.Engine().OpenConns())
	if err := host.Drain(dctx, cfg.DrainTimeout); err != nil {
		log.Warn("drain incomplete", "err", err)
	}
	return nil
}

// roles are the protocol roles the configuration attaches to the host
// beside identify and ping.
type roles struct {
	kad        *kad.Role    // nil unless -dht
	relay      *relay.Relay // nil unless -relay
	stopSweeps func()
}

// attachRoles attaches the roles cfg turns on, their metrics registered on
// reg. The dashboard test builds its list of served metric families with
// it, so a role's families cannot be left off the dashboard.
func attachRoles(cfg *Config, host *libp2p.Host, reg prometheus.Registerer) (*roles, error) {
	r := &roles{}
	if cfg.DHT {
		filter, _ := kad.ParseAddrFilter(cfg.DHTAddrFilter) // validated
		role, err := kad.Attach(host, kad.Config{AddrFilter: filter, Registerer: reg})
		if err != nil {
			return nil, err
		}
		r.kad = role
	}
	if cfg.Relay {
		rc := cfg.relayConfig()
		rc.Registerer = reg
		rel, err := relay.New(host, rc)
		if err != nil {
			r.Close()
			return nil, err
		}
		r.relay = rel
		r.stopSweeps = rel.StartSweeper()
	}
	return r, nil
}

// Close detaches the roles.
func (r *roles) Close() {
	if r.kad != nil {
		r.kad.Close()
	}
	if r.stopSweeps != nil {
		r.stopSweeps()
	}
}

// reload applies the limits of a fresh parse of args and the -config file.
func reload(name string, e *engine.Engine, args []string, log *slog.Logger) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fresh := Flags(fs)
	if err := Parse(fs, fresh, args); err != nil {
		log.Error("SIGHUP: configuration not reloaded", "err", err)
		return
	}
	l, err := fresh.limits()
	if err != nil {
		log.Error("SIGHUP: limits not reloaded", "err", err)
		return
	}
	e.SetLimits(l)
	gc, gcFrom := fresh.applyGCPercent(os.Getenv)
	in := e.Limits() // defaults applied
	log.Info("SIGHUP: limits reloaded", "max_conns", in.MaxConns, "max_conns_per_ip", in.MaxConnsPerIP,
		"max_conns_per_subnet", in.MaxConnsPerSubnet, "conn_rate_per_ip", in.ConnRatePerIP, "max_streams", in.MaxStreams,
		"memory_budget", in.MemoryBudget, "gc_percent", gc, "gc_percent_from", gcFrom)
}

// listenError explains a failed listen in the operator's terms.
func listenError(a ma.Multiaddr, err error) error {
	switch {
	case errors.Is(err, engine.ErrNoCertificate):
		return fmt.Errorf("-listen %s: a TLS listener on a non-loopback address needs a certificate: give -tls-cert and -tls-key (PEM files)", a)
	}
	return fmt.Errorf("-listen %s: %w", a, err)
}

// warnFileLimit warns when more connections are allowed than the process
// may open files: past the limit accept fails and the kernel's queue fills.
func warnFileLimit(log *slog.Logger, maxConns int) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return
	}
	if maxConns == 0 {
		maxConns = admission.DefaultMaxConns
	}
	if maxConns < 0 || uint64(maxConns) > rl.Cur {
		log.Warn("-max-conns exceeds the open-file limit: connections past it are refused by the kernel, not counted; raise the limit (systemd LimitNOFILE, ulimit -n) or lower -max-conns",
			"max_conns", maxConns, "open_file_limit", rl.Cur)
	}
}

// serveMetrics serves /metrics, /healthz and /debug/pprof/ on addr. The
// listener should be bound to loopback or a private network: pprof exposes
// the process's internals and can be made to spend CPU. /healthz is what
// probes should use: 200 while serving, 503 once draining, at no cost (a
// /metrics scrape lists every open descriptor through the process
// collector: seconds of CPU at a million connections).
func serveMetrics(addr string, reg *prometheus.Registry, draining *atomic.Bool, log *slog.Logger) (*http.Server, string, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() && !ta.IP.IsPrivate() {
		log.Warn("-metrics listens on a public address: /debug/pprof is reachable by anyone who can connect; bind it to loopback or a private network", "addr", ln.Addr().String())
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: metricsReadHeaderTimeout, WriteTimeout: metricsWriteTimeout, IdleTimeout: metricsIdleTimeout}
	go func() {
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			log.Error("metrics server", "err", err)
		}
	}()
	return srv, "http://" + ln.Addr().String() + "/metrics", nil
}

// serverTLS builds the server TLS configuration from the flags: curve
// preferences, and with -tls-cert a CertReloader that polls the files on
// one ticker for the process and reloads on SIGHUP.
func serverTLS(ctx context.Context, log *slog.Logger, certFile, keyFile, curves string) (*tls.Config, error) {
	ids, err := engine.ParseCurves(curves)
	if err != nil {
		return nil, fmt.Errorf("-tls-curves: %w", err)
	}
	cfg := &tls.Config{CurvePreferences: ids}
	if certFile == "" && keyFile == "" {
		return cfg, nil
	}
	if certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("-tls-cert and -tls-key go together")
	}
	r, err := engine.NewCertReloader(certFile, keyFile, log)
	if err != nil {
		return nil, fmt.Errorf("-tls-cert/-tls-key: %w", err)
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
