package mux

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// frame builds raw wire bytes.
func frame(typ FrameType, flags Flags, id, length uint32, payload ...byte) []byte {
	b := AppendHeader(nil, Header{typ, flags, id, length})
	return append(b, payload...)
}

// parseFrames splits raw output into headers (payloads skipped).
func parseFrames(t testing.TB, b []byte) []Header {
	t.Helper()
	var hs []Header
	for len(b) > 0 {
		h, n, err := ParseHeader(b)
		if err != nil {
			t.Fatalf("bad output %x: %v", b, err)
		}
		b = b[n:]
		if h.Type == TypeData {
			b = b[h.Length:]
		}
		hs = append(hs, h)
	}
	return hs
}

func drain(s *Session) []byte { return s.AppendOutput(nil, 0) }

// pipe is two in-memory sessions wired together; bytes move in random
// chunk sizes, partial headers re-presented as the Input contract says.
type pipe struct {
	t          testing.TB
	c, s       *Session
	rng        *rand.Rand
	toC, toS   []byte // pending input
	now        time.Time
	maxChunk   int
	errC, errS error
	// zeroCopy drains with NextOutput and ConsumeOutput, consuming a
	// random prefix of each run, instead of AppendOutput.
	zeroCopy bool
}

// out drains up to limit bytes of s's output onto dst.
func (p *pipe) out(s *Session, dst []byte, limit int) []byte {
	if !p.zeroCopy {
		return s.AppendOutput(dst, limit)
	}
	b := s.NextOutput(limit)
	k := 1 + p.rng.IntN(len(b))
	dst = append(dst, b[:k]...)
	s.ConsumeOutput(k)
	return dst
}

func newPipe(t testing.TB, ccfg, scfg Config) *pipe {
	return &pipe{t: t, c: NewClient(ccfg, t0), s: NewServer(scfg, t0), rng: rand.New(rand.NewPCG(1, 2)), now: t0, maxChunk: 1 << 20}
}

func (p *pipe) feed(dst *Session, pending *[]byte, errp *error) bool {
	if len(*pending) == 0 || *errp != nil {
		return false
	}
	k := 1 + p.rng.IntN(min(len(*pending), p.maxChunk))
	// Simulate the engine: it only has the pending prefix up to k.
	n, err := dst.Input((*pending)[:k], p.now)
	if err != nil {
		*errp = err
	}
	if n > k || (k-n >= HeaderLen && err == nil) {
		p.t.Fatalf("Input consumed %d of %d", n, k)
	}
	*pending = (*pending)[n:]
	if n == 0 && k < len(*pending) {
		// need a longer prefix; retry with everything
		n, err = dst.Input(*pending, p.now)
		if err != nil {
			*errp = err
		}
		*pending = (*pending)[n:]
	}
	return n > 0
}

// run moves bytes until both sides are quiet.
func (p *pipe) run() {
	for range 1 << 24 {
		moved := false
		if p.c.HasOutput() {
			p.toS = p.out(p.c, p.toS, 1+p.rng.IntN(p.maxChunk))
			moved = true
		}
		if p.s.HasOutput() {
			p.toC = p.out(p.s, p.toC, 1+p.rng.IntN(p.maxChunk))
			moved = true
		}
		if p.feed(p.s, &p.toS, &p.errS) {
			moved = true
		}
		if p.feed(p.c, &p.toC, &p.errC) {
			moved = true
		}
		checkInvariants(p.t, p.c)
		checkInvariants(p.t, p.s)
		if !moved {
			return
		}
	}
	p.t.Fatal("pipe did not settle")
}

// echo is a server handler that writes back what it receives, consuming only
// what it could write, and half-closes after the peer's FIN.
type echo struct{ fin bool }

func (e *echo) OnData(st *Stream, p []byte) int {
	n, _ := st.Write(p)
	return n
}
func (e *echo) OnWritable(st *Stream) {
	n, _ := st.Write(st.Peek())
	st.Discard(n)
	e.maybeClose(st)
}
func (e *echo) OnFIN(st *Stream)       { e.fin = true; e.maybeClose(st) }
func (e *echo) OnReset(*Stream, error) {}
func (e *echo) maybeClose(st *Stream) {
	if e.fin && st.Buffered() == 0 && (st.State() == StreamRemoteClosed) {
		st.CloseWrite()
	}
}

