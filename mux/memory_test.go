package mux

import (
	"errors"
	"io"
	"testing"
	"time"
)

// outputRoom is the headroom a session with default queue bounds keeps
// for its output queues: shares in these tests add it.
const outputRoom = DefaultMaxOutput + dataSegment + DefaultMaxControlOutput // a data-queue segment's slack beyond MaxOutput

// testMeter is a connection share of limit bytes.
type testMeter struct{ used, limit int }

func (m *testMeter) Reserve(n int) bool {
	if m.used+n > m.limit {
		return false
	}
	m.used += n
	return true
}
func (m *testMeter) Release(n int) {
	m.used -= n
	if m.used < 0 {
		panic("meter released more than it was charged")
	}
}
func (m *testMeter) Charge(n int)   { m.used += n }
func (m *testMeter) Available() int { return m.limit - m.used }

// A handler that consumes nothing: every stream's data is held.
func holding() Handler { return &recorder{} }

// Peers fill streams they opened, within the windows we granted, and the
// handler consumes nothing: the buffers are charged; while the share cannot
// afford another stream's window new SYNs are refused (RST, counted); data
// past the share resets that stream (the connection goes on); every charge
// is returned once the session is freed.
func TestMemoryShareBoundsHeldData(t *testing.T) {
	m := &testMeter{limit: 1<<20 + outputRoom} // four initial windows and the output queues' room
	var refusals []string
	s, sts := serverWith(t, Config{Memory: m, OnRefuse: func(r string) { refusals = append(refusals, r) }}, holding)
	full := make([]byte, InitialWindow)
	// Three streams filled: 768 KiB held, 256 KiB left.
	for id := uint32(1); id <= 5; id += 2 {
		if _, err := s.Input(frame(TypeData, FlagSYN, id, InitialWindow, full...), t0); err != nil {
			t.Fatal(err)
		}
	}
	drain(s) // the ACKs, charged while queued
	if m.used != 3*InitialWindow || len(*sts) != 3 {
		t.Fatalf("held %d on %d streams", m.used, len(*sts))
	}
	// A fourth stream still fits exactly one window.
	if _, err := s.Input(frame(TypeWindowUpdate, FlagSYN, 7, 0), t0); err != nil {
		t.Fatal(err)
	}
	if len(*sts) != 4 {
		t.Fatal("fourth stream refused with a window's room left")
	}
	s.Input(frame(TypeData, 0, 7, 1000, make([]byte, 1000)...), t0) // 4 KiB class held
	// Now less than a window is free: the next SYN is refused.
	if _, err := s.Input(frame(TypeWindowUpdate, FlagSYN, 9, 0), t0); err != nil {
		t.Fatal(err)
	}
	if len(*sts) != 4 || len(refusals) != 1 || refusals[0] != RefuseMemory {
		t.Fatalf("streams %d, refusals %v", len(*sts), refusals)
	}
	out := parseFrames(t, drain(s))
	if last := out[len(out)-1]; last.Flags&FlagRST == 0 || last.StreamID != 9 {
		t.Fatalf("no RST for the refused stream: %+v", out)
	}
	// The fourth stream's window is still open, but the layer below has
	// charged 8 KiB past the headroom it was given (MemoryHeadroom 0): the
	// initial window, never backed, no longer fits, so filling it resets
	// that stream (told, its data dropped); the session and the other
	// streams go on.
	m.Charge(8 << 10)
	if _, err := s.Input(frame(TypeData, 0, 7, InitialWindow-1000, full[:InitialWindow-1000]...), t0); err != nil {
		t.Fatalf("over the share: %v", err)
	}
	if (*sts)[3].State() != StreamReset || s.NumStreams() != 3 || refusals[len(refusals)-1] != ResetMemory {
		t.Fatalf("stream 7 %v, %d streams, refusals %v", (*sts)[3].State(), s.NumStreams(), refusals)
	}
	if r := (*sts)[3].Handler().(*recorder); len(r.resets) != 1 || !errors.Is(r.resets[0], ErrStreamMemory) {
		t.Fatalf("handler told %v", r.resets)
	}
	out = parseFrames(t, drain(s))
	if last := out[len(out)-1]; last.Flags&FlagRST == 0 || last.StreamID != 7 {
		t.Fatalf("want RST for stream 7, got %+v", out)
	}
	if m.used != 3*InitialWindow+8<<10 {
		t.Fatalf("held %d after the reset, want the three full streams and the 8 KiB", m.used)
	}
	m.Release(8 << 10)
	s.Free()
	if m.used != 0 {
		t.Fatalf("%d bytes still charged after Free", m.used)
	}
}

