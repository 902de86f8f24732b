package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/libp2p"
	"github.com/swarmgate/swarmgate/libp2p/kad"
)

// inProcessServer is the default run's child server in this process: echo,
// the raw /echo path, per-peer limits lifted, the DHT role handing out
// loopback addresses, and /metrics.
func inProcessServer(t *testing.T) (ma.Multiaddr, string) {
	t.Helper()
	reg := prometheus.NewRegistry()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	lim := admission.Limits{MaxConnsPerPeer: -1, MaxPeerStreams: -1, MaxProtocolStreams: -1}
	e := engine.New(engine.Config{Logger: quiet, Registerer: reg, Limits: lim})
	t.Cleanup(func() { e.Close() })
	h, err := libp2p.NewOn(e, libp2p.Config{InsecurePlaintext: true, Echo: true})
	if err != nil {
		t.Fatal(err)
	}
	role, err := kad.Attach(h, kad.Config{AddrFilter: kad.AddrsAll, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { role.Close() })
	l, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"), engine.Routes{Paths: map[string]engine.StageFunc{"/echo": engine.Echo}, Fallback: h.Stage})
	if err != nil {
		t.Fatal(err)
	}
	return l.Addr(), metricsServer(t, reg)
}

// capture sends stdout and stderr to files in dir while f runs (loadgen
// prints its Markdown and progress there) and returns what they got.
func capture(t *testing.T, dir string, f func() error) (stdout, stderr string, err error) {
	t.Helper()
	o, e := os.Stdout, os.Stderr
	of, _ := os.Create(filepath.Join(dir, "stdout"))
	ef, _ := os.Create(filepath.Join(dir, "stderr"))
	os.Stdout, os.Stderr = of, ef
	err = f()
	os.Stdout, os.Stderr = o, e
	of.Close()
	ef.Close()
	so, _ := os.ReadFile(of.Name())
	se, _ := os.ReadFile(ef.Name())
	return string(so), string(se), err
}

// relNear: equal to within float rounding.
func relNear(a, b float64) bool { return math.Abs(a-b) <= 1e-9*max(math.Abs(a), math.Abs(b)) }

// Two generators run -quick at the same time against one in-process server
// (as a Job's pods do against a node), each writing its JSON report; loadgen
// merge combines them: every count and rate is the sum of the inputs', every
// percentile is the pooled histograms' (checked against a direct merge of
// the inputs' decoded histograms), server figures both inputs measured are
// unknown, client CPU is the weighted mean, and each generator has its row.
func TestMergeTwoGenerators(t *testing.T) {
	addr, murl := inProcessServer(t)
	dir := t.TempDir()
	t.Chdir(dir)
	inputs := []string{filepath.Join(dir, "gen-0.json"), filepath.Join(dir, "gen-1.json")}
	var errs [2]error
	_, _, _ = capture(t, dir, func() error {
		var wg sync.WaitGroup
		for i, path := range inputs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rf := runFlags{stacks: "ws+noise,ws", scenarios: "connect,hold,messages,churn,dht", quick: true, profiles: "none",
					jsonPath: path, htmlOut: filepath.Join(dir, filepath.Base(path)+".html"), plan: defaultPlan}
				errs[i] = runMatrix(rf, map[bool]target{false: {addr: addr, echoPath: "/echo"}}, serverProbe{pid: os.Getpid(), metricsURL: murl}, murl, "in-process engine")
			}()
		}
		wg.Wait()
		return nil
	})
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	a, err := readReport(inputs[0])
	if err != nil {
		t.Fatal(err)
	}
	b, err := readReport(inputs[1])
	if err != nil {
		t.Fatal(err)
	}
	if a.Schema != 3 || find(a.Results, "ws+noise", "connect").Hists["latency_us"] == nil {
		t.Fatalf("input schema %d without histograms", a.Schema)
	}

	out := filepath.Join(dir, "merged.json")
	md, _, err := capture(t, dir, func() error {
		return mergeCmd([]string{"-json", out, "-html", filepath.Join(dir, "merged.html"), inputs[0], inputs[1]})
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := readReport(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Results) != len(a.Results) {
		t.Fatalf("merged %d results from %d and %d", len(m.Results), len(a.Results), len(b.Results))
	}
	checked := map[mergeRule]int{}
	for _, mr := range m.Results {
		ra, rb := find(a.Results, mr.Stack, mr.Scenario), find(b.Results, mr.Stack, mr.Scenario)
		what := mr.Stack + "/" + mr.Scenario
		if mr.Errors != ra.Errors+rb.Errors {
			t.Errorf("%s: %d errors, inputs %d + %d", what, mr.Errors, ra.Errors, rb.Errors)
		}
		for k, v := range mr.Metrics {
			va, vb := ra.Metrics[k], rb.Metrics[k]
			switch rule := ruleOf(k); rule {
			case ruleSum:
				if !relNear(v, va+vb) {
					t.Errorf("%s %s = %v, inputs %v + %v", what, k, v, va, vb)
				}
				checked[rule]++
			case rulePercentile:
				base, q, unit, _ := parsePctMetric(k)
				direct := snapshot(ra.Hists[histOf(base)])
				direct.Merge(rb.Hists[histOf(base)])
				if want := pctValue(direct, q, unit); v != want {
					t.Errorf("%s %s = %v, a direct merge of the inputs' histograms gives %v", what, k, v, want)
				}
				if n := mr.Hists[histOf(base)].TotalCount(); n != ra.Hists[histOf(base)].TotalCount()+rb.Hists[histOf(base)].TotalCount() {
					t.Errorf("%s %s: the merged histogram holds %d values", what, base, n)
				}
				checked[rule]++
			case ruleServer:
				if finite(va) && finite(vb) {
					if finite(v) {
						t.Errorf("%s %s = %v, with both generators measuring the server", what, k, v)
					}
					if !strings.Contains(mr.Note, "2 generators loaded the server at once") {
						t.Errorf("%s: unknown server figure without its note: %q", what, mr.Note)
					}
					checked[rule]++
				}
			case ruleWeighted:
				wa, wb := workOf(ra), workOf(rb)
				if want := (va*wa + vb*wb) / (wa + wb); !relNear(v, want) {
					t.Errorf("%s %s = %v, weighted mean %v", what, k, v, want)
				}
				checked[rule]++
			case ruleMax:
				if v != max(va, vb) {
					t.Errorf("%s %s = %v, inputs %v and %v", what, k, v, va, vb)
				}
				checked[rule]++
			default:
				t.Errorf("%s %s: no merge rule", what, k)
			}
		}
	}
	for _, rule := range []mergeRule{ruleSum, rulePercentile, ruleServer, ruleWeighted, ruleMax} {
		if checked[rule] == 0 {
			t.Errorf("no metric checked under rule %d", rule)
		}
	}
	// Each generator's row is its own report's figures.
	if len(m.Generators) != 2 || m.Generators[0].Name != inputs[0] || m.Generators[1].Name != inputs[1] {
		t.Fatalf("generator rows %+v", m.Generators)
	}
	for i, in := range []report{a, b} {
		g := m.Generators[i]
		if !g.Started.Equal(in.Started) || g.Server != in.Server {
			t.Errorf("row %d: started %v, server %q", i, g.Started, g.Server)
		}
		for _, r := range in.Results {
			gr := g.find(r.Stack, r.Scenario)
			if gr == nil || gr.Errors != r.Errors {
				t.Fatalf("row %d lacks %s/%s", i, r.Stack, r.Scenario)
			}
			for k, v := range gr.Metrics {
				if v != r.Metrics[k] && !(math.IsNaN(v) && math.IsNaN(r.Metrics[k])) {
					t.Errorf("row %d %s/%s %s = %v, its report %v", i, r.Stack, r.Scenario, k, v, r.Metrics[k])
				}
			}
			if _, ok := gr.Metrics["conn_per_sec"]; r.Scenario == "connect" && !ok {
				t.Errorf("row %d: no connections per second", i)
			}
		}
	}
	if len(m.Notes) != 1 || !strings.Contains(m.Notes[0], "unknown where several generators measured it") {
		t.Errorf("notes on generators that ran at once: %q, want only why server figures are unknown", m.Notes)
	}
	for _, s := range []string{"Merged from 2 generators that ran at once", "## Generators", "By generator, connections per second:",
		"By generator, messages per second:", "By generator, connections:", "By generator, FIND_NODE requests per second:", "| " + inputs[1] + " |"} {
		if !strings.Contains(md, s) {
			t.Errorf("the merged Markdown lacks %q", s)
		}
	}
	if got := tableRow(t, section(md, "## connect"), inputs[0]); len(got) != 2 || !strings.HasSuffix(got[0], "/s") {
		t.Errorf("generator row in the connect section: %q", got)
	}
	page, _ := os.ReadFile(filepath.Join(dir, "merged.html"))
	if !strings.Contains(string(page), "<section id=generators>") || !strings.Contains(string(page), filepath.Base(inputs[0])) {
		t.Error("the merged HTML has no generators section")
	}
	// A merged report is not an input.
	if err := mergeCmd([]string{out, inputs[0]}); err == nil || !strings.Contains(err.Error(), "itself a merged report") {
		t.Errorf("merging a merged report: %v", err)
	}

	// Only one input measured the server: its figures are taken.
	for i := range b.Results {
		for k := range b.Results[i].Metrics {
			if ruleOf(k) == ruleServer {
				b.Results[i].Metrics[k] = unknown
				delete(b.Results[i].Spread, k)
			}
		}
	}
	one, err := mergeReports([]mergeInput{{inputs[0], a}, {"alone.json", b}})
	if err != nil {
		t.Fatal(err)
	}
	r, ra := find(one.Results, "ws+noise", "connect"), find(a.Results, "ws+noise", "connect")
	if v := r.Metrics["server_cpu_us_per_conn"]; v != ra.Metrics["server_cpu_us_per_conn"] || !strings.Contains(r.Note, "server figures from "+inputs[0]+" alone") {
		t.Errorf("server CPU per handshake %v (input %v), note %q", v, ra.Metrics["server_cpu_us_per_conn"], r.Note)
	}
}

// The percentiles of a merge are those of one histogram of both inputs'
// raw values, to HDR precision (within a bucket of the exact value), and
// equal to a direct merge of the two histograms.
func TestMergePercentilesFromRawValues(t *testing.T) {
	ha, va := sampleHist(21, 30_000, 900)
	hb, vb := sampleHist(22, 7_000, 4000) // a slower, smaller generator
	raw := slices.Concat(va, vb)
	slices.Sort(raw)
	qs := []float64{50, 90, 99, 99.9}
	in := func(h *hdrhistogram.Histogram, name string) mergeInput {
		r := Result{Stack: "ws+noise", Scenario: "messages", Runs: 1, Metrics: Metrics{"msgs_per_sec": float64(h.TotalCount())}}
		r.setPercentiles("rtt", h, pctUs, qs...)
		return mergeInput{name: name, rep: report{Schema: reportSchema, Results: []Result{r}}}
	}
	m, err := mergeReports([]mergeInput{in(ha, "a"), in(hb, "b")})
	if err != nil {
		t.Fatal(err)
	}
	r := m.Results[0]
	direct := snapshot(ha)
	direct.Merge(hb)
	for _, q := range qs {
		got := r.Metrics[pctMetric("rtt", q, pctUs)]
		// HdrHistogram's rank: the value at count round(q% of n).
		exact := raw[int(q/100*float64(len(raw))+0.5)-1]
		if !direct.ValuesAreEquivalent(int64(got), exact) {
			t.Errorf("p%v = %v µs, the raw values' %d µs is in another bucket", q, got, exact)
		}
		if want := float64(direct.ValueAtQuantile(q)); got != want {
			t.Errorf("p%v = %v, a direct merge gives %v", q, got, want)
		}
		if math.Abs(got-float64(exact)) > 1e-3*float64(exact)+1 {
			t.Errorf("p%v = %v, exact %d: beyond three significant digits", q, got, exact)
		}
	}
	if r.Metrics["msgs_per_sec"] != 37_000 {
		t.Errorf("messages per second %v", r.Metrics["msgs_per_sec"])
	}
}

// The rules on hand-made results: hold sums its connections and keeps no
// server figure two generators measured; dht takes the largest table; a
// figure with no rule and a percentile without histograms are unknown
// with a note; a scenario one generator did not run says so; runs that did
// not overlap are noted.
func TestMergeRules(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 18, 0, 0, 0, time.UTC)
	gen := func(name string, start time.Time, results ...Result) mergeInput {
		return mergeInput{name: name, rep: report{Schema: reportSchema, Started: start, Seconds: 60, Server: "/dns4/node-0/tcp/4001/ws", Results: results}}
	}
	hold := func(conns, rss float64) Result {
		return Result{Stack: "ws+noise", Scenario: "hold", Runs: 3, Metrics: Metrics{"conns": conns, "server_rss_bytes_per_conn": rss, "server_goroutines_per_conn": unknown},
			Spread: map[string]Spread{"conns": {Min: conns - 1, Max: conns, Runs: []float64{conns - 1, conns, conns}}}}
	}
	dht := func(entries, reqs, closer float64) Result {
		return Result{Stack: "ws+noise", Scenario: "dht", Runs: 1, Metrics: Metrics{"table_entries": entries, "requests": reqs, "requests_per_sec": reqs / 2,
			"closer_peers_per_reply": closer, "latency_p50_us": 100, "mystery_figure": 1}}
	}
	m, err := mergeReports([]mergeInput{
		gen("a", t0, hold(1000, 4096), dht(300, 1000, 20)),
		gen("b", t0.Add(10*time.Second), hold(2000, 5000), dht(450, 3000, 16)),
		gen("c", t0.Add(5*time.Second), hold(500, unknown)),
	})
	if err != nil {
		t.Fatal(err)
	}
	h := find(m.Results, "ws+noise", "hold")
	if s, _ := h.get("conns"); s.Median != 3500 || s.Min != 3497 || s.Max != 3500 || s.N != 3 {
		t.Errorf("hold connections %+v, want 3500 (3497–3500) over 3 runs", s)
	}
	if s, _ := h.get("server_rss_bytes_per_conn"); s.Known || !strings.Contains(h.Note, "3 generators loaded the server at once") {
		t.Errorf("RSS per connection %+v with two inputs measuring it; note %q", s, h.Note)
	}
	if s, ok := h.get("server_goroutines_per_conn"); !ok || s.Known {
		t.Errorf("goroutines per connection, unknown in every input: %+v", s)
	}
	d := find(m.Results, "ws+noise", "dht")
	if d.Metrics["table_entries"] != 450 || d.Metrics["requests_per_sec"] != 2000 || d.Metrics["closer_peers_per_reply"] != 17 {
		t.Errorf("dht: %v", d.Metrics)
	}
	for _, k := range []string{"latency_p50_us", "mystery_figure"} {
		if s, ok := d.get(k); !ok || s.Known {
			t.Errorf("dht %s: %+v, want unknown", k, s)
		}
	}
	for _, n := range []string{"ran on 2 of the 3 generators", "no rule for mystery_figure", "histograms (a report before schema 3?): latency_p50_us"} {
		if !strings.Contains(d.Note, n) {
			t.Errorf("dht note %q lacks %q", d.Note, n)
		}
	}
	if len(m.Notes) != 1 || m.Seconds != 70 || !m.Started.Equal(t0) || m.Server != "/dns4/node-0/tcp/4001/ws" {
		t.Errorf("header: notes %q, %v s from %v, server %q", m.Notes, m.Seconds, m.Started, m.Server)
	}

	late, err := mergeReports([]mergeInput{gen("a", t0, hold(1, 1)), gen("b", t0.Add(2*time.Minute), hold(1, 1))})
	if err != nil {
		t.Fatal(err)
	}
	if len(late.Notes) != 2 || !strings.Contains(late.Notes[0], "b started 1:00 after a ended") {
		t.Errorf("runs one after the other: %q", late.Notes)
	}
	if _, err := mergeReports([]mergeInput{gen("a", t0)}); err == nil {
		t.Error("an input without results merged")
	}
}