func echoServer() Config {
	return Config{OnStream: func(st *Stream) { st.Accept(&echo{}) }}
}

// collector buffers everything a client stream receives.
type collector struct {
	got     bytes.Buffer
	fin     bool
	reset   error
	pending []byte // still to write
}

func (c *collector) OnData(st *Stream, p []byte) int { c.got.Write(p); return len(p) }
func (c *collector) OnWritable(st *Stream)           { c.push(st) }
func (c *collector) OnFIN(*Stream)                   { c.fin = true }
func (c *collector) OnReset(_ *Stream, err error)    { c.reset = err }
func (c *collector) push(st *Stream) {
	n, err := st.Write(c.pending)
	c.pending = c.pending[n:]
	if err == nil && len(c.pending) == 0 {
		st.CloseWrite()
	}
}

func TestEchoInMemory(t *testing.T) {
	for _, zeroCopy := range []bool{false, true} {
		t.Run(map[bool]string{false: "AppendOutput", true: "NextOutput"}[zeroCopy], func(t *testing.T) { echoInMemory(t, zeroCopy) })
	}
}

func echoInMemory(t *testing.T, zeroCopy bool) {
	for _, chunk := range []int{1, 7, 13, 1000, 1 << 20} {
		p := newPipe(t, Config{}, echoServer())
		p.maxChunk = chunk
		p.zeroCopy = zeroCopy
		size := 600 << 10
		if chunk < 100 {
			size = 20 << 10
		}
		var cols []*collector
		var want [][]byte
		for i := range 4 {
			data := make([]byte, size+i)
			for j := range data {
				data[j] = byte(j*7 + i)
			}
			c := &collector{pending: data}
			st, err := p.c.Open(c)
			if err != nil {
				t.Fatal(err)
			}
			c.push(st)
			cols = append(cols, c)
			want = append(want, data)
		}
		p.run()
		if p.errC != nil || p.errS != nil {
			t.Fatalf("chunk %d: errors %v %v", chunk, p.errC, p.errS)
		}
		for i, c := range cols {
			if !c.fin || !bytes.Equal(c.got.Bytes(), want[i]) {
				t.Fatalf("chunk %d stream %d: fin=%v got %d bytes want %d", chunk, i, c.fin, c.got.Len(), len(want[i]))
			}
		}
		if p.c.NumStreams() != 0 || p.s.NumStreams() != 0 {
			t.Fatalf("streams left: %d %d", p.c.NumStreams(), p.s.NumStreams())
		}
	}
}

func TestPingAnswered(t *testing.T) {
	s := NewServer(Config{KeepAliveInterval: -1}, t0)
	if s.HasOutput() {
		t.Fatal("output with keepalive disabled")
	}
	in := append(frame(TypePing, FlagSYN, 0, 0), frame(TypePing, FlagSYN, 0, 0xdeadbeef)...)
	if n, err := s.Input(in, t0); n != len(in) || err != nil {
		t.Fatal(n, err)
	}
	out := drain(s)
	want := append(frame(TypePing, FlagACK, 0, 0), frame(TypePing, FlagACK, 0, 0xdeadbeef)...)
	if !bytes.Equal(out, want) {
		t.Fatalf("out %x want %x", out, want)
	}
	// A Ping ACK we did not ask for is not answered.
	s.Input(frame(TypePing, FlagACK, 0, 5), t0)
	if s.HasOutput() {
		t.Fatal("answered a pong")
	}
}

func TestPingBacklog(t *testing.T) {
	s := NewServer(Config{KeepAliveInterval: -1}, t0)
	var in []byte
	for i := range 100 {
		in = append(in, frame(TypePing, FlagSYN, 0, uint32(i))...)
	}
	if _, err := s.Input(in, t0); err != nil {
		t.Fatal(err)
	}
	if got := len(parseFrames(t, drain(s))); got != DefaultPingBacklog {
		t.Fatalf("%d pongs queued, want %d", got, DefaultPingBacklog)
	}
}

