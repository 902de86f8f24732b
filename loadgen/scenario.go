package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/libp2p"
	"github.com/swarmgate/swarmgate/mux"
	"github.com/swarmgate/swarmgate/ws"
)

// Result is one scenario on one stack: one run, or after aggregate the
// -repeat runs folded into medians (Metrics) and their spread. Metric names
// are stable (they are the JSON schema, README "loadgen JSON"); units are
// in the names.
type Result struct {
	Stack    string            `json:"stack"`
	Scenario string            `json:"scenario"`
	Runs     int               `json:"runs"`
	Metrics  Metrics           `json:"metrics"`
	Spread   map[string]Spread `json:"spread,omitempty"`
	Errors   int               `json:"errors"`
	Note     string            `json:"note,omitempty"`
	// Hists are the latency histograms behind the percentile metrics
	// (hist.go), pooled over the runs.
	Hists Histograms `json:"histograms,omitempty"`
}

// params sizes the scenarios; the defaults keep the whole matrix, three
// runs of it, within about two minutes on two cores while each figure
// rests on enough work to be stable: 400 handshakes (0.2–0.4 s of server
// CPU with Noise), 2,000 idle connections (8–30 MB of RSS: memory per
// peer is what runs out first, so it gets the most work), and 0.8 s of bulk
// echo, message echo or churn (hundreds of MB, about 10⁵ messages,
// thousands of cycles).
type params struct {
	ConnectN     int           `json:"connect_n"`
	ConnectPar   int           `json:"connect_parallel"`
	HoldN        int           `json:"hold_n"`
	DHTN         int           `json:"dht_n"`
	DHTInflight  int           `json:"dht_inflight"`
	Duration     time.Duration `json:"-"`
	MessageConns int           `json:"message_conns"`
	MessageSize  int           `json:"message_size"`
	ThroughputK  []int         `json:"throughput_streams"`
	ChurnPar     int           `json:"churn_parallel"`
	Repeat       int           `json:"repeat"`
	// Settle is how long hold lets the server settle after its
	// connections open (and half of it after each GC) before reading
	// memory, and how long each of its idle-CPU windows lasts.
	Settle        time.Duration                                 `json:"-"`
	SettleGCURL   string                                        `json:"-"` // server endpoint that runs its GC before memory readings
	ProfileServer func(scenario string, d time.Duration) func() `json:"-"`
	// SnapshotServer saves the server's heap and goroutine profiles now
	// (hold, with its connections open).
	SnapshotServer func(scenario string) `json:"-"`
	// BothEndsLocal: the server's sockets share this network namespace
	// with the generator's (a local server), so /proc/net/sockstat counts
	// both ends of every connection.
	BothEndsLocal bool `json:"-"`
	// The relay scenario (relay.go): reservations held, circuits at once,
	// and the bytes each circuit carries each way.
	RelayN        int   `json:"relay_n,omitempty"`
	RelayCircuits int   `json:"relay_circuits,omitempty"`
	RelayBytes    int64 `json:"relay_bytes_per_circuit,omitempty"`
}

func defaultParams() params {
	return params{
		ConnectN:     400,
		ConnectPar:   16,
		HoldN:        2000,
		DHTN:         300,
		DHTInflight:  64,
		Duration:     800 * time.Millisecond,
		MessageConns: 200,
		MessageSize:  64,
		ThroughputK:  []int{1, 16},
		ChurnPar:     8,
		Repeat:       3,
		Settle:       300 * time.Millisecond,
		// relay: opt-in; 1,000 reservations (about 0.3 MB of Go heap
		// beyond their connections, which the heap reading resolves;
		// RSS is noisier at this size, -relay-n 10000 settles it), 200
		// circuits of 1 MiB each way (400 MiB relayed).
		RelayN:        1000,
		RelayCircuits: 200,
		RelayBytes:    1 << 20,
	}
}

type runner struct {
	cl    *client
	tg    target
	st    stack
	probe serverProbe
	p     params
	// profile: this run takes the server's pprof profiles (the first of
	// the -repeat runs; the others run unprofiled, so the spread shows
	// whether sampling at 100 Hz moved a figure).
	profile bool
}

