package relay

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/swarmgate/swarmgate/mux"
)

// A sans-IO harness for the splice: four yamux sessions in memory
// (source ↔ relay side A, relay side B ↔ destination), the relay's two
// connections as queues of posted functions, and a pump that moves bytes
// and runs posted work until nothing moves. One goroutine: the assertions
// are exact.

// testConn is a relay-side connection: posted work waits in q.
type testConn struct{ q []func() }

func (c *testConn) Post(f func()) { c.q = append(c.q, f) }

// endpoint is a peer's stream handler: it collects what arrives (unless
// paused) and writes what it is given as the window allows.
type endpoint struct {
	got     []byte
	fin     bool
	reset   error
	paused  bool
	pending []byte
	closeAt bool // CloseWrite once pending is written
	st      *mux.Stream
}

func (e *endpoint) OnData(_ *mux.Stream, p []byte) int {
	if e.paused {
		return 0
	}
	e.got = append(e.got, p...)
	return len(p)
}
func (e *endpoint) OnWritable(*mux.Stream)           { e.flush() }
func (e *endpoint) OnFIN(*mux.Stream)                { e.fin = true }
func (e *endpoint) OnReset(_ *mux.Stream, err error) { e.reset = err }

func (e *endpoint) write(p []byte, close bool) {
	e.pending = append(e.pending, p...)
	e.closeAt = e.closeAt || close
	e.flush()
}

func (e *endpoint) flush() {
	if len(e.pending) > 0 {
		n, _ := e.st.Write(e.pending)
		e.pending = e.pending[n:]
	}
	if len(e.pending) == 0 && e.closeAt {
		e.closeAt = false
		e.st.CloseWrite()
	}
}

// resume reads what the paused endpoint left buffered.
func (e *endpoint) resume() {
	e.paused = false
	if b := e.st.Peek(); len(b) > 0 {
		e.got = append(e.got, b...)
		e.st.Discard(len(b))
	}
}

type harness struct {
	t                  testing.TB
	src, ra, rb, dst   *mux.Session
	ca, cb             *testConn
	sp                 *splice
	srcEnd, dstEnd     *endpoint
	ended              []string
	relayed            int
	maxChunks, maxBufA int
	maxOutB            int
	memA, memB         countMeter // what each relay-side connection is charged for chunks
}

// countMeter records a connection's chunk charges.
type countMeter struct{ used, max int }

func (m *countMeter) Charge(n int) {
	m.used += n
	m.max = max(m.max, m.used)
}
func (m *countMeter) Release(n int) { m.used -= n }

func noKeepalive() mux.Config { return mux.Config{KeepAliveInterval: -1} }

func newHarness(t testing.TB, limit int64) *harness {
	h := &harness{t: t, ca: &testConn{}, cb: &testConn{}}
	if n := chunksOut.Load(); n != 0 {
		t.Fatalf("%d chunks out before the test", n)
	}
	h.sp = newSplice(limit, func(r string) { h.ended = append(h.ended, r) }, func(n int) { h.relayed += n })
	h.sp.a.conn, h.sp.b.conn = h.ca, h.cb
	h.sp.a.mem, h.sp.b.mem = &h.memA, &h.memB
	h.srcEnd, h.dstEnd = &endpoint{}, &endpoint{}

	cfgA := noKeepalive()
	cfgA.OnStream = func(st *mux.Stream) { h.sp.a.st = st; st.Accept(&h.sp.a) }
	h.src = mux.NewClient(noKeepalive(), t0)
	h.ra = mux.NewServer(cfgA, t0)
	cfgD := noKeepalive()
	cfgD.OnStream = func(st *mux.Stream) { h.dstEnd.st = st; st.Accept(h.dstEnd) }
	h.rb = mux.NewServer(noKeepalive(), t0)
	h.dst = mux.NewClient(cfgD, t0)

	var err error
	if h.srcEnd.st, err = h.src.Open(h.srcEnd); err != nil {
		t.Fatal(err)
	}
	if h.sp.b.st, err = h.rb.Open(&h.sp.b); err != nil {
		t.Fatal(err)
	}
	h.sp.b.st.Write(nil)
	h.pump()
	if h.sp.a.st == nil || h.dstEnd.st == nil {
		t.Fatal("streams not open")
	}
	return h
}

// move sends everything a has queued to b.
func move(t testing.TB, a, b *mux.Session) bool {
	if !a.HasOutput() {
		return false
	}
	out := a.AppendOutput(nil, 0)
	if n, err := b.Input(out, t0); err != nil || n != len(out) {
		t.Fatalf("input: %d of %d, %v", n, len(out), err)
	}
	return true
}