// Near the share, window updates are withheld (the peer waits) and granted
// once memory is released.
func TestMemoryWithholdsWindow(t *testing.T) {
	m := &testMeter{limit: InitialWindow + 64<<10 + outputRoom}
	r := &recorder{}
	s, sts := serverWith(t, Config{Memory: m}, func() Handler { return r })
	full := make([]byte, InitialWindow)
	s.Input(frame(TypeData, FlagSYN, 1, InitialWindow, full...), t0)
	st := (*sts)[0]
	drain(s)
	// Consume half: a grant of 128 KiB is due, but only 64 KiB... the
	// buffer is still the 256 KiB class, so nothing is affordable.
	st.Discard(InitialWindow / 2)
	if hs := parseFrames(t, drain(s)); len(hs) != 0 {
		t.Fatalf("window granted with no memory to back it: %+v", hs)
	}
	if st.flags&fWithheld == 0 || s.withheld != 1 {
		t.Fatal("withheld grant not recorded")
	}
	// Consuming the rest releases the buffer: the update goes out.
	st.Discard(InitialWindow / 2)
	hs := parseFrames(t, drain(s))
	if len(hs) != 1 || hs[0].Type != TypeWindowUpdate || hs[0].Length != InitialWindow {
		t.Fatalf("grant after release: %+v", hs)
	}
	if s.withheld != 0 || m.used != 0 {
		t.Fatalf("withheld %d, used %d", s.withheld, m.used)
	}
	if c := s.ReceiveCredit(); c != InitialWindow {
		t.Fatalf("credit %d after the grant", c)
	}
}

// A handler that stops consuming does not pin its buffer: past
// HeldDataTimeout the stream is reset and the handler told.
func TestHeldDataTimeout(t *testing.T) {
	m := &testMeter{limit: 4 << 20}
	var refusals []string
	r := &recorder{}
	s, _ := serverWith(t, Config{Memory: m, HeldDataTimeout: 30 * time.Second, OnRefuse: func(x string) { refusals = append(refusals, x) }},
		func() Handler { return r })
	s.Input(frame(TypeData, FlagSYN, 1, 100, make([]byte, 100)...), t0)
	next, _ := s.Tick(t0.Add(time.Second))
	if !next.Equal(t0.Add(30 * time.Second)) {
		t.Fatalf("next deadline %v", next)
	}
	s.Tick(t0.Add(30 * time.Second))
	if len(r.resets) != 1 || !errors.Is(r.resets[0], ErrHeldData) || len(refusals) != 1 || refusals[0] != ResetHeldData {
		t.Fatalf("resets %v, refusals %v", r.resets, refusals)
	}
	if hs := parseFrames(t, drain(s)); hs[len(hs)-1].Flags&FlagRST == 0 {
		t.Fatalf("no RST sent: %+v", hs)
	}
	if m.used != 0 || s.held != 0 || s.NumStreams() != 0 {
		t.Fatalf("used %d held %d streams %d", m.used, s.held, s.NumStreams())
	}
}

// Window credit granted after checking the meter is a promise: when its
// bytes arrive they are taken even if charges since (past the headroom the
// session keeps for them) have used the room: the meter goes over rather
// than a compliant stream being reset. A move to a larger buffer is
// charged as the difference, not both buffers.
func TestPromisedWindowAccepted(t *testing.T) {
	m := &testMeter{limit: 500<<10 + outputRoom}
	var refusals []string
	s, sts := serverWith(t, Config{Memory: m, OnRefuse: func(x string) { refusals = append(refusals, x) }}, holding)
	full := make([]byte, InitialWindow)
	s.Input(frame(TypeData, FlagSYN, 1, InitialWindow, full...), t0)
	drain(s)
	st := (*sts)[0]
	// Read it all: the window update is granted, backed by the meter.
	if n, _ := st.Read(make([]byte, InitialWindow)); n != InitialWindow {
		t.Fatalf("read %d", n)
	}
	hs := parseFrames(t, drain(s))
	if len(hs) != 1 || hs[0].Type != TypeWindowUpdate || hs[0].Length != InitialWindow {
		t.Fatalf("no window update: %+v", hs)
	}
	// Something below takes most of the share before the promised bytes
	// come.
	m.Charge(700 << 10)
	if m.Available() >= InitialWindow {
		t.Fatalf("%d still available", m.Available())
	}
	// The promised window, in two frames (the second grows the buffer).
	s.Input(frame(TypeData, 0, 1, 1000, full[:1000]...), t0)
	s.Input(frame(TypeData, 0, 1, InitialWindow-1000, full[1000:]...), t0)
	if st.State() != StreamOpen || len(refusals) != 0 || st.Buffered() != InitialWindow {
		t.Fatalf("stream %v, refusals %v, %d buffered", st.State(), refusals, st.Buffered())
	}
	if m.used > InitialWindow+700<<10+4<<10 {
		t.Fatalf("%d charged for %d held and 600 KiB below", m.used, InitialWindow)
	}
}