// measured runs f between two server samples and the generator's CPU.
func (r *runner) measured(name string, f func() error) (serverSample, serverSample, time.Duration, time.Duration, error) {
	var stopProfile func()
	if r.p.ProfileServer != nil && r.profile {
		stopProfile = r.p.ProfileServer(r.st.Name+"/"+name, r.p.Duration)
	}
	s0, err := r.probe.sample()
	if err != nil {
		return s0, s0, 0, 0, err
	}
	c0, t0 := selfCPU(), time.Now()
	err = f()
	c1, elapsed := selfCPU(), time.Since(t0)
	s1, serr := r.probe.sample()
	if stopProfile != nil {
		stopProfile()
	}
	if err == nil {
		err = serr
	}
	return s0, s1, c1 - c0, elapsed, err
}

// openN opens n connections with at most par in flight; each runs one
// round trip so it has carried data. It returns them and the traces.
func (r *runner) openN(n, par int) ([]conn, []*libp2p.Trace, int, error) {
	conns := make([]conn, 0, n)
	traces := make([]*libp2p.Trace, 0, n)
	var mu sync.Mutex
	var failed int
	var first error
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		r.cl.dial(r.st, r.tg, func(c conn, tr *libp2p.Trace, err error) {
			if err == nil {
				err = r.roundTrip(c, func(err error) {
					mu.Lock()
					if err != nil {
						failed++
						if first == nil {
							first = err
						}
					} else {
						conns = append(conns, c)
						traces = append(traces, tr)
					}
					mu.Unlock()
					<-sem
					wg.Done()
				})
			}
			if err != nil {
				mu.Lock()
				failed++
				if first == nil {
					first = err
				}
				mu.Unlock()
				<-sem
				wg.Done()
			}
		})
	}
	if !waitTimeout(&wg, 120*time.Second) {
		return conns, traces, failed, errors.New("connections still opening after 120 s")
	}
	return conns, traces, failed, first
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// roundTrip echoes 32 bytes once on c (a stream for libp2p, a message for
// raw WebSocket) and calls done with the outcome. It is called from a
// connection callback.
func (r *runner) roundTrip(c conn, done func(error)) error {
	if c.pc != nil {
		got := 0
		finished := false
		finish := func(err error) {
			if !finished {
				finished = true
				done(err)
			}
		}
		h := &streamHandler{
			data: func(st *mux.Stream, p []byte) int { got += len(p); return len(p) },
			fin: func(st *mux.Stream) {
				if got != 32 {
					finish(fmt.Errorf("echo of %d bytes, want 32", got))
					return
				}
				finish(nil)
			},
			reset: func(st *mux.Stream, err error) { finish(fmt.Errorf("echo stream reset: %w", err)) },
		}
		st, err := c.pc.OpenStream(libp2p.ProtoEcho, h)
		if err != nil {
			return err
		}
		st.Write(make([]byte, 32))
		st.CloseWrite()
		return nil
	}
	rs := c.raw
	pending := true // done runs once: for the echo, or for a close before it
	rs.onMessage = func(n int) {
		rs.onMessage = nil
		if !pending {
			return
		}
		pending = false
		if n != 32 {
			done(fmt.Errorf("echo of %d bytes, want 32", n))
			return
		}
		done(nil)
	}
	rs.onClose = func(err error) {
		if pending {
			pending = false
			done(errClosed)
		}
	}
	return c.ws.WriteMessage(ws.OpBinary, make([]byte, 32))
}

// closeAll closes connections and waits for the server to see it.
func (r *runner) closeAll(conns []conn) {
	for _, c := range conns {
		c.close()
	}
}