// kubectl logs of a generator pod: progress on stderr, then the report on
// stdout, perhaps with a stderr line the runtime interleaved.
func TestReportInLog(t *testing.T) {
	rep := fixture(t, defaultPlan)
	var doc strings.Builder
	writeJSON(&doc, rep)
	lines := strings.Split(doc.String(), "\n")
	log := "loadgen: [1/2] run 1/1 ws+noise connect: connections per second 812/s (0:01, ETA 0:01)\n" +
		strings.Join(lines[:20], "\n") + "\nloadgen: 2 steps (1 runs) in 0:02\n" + strings.Join(lines[20:], "\n")
	dir := t.TempDir()
	for name, content := range map[string]string{"plain.json": doc.String(), "log.json": log, "crlf.json": strings.ReplaceAll(log, "\n", "\r\n")} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o644)
		got, err := readReport(p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(got.Results) != len(rep.Results) || got.Server != rep.Server {
			t.Errorf("%s: %d results, server %q", name, len(got.Results), got.Server)
		}
	}
	for content, want := range map[string]string{
		"loadgen: [1/2] run 1/1 ws+noise connect …\nloadgen: dial: connection refused\n": `no JSON report in it (its last line: "loadgen: dial: connection refused")`,
		strings.Join(lines[:30], "\n"): "cut short",
	} {
		p := filepath.Join(dir, "bad.json")
		os.WriteFile(p, []byte(content), 0o644)
		if _, err := readReport(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v, want %q", err, want)
		}
	}
}