// The session keeps headroom for what it charges without refusal: credit
// it promised and an answer queued up to MaxOutput together stay within
// the share. A share of one window, the output queues' room and a little:
// after one stream's window is promised again, a second stream is refused
// (its initial window would take the output's room), and when the answer
// fills the output queue and the promised bytes arrive, the share holds.
func TestWindowLeavesOutputRoom(t *testing.T) {
	m := &testMeter{limit: InitialWindow + outputRoom + 8<<10}
	var refusals []string
	s, sts := serverWith(t, Config{Memory: m, OnRefuse: func(x string) { refusals = append(refusals, x) }}, holding)
	full := make([]byte, InitialWindow)
	s.Input(frame(TypeData, FlagSYN, 1, InitialWindow, full...), t0)
	drain(s)
	st := (*sts)[0]
	st.Read(full) // the window is granted again: a promise
	drain(s)
	s.Input(frame(TypeData, FlagSYN, 3, 0), t0)
	if len(*sts) != 1 || len(refusals) != 1 || refusals[0] != RefuseMemory {
		t.Fatalf("second stream: %d streams, refusals %v", len(*sts), refusals)
	}
	if n, _ := st.Write(full); n < DefaultMaxOutput-4*HeaderLen { // as much as the queue takes
		t.Fatalf("answer: %d queued", n)
	}
	s.Input(frame(TypeData, 0, 1, InitialWindow, full...), t0)
	if st.State() != StreamOpen || st.Buffered() != InitialWindow {
		t.Fatalf("promised bytes: stream %v, %d buffered", st.State(), st.Buffered())
	}
	if m.used > m.limit {
		t.Fatalf("%d charged, share %d", m.used, m.limit)
	}
}

// A stream closed both ways whose data the handler has not read stays in
// the session, charged: the held-data deadline still resets it, a second
// one is released at Free, and one read to the end leaves the session.
func TestClosedStreamKeepsUnreadCharged(t *testing.T) {
	m := &testMeter{limit: 4 << 20}
	var refusals []string
	s, sts := serverWith(t, Config{Memory: m, HeldDataTimeout: 30 * time.Second, OnRefuse: func(x string) { refusals = append(refusals, x) }}, holding)
	for _, id := range []uint32{1, 3, 5} {
		s.Input(frame(TypeData, FlagSYN, id, 100, make([]byte, 100)...), t0)
		(*sts)[len(*sts)-1].CloseWrite()
		s.Input(frame(TypeWindowUpdate, FlagFIN, id, 0), t0)
	}
	for i, st := range *sts {
		if st.State() != StreamClosed {
			t.Fatalf("stream %d: %v", i, st.State())
		}
	}
	if s.NumStreams() != 3 || m.used < 3*100 {
		t.Fatalf("%d streams in the session, %d bytes charged", s.NumStreams(), m.used)
	}
	// Read to the end: the stream leaves the session, its charge returns.
	before := m.used
	buf := make([]byte, 200)
	if n, err := (*sts)[0].Read(buf); n != 100 || err != nil {
		t.Fatalf("read %d %v", n, err)
	}
	if n, err := (*sts)[0].Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("after the data: %d %v, want EOF", n, err)
	}
	if s.NumStreams() != 2 || m.used >= before {
		t.Fatalf("%d streams, %d bytes charged (was %d)", s.NumStreams(), m.used, before)
	}
	// The held-data deadline reaches closed streams: both are reset and
	// their handlers told; what they held is not read as a clean EOF.
	s.Tick(t0.Add(30 * time.Second))
	if s.NumStreams() != 0 || len(refusals) != 2 || refusals[0] != ResetHeldData {
		t.Fatalf("%d streams, refusals %v", s.NumStreams(), refusals)
	}
	for _, st := range (*sts)[1:] {
		if r := st.Handler().(*recorder); len(r.resets) != 1 || !errors.Is(r.resets[0], ErrHeldData) {
			t.Fatalf("handler told %v", r.resets)
		}
		if _, err := st.Read(buf); !errors.Is(err, ErrHeldData) {
			t.Fatalf("read after the reset: %v", err)
		}
	}
	drain(s)
	if m.used != 0 {
		t.Fatalf("%d bytes still charged", m.used)
	}

	// A closed stream still holding data when the session is freed
	// returns its charge.
	m2 := &testMeter{limit: 4 << 20}
	s2, sts2 := serverWith(t, Config{Memory: m2}, holding)
	s2.Input(frame(TypeData, FlagSYN, 1, 100, make([]byte, 100)...), t0)
	(*sts2)[0].CloseWrite()
	s2.Input(frame(TypeWindowUpdate, FlagFIN, 1, 0), t0)
	s2.Free()
	if m2.used != 0 {
		t.Fatalf("%d bytes charged after Free", m2.used)
	}
}