// connect: connection establishment rate, handshake latency per phase, and
// CPU per handshake on both sides.
func (r *runner) connect() Result {
	res := Result{Stack: r.st.Name, Scenario: "connect", Runs: 1, Metrics: Metrics{}}
	var conns []conn
	var traces []*libp2p.Trace
	var failed int
	s0, s1, ccpu, elapsed, err := r.measured("connect", func() error {
		var err error
		conns, traces, failed, err = r.openN(r.p.ConnectN, r.p.ConnectPar)
		return err
	})
	defer r.closeAll(conns)
	res.Errors = failed
	if err != nil && len(conns) == 0 {
		res.Note = err.Error()
		return res
	}
	total, tcp, up, msel, sec, muxer := newHist(), newHist(), newHist(), newHist(), newHist(), newHist()
	rec := func(h *hdrhistogram.Histogram, a, b time.Time) {
		if !a.IsZero() && !b.IsZero() && !b.Before(a) {
			h.RecordValue(b.Sub(a).Microseconds())
		}
	}
	for _, tr := range traces {
		end := tr.Muxer
		if end.IsZero() {
			end = tr.Upgrade
		}
		rec(total, tr.Start, end)
		if !r.st.LibP2P {
			continue // a raw dial has no phases to time (only the total)
		}
		rec(tcp, tr.Start, tr.TCP)
		rec(up, tr.TCP, tr.Upgrade)
		rec(msel, tr.Upgrade, tr.Multistream)
		rec(sec, tr.Multistream, tr.Security)
		if !tr.Muxer.Equal(tr.Security) {
			// yamux negotiated on its own; with Noise it is inlined in
			// the handshake (Muxer == Security) and has no phase.
			rec(muxer, tr.Security, tr.Muxer)
		}
	}
	n := float64(len(conns))
	m := res.Metrics
	m["conns"] = n
	m["conn_per_sec"] = n / elapsed.Seconds()
	res.setPercentiles("latency", total, pctMs, 50, 90, 99, 99.9)
	for name, h := range map[string]*hdrhistogram.Histogram{"tcp": tcp, "upgrade": up, "multistream": msel, "security": sec, "muxer": muxer} {
		if h.TotalCount() > 0 {
			res.setPercentiles("phase_"+name, h, pctMs, 50, 99)
		}
	}
	m["server_cpu_us_per_conn"] = cpuPer(s0, s1, n, time.Microsecond)
	m["client_cpu_us_per_conn"] = float64(ccpu) / float64(time.Microsecond) / n
	if err != nil {
		res.Note = err.Error()
	}
	return res
}

// hold: N idle connections (one round trip each): server memory and
// goroutines per connection, and server CPU while they idle, each against
// the same reading of the server before they opened.
func (r *runner) hold() Result {
	res := Result{Stack: r.st.Name, Scenario: "hold", Runs: 1, Metrics: Metrics{}}
	m := res.Metrics
	// Let the previous scenario's closes land; then the baseline: memory
	// after two GCs, and CPU over an idle window.
	time.Sleep(r.p.Settle / 2)
	r.serverGC()
	base := r.idleCPU()
	s0, err := r.probe.sample()
	if err != nil {
		res.Note = err.Error()
		return res
	}
	k0, kerr := sockstatTCPPages()
	conns, _, failed, err := r.openN(r.p.HoldN, 64)
	defer r.closeAll(conns)
	res.Errors = failed
	if err != nil && len(conns) == 0 {
		res.Note = err.Error()
		return res
	}
	time.Sleep(r.p.Settle)
	r.serverGC()
	held := r.idleCPU()
	s1, err := r.probe.sample()
	if err != nil {
		res.Note = err.Error()
		return res
	}
	k1, kerr1 := sockstatTCPPages()
	if r.profile && r.p.SnapshotServer != nil {
		r.p.SnapshotServer(r.st.Name + "/hold")
	}
	n := float64(len(conns))
	m["conns"] = n
	m["server_rss_bytes_per_conn"], m["server_goroutines_per_conn"] = unknown, unknown
	if s0.HasRSS && s1.HasRSS {
		m["server_rss_bytes_per_conn"] = float64(s1.inUse()-s0.inUse()) / n
	}
	if s0.HasGoroutines && s1.HasGoroutines {
		m["server_goroutines_per_conn"] = (s1.Goroutines - s0.Goroutines) / n
	}
	// Socket buffers are the kernel's, outside RSS. sockstat counts the
	// whole network namespace: with the server local, both ends of each
	// connection, so half is the server's.
	m["kernel_sockbuf_bytes_per_conn"] = unknown
	if kerr == nil && kerr1 == nil && r.p.BothEndsLocal {
		m["kernel_sockbuf_bytes_per_conn"] = float64((k1-k0)*int64(os.Getpagesize())) / 2 / n
	}
	m["server_idle_cpu_pct"], m["server_idle_cpu_pct_before"] = held, base
	// What the idle connections add: the baseline (the runtime's
	// background work, timers, GC) is not theirs.
	m["server_idle_cpu_pct_per_1k_conns"] = (held - base) / n * 1000
	return res
}

