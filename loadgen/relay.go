package main

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"

	"github.com/swarmgate/swarmgate/libp2p"
	"github.com/swarmgate/swarmgate/libp2p/relay"
	"github.com/swarmgate/swarmgate/mux"
)

// The relay scenario: circuit relay v2 (libp2p/relay) driven by light
// clients, each a peer of its own (openLight), on the Noise stacks.
//
// Phase 1, reservations. N light clients connect and the server is read
// after two GCs (the bare connections); then each reserves a slot (RESERVE,
// at most relayPar in flight) and the server is read again. The difference
// is what a reservation costs beyond its connection: RSS in use (less the
// free heap not yet returned, as hold reads it) and live Go heap, per
// reservation; and the server CPU of the RESERVEs (voucher signature
// included) per reservation.
//
// Phase 2, circuits. C more light clients (the sources) connect. First, the
// baseline: each source echoes B bytes on a plain echo stream to the server
// (ProtoEcho): server CPU per echoed byte on this stack, in the same run and
// the same shape. Then each source opens a circuit through the relay to one
// of the reserving clients (CONNECT, at most relayPar in flight), whose stop
// handler echoes; setup latency runs from the CONNECT written to its STATUS
// OK read. Once every circuit is up, each source sends B bytes through it
// and checks every byte that comes back. Relayed bytes count both
// directions (B out and B back per circuit): the server receives each
// relayed byte once and sends it once, as it does each echoed byte of the
// baseline, so the two CPU figures per byte compare directly and their
// ratio is what relaying costs over serving.
//
// The default run's child is an unlimited relay (-relay-circuit-bytes 0
// -relay-circuit-duration 0), so B is the bulk it was asked for; against a
// relay that announces a data limit below B, each circuit carries exactly
// the limit (a transfer of exactly Limit.Data completes) and
// bytes_per_circuit says so.
//
// Exact checks, each an error of the run: every reservation granted and
// every circuit set up; every echoed byte equal to what was sent, and
// exactly B back then the FIN; and, when the server exports them and this
// generator is its only user (no reservation or circuit of anyone else
// when the scenario starts), its reservations_open and circuits_open gauges
// read exactly what we made, its circuits all end once the transfers
// finish, and its relayed-bytes counter moves by exactly the bytes we
// relayed.

const (
	// relayPar bounds RESERVEs and CONNECTs in flight, as openLight bounds
	// dials: setup latency is then a circuit's cost with 64 in the
	// queue, not the length of a queue of C.
	relayPar = 64
	// relayAhead is how many bytes a source keeps sent but not yet echoed:
	// it bounds what each circuit (and each baseline stream) holds in
	// flight, the same for both, whatever the windows would allow.
	relayAhead = 64 << 10
	// relayPatternLen is the length of the byte pattern sources send: a
	// prime, so that no misordering by a power-of-two chunk (the relay's
	// 16 KiB, a yamux frame) lands on the same bytes.
	relayPatternLen = 65521
	// relayGaugeWait bounds each wait for a server gauge to reach what
	// the scenario made.
	relayGaugeWait = 30 * time.Second
	// relaySettled is how long a gauge must stay put to count as settled
	// at a value other than 0.
	relaySettled = 2 * time.Second
)

// relayPattern is what sources send: deterministic noise, each circuit
// starting at its own offset, so bytes delivered to the wrong circuit or in
// the wrong order do not compare equal.
var relayPattern = func() []byte {
	rng := rand.New(rand.NewPCG(15, 0x2e1a7))
	b := make([]byte, relayPatternLen)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}()

// Gauges and counters of our relay (libp2p/relay/metrics.go) the checks read.
const (
	gaugeReservations = "swarmgate_relay_reservations_open"
	gaugeCircuits     = "swarmgate_relay_circuits_open"
	counterRelayed    = "swarmgate_relay_bytes_total"
)