// Output queues are charged while they hold bytes and released once
// written out.
func TestMemoryChargesOutput(t *testing.T) {
	m := &testMeter{limit: 4 << 20}
	s, sts := serverWith(t, Config{Memory: m}, func() Handler { return &recorder{consume: true} })
	s.Input(frame(TypeWindowUpdate, FlagSYN, 1, 0), t0)
	st := (*sts)[0]
	drain(s)
	if _, err := st.Write(make([]byte, 10000)); err != nil {
		t.Fatal(err)
	}
	if m.used == 0 {
		t.Fatal("queued output not charged")
	}
	drain(s)
	if m.used != 0 {
		t.Fatalf("%d bytes charged after the output was taken", m.used)
	}
}

// A reset follows the data the stream already queued, so the peer receives
// what was written before the reset.
func TestResetAfterQueuedData(t *testing.T) {
	s, sts := serverWith(t, Config{}, func() Handler { return &recorder{consume: true} })
	s.Input(frame(TypeWindowUpdate, FlagSYN, 1, 0), t0)
	drain(s)
	st := (*sts)[0]
	st.Write([]byte("answer"))
	st.Reset()
	hs := parseFrames(t, drain(s))
	if len(hs) != 2 || hs[0].Type != TypeData || hs[1].Flags&FlagRST == 0 {
		t.Fatalf("want the data then the RST, got %+v", hs)
	}
}

// A stream whose handler leaves bytes unconsumed gets no more credit than
// keeps what it holds plus what may still arrive within one pooled buffer,
// whatever its window has grown to; its full window returns once nothing
// is held.
func TestHeldStreamCreditCapped(t *testing.T) {
	s, sts := serverWith(t, Config{}, holding)
	full := make([]byte, InitialWindow)
	s.Input(frame(TypeData, FlagSYN, 1, InitialWindow, full...), t0)
	st := (*sts)[0]
	st.recvWindow = 4 << 20 // as auto-tuning would have grown it
	drain(s)
	grants := func() (n []uint32) {
		for _, h := range parseFrames(t, drain(s)) {
			if h.Type == TypeWindowUpdate && h.StreamID == 1 {
				n = append(n, h.Length)
			}
		}
		return n
	}
	st.Discard(10 << 10) // 246 KiB held: less than a useful grant fits
	if g := grants(); len(g) != 0 {
		t.Fatalf("grants %v while the buffer is nearly full", g)
	}
	st.Discard(100 << 10) // 146 KiB held: credit up to 256 KiB in all
	if g := grants(); len(g) != 1 || g[0] != 110<<10 {
		t.Fatalf("grants %v, want one of 110 KiB", g)
	}
	st.Discard(st.Buffered()) // nothing held: the window's worth
	if g := grants(); len(g) != 1 || g[0] != 4<<20-110<<10 {
		t.Fatalf("grants %v, want the rest of the 4 MiB window", g)
	}
}

