package mux

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"
)

// checkInvariants verifies the session's bounds and bookkeeping.
func checkInvariants(t testing.TB, s *Session) {
	t.Helper()
	in, out, backlog, unacked := 0, 0, 0, 0
	var growth int64
	for id, st := range s.streams {
		if st.id != id || st.flags&fRemoved != 0 {
			t.Fatalf("stream table: %d", id)
		}
		inflight := uint64(0)
		if s.rxStream == st {
			inflight = uint64(s.rxRemain)
		}
		if uint64(st.rb.len())+uint64(st.recvCredit)+inflight > uint64(st.recvWindow) {
			t.Fatalf("stream %d: buffered %d + credit %d + in flight %d > window %d", id, st.rb.len(), st.recvCredit, inflight, st.recvWindow)
		}
		if st.recvWindow > s.cfg.MaxWindow || st.recvWindow < InitialWindow {
			t.Fatalf("stream %d: window %d", id, st.recvWindow)
		}
		growth += int64(st.recvWindow - InitialWindow)
		if st.flags&fInbound != 0 {
			in++
		} else {
			out++
		}
		if st.flags&fBacklog != 0 {
			backlog++
		}
		if st.flags&fAwaitACK != 0 {
			unacked++
		}
	}
	if in != s.numInbound || out != s.numOutbound || backlog != s.backlog || unacked != s.unacked || growth != s.growth {
		t.Fatalf("counters: in %d/%d out %d/%d backlog %d/%d unacked %d/%d growth %d/%d",
			in, s.numInbound, out, s.numOutbound, backlog, s.backlog, unacked, s.unacked, growth, s.growth)
	}
	if s.numInbound > s.cfg.MaxStreams || s.backlog > s.cfg.AcceptBacklog || s.growth > s.cfg.MaxWindowGrowth {
		t.Fatalf("limits exceeded")
	}
	// Data queue: MaxOutput plus one FIN frame per stream at most.
	if s.data.len() > s.cfg.MaxOutput+HeaderLen*(s.cfg.MaxStreams*2) {
		t.Fatalf("data queue %d", s.data.len())
	}
	if s.ctl.len() > s.cfg.MaxControlOutput+HeaderLen {
		t.Fatalf("control queue %d", s.ctl.len())
	}
	checkDataQueue(t, s)
}

// checkDataQueue walks the data queue's segments: their live bytes add up,
// and every frame lies whole in one segment (NextOutput's runs and the
// header parse in consume rely on it).
func checkDataQueue(t testing.TB, s *Session) {
	t.Helper()
	q := &s.data
	total := 0
	for i, seg := range q.segs {
		b := seg
		if i == 0 {
			b = seg[q.off:]
			skip := min(s.dataMid, len(b)) // the rest of a frame partly sent
			if s.dataMid > len(b) {
				t.Fatalf("frame being sent (%d left) runs past its segment (%d)", s.dataMid, len(b))
			}
			total += skip
			b = b[skip:]
		}
		for len(b) > 0 {
			h, n, err := ParseHeader(b)
			if err != nil {
				t.Fatalf("segment %d: a header split or bad: %v (%d bytes left)", i, err, len(b))
			}
			if h.Type == TypeData {
				n += int(h.Length)
			}
			if n > len(b) {
				t.Fatalf("segment %d: a frame of %d bytes with %d left", i, n, len(b))
			}
			b = b[n:]
			total += n
		}
	}
	if total != q.n {
		t.Fatalf("data queue holds %d bytes, counts %d", total, q.n)
	}
	if q.n == 0 && q.segs != nil {
		t.Fatal("an empty data queue keeps segments")
	}
}

// fuzzHandler acts on streams according to the script.
type fuzzHandler struct{ consume int }

func (h *fuzzHandler) OnData(st *Stream, p []byte) int { return min(len(p), h.consume) }
func (h *fuzzHandler) OnWritable(st *Stream)           { st.Write(make([]byte, 100)) }
func (h *fuzzHandler) OnFIN(st *Stream)                {}
func (h *fuzzHandler) OnReset(*Stream, error)          {}

