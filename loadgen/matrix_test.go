package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	golibp2p "github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/websocket"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/libp2p"
	"github.com/swarmgate/swarmgate/libp2p/kad"

	"github.com/swarmgate/swarmgate/engine"
)

// metricsServer serves a registry with the Go and process collectors,
// like loadgen serve's -metrics, for an in-process server.
func metricsServer(t *testing.T, reg *prometheus.Registry) string {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL + "/metrics"
}

// A short run of every scenario on the /ws stacks against an in-process
// engine: sane figures and a complete JSON report.
func TestMatrixQuickInProcess(t *testing.T) {
	reg := prometheus.NewRegistry()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	// As the default run's child: one loadgen identity opens every
	// connection, so the per-peer limits are lifted; the DHT hands out
	// loopback addresses.
	lim := admission.Limits{MaxConnsPerPeer: -1, MaxPeerStreams: -1, MaxProtocolStreams: -1}
	e := engine.New(engine.Config{Logger: quiet, Registerer: reg, Limits: lim})
	defer e.Close()
	h, err := libp2p.NewOn(e, libp2p.Config{InsecurePlaintext: true, Echo: true})
	if err != nil {
		t.Fatal(err)
	}
	role, err := kad.Attach(h, kad.Config{AddrFilter: kad.AddrsAll, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer role.Close()
	l, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"), engine.Routes{Paths: map[string]engine.StageFunc{"/echo": engine.Echo}, Fallback: h.Stage})
	if err != nil {
		t.Fatal(err)
	}
	murl := metricsServer(t, reg)
	dir := t.TempDir()
	rf := runFlags{stacks: "ws+noise,ws+plaintext,ws", scenarios: "all", quick: true, profiles: dir, csvPath: filepath.Join(dir, "r.csv"), plan: defaultPlan}
	stdout := os.Stdout
	os.Stdout, _ = os.Open(os.DevNull)
	err = runMatrix(rf, map[bool]target{false: {addr: l.Addr(), echoPath: "/echo"}}, serverProbe{pid: os.Getpid(), metricsURL: murl}, murl, "in-process engine")
	os.Stdout = stdout
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"connect":      {"conn_per_sec", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_p999_ms", "server_cpu_us_per_conn", "client_cpu_us_per_conn"},
		"hold":         {"conns", "server_rss_bytes_per_conn", "kernel_sockbuf_bytes_per_conn", "server_goroutines_per_conn", "server_idle_cpu_pct", "server_idle_cpu_pct_before", "server_idle_cpu_pct_per_1k_conns"},
		"throughput-1": {"bytes_per_sec", "server_cpu_ns_per_byte", "client_cpu_ns_per_byte"},
		"throughput-4": {"bytes_per_sec"},
		"messages":     {"msgs_per_sec", "rtt_p50_us", "rtt_p90_us", "rtt_p99_us", "rtt_p999_us"},
		"churn":        {"cycles", "cycles_per_sec"},
		"dht":          {"table_entries", "requests_per_sec", "latency_p50_us", "latency_p99_us", "server_cpu_us_per_request", "server_bytes_per_table_entry"},
	}
	for _, st := range []string{"ws+noise", "ws+plaintext", "ws"} {
		for sc, metrics := range want {
			r := find(rep.Results, st, sc)
			if r == nil {
				t.Errorf("%s/%s missing from the report", st, sc)
				continue
			}
			if sc == "dht" && st != "ws+noise" {
				if r.Note == "" {
					t.Errorf("%s/dht: no not-applicable note", st)
				}
				continue
			}
			if r.Errors != 0 || r.Note != "" {
				t.Errorf("%s/%s: %d errors, note %q", st, sc, r.Errors, r.Note)
			}
			for _, m := range metrics {
				if _, ok := r.Metrics[m]; !ok {
					t.Errorf("%s/%s lacks %s", st, sc, m)
				}
			}
		}
		r := find(rep.Results, st, "connect")
		if r != nil && (r.Metrics["conn_per_sec"] <= 0 || r.Metrics["latency_p50_ms"] <= 0 || r.Metrics["latency_p99_ms"] < r.Metrics["latency_p50_ms"]) {
			t.Errorf("%s connect figures not sane: %v", st, r.Metrics)
		}
		if r := find(rep.Results, st, "hold"); r != nil && r.Metrics["server_goroutines_per_conn"] > 0.05 {
			t.Errorf("%s: %.3f goroutines per idle connection", st, r.Metrics["server_goroutines_per_conn"])
		}
		for _, sc := range []string{"throughput-1", "throughput-4"} {
			if r := find(rep.Results, st, sc); r != nil && r.Metrics["bytes_per_sec"] < 1e6 {
				t.Errorf("%s/%s: %.0f bytes/s", st, sc, r.Metrics["bytes_per_sec"])
			}
		}
		if r := find(rep.Results, st, "messages"); r != nil && r.Metrics["msgs_per_sec"] < 100 {
			t.Errorf("%s messages: %.0f/s", st, r.Metrics["msgs_per_sec"])
		}
		if r := find(rep.Results, st, "churn"); r != nil && r.Metrics["cycles"] < 1 {
			t.Errorf("%s churn: no cycle completed", st)
		}
		if r := find(rep.Results, st, "dht"); st == "ws+noise" && r != nil &&
			(r.Metrics["table_entries"] < 50 || r.Metrics["requests_per_sec"] < 100 || r.Metrics["closer_peers_per_reply"] != 20) {
			t.Errorf("dht figures not sane: %v", r.Metrics)
		}
	}
	if len(rep.NoiseCost) == 0 {
		t.Error("no Noise cost ratios")
	}
	// The in-process server is this process: every figure is known, and
	// the capacity summary has both libp2p /ws stacks.
	for _, r := range rep.Results {
		for m, v := range r.Metrics {
			if math.IsNaN(v) {
				t.Errorf("%s/%s %s unknown with a pid and /metrics", r.Stack, r.Scenario, m)
			}
		}
	}
	if len(rep.Capacity.Stacks) != 2 || rep.Method.ServerCPU != "schedstat" {
		t.Errorf("capacity for %d stacks, server CPU from %q", len(rep.Capacity.Stacks), rep.Method.ServerCPU)
	}
	for _, f := range []string{"report.html", "r.csv", "generator-cpu.pprof", "generator-heap.pprof"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s not written", f)
		}
	}
}

// loadgen run against a go-libp2p v0.51.0 host (websocket + noise + yamux
// with an /echo/1.0.0 handler): the generator speaks standard libp2p.
func TestRunAgainstGoLibp2p(t *testing.T) {
	h, err := golibp2p.New(
		golibp2p.Transport(websocket.New),
		golibp2p.Security(noise.ID, noise.New),
		golibp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0/ws"),
		golibp2p.ResourceManager(&network.NullResourceManager{}),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	h.SetStreamHandler(libp2p.ProtoEcho, func(s network.Stream) {
		defer s.Close()
		io.Copy(s, s)
		s.CloseWrite()
	})
	addr := h.Addrs()[0].Encapsulate(ma.StringCast("/p2p/" + h.ID().String()))
	dir := t.TempDir()
	stdout := os.Stdout
	os.Stdout, _ = os.Open(os.DevNull)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- runCmd([]string{"-target", addr.String(), "-stack", "ws+noise", "-scenario", "connect,throughput,messages,churn", "-quick", "-profiles", dir})
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	os.Stdout = stdout
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	b, _ := os.ReadFile(filepath.Join(dir, "report.json"))
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	for _, sc := range []string{"connect", "throughput-1", "throughput-4", "messages", "churn"} {
		r := find(rep.Results, "ws+noise", sc)
		if r == nil || r.Errors != 0 || r.Note != "" {
			t.Fatalf("%s against go-libp2p: %+v", sc, r)
		}
	}
	if r := find(rep.Results, "ws+noise", "connect"); r.Metrics["conn_per_sec"] <= 0 {
		t.Fatalf("connect: %v", r.Metrics)
	}
	if !strings.Contains(rep.Server, "/p2p/") {
		t.Fatalf("report server %q", rep.Server)
	}
}

// Without -server-pid or -server-metrics the server's CPU and memory are
// unknown, not 0; -profiles none skips the profiles but keeps the reports;
// progress goes to stderr when it is not a terminal.
func TestMatrixUnknownServerProfilesNone(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := libp2p.New(libp2p.Config{Engine: engine.Config{Logger: quiet}, InsecurePlaintext: true, Echo: true})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	laddr, err := h.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	t.Chdir(dir)
	stdout, stderr := os.Stdout, os.Stderr
	os.Stdout, _ = os.Create(filepath.Join(dir, "stdout"))
	os.Stderr, _ = os.Create(filepath.Join(dir, "stderr"))
	rf := runFlags{stacks: "ws+noise", scenarios: "connect,hold", quick: true, profiles: "none", plan: defaultPlan}
	err = runMatrix(rf, map[bool]target{false: {addr: laddr}}, serverProbe{}, "", "in-process engine, no probe")
	os.Stdout.Close()
	os.Stderr.Close()
	os.Stdout, os.Stderr = stdout, stderr
	if err != nil {
		t.Fatal(err)
	}
	reports, _ := filepath.Glob(filepath.Join(dir, "profiles", "*", "report.*"))
	if len(reports) != 2 {
		t.Errorf("-profiles none wrote %q, want report.json and report.html", reports)
	}
	profiles, _ := filepath.Glob(filepath.Join(dir, "profiles", "*", "*.pprof"))
	if len(profiles) != 0 {
		t.Errorf("-profiles none wrote profiles %q", profiles)
	}
	rep, err := readReport(filepath.Join(filepath.Dir(reports[0]), "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Method.ServerCPU != "unknown" {
		t.Errorf("server CPU source %q", rep.Method.ServerCPU)
	}
	for _, c := range []struct{ sc, m string }{{"connect", "server_cpu_us_per_conn"}, {"hold", "server_rss_bytes_per_conn"}, {"hold", "server_idle_cpu_pct_per_1k_conns"}} {
		if s, ok := find(rep.Results, "ws+noise", c.sc).get(c.m); !ok || s.Known {
			t.Errorf("%s %s without a probe: %+v (present %v), want unknown", c.sc, c.m, s, ok)
		}
	}
	if s, _ := find(rep.Results, "ws+noise", "connect").get("client_cpu_us_per_conn"); !s.Known || s.Median <= 0 {
		t.Errorf("client CPU per handshake %+v", s)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "stdout"))
	if got := tableRow(t, section(string(md), "## connect"), "server CPU per handshake"); got[0] != "unknown" {
		t.Errorf("server CPU per handshake printed %q", got)
	}
	progress, _ := os.ReadFile(filepath.Join(dir, "stderr"))
	for _, s := range []string{"loadgen: [1/2] run 1/1 ws+noise connect: connections per second", "loadgen: [2/2] run 1/1 ws+noise hold", "ETA", "loadgen: reports:"} {
		if !strings.Contains(string(progress), s) {
			t.Errorf("stderr lacks %q:\n%s", s, progress)
		}
	}
}
