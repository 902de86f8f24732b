package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

// fixture is testdata/report.json (a recorded run with some figures set by
// hand, testdata/README.md) with its summaries computed for plan.
func fixture(t *testing.T, plan planTarget) report {
	t.Helper()
	rep, err := readReport("testdata/report.json")
	if err != nil {
		t.Fatal(err)
	}
	rep.NoiseCost = noiseCost(rep.Results)
	rep.Capacity = computeCapacity(rep.Results, rep.Machine, plan)
	return rep
}

var defaultPlan = planTarget{Peers: 1_000_000, NewPerSec: 500, Mbps: 200, Headroom: 0.7}

func near(t *testing.T, what string, got num, want float64) {
	t.Helper()
	if math.Abs(float64(got)-want) > 1e-9*math.Abs(want) {
		t.Errorf("%s = %v, want %v", what, float64(got), want)
	}
}

func row(t *testing.T, c capacity, stack string) capacityRow {
	t.Helper()
	for _, r := range c.Stacks {
		if r.Stack == stack {
			return r
		}
	}
	t.Fatalf("no capacity row for %s", stack)
	return capacityRow{}
}

// The capacity summary of /ws + Noise, worked by hand from the fixture:
// RSS 4096 B (runs 3072–5120), kernel 0 B of buffers + 3712 B of socket
// objects, 500 µs of server CPU per handshake (400–625), 2.5 ns per byte
// in the dearer throughput run (2.0–3.0), 0.01 % of a core per 1,000 idle
// connections (0–0.02), on 2 cores and 24 GiB used to 70 %.
func TestCapacityArithmetic(t *testing.T) {
	const gib = 1 << 30
	mem := 24.0 * gib * 0.7 // bytes the plan may use on one machine
	cores := 2 * 0.7

	r := row(t, fixture(t, defaultPlan).Capacity, "ws+noise")
	near(t, "RSS per peer", r.RSSPerPeer.Value, 4096)
	near(t, "kernel per peer", r.KernelPerPeer.Value, 3712)
	near(t, "peers per GiB", r.PeersPerGiB.Value, 262144) // 2³⁰ / 4096
	near(t, "peers per GiB, worst run", r.PeersPerGiB.Lo, gib/5120.0)
	near(t, "peers per GiB, best run", r.PeersPerGiB.Hi, gib/3072.0)
	near(t, "handshakes per core-second", r.HandshakesPerCoreSec.Value, 2000) // 10⁶ µs / 500 µs
	near(t, "handshakes per core-second, worst", r.HandshakesPerCoreSec.Lo, 1600)
	near(t, "handshakes per core-second, best", r.HandshakesPerCoreSec.Hi, 2500)
	near(t, "bytes per core-second", r.BytesPerCoreSec.Value, 4e8) // 10⁹ ns / 2.5 ns
	if r.BytesFrom != "throughput-4" {
		t.Errorf("per-byte cost from %s, want the dearer throughput-4", r.BytesFrom)
	}
	near(t, "idle cores per peer", r.IdleCoresPerPeer.Value, 1e-7) // 0.01 % / 1000

	// The default plan: per peer 500/10⁶ new connections per second and
	// 200 Mbit/s / 8 / 10⁶ = 25 B/s.
	near(t, "peers by memory", r.PeersByMemory.Value, mem/(4096+3712))
	near(t, "peers by memory, worst", r.PeersByMemory.Lo, mem/(5120+3712))
	near(t, "peers by memory, best", r.PeersByMemory.Hi, mem/(3072+3712))
	cpuPerPeer := 500e-6*500e-6 + 25*2.5e-9 + 1e-7 // 2.5e-7 + 6.25e-8 + 1e-7 cores
	near(t, "peers by CPU", r.PeersByCPU.Value, cores/cpuPerPeer)
	near(t, "peers by CPU, worst", r.PeersByCPU.Lo, cores/(500e-6*625e-6+25*3e-9+2e-7))
	near(t, "peers by CPU, best", r.PeersByCPU.Hi, cores/(500e-6*400e-6+25*2e-9+0))
	near(t, "peers per machine", r.PeersPerMachine.Value, mem/(4096+3712)) // memory is the smaller
	near(t, "machines", r.Machines.Value, 1)
	// Memory's best case (2.66 M) is above CPU's worst (2.38 M): which
	// runs out first is inside the noise, and the report says so.
	if r.RunsOutFirst != "memory or CPU (within the spread)" {
		t.Errorf("runs out first: %q", r.RunsOutFirst)
	}

	// A light plan: memory clearly runs out first.
	r = row(t, fixture(t, planTarget{Peers: 1_000_000, NewPerSec: 50, Mbps: 20, Headroom: 0.7}).Capacity, "ws+noise")
	if r.RunsOutFirst != "memory" {
		t.Errorf("light plan: runs out first %q, want memory", r.RunsOutFirst)
	}
	// 10 million peers at the same mix: ceil(10⁷ / 2,310,298) machines.
	r = row(t, fixture(t, planTarget{Peers: 10_000_000, NewPerSec: 500, Mbps: 200, Headroom: 0.7}).Capacity, "ws+noise")
	near(t, "machines for 10 M peers", r.Machines.Value, 5)

	// A handshake-heavy plan: 0.05 new connections per peer per second.
	r = row(t, fixture(t, planTarget{Peers: 1_000_000, NewPerSec: 50_000, Mbps: 200, Headroom: 0.7}).Capacity, "ws+noise")
	cpuPerPeer = 0.05*500e-6 + 25*2.5e-9 + 1e-7 // 2.51625e-5 cores
	near(t, "handshake-heavy: peers by CPU", r.PeersByCPU.Value, cores/cpuPerPeer)
	if r.RunsOutFirst != "CPU" {
		t.Errorf("handshake-heavy plan: runs out first %q, want CPU", r.RunsOutFirst)
	}
	near(t, "handshake-heavy: machines", r.Machines.Value, math.Ceil(1e6/(cores/cpuPerPeer))) // 18
	near(t, "handshake-heavy: machines, best", r.Machines.Lo, math.Ceil(1e6/(cores/(0.05*400e-6+25*2e-9))))
	near(t, "handshake-heavy: machines, worst", r.Machines.Hi, math.Ceil(1e6/(cores/(0.05*625e-6+25*3e-9+2e-7))))
	if r.Machines.Value != 18 || r.Machines.Lo != 15 || r.Machines.Hi != 23 {
		t.Errorf("handshake-heavy: %v machines (%v–%v), want 18 (15–23)", r.Machines.Value, r.Machines.Lo, r.Machines.Hi)
	}
}