// relay runs the scenario on a libp2p Noise stack.
func (r *runner) relay() Result {
	res := Result{Stack: r.st.Name, Scenario: "relay", Runs: 1, Metrics: Metrics{}}
	if !r.st.LibP2P || r.st.Plaintext {
		res.Note = "not applicable: the relay scenario runs on the Noise stacks"
		return res
	}
	m := res.Metrics
	var errs []error
	fail := func(err error) Result {
		errs = append(errs, err)
		res.Note = joinErrs(errs)
		return res
	}

	// Phase 1: the bare connections, then their reservations. A previous
	// run's reservations and circuits end with its connections: wait for
	// the server to have let them go before the baseline. Whatever stays
	// is someone else's (other generators of a fleet-wide run): then the
	// server's gauges and counter hold their work too, and are not
	// checked against ours.
	baseRsv, _ := r.waitSettled(gaugeReservations)
	baseCirc, _ := r.waitSettled(gaugeCircuits)
	alone := baseRsv == 0 && baseCirc == 0
	time.Sleep(r.p.Settle / 2)
	r.serverGC()
	s0, err := r.probe.sample()
	if err != nil {
		return fail(err)
	}
	dsts, failed, err := r.openLight(r.p.RelayN, false)
	defer closeLight(dsts)
	res.Errors += failed
	if err != nil {
		errs = append(errs, err)
	}
	if len(dsts) == 0 {
		return fail(errors.New("no light client connected"))
	}
	// Reserving clients are the circuits' destinations: they accept stop
	// and echo what arrives.
	for _, d := range dsts {
		if err := relay.NewClient(d.h, nil).HandleStop(echoStop); err != nil {
			return fail(err)
		}
	}
	time.Sleep(r.p.Settle)
	r.serverGC()
	s1, err := r.probe.sample()
	if err != nil {
		return fail(err)
	}
	c0, ok0 := r.probe.cpu()
	reserved, rlat, failed, err := reserveAll(dsts)
	c1, ok1 := r.probe.cpu()
	res.Errors += failed
	if err != nil {
		errs = append(errs, fmt.Errorf("reserve: %w", err))
	}
	k := float64(len(reserved))
	m["reservations"] = k
	if len(reserved) == 0 {
		return fail(errors.New("no reservation granted"))
	}
	if err := r.expectGauge(alone, gaugeReservations, k); err != nil {
		res.Errors++
		errs = append(errs, fmt.Errorf("%.0f reservations granted: %w", k, err))
	}
	time.Sleep(r.p.Settle)
	r.serverGC()
	s2, err := r.probe.sample()
	if err != nil {
		return fail(err)
	}
	res.setPercentiles("reserve", rlat, pctUs, 50, 99)
	m["server_cpu_us_per_reservation"] = unknown
	if ok0 && ok1 {
		m["server_cpu_us_per_reservation"] = float64(c1-c0) / float64(time.Microsecond) / k
	}
	m["server_rss_bytes_per_conn"], m["server_rss_bytes_per_reservation"], m["server_heap_bytes_per_reservation"] = unknown, unknown, unknown
	if s0.HasRSS && s1.HasRSS && s2.HasRSS {
		m["server_rss_bytes_per_conn"] = float64(s1.inUse()-s0.inUse()) / float64(len(dsts))
		m["server_rss_bytes_per_reservation"] = float64(s2.inUse()-s1.inUse()) / k
	}
	if s1.HasHeap && s2.HasHeap {
		m["server_heap_bytes_per_reservation"] = float64(s2.Heap-s1.Heap) / k
	}

	// Phase 2: the sources, the echo baseline, then the circuits.
	srcs, failed, err := r.openLight(min(r.p.RelayCircuits, len(reserved)), false)
	defer closeLight(srcs)
	res.Errors += failed
	if err != nil {
		errs = append(errs, err)
	}
	if len(srcs) == 0 {
		return fail(errors.New("no source connected"))
	}
	echoed, e0, e1, err := r.echoBaseline(srcs)
	if err != nil {
		res.Errors++
		errs = append(errs, fmt.Errorf("echo baseline: %w", err))
	}
	echoPer := cpuPer(e0, e1, float64(echoed), time.Nanosecond)
	m["server_cpu_ns_per_echo_byte"] = echoPer

	circuits, slat, failed, err := connectAll(srcs, reserved, r.p.RelayBytes)
	res.Errors += failed
	if err != nil {
		errs = append(errs, fmt.Errorf("connect: %w", err))
	}
	m["circuits"] = float64(len(circuits))
	if len(circuits) == 0 {
		return fail(errors.New("no circuit set up"))
	}
	res.setPercentiles("setup", slat, pctUs, 50, 99)
	m["bytes_per_circuit"] = float64(circuits[0].pump.total)
	if err := r.expectGauge(alone, gaugeCircuits, float64(len(circuits))); err != nil {
		res.Errors++
		errs = append(errs, fmt.Errorf("%d circuits set up: %w", len(circuits), err))
	}

	relayed0, hasCounter := r.gauge(counterRelayed)
	var back atomic.Int64
	s3, s4, ccpu, elapsed, err := r.measured("relay", func() error {
		return runPumps(circuits, func(c *relayCircuit) (*libp2p.PeerConn, *echoPump) { return c.src.pc, c.pump }, &back)
	})
	if err != nil {
		res.Errors++
		errs = append(errs, fmt.Errorf("circuits: %w", err))
	}
	relayed := 2 * float64(back.Load())
	m["relayed_bytes"] = relayed
	m["relayed_bytes_per_sec"] = relayed / elapsed.Seconds()
	m["server_cpu_ns_per_relayed_byte"] = cpuPer(s3, s4, relayed, time.Nanosecond)
	m["client_cpu_ns_per_relayed_byte"] = unknown
	if relayed > 0 {
		m["client_cpu_ns_per_relayed_byte"] = float64(ccpu.Nanoseconds()) / relayed
	}
	m["server_relay_to_echo_cpu_ratio"] = m["server_cpu_ns_per_relayed_byte"] / echoPer
	if alone && hasCounter {
		if relayed1, _ := r.gauge(counterRelayed); relayed1-relayed0 != relayed {
			res.Errors++
			errs = append(errs, fmt.Errorf("the server counted %.0f relayed bytes, the sources %.0f", relayed1-relayed0, relayed))
		}
	}
	// Each circuit ended with both FINs: the server must count none open.
	if err := r.expectGauge(alone, gaugeCircuits, 0); err != nil {
		res.Errors++
		errs = append(errs, fmt.Errorf("every transfer ended: %w", err))
	}
	if len(errs) > 0 {
		res.Note = joinErrs(errs)
	}
	return res
}