// loadgen run -json - prints the JSON report alone on stdout, progress on
// stderr, and writes no file (a generator pod's root is read-only); its
// log reads back as a report.
func TestRunJSONStdout(t *testing.T) {
	addr, _ := inProcessServer(t)
	dir := t.TempDir()
	t.Chdir(dir)
	stdout, stderr, err := capture(t, dir, func() error {
		return runCmd([]string{"-target", addr.String(), "-stack", "ws+noise", "-scenario", "connect", "-quick", "-profiles", "none", "-json", "-"})
	})
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil || dec.More() {
		t.Fatalf("stdout is not one JSON report (%v):\n%s", err, stdout)
	}
	if r := find(rep.Results, "ws+noise", "connect"); r == nil || r.Hists["latency_us"].TotalCount() != int64(r.Metrics["conns"]) {
		t.Errorf("connect result %+v", r)
	}
	if !strings.Contains(stderr, "loadgen: [1/1] run 1/1 ws+noise connect") || strings.Contains(stderr, "## connect") {
		t.Errorf("stderr:\n%s", stderr)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != "stdout" && e.Name() != "stderr" {
			t.Errorf("-json - wrote %s", e.Name())
		}
	}
	log := filepath.Join(dir, "gen-0.json")
	os.WriteFile(log, []byte(stderr+stdout), 0o644)
	if got, err := readReport(log); err != nil || len(got.Results) != 1 {
		t.Errorf("the pod's log as a report: %v", err)
	}
}