// A memory cost whose spread reaches zero or below gives no peers-per-GiB
// figure: "not measurable", not a negative count.
func TestCapacityNotMeasurable(t *testing.T) {
	rep := fixture(t, defaultPlan)
	r := find(rep.Results, "ws+noise", "hold")
	r.Spread["server_rss_bytes_per_conn"] = Spread{Min: -2048, Max: 5120, Runs: []float64{4096, -2048, 5120}}
	c := row(t, computeCapacity(rep.Results, rep.Machine, defaultPlan), "ws+noise")
	if !c.PeersPerGiB.Unmeasurable || fmtCount(c.PeersPerGiB) != "not measurable" {
		t.Errorf("peers per GiB from a negative RSS run: %+v %q", c.PeersPerGiB, fmtCount(c.PeersPerGiB))
	}
	if !strings.HasPrefix(c.RunsOutFirst, "CPU (memory not measurable") {
		t.Errorf("runs out first: %q", c.RunsOutFirst)
	}
}

// The noise rule: a ratio whose range (Noise's min over plaintext's max to
// Noise's max over plaintext's min) includes 1 is no measurable difference.
func TestNoiseRule(t *testing.T) {
	rep := fixture(t, defaultPlan)
	get := func(tr, sc, m string) noiseRatio {
		for _, nr := range rep.NoiseCost {
			if nr.Transport == tr && nr.Scenario == sc && nr.Metric == m {
				return nr
			}
		}
		t.Fatalf("no noise ratio for %s %s %s", tr, sc, m)
		return noiseRatio{}
	}
	mem := get("ws", "hold", "server_rss_bytes_per_conn")
	if mem.Measurable || mem.RatioMin != 3072.0/5500 || mem.RatioMax != 5120.0/3500 {
		t.Errorf("memory: %+v, want not measurable, %v–%v", mem, 3072.0/5500, 5120.0/3500)
	}
	if got := noiseFigure(mem); got != "no measurable difference (0.56–1.46×)" {
		t.Errorf("memory ratio printed %q", got)
	}
	cpu := get("ws", "connect", "server_cpu_us_per_conn")
	if !cpu.Measurable || cpu.Ratio != 5 || cpu.RatioMin != 400.0/110 || cpu.RatioMax != 625.0/90 {
		t.Errorf("CPU per handshake: %+v, want measurable 5× (%v–%v)", cpu, 400.0/110, 625.0/90)
	}
	if got := noiseFigure(cpu); got != "5.00× (3.64–6.94)" {
		t.Errorf("CPU ratio printed %q", got)
	}
	// One run has no spread to judge by: the ratio is shown, flagged.
	one := noiseRatio{Ratio: 0.78, RatioMin: 0.78, RatioMax: 0.78, Measurable: true, Runs: 1}
	if got := noiseFigure(one); got != "0.78× (one run: no spread)" {
		t.Errorf("single-run ratio printed %q", got)
	}
	var md bytes.Buffer
	writeMarkdown(&md, rep)
	if !strings.Contains(md.String(), "| /ws | hold | server RSS per connection | 4.00 KiB (3.00–5.00) | 4.39 KiB (3.42–5.37) | no measurable difference (0.56–1.46×) |") {
		t.Errorf("Markdown lacks the memory row of the Noise table:\n%s", section(md.String(), "## What Noise costs"))
	}
}