// FuzzSession interprets the input as a script of peer frames and embedder
// actions against a server session with small limits, checking invariants
// after every step: no panic, bounded queues and buffers, consistent
// counters, buffered bytes within the granted window.
func FuzzSession(f *testing.F) {
	f.Add([]byte{0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 8, 6, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 0, 1, 1, 0, 40, 4, 1, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 1, 0, 1, 255, 255})
	f.Add([]byte{0, 2, 1, 0, 0, 7, 0, 3, 0, 0, 0, 1, 7, 50, 0, 0, 0, 0})
	f.Add([]byte{5, 0, 0, 0, 0, 0, 0, 1, 2, 0, 1, 0, 0, 0, 0, 3, 0, 1, 0, 1, 2, 3, 4, 0})
	f.Fuzz(func(t *testing.T, script []byte) {
		var streams []*Stream
		// A tight connection share (two initial windows and a little):
		// buffers and queues are charged, refused, withheld and promised
		// against it; every charge must come back at Free.
		m := &testMeter{limit: 2*InitialWindow + 8<<10}
		cfg := Config{
			MaxStreams: 4, AcceptBacklog: 2, MaxRefusedStreams: 8,
			MaxOutput: 4096, MaxControlOutput: 1024, MaxFramePayload: 1000,
			MaxWindow: 1 << 20, MaxWindowGrowth: 1 << 20,
			Memory: m, HeldDataTimeout: time.Second,
			OnStream: func(st *Stream) { streams = append(streams, st) },
		}
		s := NewServer(cfg, t0)
		s.rtt = time.Millisecond
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
			case 0, 1, 2: // a peer frame
				h := Header{Type: FrameType(a % 4), Flags: Flags(b & 0xf), StreamID: uint32(c % 8)}
				h.Length = uint32(d) << (a >> 3 % 32)
				var payload []byte
				if h.Type == TypeData {
					h.Length = uint32(d) * 37 % 5000
					payload = make([]byte, h.Length)
				}
				// Feed only a prefix; the rest stays pending and arrives
				// with a later frame op, so embedder actions land
				// mid-frame.
				pending = append(pending, AppendHeader(nil, h)...)
				pending = append(pending, payload...)
				k := min(int(e)*64, len(pending))
				n, err := s.Input(pending[:k], now)
				if err == nil && k-n >= HeaderLen {
					t.Fatalf("consumed %d of %d", n, k)
				}
				pending = pending[n:]
				var pe *Error
				if err != nil && errors.As(err, &pe) && !pe.Remote {
					// A GoAway with our code must be queued.
					out := s.AppendOutput(nil, 0)
					if !bytes.Contains(out, AppendHeader(nil, Header{Type: TypeGoAway, Length: uint32(pe.Code)})) {
						t.Fatalf("%v without GoAway", err)
					}
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
			case 6: // drain output
				s.AppendOutput(nil, int(a)*20)
			case 7: // misc
				switch b % 5 {
				case 0:
					if st := pick(a); st != nil {
						st.ResetWithCode(uint32(c))
					}
				case 1:
					if st := pick(a); st != nil {
						st.CloseWrite()
					}
				case 2:
					if st, err := s.Open(&fuzzHandler{consume: int(c)}); err == nil {
						streams = append(streams, st)
					}
				case 3:
					s.Tick(now)
				case 4:
					s.Input(AppendHeader(nil, Header{Type: TypePing, Flags: FlagACK, Length: s.pingID}), now)
				}
			}
			checkInvariants(t, s)
		}
		s.Close(CodeNormal)
		s.AppendOutput(nil, 0)
		s.Free()
		if m.used != 0 {
			t.Fatalf("%d bytes still charged after Free", m.used)
		}
	})
}

// FuzzInputSplit feeds the same bytes to two sessions, one in a single
// Input call and one split at every possible size, and compares what the
// handlers saw and what the sessions answered.
func FuzzInputSplit(f *testing.F) {
	var seed []byte
	seed = append(seed, frame(TypeWindowUpdate, FlagSYN, 1, 0)...)
	seed = append(seed, frame(TypeData, 0, 1, 5, 'h', 'e', 'l', 'l', 'o')...)
	seed = append(seed, frame(TypePing, FlagSYN, 0, 7)...)
	seed = append(seed, frame(TypeData, FlagSYN|FlagFIN, 3, 2, 'h', 'i')...)
	seed = append(seed, frame(TypeWindowUpdate, FlagRST, 1, 0x1001)...)
	f.Add(seed, uint8(1))
	f.Add(seed, uint8(5))
	f.Add(append(seed, frame(TypeGoAway, 0, 0, 1)...), uint8(13))
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		run := func(step int) (string, []byte, error) {
			var log bytes.Buffer
			cfg := Config{KeepAliveInterval: -1, OnStream: func(st *Stream) {
				fmt.Fprintf(&log, "open %d;", st.ID())
				st.Accept(&Funcs{
					Data:  func(st *Stream, p []byte) int { log.Write(p); return len(p) },
					FIN:   func(st *Stream) { fmt.Fprintf(&log, "fin %d;", st.ID()) },
					Reset: func(st *Stream, err error) { fmt.Fprintf(&log, "reset %d %v;", st.ID(), err) },
				})
			}}
			s := NewServer(cfg, t0)
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
			return log.String(), s.AppendOutput(nil, 0), err
		}
		l1, o1, e1 := run(len(in) + 1)
		l2, o2, e2 := run(int(step%32) + 1)
		if l1 != l2 || !bytes.Equal(o1, o2) || fmt.Sprint(e1) != fmt.Sprint(e2) {
			t.Fatalf("one-shot vs split:\n%q %x %v\n%q %x %v", l1, o1, e1, l2, o2, e2)
		}
	})
}
