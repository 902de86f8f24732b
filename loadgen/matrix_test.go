package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
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
	"github.com/swarmgate/swarmgate/libp2p"

	"github.com/swarmgate/swarmgate/admission"
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
	// loadgen is one peer identity for every connection: per-peer limits
	// lifted, as for its child server.
	lim := admission.Limits{MaxConnsPerPeer: -1, MaxPeerStreams: -1, MaxProtocolStreams: -1}
	e := engine.New(engine.Config{Logger: quiet, Registerer: reg, Limits: lim})
	defer e.Close()
	h, err := libp2p.NewOn(e, libp2p.Config{InsecurePlaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	h.Handle(libp2p.ProtoEcho, libp2p.EchoStream)
	l, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"), engine.Routes{Paths: map[string]engine.StageFunc{"/echo": engine.Echo}, Fallback: h.Stage})
	if err != nil {
		t.Fatal(err)
	}
	murl := metricsServer(t, reg)
	dir := t.TempDir()
	rf := runFlags{stacks: "ws+noise,ws+plaintext,ws", scenarios: "all", quick: true, profiles: dir, csvPath: filepath.Join(dir, "r.csv")}
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
		"connect":      {"conn_per_sec", "latency_p50_ms", "latency_p99_ms", "server_cpu_us_per_conn", "client_cpu_us_per_conn"},
		"hold":         {"conns", "server_rss_bytes_per_conn", "server_goroutines_per_conn", "server_idle_cpu_pct"},
		"throughput-1": {"bytes_per_sec", "server_cpu_ns_per_byte", "client_cpu_ns_per_byte"},
		"throughput-4": {"bytes_per_sec"},
		"messages":     {"msgs_per_sec", "rtt_p50_us", "rtt_p99_us"},
		"churn":        {"cycles", "cycles_per_sec"},
	}
	for _, st := range []string{"ws+noise", "ws+plaintext", "ws"} {
		for sc, metrics := range want {
			r := find(rep.Results, st, sc)
			if r == nil {
				t.Errorf("%s/%s missing from the report", st, sc)
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
	}
	if len(rep.NoiseCost) == 0 {
		t.Error("no Noise cost ratios")
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