// section is the text of a Markdown report from heading on to the next "## ".
func section(md, heading string) string {
	i := strings.Index(md, heading)
	if i < 0 {
		return ""
	}
	rest := md[i+len(heading):]
	if j := strings.Index(rest, "\n## "); j >= 0 {
		rest = rest[:j]
	}
	return heading + rest
}

// tableRow is the cells of the Markdown table row whose first cell is label.
func tableRow(t *testing.T, sec, label string) []string {
	t.Helper()
	for _, line := range strings.Split(sec, "\n") {
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if len(cells) > 1 && cells[0] == label {
			return cells[1:]
		}
	}
	t.Fatalf("no row %q in:\n%s", label, sec)
	return nil
}

func TestMarkdownReport(t *testing.T) {
	rep := fixture(t, defaultPlan)
	var b bytes.Buffer
	if err := writeMarkdown(&b, rep); err != nil {
		t.Fatal(err)
	}
	md := b.String()

	// The capacity summary comes first, then the scenarios in a fixed order.
	var heads []string
	for _, line := range strings.Split(md, "\n") {
		if h, ok := strings.CutPrefix(line, "## "); ok {
			heads = append(heads, strings.Split(h, ":")[0])
		}
	}
	want := []string{"Capacity", "connect", "hold", "throughput-1", "throughput-4", "messages", "churn", "What Noise costs on top of the transport"}
	if strings.Join(heads, ",") != strings.Join(want, ",") {
		t.Errorf("sections %q, want %q", heads, want)
	}
	for _, s := range []string{"AMD EPYC", "2 cores", "24.0 GiB", "Linux 6.18", "go1.26.8", "swarmgate 7931c2a (fixture)", "median of 3 runs (min–max)",
		"/proc/PID/schedstat", "2026-12-04 18:29 UTC", "other processes used 4.20 % of the machine's CPU during the run."} {
		if !strings.Contains(md[:strings.Index(md, "## ")], s) {
			t.Errorf("header lacks %q", s)
		}
	}
	// A run that shared the machine with other work says its figures are
	// pessimistic.
	busy := rep
	busy.Method.OtherLoad = 35
	if l := methodLine(busy); !strings.Contains(l, "other processes used 35.0 % of the machine's CPU during the run (a busy machine") {
		t.Errorf("busy machine not flagged: %q", l)
	}

	capSec := section(md, "## Capacity")
	if got := tableRow(t, capSec, "/ws + Noise"); strings.Join(got, " | ") != "4.00 KiB (3.00–5.00) | 262,000 (210,000–350,000) | 3.62 KiB | 2,000 (1,600–2,500) | 400 MB/s (333–500)" {
		t.Errorf("capacity row: %q", got)
	}
	if !strings.Contains(capSec, "Plan: 1,000,000 peers, 500 new connections/s, 200 Mbit/s of payload, each machine used to 70 % of its cores and memory.") {
		t.Errorf("capacity section lacks the plan:\n%s", capSec)
	}
	plan := strings.SplitN(capSec, "Plan:", 2)[1]
	if got := tableRow(t, plan, "/ws + Noise"); strings.Join(got, " | ") != "2,310,000 (2,040,000–2,660,000) | 2,310,000 (2,040,000–2,660,000) | 3,390,000 (2,380,000–5,600,000) | memory or CPU (within the spread) | 1" {
		t.Errorf("plan row: %q", got)
	}

	// Fixed metric order within a scenario, labels with units in the cells.
	conn := section(md, "## connect")
	order := []string{"connections per second", "connect latency p50", "connect latency p90", "connect latency p99", "connect latency p99.9",
		"TCP connect p50", "WebSocket upgrade (incl. TLS) p50", "security negotiation p50", "Noise / plaintext handshake p50", "yamux negotiation p50",
		"TCP connect p99", "WebSocket upgrade (incl. TLS) p99", "security negotiation p99", "Noise / plaintext handshake p99", "yamux negotiation p99",
		"server CPU per handshake", "client CPU per handshake", "errors (all runs)"}
	last := -1
	for _, label := range order {
		i := strings.Index(conn, "\n| "+label+" |")
		if i <= last {
			t.Errorf("connect: %q out of order (at %d, after %d)", label, i, last)
		}
		last = i
	}
	if strings.Contains(conn, "| connections |") {
		t.Error("connect table charts a constant (connections): it belongs in the section line")
	}
	if !strings.Contains(conn, "40 connections, 8 in flight") {
		t.Errorf("connect section does not say its size:\n%s", conn)
	}
	stacks := []string{"/ws + Noise", "/ws + plaintext", "/tls/ws + Noise", "/tls/ws + plaintext", "raw /ws", "raw /tls/ws"}
	if got := tableRow(t, conn, "metric"); strings.Join(got, ",") != strings.Join(stacks, ",") {
		t.Errorf("stack columns %q", got)
	}
	if got := tableRow(t, conn, "server CPU per handshake")[0]; got != "500 µs (400–625)" {
		t.Errorf("server CPU per handshake printed %q", got)
	}
	// Not applicable is "–": no libp2p phases on raw WebSocket, no yamux
	// phase with Noise (negotiated inside the handshake).
	tcp := tableRow(t, conn, "TCP connect p50")
	if tcp[4] != na || tcp[5] != na || !strings.HasSuffix(strings.Fields(tcp[0])[1], "µs") {
		t.Errorf("TCP connect p50 row: %q", tcp)
	}
	mux := tableRow(t, conn, "yamux negotiation p50")
	if mux[0] != na || mux[2] != na || mux[1] == na || mux[3] == na {
		t.Errorf("yamux phase row: %q", mux)
	}

	hold := section(md, "## hold")
	if got := tableRow(t, hold, "server goroutines per connection")[3]; got != "unknown" {
		t.Errorf("an unmeasured figure printed %q, want unknown", got)
	}
	if got := tableRow(t, hold, "server RSS per connection")[0]; got != "4.00 KiB (3.00–5.00)" {
		t.Errorf("RSS printed %q", got)
	}
	for _, cell := range tableRow(t, section(md, "## throughput-1"), "echo throughput") {
		if !strings.HasSuffix(strings.Fields(cell)[1], "MB/s") {
			t.Errorf("throughput cell %q is not in MB/s", cell)
		}
	}
	for _, cell := range tableRow(t, section(md, "## messages"), "round trip p50") {
		if f := strings.Fields(cell); f[1] != "µs" && f[1] != "ms" {
			t.Errorf("round trip cell %q has no time unit", cell)
		}
	}
	// No raw integers, NaN or negative zero anywhere.
	for _, bad := range []string{"NaN", "-0.00", "e+0", "Inf"} {
		if strings.Contains(md, bad) {
			t.Errorf("report contains %q", bad)
		}
	}
}

