package mux

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// outputChecker parses what a client session sends, across AppendOutput
// calls that may end mid-frame, and checks the role's rules.
type outputChecker struct {
	buf     []byte
	payload uint32 // bytes of a Data payload still to skip
	maxData int
}

func (o *outputChecker) add(t testing.TB, b []byte) {
	t.Helper()
	o.buf = append(o.buf, b...)
	for {
		if o.payload > 0 {
			k := min(uint32(len(o.buf)), o.payload)
			o.buf = o.buf[k:]
			o.payload -= k
			if o.payload > 0 {
				return
			}
		}
		h, n, err := ParseHeader(o.buf)
		if err == ErrNeedMore {
			return
		}
		if err != nil {
			t.Fatalf("we sent an invalid header %x: %v", o.buf[:HeaderLen], err)
		}
		o.buf = o.buf[n:]
		switch h.Type {
		case TypeData, TypeWindowUpdate:
			// Our streams are odd; we open only those, and acknowledge
			// only the server's (even) ones.
			if h.StreamID == 0 || h.Flags&FlagSYN != 0 && h.StreamID%2 != 1 || h.Flags&FlagACK != 0 && h.StreamID%2 != 0 {
				t.Fatalf("client sent %+v", h)
			}
			if h.Type == TypeData {
				if int(h.Length) > o.maxData {
					t.Fatalf("data frame of %d bytes", h.Length)
				}
				o.payload = h.Length
			}
		case TypePing, TypeGoAway:
			if h.StreamID != 0 {
				t.Fatalf("client sent %+v", h)
			}
		}
	}
}