// pump moves bytes and runs posted work until nothing moves, recording
// the high-water marks of what the relay holds.
func (h *harness) pump() {
	for {
		moved := false
		for _, l := range [][2]*mux.Session{{h.src, h.ra}, {h.ra, h.src}, {h.rb, h.dst}, {h.dst, h.rb}} {
			moved = move(h.t, l[0], l[1]) || moved
		}
		for _, c := range []*testConn{h.ca, h.cb} {
			for len(c.q) > 0 {
				f := c.q[0]
				c.q = c.q[1:]
				f()
				moved = true
			}
		}
		h.maxChunks = max(h.maxChunks, int(chunksOut.Load()))
		if st := h.sp.a.st; st != nil {
			h.maxBufA = max(h.maxBufA, st.Buffered())
		}
		h.maxOutB = max(h.maxOutB, h.rb.OutputLen())
		if !moved {
			return
		}
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b
}

func (h *harness) done() {
	h.t.Helper()
	if n := chunksOut.Load(); n != 0 {
		h.t.Fatalf("%d chunks still out", n)
	}
	if h.memA.used != 0 || h.memB.used != 0 {
		h.t.Fatalf("chunk charges left: a %d, b %d", h.memA.used, h.memB.used)
	}
}

// Both directions at once, byte-exact, then both FINs: the circuit ends
// "closed" and holds nothing.
func TestSpliceBothWays(t *testing.T) {
	h := newHarness(t, 0)
	up, down := randomBytes(3<<20+17), randomBytes(1<<20+5)
	h.srcEnd.write(up, true)
	h.dstEnd.write(down, true)
	h.pump()
	if !bytes.Equal(h.dstEnd.got, up) || !bytes.Equal(h.srcEnd.got, down) {
		t.Fatalf("relayed %d of %d up, %d of %d down", len(h.dstEnd.got), len(up), len(h.srcEnd.got), len(down))
	}
	if !h.dstEnd.fin || !h.srcEnd.fin {
		t.Fatal("FIN not forwarded")
	}
	if len(h.ended) != 1 || h.ended[0] != EndClosed || h.relayed != len(up)+len(down) {
		t.Fatalf("ended %v, relayed %d", h.ended, h.relayed)
	}
	if h.maxChunks > 2 {
		t.Fatalf("%d chunks in flight at once, at most one per direction", h.maxChunks)
	}
	h.done()
}

// A half-close is forwarded at once; the other direction keeps going.
func TestSpliceHalfClose(t *testing.T) {
	h := newHarness(t, 0)
	h.srcEnd.write([]byte("request"), true)
	h.pump()
	if string(h.dstEnd.got) != "request" || !h.dstEnd.fin || len(h.ended) != 0 {
		t.Fatalf("got %q fin %v ended %v", h.dstEnd.got, h.dstEnd.fin, h.ended)
	}
	h.dstEnd.write([]byte("response"), false)
	h.pump()
	if string(h.srcEnd.got) != "response" || h.srcEnd.fin {
		t.Fatalf("got %q fin %v", h.srcEnd.got, h.srcEnd.fin)
	}
	h.dstEnd.write(nil, true)
	h.pump()
	if !h.srcEnd.fin || len(h.ended) != 1 || h.ended[0] != EndClosed {
		t.Fatalf("fin %v ended %v", h.srcEnd.fin, h.ended)
	}
	h.done()
}

// The data limit, at the byte: exactly Limit.Data bytes and a FIN pass;
// one byte more resets both sides, and nothing past the limit is
// forwarded.
func TestSpliceDataLimit(t *testing.T) {
	const limit = 100_000
	t.Run("exact", func(t *testing.T) {
		h := newHarness(t, limit)
		data := randomBytes(limit)
		h.srcEnd.write(data, true)
		h.dstEnd.write(randomBytes(limit), true) // the other direction counts on its own
		h.pump()
		if !bytes.Equal(h.dstEnd.got, data) || !h.dstEnd.fin || len(h.srcEnd.got) != limit {
			t.Fatalf("got %d/%d bytes, fin %v", len(h.dstEnd.got), len(h.srcEnd.got), h.dstEnd.fin)
		}
		if h.dstEnd.reset != nil || h.srcEnd.reset != nil || len(h.ended) != 1 || h.ended[0] != EndClosed {
			t.Fatalf("resets %v %v, ended %v", h.dstEnd.reset, h.srcEnd.reset, h.ended)
		}
		h.done()
	})
	t.Run("one more", func(t *testing.T) {
		h := newHarness(t, limit)
		data := randomBytes(limit + 1)
		h.srcEnd.write(data, false)
		h.pump()
		if h.srcEnd.reset == nil || h.dstEnd.reset == nil {
			t.Fatalf("past the limit: source reset %v, destination reset %v", h.srcEnd.reset, h.dstEnd.reset)
		}
		if len(h.dstEnd.got) > limit || !bytes.Equal(h.dstEnd.got, data[:len(h.dstEnd.got)]) {
			t.Fatalf("destination got %d bytes, limit %d", len(h.dstEnd.got), limit)
		}
		if len(h.ended) != 1 || h.ended[0] != EndDataLimit {
			t.Fatalf("ended %v", h.ended)
		}
		h.done()
	})
	t.Run("one more, in pieces", func(t *testing.T) {
		h := newHarness(t, limit)
		data := randomBytes(limit)
		h.srcEnd.write(data, false)
		h.pump()
		if !bytes.Equal(h.dstEnd.got, data) || len(h.ended) != 0 {
			t.Fatalf("at the limit: got %d, ended %v", len(h.dstEnd.got), h.ended)
		}
		h.srcEnd.write([]byte{1}, false)
		h.pump()
		if h.srcEnd.reset == nil || h.dstEnd.reset == nil || len(h.dstEnd.got) != limit || h.ended[0] != EndDataLimit {
			t.Fatalf("byte %d: resets %v %v, got %d, ended %v", limit+1, h.srcEnd.reset, h.dstEnd.reset, len(h.dstEnd.got), h.ended)
		}
		h.done()
	})
}

// A reset on either side reaches the other; chunks in flight are returned.
func TestSpliceReset(t *testing.T) {
	for _, fromSrc := range []bool{true, false} {
		h := newHarness(t, 0)
		h.srcEnd.write(randomBytes(1<<20), false)
		h.dstEnd.write(randomBytes(1<<20), false)
		// Let some of it move, then reset mid-flight.
		move(t, h.src, h.ra)
		move(t, h.dst, h.rb)
		if fromSrc {
			h.srcEnd.st.Reset()
		} else {
			h.dstEnd.st.Reset()
		}
		h.pump()
		other := h.dstEnd
		if !fromSrc {
			other = h.srcEnd
		}
		var se *mux.StreamError
		if !errors.As(other.reset, &se) {
			t.Fatalf("from source %v: other side's reset %v", fromSrc, other.reset)
		}
		if len(h.ended) != 1 || h.ended[0] != EndReset {
			t.Fatalf("ended %v", h.ended)
		}
		h.done()
	}
}

// A destination that stops reading stops the source: what the source can
// get out is bounded by the windows and one chunk, whatever it tries to
// send, and the relay's buffers stay bounded. When the reader resumes,
// every byte arrives.
func TestSpliceSlowReader(t *testing.T) {
	h := newHarness(t, 0)
	h.dstEnd.paused = true
	data := randomBytes(16 << 20)
	h.srcEnd.write(data, true)
	h.pump()
	sent := len(data) - len(h.srcEnd.pending)
	// Source → relay window, one chunk, relay → destination window (the
	// destination buffers its unread bytes within it).
	bound := 2*mux.InitialWindow + ChunkSize
	t.Logf("source got %d bytes out; relay held at most %d chunks, %d B buffered on a, %d B queued on b", sent, h.maxChunks, h.maxBufA, h.maxOutB)
	if sent > bound {
		t.Fatalf("source got %d bytes out past a stalled reader, bound %d", sent, bound)
	}
	if h.maxChunks > 1 || h.maxBufA > mux.InitialWindow || h.maxOutB > mux.DefaultMaxOutput {
		t.Fatalf("relay held %d chunks, %d B in a's buffer, %d B queued to b", h.maxChunks, h.maxBufA, h.maxOutB)
	}
	// The chunk in flight is charged to the source's connection (the one
	// whose peer sent it), never to the destination's.
	if h.memA.used != ChunkSize || h.memB.max != 0 {
		t.Fatalf("charged: a %d, b at most %d", h.memA.used, h.memB.max)
	}
	// Resume: the reader drains in steps, the source is let through.
	for range 10_000 {
		h.dstEnd.resume()
		h.pump()
		if h.dstEnd.fin {
			break
		}
		h.dstEnd.paused = true
		h.srcEnd.flush()
	}
	if !bytes.Equal(h.dstEnd.got, data) || !h.dstEnd.fin {
		t.Fatalf("after resuming: %d of %d bytes, fin %v", len(h.dstEnd.got), len(data), h.dstEnd.fin)
	}
	h.done()
}

// BenchmarkSplice moves 1 MiB one way per op through the sans-IO harness:
// the splice's own cost per byte (chunk copy, posting, yamux framing on
// four sessions), without sockets or encryption.
func BenchmarkSplice(b *testing.B) {
	h := newHarness(b, 0)
	data := randomBytes(1 << 20)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		h.dstEnd.got = h.dstEnd.got[:0]
		h.srcEnd.write(data, false)
		h.pump()
		if len(h.dstEnd.got) != len(data) {
			b.Fatalf("%d of %d", len(h.dstEnd.got), len(data))
		}
	}
}
