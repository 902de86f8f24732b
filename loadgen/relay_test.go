package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/server"
	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/libp2p"
	"github.com/swarmgate/swarmgate/libp2p/relay"
	"github.com/swarmgate/swarmgate/mux"
)

// relayServer is an in-process server for the relay scenario: a host on
// loopback /ws, optionally with a relay (its limits at their defaults) and
// an echo handler of the test's choosing, and its /metrics.
func relayServer(t *testing.T, withRelay bool, echo libp2p.StreamFunc) (target, serverProbe) {
	t.Helper()
	reg := prometheus.NewRegistry()
	e := engine.New(engine.Config{Logger: testutil.Quiet, Registerer: reg})
	t.Cleanup(func() { e.Close() })
	h, err := libp2p.NewOn(e, libp2p.Config{InsecurePlaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	if echo != nil {
		h.Handle(libp2p.ProtoEcho, echo)
	}
	if withRelay {
		if _, err := relay.New(h, relay.Config{Registerer: reg}); err != nil {
			t.Fatal(err)
		}
	}
	l, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"), engine.Routes{Fallback: h.Stage})
	if err != nil {
		t.Fatal(err)
	}
	murl := metricsServer(t, reg)
	return target{addr: l.Addr()}, serverProbe{pid: os.Getpid(), metricsURL: murl}
}

// runRelay runs `-scenario relay` with rf's stacks and sizes against tg and
// returns the report and its Markdown and HTML.
func runRelay(t *testing.T, tg target, probe serverProbe, rf runFlags) (report, string, string) {
	t.Helper()
	dir := t.TempDir()
	rf.scenarios, rf.quick, rf.profiles, rf.plan = "relay", true, dir, defaultPlan
	md := filepath.Join(dir, "report.md")
	stdout := os.Stdout
	os.Stdout, _ = os.Create(md)
	err := runMatrix(rf, map[bool]target{false: tg}, probe, probe.metricsURL, "in-process relay")
	os.Stdout.Close()
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
	mdb, _ := os.ReadFile(md)
	page, _ := os.ReadFile(filepath.Join(dir, "report.html"))
	return rep, string(mdb), string(page)
}

// A quick relay run against a relay with go-libp2p's default limit (128 KiB
// each way) while 256 KiB were asked for: every reservation and circuit
// made, each circuit carries exactly the announced limit, the server's
// gauges and byte counter agree, every figure is known, and the result and
// the relay's capacity rows render in every report. Plaintext is not
// applicable.
func TestRelayQuickInProcess(t *testing.T) {
	tg, probe := relayServer(t, true, libp2p.EchoStream)
	const n, c = 40, 12
	rep, md, page := runRelay(t, tg, probe, runFlags{stacks: "ws+noise,ws+plaintext", relayN: n, relayCircuits: c, relayBytes: 256 << 10})

	r := find(rep.Results, "ws+noise", "relay")
	if r == nil {
		t.Fatal("no ws+noise relay result")
	}
	if r.Errors != 0 || r.Note != "" {
		t.Fatalf("%d errors, note %q", r.Errors, r.Note)
	}
	m := r.Metrics
	if m["reservations"] != n || m["circuits"] != c {
		t.Errorf("%v reservations, %v circuits; want %d, %d", m["reservations"], m["circuits"], n, c)
	}
	if m["bytes_per_circuit"] != relay.DefaultCircuitBytes {
		t.Errorf("bytes per circuit %v, want the announced limit %d", m["bytes_per_circuit"], relay.DefaultCircuitBytes)
	}
	if want := float64(2 * c * relay.DefaultCircuitBytes); m["relayed_bytes"] != want {
		t.Errorf("relayed %v bytes, want %v", m["relayed_bytes"], want)
	}
	// Every figure known (memory included: in process, the generator's
	// own garbage moves it either way, so only that it was read).
	for name, v := range m {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			t.Errorf("%s unknown with a pid and /metrics", name)
		}
	}
	for _, name := range []string{"setup_p50_us", "reserve_p50_us", "server_cpu_ns_per_relayed_byte", "server_cpu_ns_per_echo_byte",
		"server_relay_to_echo_cpu_ratio", "relayed_bytes_per_sec", "server_cpu_us_per_reservation"} {
		if !(m[name] > 0) {
			t.Errorf("%s = %v", name, m[name])
		}
	}
	if m["setup_p99_us"] < m["setup_p50_us"] || m["reserve_p99_us"] < m["reserve_p50_us"] {
		t.Errorf("p99 below p50: %v", m)
	}
	if p := find(rep.Results, "ws+plaintext", "relay"); p == nil || !strings.Contains(p.Note, "not applicable") || len(p.Metrics) != 0 {
		t.Errorf("ws+plaintext relay: %+v", p)
	}
	if rep.Parameters.RelayN != n || rep.Parameters.RelayCircuits != c || rep.Parameters.RelayBytes != 256<<10 {
		t.Errorf("parameters %+v", rep.Parameters)
	}

	if len(rep.Capacity.Relay) != 1 || rep.Capacity.Relay[0].Stack != "ws+noise" {
		t.Fatalf("relay capacity %+v", rep.Capacity.Relay)
	}
	if rc := rep.Capacity.Relay[0]; !rc.RelayedBytesPerCoreSec.known() || !rc.RelayToEcho.known() {
		t.Errorf("relay capacity %+v", rc)
	}
	sec := section(md, "## relay")
	if got := tableRow(t, sec, "bytes relayed and checked"); got[0] != "3.00 MiB" || got[1] != na {
		t.Errorf("relayed bytes cells %q", got)
	}
	if got := tableRow(t, sec, "errors (all runs)"); got[0] != "0" {
		t.Errorf("errors cell %q", got)
	}
	if !strings.Contains(sec, "40 reservations") || !strings.Contains(sec, "128 KiB each way") {
		t.Errorf("section line:\n%s", sec)
	}
	if row := tableRow(t, section(md, "Circuit relay:"), "/ws + Noise"); len(row) != 5 || row[3] == "unknown" {
		t.Errorf("relay capacity row %q", row)
	}
	for _, s := range []string{"<b>Circuit relay</b>", "relayed payload per core", "<summary>relay: circuit relay v2"} {
		if !strings.Contains(page, s) {
			t.Errorf("HTML lacks %q", s)
		}
	}
}

// corruptEcho echoes, with the 1000th byte of each stream flipped.
type corruptEcho struct{ seen int }

func (c *corruptEcho) OnData(st *mux.Stream, p []byte) int {
	q := bytes.Clone(p)
	if i := 999 - c.seen; i >= 0 && i < len(q) {
		q[i] ^= 0x40
	}
	n, _ := st.Write(q)
	c.seen += n
	return n
}
func (c *corruptEcho) OnWritable(st *mux.Stream) {
	if b := st.Peek(); len(b) > 0 {
		n := c.OnData(st, b)
		st.Discard(n)
	}
	if st.Buffered() == 0 && st.State() == mux.StreamRemoteClosed {
		st.CloseWrite()
	}
}
func (c *corruptEcho) OnFIN(st *mux.Stream) {
	if st.Buffered() == 0 {
		st.CloseWrite()
	}
}
func (c *corruptEcho) OnReset(*mux.Stream, error) {}

// A byte that comes back wrong fails the run, naming the byte; a target
// without a relay fails it too.
func TestRelayChecksFail(t *testing.T) {
	t.Run("corrupt echo", func(t *testing.T) {
		tg, probe := relayServer(t, true, func(*libp2p.PeerConn, *mux.Stream) mux.Handler { return &corruptEcho{} })
		rep, _, _ := runRelay(t, tg, probe, runFlags{stacks: "ws+noise", relayN: 10, relayCircuits: 4, relayBytes: 4096})
		r := find(rep.Results, "ws+noise", "relay")
		if r.Errors == 0 || !strings.Contains(r.Note, "byte 999 of 4096 came back as") {
			t.Errorf("%d errors, note %q", r.Errors, r.Note)
		}
		// The circuits echo through the clients' own echo: they pass.
		if r.Metrics["relayed_bytes"] != 2*4*4096 {
			t.Errorf("relayed %v", r.Metrics["relayed_bytes"])
		}
	})
	t.Run("no relay", func(t *testing.T) {
		tg, probe := relayServer(t, false, libp2p.EchoStream)
		rep, _, _ := runRelay(t, tg, probe, runFlags{stacks: "ws+noise", relayN: 10, relayCircuits: 4, relayBytes: 4096})
		r := find(rep.Results, "ws+noise", "relay")
		if r.Errors != 10 || !strings.Contains(r.Note, "no reservation granted") {
			t.Errorf("%d errors, note %q", r.Errors, r.Note)
		}
	})
}

// A reservation someone else holds on the server (another generator of a
// fleet-wide run) is not ours to account for: the server's gauges are then
// not checked against what this generator made, and the run passes.
func TestRelayNotAlone(t *testing.T) {
	tg, probe := relayServer(t, true, libp2p.EchoStream)
	e := engine.New(engine.Config{Logger: testutil.Quiet})
	t.Cleanup(func() { e.Close() })
	h, err := libp2p.NewOn(e, libp2p.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pc, err := h.Dial(ctx, tg.addr, libp2p.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	pc.Do(func() { relay.NewClient(h, nil).Reserve(pc, func(_ *relay.Reservation, err error) { done <- err }) })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rep, _, _ := runRelay(t, tg, probe, runFlags{stacks: "ws+noise", relayN: 10, relayCircuits: 4, relayBytes: 4096})
	r := find(rep.Results, "ws+noise", "relay")
	if r.Errors != 0 || r.Note != "" || r.Metrics["reservations"] != 10 || r.Metrics["relayed_bytes"] != 2*4*4096 {
		t.Errorf("%d errors, note %q, metrics %v", r.Errors, r.Note, r.Metrics)
	}
}

// The pump's checks on what comes back, byte by byte.
func TestEchoPumpCheck(t *testing.T) {
	p := &echoPump{total: 3 * relayPatternLen, sent: 2 * relayPatternLen, off: 7919}
	want := func(from, n int) []byte {
		out := make([]byte, n)
		for i := range out {
			out[i] = relayPattern[(7919+from+i)%relayPatternLen]
		}
		return out
	}
	// Across the pattern's wrap.
	b := want(0, relayPatternLen)
	if err := p.check(b); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(b)
	bad[relayPatternLen-7919+3] ^= 1
	if err := p.check(bad); err == nil || !strings.Contains(err.Error(), "byte 57605 of 196563") {
		t.Errorf("flipped byte: %v", err)
	}
	// Bytes of another circuit (another offset) do not pass.
	if err := p.check(relayPattern[:100]); err == nil {
		t.Error("another circuit's bytes passed")
	}
	p.got = relayPatternLen
	if err := p.check(want(relayPatternLen, relayPatternLen)); err != nil {
		t.Fatal(err)
	}
	if err := p.check(want(relayPatternLen, relayPatternLen+1)); err == nil || !strings.Contains(err.Error(), "were sent") {
		t.Errorf("more back than sent: %v", err)
	}
	// A FIN before every byte came back ends the pump with an error.
	var got error
	p.done = func(err error) { got = err }
	p.OnFIN(nil)
	if got == nil || !strings.Contains(got.Error(), "FIN after 65521 of 196563") {
		t.Errorf("short FIN: %v", got)
	}
}

// The relay rows of the capacity summary from medians and spreads; a
// reservation whose RSS cost came out negative (noise) is not measurable.
func TestRelayCapacity(t *testing.T) {
	res := []Result{
		{Stack: "ws+noise", Scenario: "relay", Runs: 3, Metrics: Metrics{
			"server_rss_bytes_per_reservation": 500, "server_rss_bytes_per_conn": 9500,
			"server_cpu_ns_per_relayed_byte": 4, "server_relay_to_echo_cpu_ratio": 1.25},
			Spread: map[string]Spread{"server_rss_bytes_per_reservation": {Min: 400, Max: 600, Runs: []float64{400, 500, 600}}}},
		{Stack: "wss+noise", Scenario: "relay", Runs: 1, Metrics: Metrics{
			"server_rss_bytes_per_reservation": -100, "server_rss_bytes_per_conn": 40000,
			"server_cpu_ns_per_relayed_byte": unknown, "server_relay_to_echo_cpu_ratio": unknown}},
		{Stack: "ws+plaintext", Scenario: "relay", Runs: 1, Metrics: Metrics{}, Note: "not applicable"},
	}
	rows := relayCapacity(res)
	if len(rows) != 2 {
		t.Fatalf("%d rows", len(rows))
	}
	ws := rows[0]
	near(t, "RSS per reserved peer", ws.RSSPerReservedPeer.Value, 10000)
	near(t, "its low end", ws.RSSPerReservedPeer.Lo, 9900)
	near(t, "reserved peers per GiB", ws.ReservedPeersPerGiB.Value, (1<<30)/10000.0)
	near(t, "relayed bytes per core", ws.RelayedBytesPerCoreSec.Value, 250e6)
	near(t, "relayed over echoed", ws.RelayToEcho.Value, 1.25)
	wss := rows[1]
	if !wss.RSSPerReservation.Unmeasurable || wss.RelayedBytesPerCoreSec.known() {
		t.Errorf("wss row %+v", wss)
	}
	var b bytes.Buffer
	writeRelayCapacityMarkdown(&b, rows)
	md := b.String()
	if got := tableRow(t, md, "/ws + Noise"); got[0] != "500 B (400–600)" || got[3] != "250 MB/s" || got[4] != "1.25" {
		t.Errorf("ws row %q", got)
	}
	if got := tableRow(t, md, "/tls/ws + Noise"); got[0] != "not measurable" || got[3] != "unknown" {
		t.Errorf("wss row %q", got)
	}
}

// The child's relay flags parse as the server's own: an unlimited relay
// (0 circuit bytes and duration), and room for -relay-n reservations once
// they pass the default.
func TestChildRelayArgs(t *testing.T) {
	for _, c := range []struct {
		n       int
		wantMax int
	}{{1000, 0}, {relay.DefaultMaxReservations + 1, relay.DefaultMaxReservations + 1}} {
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		cfg := server.Flags(fs)
		if err := server.Parse(fs, cfg, childRelayArgs(runFlags{relayN: c.n})); err != nil {
			t.Fatal(err)
		}
		if !cfg.Relay || cfg.RelayCircuitBytes != 0 || cfg.RelayCircuitDur != 0 || cfg.RelayMaxResv != c.wantMax {
			t.Errorf("-relay-n %d: relay %v, circuit bytes %d, duration %v, max reservations %d (want %d)",
				c.n, cfg.Relay, cfg.RelayCircuitBytes, cfg.RelayCircuitDur, cfg.RelayMaxResv, c.wantMax)
		}
	}
}