// FuzzClientSession interprets the input as a script of server frames and
// embedder actions against a client session with small limits and a tight
// memory share, checking after every step the invariants FuzzSession
// checks (bounded queues and buffers, consistent counters, buffered bytes
// within the granted window) and that everything the client sends is
// well-formed for its role; at the end, that every stream ended exactly
// once and every byte charged to the share came back.
func FuzzClientSession(f *testing.F) {
	// Open 1; the server ACKs it, sends 37 bytes and a FIN; we send.
	f.Add([]byte{2, 1, 0, 0, 0, 0, 0, 1, 2, 1, 0, 1, 0, 0, 0, 1, 1, 1, 0, 1, 4, 1, 0, 1, 6, 0, 0, 0, 0, 0})
	// The server opens 2 with 74 bytes; we accept, consume, write, send.
	f.Add([]byte{0, 0, 1, 2, 2, 2, 3, 0, 5, 0, 0, 0, 5, 0, 10, 0, 0, 0, 6, 5, 0, 0, 0, 0})
	// Window credit overflowing u32, a ping, a keepalive tick, GoAway.
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 193, 0, 1, 255, 1, 0, 2, 1, 0, 7, 1, 7, 0, 2, 0, 0, 200, 0, 3, 0, 0, 0, 1})
	// The server opens 2 with data and its FIN; we accept and consume part
	// of it, then close our side: the stream stays in the session, charged,
	// until the rest is read or the session is freed.
	f.Add([]byte{0, 0, 5, 2, 2, 2, 3, 0, 1, 0, 0, 0, 7, 0, 1, 0, 0, 0})
	// RST of our stream with a code; we GoAway; a SYN with our parity.
	f.Add([]byte{2, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 8, 1, 9, 1, 7, 1, 3, 0, 0, 0, 0, 0, 1, 3, 1, 1})
	f.Fuzz(func(t *testing.T, script []byte) {
		var streams []*Stream
		m := &testMeter{limit: 2*InitialWindow + 8<<10}
		ended := map[*Stream]int{}
		cfg := Config{
			MaxStreams: 4, AcceptBacklog: 2, MaxRefusedStreams: 8,
			MaxOutput: 4096, MaxControlOutput: 1024, MaxFramePayload: 1000,
			MaxWindow: 1 << 20, MaxWindowGrowth: 1 << 20,
			OnStream:        func(st *Stream) { streams = append(streams, st) },
			Memory:          m,
			HeldDataTimeout: 20 * time.Millisecond,
			OnStreamEnd:     func(st *Stream) { ended[st]++ },
			OnRefuse: func(reason string) {
				switch reason {
				case RefuseStreamLimit, RefuseBacklog, RefuseGoingAway, RefuseNoHandler, RefuseMemory, ResetHeldData, ResetMemory:
				default:
					t.Fatalf("refusal reason %q", reason)
				}
			},
		}
		s := NewClient(cfg, t0)
		s.rtt = time.Millisecond
		out := &outputChecker{maxData: cfg.MaxFramePayload}
		now := t0
		var pending []byte
		pick := func(b byte) *Stream {
			if len(streams) == 0 {
				return nil
			}
			return streams[int(b)%len(streams)]
		}
		for len(script) >= 6 && s.Err() == nil {
			op, a, b, c, d, e := script[0], script[1], script[2], script[3], script[4], script[5]
			script = script[6:]
			now = now.Add(time.Duration(e) * 100 * time.Microsecond)
			switch op % 8 {
			case 0, 1: // a server frame, fed in part (the rest arrives later)
				h := Header{Type: FrameType(a % 4), Flags: Flags(b & 0xf), StreamID: uint32(c % 8)}
				h.Length = uint32(d) << (a >> 3 % 32)
				var payload []byte
				if h.Type == TypeData {
					h.Length = uint32(d) * 37 % 5000
					payload = make([]byte, h.Length)
				}
				pending = append(pending, AppendHeader(nil, h)...)
				pending = append(pending, payload...)
				k := min(int(e)*64, len(pending))
				n, err := s.Input(pending[:k], now)
				if err == nil && k-n >= HeaderLen {
					t.Fatalf("consumed %d of %d", n, k)
				}
				pending = pending[n:]
				var pe *Error
				if err != nil && !errors.As(err, &pe) {
					t.Fatalf("untyped session error %v", err)
				}
			case 2: // open a stream of ours
				if st, err := s.Open(&fuzzHandler{consume: int(a) * 50}); err == nil {
					streams = append(streams, st)
				}
			case 3: // accept / set consumption
				if st := pick(a); st != nil {
					if st.flags&fBacklog != 0 {
						st.Accept(&fuzzHandler{consume: int(b) * 50})
					} else if fh, ok := st.Handler().(*fuzzHandler); ok {
						fh.consume = int(b) * 50
					}
				}
			case 4: // consume buffered
				if st := pick(a); st != nil {
					st.Discard(min(st.Buffered(), int(b)*300))
				}
			case 5: // write
				if st := pick(a); st != nil {
					st.Write(make([]byte, int(b)*40))
				}
			case 6: // send output
				out.add(t, s.AppendOutput(nil, int(a)*20))
			case 7: // misc
				switch b % 4 {
				case 0:
					if st := pick(a); st != nil {
						st.ResetWithCode(uint32(c))
					}
				case 1:
					if st := pick(a); st != nil {
						st.CloseWrite()
					}
				case 2:
					s.Tick(now)
				case 3:
					s.GoAway()
				}
			}
			checkInvariants(t, s)
			if s.numOutbound > s.cfg.MaxStreams || s.unacked > s.cfg.AcceptBacklog {
				t.Fatalf("outbound %d unacked %d", s.numOutbound, s.unacked)
			}
		}
		s.Close(CodeNormal)
		out.add(t, s.AppendOutput(nil, 0))
		s.Free()
		// Every charge is back, a stream closed both ways with unread
		// bytes included (it stays in the session until drained).
		if m.used != 0 {
			t.Fatalf("%d bytes still charged after Free", m.used)
		}
		for _, st := range streams {
			if ended[st] != 1 {
				t.Fatalf("stream %d ended %d times", st.ID(), ended[st])
			}
		}
	})
}

// eventLog records what handlers saw. Consecutive deliveries to one
// stream are joined, so the log does not depend on how the input was cut.
type eventLog struct {
	b      bytes.Buffer
	dataID uint32
	inData bool
}

func (l *eventLog) data(id uint32, p []byte) {
	if !l.inData || l.dataID != id {
		fmt.Fprintf(&l.b, "|data %d:", id)
		l.inData, l.dataID = true, id
	}
	l.b.Write(p)
}

func (l *eventLog) event(format string, args ...any) {
	l.inData = false
	fmt.Fprintf(&l.b, "|"+format, args...)
}