// joinErrs is the run's errors on one line, for the report's note.
func joinErrs(errs []error) string {
	s := make([]string, len(errs))
	for i, err := range errs {
		s[i] = err.Error()
	}
	return strings.Join(s, "; ")
}

// echoStop is the destinations' stop handler: they echo.
func echoStop(pc *libp2p.PeerConn, st *mux.Stream, _ peer.ID, _ *pb.Limit) mux.Handler {
	return libp2p.EchoStream(pc, st)
}

// reserveAll reserves a slot for each client on the relay at the other end
// of its connection, relayPar in flight, and returns those that got one
// and the RESERVE latencies (µs, written to STATUS OK read and checked).
func reserveAll(cs []dhtLight) ([]dhtLight, *hdrhistogram.Histogram, int, error) {
	lat := newHist()
	var mu sync.Mutex
	var ok []dhtLight
	var failed int
	var first error
	sem := make(chan struct{}, relayPar)
	var wg sync.WaitGroup
	done := func(c dhtLight, start time.Time, err error) {
		mu.Lock()
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		} else {
			lat.RecordValue(time.Since(start).Microseconds())
			ok = append(ok, c)
		}
		mu.Unlock()
		<-sem
		wg.Done()
	}
	for _, c := range cs {
		sem <- struct{}{}
		wg.Add(1)
		cli := relay.NewClient(c.h, nil)
		if !c.pc.Do(func() {
			start := time.Now()
			cli.Reserve(c.pc, func(_ *relay.Reservation, err error) { done(c, start, err) })
		}) {
			done(c, time.Time{}, errClosed)
		}
	}
	if !waitTimeout(&wg, 120*time.Second) {
		return ok, lat, failed, errors.New("reservations still pending after 120 s")
	}
	return ok, lat, failed, first
}

// relayCircuit is one circuit from a source through the relay.
type relayCircuit struct {
	src  dhtLight
	pump *echoPump
}