func TestKeepAlive(t *testing.T) {
	s := NewServer(Config{}, t0)
	// Initial RTT ping, like go-yamux.
	if hs := parseFrames(t, drain(s)); len(hs) != 1 || hs[0] != (Header{TypePing, FlagSYN, 0, 1}) {
		t.Fatalf("initial output %+v", hs)
	}
	next, err := s.Tick(t0)
	if err != nil || !next.Equal(t0.Add(DefaultPingTimeout)) {
		t.Fatal(next, err)
	}
	s.Input(frame(TypePing, FlagACK, 0, 1), t0.Add(20*time.Millisecond))
	if s.RTT() != 20*time.Millisecond {
		t.Fatalf("rtt %v", s.RTT())
	}
	now := t0.Add(20 * time.Millisecond)
	next, err = s.Tick(now)
	if err != nil || !next.Equal(now.Add(DefaultKeepAliveInterval)) {
		t.Fatal(next, err)
	}
	// Traffic postpones keepalive.
	now = now.Add(20 * time.Second)
	s.Input(frame(TypePing, FlagSYN, 0, 9), now)
	drain(s)
	next, _ = s.Tick(now.Add(15 * time.Second))
	if !next.Equal(now.Add(DefaultKeepAliveInterval)) {
		t.Fatal(next)
	}
	now = next
	next, err = s.Tick(now)
	if err != nil || !next.Equal(now.Add(DefaultPingTimeout)) {
		t.Fatal(next, err)
	}
	if hs := parseFrames(t, drain(s)); len(hs) != 1 || hs[0] != (Header{TypePing, FlagSYN, 0, 2}) {
		t.Fatalf("keepalive %+v", hs)
	}
	if _, err := s.Tick(now.Add(DefaultPingTimeout - 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tick(now.Add(DefaultPingTimeout)); err != ErrKeepAliveTimeout {
		t.Fatal(err)
	}
	if _, err := s.Input(frame(TypePing, FlagACK, 0, 2), now); err != ErrKeepAliveTimeout {
		t.Fatal(err)
	}
}

// recorder records every handler event.
type recorder struct {
	data     bytes.Buffer
	consume  bool
	fins     int
	resets   []error
	writable int
}

func (r *recorder) OnData(st *Stream, p []byte) int {
	if !r.consume {
		return 0
	}
	r.data.Write(p)
	return len(p)
}
func (r *recorder) OnWritable(*Stream)           { r.writable++ }
func (r *recorder) OnFIN(*Stream)                { r.fins++ }
func (r *recorder) OnReset(_ *Stream, err error) { r.resets = append(r.resets, err) }

func serverWith(t *testing.T, cfg Config, h func() Handler) (*Session, *[]*Stream) {
	var sts []*Stream
	cfg.KeepAliveInterval = -1
	if cfg.OnStream == nil {
		cfg.OnStream = func(st *Stream) {
			sts = append(sts, st)
			if h != nil {
				st.Accept(h())
			}
		}
	}
	return NewServer(cfg, t0), &sts
}

func TestOpenDataFINFromRawFrames(t *testing.T) {
	r := &recorder{consume: true}
	s, sts := serverWith(t, Config{}, func() Handler { return r })
	// §9.8: SYN, data "hi", FIN, ping.
	in := unhex(t, "000100010000000100000000 0000000000000001000000026869 000100040000000100000000 000200010000000000000000")
	if n, err := s.Input(in, t0); n != len(in) || err != nil {
		t.Fatal(n, err)
	}
	if r.data.String() != "hi" || r.fins != 1 || len(*sts) != 1 {
		t.Fatalf("data %q fins %d", r.data.String(), r.fins)
	}
	st := (*sts)[0]
	if st.State() != StreamRemoteClosed {
		t.Fatal(st.State())
	}
	hs := parseFrames(t, drain(s))
	want := []Header{{TypeWindowUpdate, FlagACK, 1, 0}, {TypePing, FlagACK, 0, 0}}
	if len(hs) != 2 || hs[0] != want[0] || hs[1] != want[1] {
		t.Fatalf("out %+v", hs)
	}
	st.Write([]byte("yo"))
	st.CloseWrite()
	if st.State() != StreamClosed || s.NumStreams() != 0 {
		t.Fatal(st.State(), s.NumStreams())
	}
	out := drain(s)
	if !bytes.Equal(out, append(frame(TypeData, 0, 1, 2, 'y', 'o'), frame(TypeWindowUpdate, FlagFIN, 1, 0)...)) {
		t.Fatalf("%x", out)
	}
	// Late frames for the closed stream are drained silently.
	if _, err := s.Input(frame(TypeData, 0, 1, 3, 1, 2, 3), t0); err != nil {
		t.Fatal(err)
	}
}

func TestDataBeforeAcceptAndFINOrder(t *testing.T) {
	var st *Stream
	s := NewServer(Config{KeepAliveInterval: -1, OnStream: func(x *Stream) { st = x }}, t0)
	in := append(frame(TypeData, FlagSYN, 1, 3, 'a', 'b', 'c'), frame(TypeData, FlagFIN, 1, 2, 'd', 'e')...)
	s.Input(in, t0)
	if st == nil || st.Buffered() != 5 || st.State() != StreamRemoteClosed {
		t.Fatal(st)
	}
	if _, err := st.Write([]byte("x")); err != ErrNotAcceptable {
		t.Fatal(err)
	}
	r := &recorder{consume: true}
	if err := st.Accept(r); err != nil {
		t.Fatal(err)
	}
	if r.data.String() != "abcde" || r.fins != 1 {
		t.Fatal(r.data.String(), r.fins)
	}
	if err := st.Accept(r); err != ErrNotAcceptable {
		t.Fatal(err)
	}
	if n, err := st.Read(make([]byte, 4)); n != 0 || err != io.EOF {
		t.Fatal(n, err)
	}
}

func TestHandlerSwapMidData(t *testing.T) {
	// A negotiator consumes a line, then hands the stream to a protocol
	// handler that must see the rest of the same payload.
	proto := &recorder{consume: true}
	var neg *Funcs
	neg = &Funcs{Data: func(st *Stream, p []byte) int {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			return 0
		}
		st.SetHandler(proto)
		return i + 1
	}}
	s, _ := serverWith(t, Config{}, func() Handler { return neg })
	s.Input(frame(TypeData, FlagSYN, 1, 4, '/', 'p', 'r', 'o'), t0)
	s.Input(frame(TypeData, FlagFIN, 1, 6, 't', 'o', '\n', 'x', 'y', 'z'), t0)
	if proto.data.String() != "xyz" || proto.fins != 1 {
		t.Fatalf("%q %d", proto.data.String(), proto.fins)
	}
}

func TestFlowControlSlowReader(t *testing.T) {
	r := &recorder{}
	s, sts := serverWith(t, Config{}, func() Handler { return r })
	s.Input(frame(TypeWindowUpdate, FlagSYN, 1, 0), t0)
	payload := make([]byte, 64<<10)
	for i := range 4 {
		if _, err := s.Input(frame(TypeData, 0, 1, uint32(len(payload)), payload...), t0); err != nil {
			t.Fatal(i, err)
		}
	}
	st := (*sts)[0]
	if st.Buffered() != InitialWindow || uint32(st.Buffered()) > st.RecvWindow() {
		t.Fatal(st.Buffered())
	}
	drain(s) // ACK
	// One more byte is beyond the window: GoAway(protocol error).
	_, err := s.Input(frame(TypeData, 0, 1, 1, 0), t0)
	var e *Error
	if !errors.As(err, &e) || e.Reason != "data_exceeds_window" {
		t.Fatal(err)
	}
	if hs := parseFrames(t, drain(s)); len(hs) != 1 || hs[0] != (Header{TypeGoAway, 0, 0, 1}) {
		t.Fatalf("%+v", hs)
	}
	if len(r.resets) != 1 || !errors.Is(r.resets[0], ErrSessionClosed) {
		t.Fatal(r.resets)
	}
}

func TestWindowGrantedAsConsumed(t *testing.T) {
	r := &recorder{}
	s, sts := serverWith(t, Config{}, func() Handler { return r })
	s.Input(frame(TypeData, FlagSYN, 1, 200<<10, make([]byte, 200<<10)...), t0)
	st := (*sts)[0]
	drain(s)
	st.Discard(100 << 10) // free = 100K < 128K: nothing yet
	if s.HasOutput() {
		t.Fatal("early window update")
	}
	buf := make([]byte, 50<<10)
	st.Read(buf) // free = 150K
	hs := parseFrames(t, drain(s))
	if len(hs) != 1 || hs[0] != (Header{TypeWindowUpdate, 0, 1, 150 << 10}) {
		t.Fatalf("%+v", hs)
	}
	// Peer may now send 56K + 150K more.
	if _, err := s.Input(frame(TypeData, 0, 1, 206<<10, make([]byte, 206<<10)...), t0); err != nil {
		t.Fatal(err)
	}
	if uint32(st.Buffered()) > st.RecvWindow() {
		t.Fatal(st.Buffered())
	}
}

func TestAutoTune(t *testing.T) {
	s, sts := serverWith(t, Config{}, func() Handler { return &recorder{consume: true} })
	s.rtt = 10 * time.Millisecond
	now := t0
	payload := make([]byte, 64<<10)
	s.Input(frame(TypeWindowUpdate, FlagSYN, 1, 0), now)
	st := (*sts)[0]
	var granted uint64 = InitialWindow
	var sent uint64
	for range 200 {
		now = now.Add(time.Millisecond)
		if uint64(len(payload))+sent > granted {
			break
		}
		if _, err := s.Input(frame(TypeData, 0, 1, uint32(len(payload)), payload...), now); err != nil {
			t.Fatal(err)
		}
		sent += uint64(len(payload))
		for _, h := range parseFrames(t, drain(s)) {
			if h.Type == TypeWindowUpdate && h.Flags == 0 {
				granted += uint64(h.Length)
			}
		}
	}
	if st.RecvWindow() != DefaultMaxWindow {
		t.Fatalf("window %d after fast consumption", st.RecvWindow())
	}
	if s.growth != DefaultMaxWindow-InitialWindow {
		t.Fatal(s.growth)
	}
	st.Reset()
	if s.growth != 0 {
		t.Fatal(s.growth)
	}
}

func TestRSTWithCode(t *testing.T) {
	r := &recorder{consume: true}
	s, sts := serverWith(t, Config{}, func() Handler { return r })
	s.Input(frame(TypeWindowUpdate, FlagSYN, 1, 0), t0)
	st := (*sts)[0]
	w0 := st.SendWindow()
	s.Input(frame(TypeWindowUpdate, FlagRST, 1, 0x1001), t0)
	var se *StreamError
	if len(r.resets) != 1 || !errors.As(r.resets[0], &se) || se.Code != 0x1001 || !se.Remote || !errors.Is(se, ErrStreamReset) {
		t.Fatal(r.resets)
	}
	if st.SendWindow() != w0 || st.State() != StreamReset || s.NumStreams() != 0 {
		t.Fatal("RST code taken as window credit or stream left")
	}
	if _, err := st.Write([]byte("x")); !errors.Is(err, ErrStreamReset) {
		t.Fatal(err)
	}
	// Our reset carries a code too.
	s.Input(frame(TypeWindowUpdate, FlagSYN, 3, 0), t0)
	drain(s)
	(*sts)[1].ResetWithCode(0x1002)
	if hs := parseFrames(t, drain(s)); len(hs) != 1 || hs[0] != (Header{TypeWindowUpdate, FlagRST, 3, 0x1002}) {
		t.Fatalf("%+v", hs)
	}
}

func TestProtocolViolations(t *testing.T) {
	for _, tc := range []struct {
		name, reason string
		in           []byte
	}{
		{"window overflow", "window_overflow", append(frame(TypeWindowUpdate, FlagSYN, 1, 0), frame(TypeWindowUpdate, 0, 1, 0xffffffff-InitialWindow+1)...)},
		{"even SYN from client", "syn_wrong_id", frame(TypeWindowUpdate, FlagSYN, 2, 0)},
		{"duplicate SYN", "syn_duplicate", append(frame(TypeWindowUpdate, FlagSYN, 1, 0), frame(TypeWindowUpdate, FlagSYN, 1, 0)...)},
		{"data on 0", "stream_frame_on_id_0", frame(TypeData, 0, 0, 0)},
		{"ping on 5", "session_frame_on_stream_id", frame(TypePing, FlagSYN, 5, 0)},
		{"version", "bad_version", []byte{1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}},
		{"type", "bad_type", []byte{0, 9, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}},
		{"big frame", "data_exceeds_window", frame(TypeData, FlagSYN, 1, InitialWindow+1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := serverWith(t, Config{}, func() Handler { return &recorder{} })
			_, err := s.Input(tc.in, t0)
			var e *Error
			if !errors.As(err, &e) || e.Reason != tc.reason || e.Code != CodeProtocolError {
				t.Fatal(err)
			}
			hs := parseFrames(t, drain(s))
			if len(hs) == 0 || hs[len(hs)-1] != (Header{TypeGoAway, 0, 0, 1}) {
				t.Fatalf("%+v", hs)
			}
		})
	}
	// Window exactly at 2^32-1 is fine.
	s, _ := serverWith(t, Config{}, func() Handler { return &recorder{} })
	if _, err := s.Input(append(frame(TypeWindowUpdate, FlagSYN, 1, 0), frame(TypeWindowUpdate, 0, 1, 0xffffffff-InitialWindow)...), t0); err != nil {
		t.Fatal(err)
	}
}

func TestStreamOpenFlood(t *testing.T) {
	s, sts := serverWith(t, Config{MaxStreams: 10, AcceptBacklog: 4}, nil) // never accept
	var in []byte
	for i := range 4 + DefaultMaxRefusedStreams {
		in = append(in, frame(TypeWindowUpdate, FlagSYN, uint32(2*i+1), 0)...)
	}
	if _, err := s.Input(in, t0); err != nil {
		t.Fatal(err)
	}
	if len(*sts) != 4 {
		t.Fatal(len(*sts))
	}
	hs := parseFrames(t, drain(s))
	if len(hs) != DefaultMaxRefusedStreams || hs[0] != (Header{TypeWindowUpdate, FlagRST, 9, 0}) {
		t.Fatalf("%d %+v", len(hs), hs[0])
	}
	_, err := s.Input(frame(TypeWindowUpdate, FlagSYN, 100001, 0), t0)
	var e *Error
	if !errors.As(err, &e) || e.Reason != "stream_open_flood" {
		t.Fatal(err)
	}
	if hs := parseFrames(t, drain(s)); hs[len(hs)-1] != (Header{TypeGoAway, 0, 0, 1}) {
		t.Fatalf("%+v", hs)
	}
}

// SYNs the embedder refuses in OnStream (its own limits) count towards
// MaxRefusedStreams like the session's refusals; an admitted stream starts
// the count again.
func TestStreamOpenFloodEmbedderRefusals(t *testing.T) {
	admit := 2
	s, _ := serverWith(t, Config{OnStream: func(st *Stream) {
		if admit > 0 {
			admit--
			st.Accept(&recorder{})
			return
		}
		st.Reset()
	}}, nil)
	var in []byte
	id := uint32(1)
	syn := func(n int) {
		in = in[:0]
		for range n {
			in = append(in, frame(TypeWindowUpdate, FlagSYN, id, 0)...)
			id += 2
		}
	}
	syn(1 + DefaultMaxRefusedStreams) // one admitted, then refusals
	if _, err := s.Input(in, t0); err != nil {
		t.Fatal(err)
	}
	admit = 1
	syn(1 + DefaultMaxRefusedStreams) // the count starts again
	if _, err := s.Input(in, t0); err != nil {
		t.Fatalf("refusals after an admitted stream: %v", err)
	}
	syn(1)
	_, err := s.Input(in, t0)
	var e *Error
	if !errors.As(err, &e) || e.Reason != "stream_open_flood" {
		t.Fatalf("one refusal past the limit: %v", err)
	}
}

func TestMaxStreams(t *testing.T) {
	s, sts := serverWith(t, Config{MaxStreams: 3}, func() Handler { return &recorder{} })
	for i := range 5 {
		s.Input(frame(TypeWindowUpdate, FlagSYN, uint32(2*i+1), 0), t0)
	}
	if len(*sts) != 3 {
		t.Fatal(len(*sts))
	}
	hs := parseFrames(t, drain(s))
	if hs[3] != (Header{TypeWindowUpdate, FlagRST, 7, 0}) || hs[4] != (Header{TypeWindowUpdate, FlagRST, 9, 0}) {
		t.Fatalf("%+v", hs)
	}
	(*sts)[0].Reset()
	s.Input(frame(TypeWindowUpdate, FlagSYN, 11, 0), t0)
	if len(*sts) != 4 {
		t.Fatal("slot not freed")
	}
}

func TestOutputBoundedPeerNeverReads(t *testing.T) {
	s, sts := serverWith(t, Config{}, func() Handler { return &recorder{} })
	for i := range 8 {
		s.Input(frame(TypeWindowUpdate, FlagSYN, uint32(2*i+1), 1<<30), t0)
	}
	big := make([]byte, 1<<20)
	for range 3 {
		for _, st := range *sts {
			n, err := st.Write(big)
			if err != ErrWouldBlock || n >= len(big) {
				t.Fatal(n, err)
			}
		}
		if s.data.len() > DefaultMaxOutput {
			t.Fatalf("queued %d", s.data.len())
		}
	}
	// Draining wakes writers.
	r := (*sts)[0].Handler().(*recorder)
	s.AppendOutput(nil, 100<<10)
	if r.writable != 1 {
		t.Fatal(r.writable)
	}
}

func TestWriteWindowAndOnWritable(t *testing.T) {
	r := &recorder{}
	s, sts := serverWith(t, Config{MaxOutput: 1 << 20}, func() Handler { return r })
	s.Input(frame(TypeWindowUpdate, FlagSYN, 1, 0), t0)
	st := (*sts)[0]
	n, err := st.Write(make([]byte, InitialWindow+5))
	if n != InitialWindow || err != ErrWouldBlock {
		t.Fatal(n, err)
	}
	out := drain(s)
	var total int
	for _, h := range parseFrames(t, out) {
		if h.Type == TypeData {
			if int(h.Length) > DefaultMaxFramePayload {
				t.Fatal("frame too big")
			}
			total += int(h.Length)
		}
	}
	if total != InitialWindow || r.writable != 0 {
		t.Fatal(total, r.writable)
	}
	s.Input(frame(TypeWindowUpdate, 0, 1, 10), t0)
	if r.writable != 1 {
		t.Fatal(r.writable)
	}
	if n, err := st.Write(make([]byte, 20)); n != 10 || err != ErrWouldBlock {
		t.Fatal(n, err)
	}
}

func TestSmallWritesCoalesce(t *testing.T) {
	s, sts := serverWith(t, Config{}, func() Handler { return &recorder{} })
	s.Input(frame(TypeWindowUpdate, FlagSYN, 1, 0), t0)
	drain(s)
	st := (*sts)[0]
	for range 100 {
		st.Write([]byte("abc"))
	}
	out := s.AppendOutput(nil, 5) // cut mid-frame
	st.Write([]byte("def"))       // must not grow the frame being sent
	out = s.AppendOutput(out, 0)
	hs := parseFrames(t, out)
	if len(hs) != 2 || hs[0].Length != 300 || hs[1].Length != 3 {
		t.Fatalf("%+v", hs)
	}
}

func TestGoAway(t *testing.T) {
	s, sts := serverWith(t, Config{}, func() Handler { return &recorder{} })
	s.Input(frame(TypeWindowUpdate, FlagSYN, 1, 0), t0)
	// GoAway(0): existing streams live on, no new outbound ones.
	if _, err := s.Input(frame(TypeGoAway, 0, 0, 0), t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(&recorder{}); err != ErrRemoteGoAway {
		t.Fatal(err)
	}
	if _, err := (*sts)[0].Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	// Unknown codes are accepted and end the session.
	_, err := s.Input(frame(TypeGoAway, 0, 0, 0x1005), t0)
	var e *Error
	if !errors.As(err, &e) || !e.Remote || e.Code != 0x1005 {
		t.Fatal(err)
	}
	// Our graceful GoAway refuses new streams.
	s2, sts2 := serverWith(t, Config{}, func() Handler { return &recorder{} })
	s2.GoAway()
	s2.Input(frame(TypeWindowUpdate, FlagSYN, 1, 0), t0)
	hs := parseFrames(t, drain(s2))
	if len(*sts2) != 0 || hs[0] != (Header{TypeGoAway, 0, 0, 0}) || hs[1] != (Header{TypeWindowUpdate, FlagRST, 1, 0}) {
		t.Fatalf("%+v", hs)
	}
	s2.Close(CodeNormal)
	if !errors.Is(s2.Err(), ErrSessionClosed) {
		t.Fatal(s2.Err())
	}
}

func TestClientIDs(t *testing.T) {
	c := NewClient(Config{KeepAliveInterval: -1}, t0)
	a, _ := c.Open(&recorder{})
	b, _ := c.Open(&recorder{})
	if a.ID() != 1 || b.ID() != 3 {
		t.Fatal(a.ID(), b.ID())
	}
	s := NewServer(Config{KeepAliveInterval: -1}, t0)
	x, _ := s.Open(&recorder{})
	if x.ID() != 2 {
		t.Fatal(x.ID())
	}
	hs := parseFrames(t, drain(c))
	if hs[0] != (Header{TypeWindowUpdate, FlagSYN, 1, 0}) {
		t.Fatalf("%+v", hs)
	}
	// Un-ACKed SYNs are bounded.
	c2 := NewClient(Config{KeepAliveInterval: -1, AcceptBacklog: 2}, t0)
	c2.Open(nil)
	c2.Open(nil)
	if _, err := c2.Open(nil); err != ErrTooManyStreams {
		t.Fatal(err)
	}
	c2.Input(frame(TypeWindowUpdate, FlagACK, 1, 0), t0)
	if _, err := c2.Open(nil); err != nil {
		t.Fatal(err)
	}
}

func TestCloseDropsQueuedData(t *testing.T) {
	s, sts := serverWith(t, Config{}, func() Handler { return &recorder{} })
	s.Input(frame(TypeWindowUpdate, FlagSYN, 1, 0), t0)
	drain(s)
	(*sts)[0].Write(make([]byte, 100<<10))
	out := s.AppendOutput(nil, 100) // mid-frame
	s.Close(CodeNormal)
	out = s.AppendOutput(out, 0)
	hs := parseFrames(t, out)
	if len(hs) != 2 || hs[0].Type != TypeData || hs[1] != (Header{TypeGoAway, 0, 0, 0}) {
		t.Fatalf("%+v", hs)
	}
	if s.HasOutput() {
		t.Fatal("output left")
	}
	if _, err := s.Input(frame(TypePing, FlagSYN, 0, 1), t0); !errors.Is(err, ErrSessionClosed) {
		t.Fatal(err)
	}
}

// A Data frame whose payload is still arriving must not be counted as free
// window: consuming its first part grants nothing beyond the window.
func TestGrantCountsPayloadInFlight(t *testing.T) {
	s, _ := serverWith(t, Config{}, func() Handler { return &recorder{consume: true} })
	s.Input(frame(TypeWindowUpdate, FlagSYN, 1, 0), t0)
	drain(s)
	f := frame(TypeData, 0, 1, 200<<10, make([]byte, 200<<10)...)
	s.Input(f[:HeaderLen+100<<10], t0) // 100K consumed, 100K in flight
	if s.HasOutput() {
		t.Fatalf("granted %+v while 100K still in flight", parseFrames(t, drain(s)))
	}
	s.Input(f[HeaderLen+100<<10:], t0)
	if hs := parseFrames(t, drain(s)); len(hs) != 1 || hs[0] != (Header{TypeWindowUpdate, 0, 1, 200 << 10}) {
		t.Fatalf("%+v", hs)
	}
}

func TestQueueGrowth(t *testing.T) {
	var q queue
	p := make([]byte, 1000)
	allocs := 0
	lastCap := 0
	for range 4000 {
		q.write(p, nil)
		if cap(q.b) != lastCap {
			allocs++
			lastCap = cap(q.b)
		}
	}
	if q.len() != 4000*1000 || allocs > 12 {
		t.Fatalf("len %d, %d buffer changes", q.len(), allocs)
	}
	q.discard(q.len(), nil)
	if q.b != nil {
		t.Fatal("not released")
	}
}

// The session can end inside Accept (its ACK overflows a control queue the
// peer never reads); a protocol handler installed after that still sees
// its stream's end, once, so whatever it took is given back.
func TestSetHandlerAfterSessionEndedInAccept(t *testing.T) {
	neg := &recorder{}
	proto := &recorder{}
	var dead *Stream
	var acceptErr error
	s := NewServer(Config{KeepAliveInterval: -1, MaxControlOutput: 3 * HeaderLen, OnStream: func(st *Stream) {
		acceptErr = st.Accept(neg)
		if st.State() == StreamReset && dead == nil {
			dead = st
			if err := st.SetHandler(proto); err == nil {
				t.Errorf("SetHandler on a reset stream: %v", err)
			}
			st.SetHandler(proto) // the same handler again: no second end
		}
	}}, t0)
	for i := range 5 {
		s.Input(frame(TypeWindowUpdate, FlagSYN, uint32(2*i+1), 0), t0)
	}
	if dead == nil || s.Err() == nil {
		t.Fatalf("the session did not end inside Accept (accept: %v, err %v)", acceptErr, s.Err())
	}
	if len(neg.resets) == 0 || len(proto.resets) != 1 {
		t.Fatalf("negotiator saw %d resets, protocol handler %d (want 1)", len(neg.resets), len(proto.resets))
	}
}