func TestCSVReport(t *testing.T) {
	rep := fixture(t, defaultPlan)
	var b bytes.Buffer
	if err := writeCSV(&b, rep); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rows[0], ",") != "stack,scenario,metric,unit,median,min,max,runs" {
		t.Fatalf("header %q", rows[0])
	}
	lookup := func(stack, sc, metric string) []string {
		for _, r := range rows {
			if r[0] == stack && r[1] == sc && r[2] == metric {
				return r
			}
		}
		t.Fatalf("no CSV row %s %s %s", stack, sc, metric)
		return nil
	}
	if r := lookup("ws", "connect", "phase_tcp_p50_ms"); r[4] != na || r[5] != na {
		t.Errorf("not applicable in CSV: %q", r)
	}
	if r := lookup("wss+plaintext", "hold", "server_goroutines_per_conn"); r[4] != "unknown" {
		t.Errorf("unknown in CSV: %q", r)
	}
	if r := lookup("ws+noise", "connect", "server_cpu_us_per_conn"); strings.Join(r[3:], ",") != "µs,500,400,625,3" {
		t.Errorf("CSV figure: %q", r)
	}
	if rows[1][1] != "connect" || rows[len(rows)-1][1] != "churn" {
		t.Errorf("CSV rows not in scenario order: first %q, last %q", rows[1], rows[len(rows)-1])
	}
}