// clientRun feeds in to a client session that has opened `opened` streams,
// in pieces of step bytes, and logs what the handlers saw and what the
// session answered.
func clientRun(t testing.TB, in []byte, opened, step int) (string, []byte, error) {
	var log eventLog
	h := func() Handler {
		return &Funcs{
			Data:  func(st *Stream, p []byte) int { log.data(st.ID(), p); return len(p) },
			FIN:   func(st *Stream) { log.event("fin %d", st.ID()) },
			Reset: func(st *Stream, err error) { log.event("reset %d %v", st.ID(), err) },
		}
	}
	cfg := Config{KeepAliveInterval: -1, OnStream: func(st *Stream) {
		log.event("open %d", st.ID())
		st.Accept(h())
	}}
	s := NewClient(cfg, t0)
	for range opened {
		if _, err := s.Open(h()); err != nil {
			t.Fatal(err)
		}
	}
	var pending []byte
	var err error
	for i := 0; i < len(in) && err == nil; i += step {
		pending = append(pending, in[i:min(i+step, len(in))]...)
		var n int
		n, err = s.Input(pending, t0)
		pending = pending[n:]
	}
	if err == nil && len(pending) >= HeaderLen {
		t.Fatalf("left %d", len(pending))
	}
	return log.b.String(), s.AppendOutput(nil, 0), err
}

// serverFrames is a valid server answer to a client that opened streams 1
// and 3: ACKs, data, a stream of the server's own, a ping, window credit,
// FINs, an RST with a code, and GoAway(normal).
func serverFrames() []byte {
	var b []byte
	b = append(b, frame(TypeWindowUpdate, FlagACK, 1, 0)...)
	b = append(b, frame(TypeData, 0, 1, 5, 'h', 'e', 'l', 'l', 'o')...)
	b = append(b, frame(TypeData, FlagSYN, 2, 3, 'a', 'b', 'c')...)
	b = append(b, frame(TypePing, FlagSYN, 0, 42)...)
	b = append(b, frame(TypeData, FlagACK, 3, 2, 'x', 'y')...)
	b = append(b, frame(TypeWindowUpdate, 0, 1, 1000)...)
	b = append(b, frame(TypeWindowUpdate, FlagFIN, 1, 0)...)
	b = append(b, frame(TypeData, FlagFIN, 2, 1, '!')...)
	b = append(b, frame(TypeWindowUpdate, FlagRST, 3, 7)...)
	return append(b, frame(TypeGoAway, 0, 0, uint32(CodeNormal))...)
}

// Every truncated prefix of a valid server stream is need-more for a
// client session: no error, and what the handlers saw is a prefix of what
// the whole stream shows them.
func TestClientTruncatedPrefixes(t *testing.T) {
	in := serverFrames()
	whole, _, err := clientRun(t, in, 2, len(in))
	if err != nil || !strings.Contains(whole, "|reset 3") || !strings.Contains(whole, "|fin 2") || !strings.Contains(whole, "|data 1:hello") {
		t.Fatalf("whole: %q %v", whole, err)
	}
	for i := range in {
		got, _, err := clientRun(t, in[:i], 2, len(in))
		if err != nil {
			t.Fatalf("prefix %d: %v", i, err)
		}
		if !strings.HasPrefix(whole, got) {
			t.Fatalf("prefix %d: %q, whole %q", i, got, whole)
		}
	}
}

// FuzzClientInputSplit feeds the same server bytes to two client sessions
// (each has opened a few streams first), one in a single Input call and
// one in pieces, and compares what the handlers saw and what the sessions
// answered.
func FuzzClientInputSplit(f *testing.F) {
	in := serverFrames()
	f.Add(in, uint8(2), uint8(1))
	f.Add(in, uint8(2), uint8(11))
	f.Add(append(bytes.Clone(in), frame(TypeData, FlagSYN, 3, 1, 'z')...), uint8(2), uint8(5))
	f.Add(frame(TypeGoAway, 0, 0, uint32(CodeProtocolError)), uint8(0), uint8(3))
	f.Fuzz(func(t *testing.T, in []byte, opened, step uint8) {
		n := int(opened % 8)
		l1, o1, e1 := clientRun(t, in, n, len(in)+1)
		l2, o2, e2 := clientRun(t, in, n, int(step%32)+1)
		if l1 != l2 || !bytes.Equal(o1, o2) || fmt.Sprint(e1) != fmt.Sprint(e2) {
			t.Fatalf("one-shot vs split:\n%q %x %v\n%q %x %v", l1, o1, e1, l2, o2, e2)
		}
	})
}