// connectAll opens a circuit from each source to the destination of the
// same index, relayPar in flight, each to carry want bytes each way (less
// when the relay announces a lower data limit). It returns the circuits set
// up and the setup latencies (µs, CONNECT written to STATUS OK read).
func connectAll(srcs, dsts []dhtLight, want int64) ([]*relayCircuit, *hdrhistogram.Histogram, int, error) {
	lat := newHist()
	var mu sync.Mutex
	var out []*relayCircuit
	var failed int
	var first error
	sem := make(chan struct{}, relayPar)
	var wg sync.WaitGroup
	end := func(c *relayCircuit, d time.Duration, err error) {
		mu.Lock()
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		} else {
			lat.RecordValue(d.Microseconds())
			out = append(out, c)
		}
		mu.Unlock()
		<-sem
		wg.Done()
	}
	for i, s := range srcs {
		sem <- struct{}{}
		wg.Add(1)
		cli := relay.NewClient(s.h, nil)
		dst := dsts[i].h.ID()
		off := i * 7919 % relayPatternLen
		if !s.pc.Do(func() {
			start := time.Now()
			cli.Connect(s.pc, dst, func(st *mux.Stream, limit *pb.Limit, err error) mux.Handler {
				d := time.Since(start)
				if err != nil {
					end(nil, d, err)
					return nil
				}
				total := want
				if l := int64(limit.GetData()); l > 0 && l < total {
					total = l // exactly Limit.Data completes
				}
				c := &relayCircuit{src: s, pump: &echoPump{st: st, total: total, off: off}}
				end(c, d, nil)
				return c.pump
			})
		}) {
			end(nil, 0, errClosed)
		}
	}
	if !waitTimeout(&wg, 120*time.Second) {
		return out, lat, failed, errors.New("circuits still being set up after 120 s")
	}
	return out, lat, failed, first
}

// echoBaseline echoes RelayBytes on a plain echo stream of each source
// at once, measured: the server's CPU per echoed byte on this stack.
func (r *runner) echoBaseline(srcs []dhtLight) (int64, serverSample, serverSample, error) {
	type echo struct {
		pc   *libp2p.PeerConn
		pump *echoPump
	}
	streams := make([]echo, 0, len(srcs))
	for i, s := range srcs {
		p := &echoPump{total: r.p.RelayBytes, off: i * 7919 % relayPatternLen}
		var err error
		s.pc.Do(func() { p.st, err = s.pc.OpenStream(libp2p.ProtoEcho, p) })
		if err == nil && p.st == nil {
			err = errClosed
		}
		if err != nil {
			return 0, serverSample{}, serverSample{}, err
		}
		streams = append(streams, echo{s.pc, p})
	}
	var back atomic.Int64
	s0, s1, _, _, err := r.measured("relay-echo", func() error {
		return runPumps(streams, func(e echo) (*libp2p.PeerConn, *echoPump) { return e.pc, e.pump }, &back)
	})
	return back.Load(), s0, s1, err
}

// runPumps starts every pump at once and waits until each has ended; back
// sums the bytes that came back checked. Its error is the first pump's,
// with how many failed.
func runPumps[T any](items []T, get func(T) (*libp2p.PeerConn, *echoPump), back *atomic.Int64) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	var failed int
	var total int64
	for _, it := range items {
		_, p := get(it)
		total += p.total
	}
	for _, it := range items {
		pc, p := get(it)
		wg.Add(1)
		done := func(err error) {
			back.Add(p.got)
			if err != nil {
				mu.Lock()
				failed++
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
			wg.Done()
		}
		if !pc.Do(func() { p.start(done) }) {
			done(errClosed)
		}
	}
	// Generous: 1 MB/s, and never under a minute.
	limit := max(time.Minute, time.Duration(2*total/1e6)*time.Second)
	if !waitTimeout(&wg, limit) {
		return fmt.Errorf("transfers still running after %v", limit)
	}
	if first != nil {
		return fmt.Errorf("%d of %d failed, the first: %w", failed, len(items), first)
	}
	return nil
}

// echoPump sends total bytes of relayPattern (from offset off) on a stream
// whose far end echoes, with at most relayAhead of them not yet back;
// checks every byte that comes back against what was sent; and half-closes
// once all are sent. It ends once: cleanly after exactly total bytes came
// back followed by the FIN, or with the first error (the stream then
// reset). It is the stream's handler: its methods run under the
// connection's lock.
type echoPump struct {
	st               *mux.Stream
	total, sent, got int64
	off              int
	finOut           bool
	ended            bool
	err              error
	done             func(error) // set by start
}

// start begins sending (under the connection's lock); done runs once when
// the pump ends, at once if it already has (a reset before start).
func (p *echoPump) start(done func(error)) {
	p.done = done
	if p.ended {
		done(p.err)
		return
	}
	p.write()
}

func (p *echoPump) end(err error) {
	if p.ended {
		return
	}
	p.ended, p.err = true, err
	if err != nil && p.st != nil {
		p.st.Reset()
	}
	if p.done != nil {
		p.done(err)
	}
}