// A grant withheld for want of memory is retried whenever memory may have
// come back, not only when a buffer is released: here the room comes from
// another stream's promised credit, returned when that stream ends, while
// the handler consumes every byte as it arrives (nothing buffered, so no
// buffer release ever happens). Without the retry the peer, out of window,
// and we, with nothing to echo, would wait for each other for good (seen
// with go-libp2p's bulk client at the end of its streams).
func TestWithheldGrantRetriedWhenCreditReturns(t *testing.T) {
	m := &testMeter{limit: InitialWindow + InitialWindow/2 + outputRoom}
	r := &recorder{consume: true}
	s, _ := serverWith(t, Config{Memory: m}, func() Handler { return r })
	full := make([]byte, InitialWindow)
	s.Input(frame(TypeWindowUpdate, FlagSYN, 1, 0), t0)
	s.Input(frame(TypeWindowUpdate, FlagSYN, 3, 0), t0)
	drain(s)
	// Two streams each use their whole initial window; the handler takes
	// every byte as it arrives. One update is affordable, the other is not
	// (the first's promised credit is counted, and so is the initial
	// window still outstanding while the first is decided).
	s.Input(frame(TypeData, 0, 1, InitialWindow, full...), t0)
	s.Input(frame(TypeData, 0, 3, InitialWindow, full...), t0)
	hs := parseFrames(t, drain(s))
	granted := map[uint32]uint32{}
	for _, h := range hs {
		if h.Type == TypeWindowUpdate && h.Flags == 0 {
			granted[h.StreamID] += h.Length
		}
	}
	if len(granted) != 1 || s.withheld != 1 {
		t.Fatalf("grants %v, withheld %d: want one stream granted, the other withheld", granted, s.withheld)
	}
	var got, other uint32 = 1, 3
	if granted[3] != 0 {
		got, other = 3, 1
	}
	// The peer resets the granted stream: the credit promised to it comes
	// back, and the other's update must go out without any buffer being
	// released.
	s.Input(frame(TypeWindowUpdate, FlagRST, got, 0), t0)
	hs = parseFrames(t, drain(s))
	n := uint32(0)
	for _, h := range hs {
		if h.Type == TypeWindowUpdate && h.StreamID == other {
			n += h.Length
		}
	}
	if n == 0 || s.withheld != 0 {
		t.Fatalf("stream %d granted %d after room came back (withheld %d)", other, n, s.withheld)
	}
}

// Window credit granted to one stream never takes the room the initial
// window of another needs: with a share of two initial windows (beside the
// output room), a stream whose handler consumes at once is not granted
// more while a second stream's initial window is outstanding, so when that
// window arrives whole and its handler holds it, the bytes fit and the
// stream is not reset.
func TestGrantLeavesRoomForInitialWindows(t *testing.T) {
	m := &testMeter{limit: 2*InitialWindow + outputRoom}
	var refusals []string
	var sts []*Stream
	s := NewServer(Config{KeepAliveInterval: -1, Memory: m, OnRefuse: func(x string) { refusals = append(refusals, x) },
		OnStream: func(st *Stream) {
			sts = append(sts, st)
			if st.ID() == 1 {
				st.Accept(&recorder{consume: true})
			} else {
				st.Accept(holding())
			}
		}}, t0)
	s.rtt = time.Millisecond // window auto-tuning on
	full := make([]byte, InitialWindow)
	s.Input(frame(TypeWindowUpdate, FlagSYN, 1, 0), t0)
	s.Input(frame(TypeWindowUpdate, FlagSYN, 3, 0), t0)
	drain(s)
	// Stream 1 streams on: each window it uses is granted again.
	for range 4 {
		s.Input(frame(TypeData, 0, 1, InitialWindow/2, full[:InitialWindow/2]...), t0)
		drain(s)
	}
	// Stream 3's initial window arrives whole, and its handler holds it.
	s.Input(frame(TypeData, 0, 3, InitialWindow, full...), t0)
	if len(sts) != 2 || sts[1].State() != StreamOpen || sts[1].Buffered() != InitialWindow || len(refusals) != 0 {
		t.Fatalf("the second stream's initial window: %d streams, state %v, %d buffered, refusals %v", len(sts), sts[1].State(), sts[1].Buffered(), refusals)
	}
	if m.used > m.limit {
		t.Fatalf("%d charged, share %d", m.used, m.limit)
	}
}