// The JSON round-trips, with unknown as null and the summaries included.
func TestJSONRoundTrip(t *testing.T) {
	rep := fixture(t, defaultPlan)
	var b bytes.Buffer
	if err := writeJSON(&b, rep); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"server_goroutines_per_conn": null`) {
		t.Error("unknown metric is not null in the JSON")
	}
	var back report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if v := find(back.Results, "wss+plaintext", "hold").Metrics["server_goroutines_per_conn"]; !math.IsNaN(v) {
		t.Errorf("null read back as %v", v)
	}
	if r := row(t, back.Capacity, "ws+noise"); r.PeersPerGiB.Value != 262144 {
		t.Errorf("capacity read back: %+v", r.PeersPerGiB)
	}
	// A schema-1 report (plain numbers, no spread) still renders.
	old := `{"schema":1,"machine":{"cpus":2},"results":[{"stack":"ws+noise","scenario":"hold","metrics":{"server_rss_bytes_per_conn":4044.8},"errors":0}]}`
	var r1 report
	if err := json.Unmarshal([]byte(old), &r1); err != nil {
		t.Fatal(err)
	}
	if s, _ := r1.Results[0].get("server_rss_bytes_per_conn"); !s.Known || s.Median != 4044.8 || s.N != 1 {
		t.Errorf("schema 1 figure: %+v", s)
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		u    unit
		s    stat
		want string
	}{
		{uMs, stat{Median: 4.111, Min: 3.98, Max: 4.25, N: 3, Known: true}, "4.11 ms (3.98–4.25)"},
		{uMs, stat{Median: 0.423, Min: 0.4, Max: 0.5, N: 3, Known: true}, "423 µs (400–500)"},
		{uUs, stat{Median: 2337, N: 1, Known: true}, "2.34 ms"},
		{uBytes, stat{Median: 4044.8, Min: 3900, Max: 4200, N: 3, Known: true}, "3.95 KiB (3.81–4.10)"},
		{uBytes, stat{Median: 24 << 30, N: 1, Known: true}, "24.0 GiB"},
		{uBytesPerSec, stat{Median: 1081833015, N: 1, Known: true}, "1.08 GB/s"},
		{uBytesPerSec, stat{Median: 314086360, N: 1, Known: true}, "314 MB/s"},
		{uRate, stat{Median: 11674.11, N: 1, Known: true}, "11,674/s"},
		{uNsPerByte, stat{Median: 1.7818, N: 1, Known: true}, "1.78 ns/B"},
		{uCount, stat{Median: -0.0005, Min: -0.001, Max: 0, N: 3, Known: true}, "0.00 (0.00–0.00)"},
		{uPct, stat{Median: 0.5, N: 1, Known: true}, "0.500 %"},
		{uUs, stat{Median: unknown}, "unknown"},
	} {
		if got := fmtStat(c.u, c.s); got != c.want {
			t.Errorf("fmtStat(%v, %+v) = %q, want %q", c.u, c.s, got, c.want)
		}
	}
}

func TestAggregate(t *testing.T) {
	runs := []Result{
		{Stack: "ws", Scenario: "hold", Metrics: Metrics{"a": 3, "b": unknown, "c": unknown}, Errors: 1, Note: "x"},
		{Stack: "ws", Scenario: "hold", Metrics: Metrics{"a": 1, "b": 5, "c": unknown}, Note: "x"},
		{Stack: "ws", Scenario: "hold", Metrics: Metrics{"a": 2, "b": 7, "c": unknown}, Errors: 2, Note: "y"},
	}
	r := aggregate(runs)
	if r.Runs != 3 || r.Errors != 3 || r.Note != "x; y" {
		t.Errorf("aggregate: runs %d, errors %d, note %q", r.Runs, r.Errors, r.Note)
	}
	if a, _ := r.get("a"); a.Median != 2 || a.Min != 1 || a.Max != 3 || a.N != 3 {
		t.Errorf("a: %+v", a)
	}
	// A metric unknown in one run: the median of the runs that measured it.
	if b, _ := r.get("b"); b.Median != 6 || b.N != 2 {
		t.Errorf("b: %+v", b)
	}
	if c, ok := r.get("c"); !ok || c.Known {
		t.Errorf("c, unknown in every run: %+v %v", c, ok)
	}
}

// Piped, progress is one line per step with N/M and an ETA.
func TestProgressLines(t *testing.T) {
	var out bytes.Buffer
	steps := []step{{1, allStacks[0], "connect"}, {1, allStacks[0], "hold"}, {2, allStacks[0], "connect"}, {2, allStacks[0], "hold"}}
	p := newProgress(&out, false, steps, 2)
	for i := range steps {
		p.begin(i)
		time.Sleep(5 * time.Millisecond)
		p.end(i, "x 1/s")
	}
	p.finish()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines:\n%s", len(lines), out.String())
	}
	if !strings.HasPrefix(lines[0], "loadgen: [1/4] run 1/2 ws+noise connect: x 1/s (") || !strings.Contains(lines[0], "ETA 0:00") {
		t.Errorf("first line %q", lines[0])
	}
	if !strings.HasPrefix(lines[3], "loadgen: [4/4] run 2/2 ws+noise hold") || !strings.HasPrefix(lines[4], "loadgen: 4 steps (2 runs) in") {
		t.Errorf("last lines %q", lines[3:])
	}
}

// On a terminal, one live line: step N/M, what runs, the ETA.
func TestProgressLive(t *testing.T) {
	var out bytes.Buffer
	steps := []step{{1, allStacks[0], "connect"}, {1, allStacks[0], "hold"}}
	p := newProgress(&out, true, steps, 1)
	p.begin(0)
	p.end(0, "")
	p.begin(1)
	p.finish()
	s := out.String()
	for _, want := range []string{"\r\033[K[1/2] run 1/1 ws+noise connect …", "\r\033[K[2/2] run 1/1 ws+noise hold …", "ETA 0:00", "loadgen: 1 steps (1 runs) in"} {
		if !strings.Contains(s, want) {
			t.Errorf("live progress lacks %q: %q", want, s)
		}
	}
	if strings.Count(s, "\n") != 1 {
		t.Errorf("live progress printed %d lines, want only the closing one: %q", strings.Count(s, "\n"), s)
	}
}