func (p *echoPump) write() {
	if p.ended || p.done == nil {
		return
	}
	for p.sent < p.total {
		room := relayAhead - (p.sent - p.got)
		if room <= 0 {
			return // the echo's next bytes make room
		}
		pos := int((int64(p.off) + p.sent) % relayPatternLen)
		n := min(int64(relayPatternLen-pos), p.total-p.sent, room)
		k, err := p.st.Write(relayPattern[pos : pos+int(n)])
		p.sent += int64(k)
		if err == mux.ErrWouldBlock {
			return // OnWritable resumes
		}
		if err != nil {
			p.end(fmt.Errorf("write after %d of %d bytes: %w", p.sent, p.total, err))
			return
		}
	}
	if !p.finOut {
		p.finOut = true
		if err := p.st.CloseWrite(); err != nil {
			p.end(fmt.Errorf("close write: %w", err))
		}
	}
}

// check compares b, the bytes that came back from offset got on, with
// what was sent there.
func (p *echoPump) check(b []byte) error {
	if p.got+int64(len(b)) > p.sent {
		return fmt.Errorf("%d bytes came back, %d were sent", p.got+int64(len(b)), p.sent)
	}
	for i := 0; i < len(b); {
		pos := int((int64(p.off) + p.got + int64(i)) % relayPatternLen)
		n := min(len(b)-i, relayPatternLen-pos)
		if got, want := b[i:i+n], relayPattern[pos:pos+n]; !bytes.Equal(got, want) {
			j := 0
			for got[j] == want[j] {
				j++
			}
			return fmt.Errorf("byte %d of %d came back as %#02x, %#02x was sent", p.got+int64(i+j), p.total, got[j], want[j])
		}
		i += n
	}
	return nil
}

func (p *echoPump) OnData(st *mux.Stream, b []byte) int {
	if p.ended {
		return len(b)
	}
	if err := p.check(b); err != nil {
		p.end(err)
		return len(b)
	}
	p.got += int64(len(b))
	p.write()
	return len(b)
}

func (p *echoPump) OnWritable(*mux.Stream) { p.write() }

func (p *echoPump) OnFIN(*mux.Stream) {
	if p.got != p.total {
		p.end(fmt.Errorf("FIN after %d of %d bytes came back", p.got, p.total))
		return
	}
	p.end(nil)
}

func (p *echoPump) OnReset(_ *mux.Stream, err error) {
	p.st = nil // nothing to reset
	p.end(fmt.Errorf("stream reset after %d of %d bytes came back: %v", p.got, p.total, err))
}

// gauge reads one unlabelled gauge or counter of the server's /metrics.
func (r *runner) gauge(name string) (float64, bool) {
	if r.probe.metricsURL == "" {
		return 0, false
	}
	g, err := scrapeGauges(r.probe.metricsURL)
	if err != nil {
		return 0, false
	}
	v, ok := g[name]
	return v, ok
}

// waitSettled waits until the server's gauge reads 0, or has not moved
// for relaySettled (what stays is held, not being let go), or
// relayGaugeWait passes; ok is false when the server does not export it.
func (r *runner) waitSettled(name string) (float64, bool) {
	deadline := time.Now().Add(relayGaugeWait)
	last, since := -1.0, time.Now()
	for {
		v, ok := r.gauge(name)
		if !ok || v == 0 || time.Now().After(deadline) {
			return v, ok
		}
		if v != last {
			last, since = v, time.Now()
		} else if time.Since(since) >= relaySettled {
			return v, ok
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// expectGauge waits until the server's gauge reads want, and reports an
// error when it still does not after relayGaugeWait. Only a generator
// alone on the server can know what the gauge must read: otherwise, and
// when the server does not export the gauge, it checks nothing.
func (r *runner) expectGauge(alone bool, name string, want float64) error {
	if !alone {
		return nil
	}
	if v, ok := r.waitGauge(name, want, relayGaugeWait); ok && v != want {
		return fmt.Errorf("the server's %s reads %.0f, want %.0f", name, v, want)
	}
	return nil
}

// waitGauge waits until the server's gauge reads want (or d passes) and
// returns what it reads; ok is false when the server does not export it.
func (r *runner) waitGauge(name string, want float64, d time.Duration) (float64, bool) {
	deadline := time.Now().Add(d)
	for {
		v, ok := r.gauge(name)
		if !ok || v == want || time.Now().After(deadline) {
			return v, ok
		}
		time.Sleep(50 * time.Millisecond)
	}
}