// idleCPU is the server's CPU over a Settle-long window in which the
// generator sends nothing, as % of one core (unknown without a probe).
// Only CPU is read at its ends: a /metrics scrape inside the window would
// be counted as the server's idle work.
func (r *runner) idleCPU() float64 {
	c0, ok0 := r.probe.cpu()
	t0 := time.Now()
	time.Sleep(r.p.Settle)
	c1, ok1 := r.probe.cpu()
	if !ok0 || !ok1 {
		return unknown
	}
	return 100 * (c1 - c0).Seconds() / time.Since(t0).Seconds()
}

// serverGC asks the server for two collections so memory readings are the
// steady state (the same request works for any Go server with pprof).
func (r *runner) serverGC() {
	if r.p.SettleGCURL == "" {
		return
	}
	for i := 0; i < 2; i++ {
		if resp, err := http.Get(r.p.SettleGCURL); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	time.Sleep(r.p.Settle / 2)
}

// throughput: bulk echo on k streams of one libp2p connection (k
// connections for raw WebSocket): bytes per second and CPU per byte.
func (r *runner) throughput(k int) Result {
	name := fmt.Sprintf("throughput-%d", k)
	res := Result{Stack: r.st.Name, Scenario: name, Runs: 1, Metrics: Metrics{}}
	nconn := 1
	if !r.st.LibP2P {
		nconn = k
	}
	conns, _, failed, err := r.openN(nconn, nconn)
	defer r.closeAll(conns)
	res.Errors = failed
	if err != nil {
		res.Note = err.Error()
		return res
	}
	var echoed atomic.Int64
	var stop atomic.Bool
	chunk := make([]byte, 32<<10)
	s0, s1, ccpu, elapsed, err := r.measured(name, func() error {
		if r.st.LibP2P {
			pc := conns[0].pc
			var oerr error
			pc.Do(func() {
				// Open every stream before any fills the output queue.
				pumps := make([]func(), 0, k)
				for i := 0; i < k && oerr == nil; i++ {
					var pump func()
					pump, oerr = bulkStream(pc, chunk, &echoed, &stop)
					pumps = append(pumps, pump)
				}
				for _, pump := range pumps {
					if pump != nil {
						pump()
					}
				}
			})
			if oerr != nil {
				return oerr
			}
		} else {
			for _, c := range conns {
				bulkRaw(c, &echoed, &stop)
			}
		}
		time.Sleep(r.p.Duration)
		stop.Store(true)
		return nil
	})
	if err != nil {
		res.Note = err.Error()
	}
	b := float64(echoed.Load())
	m := res.Metrics
	m["streams"] = float64(k)
	m["bytes_per_sec"] = b / elapsed.Seconds()
	if b > 0 {
		m["server_cpu_ns_per_byte"] = cpuPer(s0, s1, b, time.Nanosecond)
		m["client_cpu_ns_per_byte"] = float64(ccpu.Nanoseconds()) / b
	}
	return res
}

// bulkStream opens an echo stream and returns the pump that keeps it full
// in both directions until stop.
func bulkStream(pc *libp2p.PeerConn, chunk []byte, echoed *atomic.Int64, stop *atomic.Bool) (func(), error) {
	var st *mux.Stream
	pump := func() {
		for !stop.Load() {
			n, err := st.Write(chunk)
			if err != nil || n < len(chunk) {
				return // OnWritable resumes
			}
		}
		st.Reset()
	}
	h := &streamHandler{
		data:     func(_ *mux.Stream, p []byte) int { echoed.Add(int64(len(p))); return len(p) },
		writable: func(*mux.Stream) { pump() },
	}
	var err error
	if st, err = pc.OpenStream(libp2p.ProtoEcho, h); err != nil {
		return nil, err
	}
	return pump, nil
}

// bulkRaw keeps four 64 KiB messages in flight on a raw WebSocket.
func bulkRaw(rc conn, echoed *atomic.Int64, stop *atomic.Bool) {
	msg := make([]byte, 64<<10)
	rc.ws.Do(func(c *engine.Conn) {
		rs := rc.raw
		rs.onMessage = func(n int) {
			echoed.Add(int64(n))
			if !stop.Load() {
				c.WriteMessage(ws.OpBinary, msg)
			}
		}
		for i := 0; i < 4; i++ {
			c.WriteMessage(ws.OpBinary, msg)
		}
	})
}

// messages: n connections each echoing small messages one at a time:
// messages per second and round-trip percentiles.
func (r *runner) messages() Result {
	res := Result{Stack: r.st.Name, Scenario: "messages", Runs: 1, Metrics: Metrics{}}
	conns, _, failed, err := r.openN(r.p.MessageConns, 64)
	defer r.closeAll(conns)
	res.Errors = failed
	if err != nil {
		res.Note = err.Error()
		return res
	}
	var mu sync.Mutex
	rtt := newHist()
	var count atomic.Int64
	var stop atomic.Bool
	msg := make([]byte, r.p.MessageSize)
	_, _, _, elapsed, err := r.measured("messages", func() error {
		for _, c := range conns {
			if err := pingPong(c, msg, &stop, &count, func(d time.Duration) {
				mu.Lock()
				rtt.RecordValue(d.Microseconds())
				mu.Unlock()
			}); err != nil {
				return err
			}
		}
		time.Sleep(r.p.Duration)
		stop.Store(true)
		return nil
	})
	if err != nil {
		res.Note = err.Error()
	}
	m := res.Metrics
	m["conns"] = float64(len(conns))
	m["msgs_per_sec"] = float64(count.Load()) / elapsed.Seconds()
	mu.Lock()
	// A snapshot: each stream's last echo may still land after stop.
	res.setPercentiles("rtt", snapshot(rtt), pctUs, 50, 90, 99, 99.9)
	mu.Unlock()
	return res
}

// pingPong sends msg, waits for its echo, and repeats until stop.
func pingPong(c conn, msg []byte, stop *atomic.Bool, count *atomic.Int64, record func(time.Duration)) error {
	if c.pc != nil {
		var st *mux.Stream
		var sent time.Time
		got := 0
		h := &streamHandler{data: func(s *mux.Stream, p []byte) int {
			got += len(p)
			for got >= len(msg) {
				got -= len(msg)
				record(time.Since(sent))
				count.Add(1)
				if stop.Load() {
					s.Reset()
					return len(p)
				}
				sent = time.Now()
				s.Write(msg)
			}
			return len(p)
		}}
		var err error
		c.pc.Do(func() {
			if st, err = c.pc.OpenStream(libp2p.ProtoEcho, h); err == nil {
				sent = time.Now()
				st.Write(msg)
			}
		})
		return err
	}
	var sent time.Time
	c.ws.Do(func(w *engine.Conn) {
		rs := c.raw
		rs.onMessage = func(int) {
			record(time.Since(sent))
			count.Add(1)
			if !stop.Load() {
				sent = time.Now()
				w.WriteMessage(ws.OpBinary, msg)
			}
		}
		sent = time.Now()
		w.WriteMessage(ws.OpBinary, msg)
	})
	return nil
}

// churn: connect, one round trip, close, continuously for the duration,
// with par cycles in flight: every cycle must complete.
func (r *runner) churn() Result {
	res := Result{Stack: r.st.Name, Scenario: "churn", Runs: 1, Metrics: Metrics{}}
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(r.p.Duration)
	var wg sync.WaitGroup
	_, _, _, elapsed, _ := r.measured("churn", func() error {
		for i := 0; i < r.p.ChurnPar; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					done := make(chan error, 1)
					r.cl.dial(r.st, r.tg, func(c conn, _ *libp2p.Trace, err error) {
						if err != nil {
							done <- err
							return
						}
						if err := r.roundTrip(c, func(err error) {
							done <- err
							if c.pc != nil {
								c.pc.Close()
							} else {
								c.ws.Close(ws.CloseNormal, "")
							}
						}); err != nil {
							done <- err
						}
					})
					select {
					case err := <-done:
						if err != nil {
							failed.Add(1)
							firstErr.CompareAndSwap(nil, err.Error())
						} else {
							ok.Add(1)
						}
					case <-time.After(10 * time.Second):
						failed.Add(1)
						firstErr.CompareAndSwap(nil, "cycle timed out")
					}
				}
			}()
		}
		wg.Wait()
		return nil
	})
	res.Errors = int(failed.Load())
	if v := firstErr.Load(); v != nil {
		res.Note = v.(string)
	}
	m := res.Metrics
	m["cycles"] = float64(ok.Load())
	m["cycles_per_sec"] = float64(ok.Load()) / elapsed.Seconds()
	return res
}
