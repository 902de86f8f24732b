package libp2p

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/p2p/protocol/identify/pb"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/mux"
)

// The stream handlers are driven in process: a yamux server session of
// the test's own carries the streams, fed raw frames from a scripted peer,
// while a real PeerConn (a loopback connection, used with its lock held)
// gives the handlers what they take from it: the timer list, the inbound
// ping count and the identify message.

// Roles of the streams in the handler fuzz.
const (
	rolePing         = iota // inbound, PingStream
	roleEcho                // inbound, EchoStream
	roleIdentify            // inbound, IdentifyStream
	roleIdentifyPush        // inbound, Host.identifyPushStream
	roleIdentifyClient
	rolePingClient
	numInboundRoles = roleIdentifyPush + 1
)

// fuzzMeter is a connection's memory share for the session under test.
type fuzzMeter struct{ used, limit int }

func (m *fuzzMeter) Reserve(n int) bool {
	if m.used+n > m.limit {
		return false
	}
	m.used += n
	return true
}

func (m *fuzzMeter) Release(n int) {
	if m.used -= n; m.used < 0 {
		panic("meter released more than it was charged")
	}
}

func (m *fuzzMeter) Charge(n int)   { m.used += n }
func (m *fuzzMeter) Available() int { return max(m.limit-m.used, 0) }

// peerStream is the scripted peer's view of one stream.
type peerStream struct {
	id      uint32
	role    int
	sent    []byte // data the peer sent before its FIN or RST
	got     []byte // data the server sent
	sentFIN bool
	sentRST bool
	gotFIN  bool
	gotRST  bool
	// clients: how often done ran, and with what.
	done    int
	doneErr error
	idMsg   *pb.Identify
}

// handlerRig is one iteration's state.
type handlerRig struct {
	t       *testing.T
	pc      *PeerConn
	sess    *mux.Session
	now     time.Time
	streams map[uint32]*peerStream
	order   []uint32 // stream ids in the order they appeared
	nextID  uint32   // the peer's next stream id (odd)
	out     []byte   // server output not yet parsed
	payload uint32   // bytes of a Data payload in out still to read
	rxID    uint32
	idMsg   []byte // the identify message this connection gets
	idents  []*identifyServer
	pings   []*pingServer
	st      map[uint32]*mux.Stream
	meter   *fuzzMeter
	ended   map[*mux.Stream]int // OnStreamEnd calls
	pushed  []*pb.Identify      // identify pushes delivered to the host
	ping    uint32              // the last keepalive ping the server sent
	pinged  bool
}

func (r *handlerRig) onStream(st *mux.Stream) {
	ps := &peerStream{id: st.ID(), role: int(st.ID()/2) % numInboundRoles}
	r.streams[ps.id] = ps
	r.st[ps.id] = st
	// As the negotiator does: accept, then hand over to the protocol.
	st.Accept(&mux.Funcs{Data: func(*mux.Stream, []byte) int { return 0 }})
	var h mux.Handler
	switch ps.role {
	case rolePing:
		h = PingStream(r.pc, st)
		if s, ok := h.(*pingServer); ok {
			r.pings = append(r.pings, s)
		}
	case roleEcho:
		h = EchoStream(r.pc, st)
	case roleIdentify:
		h = IdentifyStream(r.pc, st)
		r.idents = append(r.idents, h.(*identifyServer))
	case roleIdentifyPush:
		h = r.pc.h.identifyPushStream(r.pc, st)
	}
	st.SetHandler(h)
}

// input feeds peer frames to the session.
func (r *handlerRig) input(b []byte) {
	if r.sess.Err() != nil {
		return
	}
	n, err := r.sess.Input(b, r.now)
	if err == nil && n != len(b) {
		r.t.Fatalf("whole frames left unconsumed: %d of %d", n, len(b))
	}
}

func (r *handlerRig) frame(h mux.Header, payload []byte) {
	r.input(append(mux.AppendHeader(nil, h), payload...))
}

// drain takes up to limit bytes of server output (0: all) and parses it
// into the peer's view.
func (r *handlerRig) drain(limit int) {
	r.out = append(r.out, r.sess.AppendOutput(nil, limit)...)
	for {
		if r.payload > 0 {
			k := min(uint32(len(r.out)), r.payload)
			if ps := r.streams[r.rxID]; ps != nil {
				ps.got = append(ps.got, r.out[:k]...)
			}
			r.out = r.out[k:]
			r.payload -= k
			if r.payload > 0 {
				return
			}
		}
		h, n, err := mux.ParseHeader(r.out)
		if err == mux.ErrNeedMore {
			return
		}
		if err != nil {
			r.t.Fatalf("server sent an invalid header: %v", err)
		}
		r.out = r.out[n:]
		ps := r.streams[h.StreamID]
		switch h.Type {
		case mux.TypeData:
			r.payload, r.rxID = h.Length, h.StreamID
		case mux.TypeWindowUpdate:
		case mux.TypePing:
			if h.Flags&mux.FlagSYN != 0 {
				r.ping, r.pinged = h.Length, true
			}
			continue
		default:
			continue
		}
		if ps == nil {
			continue
		}
		// An RST is the stream's last frame: it follows what the stream
		// queued before it (a peer drops frames after an RST).
		if ps.gotRST {
			r.t.Fatalf("stream %d: %+v after RST", ps.id, h)
		}
		if h.Flags&mux.FlagFIN != 0 {
			if ps.gotFIN || ps.gotRST {
				r.t.Fatalf("stream %d: FIN after FIN or RST", ps.id)
			}
			ps.gotFIN = true
		}
		if h.Flags&mux.FlagRST != 0 {
			ps.gotRST = true
		}
	}
}

// open starts one of our clients on a new outbound stream.
func (r *handlerRig) open(role int) {
	var st *mux.Stream
	var err error
	ps := &peerStream{role: role}
	switch role {
	case roleIdentifyClient:
		c := &identifyClient{msg: &pb.Identify{}}
		c.request = request[*pb.Identify]{pc: r.pc, done: func(m *pb.Identify, err error) {
			ps.done++
			ps.idMsg, ps.doneErr = m, err
		}}
		if st, err = r.sess.Open(c); err == nil {
			c.expire(st, DefaultIdentifyTimeout, ErrIdentifyTimeout)
		}
	case rolePingClient:
		c := &pingClient{request: request[time.Duration]{pc: r.pc, done: func(_ time.Duration, err error) {
			ps.done++
			ps.doneErr = err
		}}}
		copy(c.sent[:], bytes.Repeat([]byte{0x5a}, PingSize))
		if st, err = r.sess.Open(c); err == nil {
			c.start = r.now
			c.write(st)
			if c.pending() {
				c.expire(st, DefaultPingTimeout, ErrPingTimeout)
			}
		}
	}
	if err != nil {
		return
	}
	ps.id = st.ID()
	r.streams[ps.id] = ps
	r.st[ps.id] = st
}

// check asserts what holds after every step.
func (r *handlerRig) check() {
	t := r.t
	if r.pc.inboundPings > MaxInboundPings {
		t.Fatalf("%d inbound pings", r.pc.inboundPings)
	}
	live := 0
	for _, s := range r.pings {
		if !s.released {
			live++
		}
	}
	if live > MaxInboundPings || live != int(r.pc.inboundPings) {
		t.Fatalf("%d live ping handlers, %d counted", live, r.pc.inboundPings)
	}
	for _, s := range r.idents {
		if len(s.rest) > len(r.idMsg) {
			t.Fatalf("identify server holds %d bytes", len(s.rest))
		}
	}
	for _, id := range r.order {
		ps := r.streams[id]
		if ps.done > 1 {
			t.Fatalf("client stream %d: done ran %d times", id, ps.done)
		}
		switch ps.role {
		case roleEcho:
			if !bytes.HasPrefix(ps.sent, ps.got) {
				t.Fatalf("echo stream %d: sent back %d bytes that were not sent", id, len(ps.got))
			}
			if ps.gotFIN && (!ps.sentFIN || !bytes.Equal(ps.got, ps.sent)) {
				t.Fatalf("echo stream %d closed early", id)
			}
		case rolePing:
			chunks := len(ps.sent) / PingSize * PingSize
			if !bytes.HasPrefix(ps.sent[:chunks], ps.got) {
				t.Fatalf("ping stream %d: echoed %d bytes of %d (whole pings %d)", id, len(ps.got), len(ps.sent), chunks)
			}
			if ps.gotFIN && (!ps.sentFIN || len(ps.got) != chunks) {
				t.Fatalf("ping stream %d closed early", id)
			}
		case roleIdentify:
			if !bytes.HasPrefix(r.idMsg, ps.got) {
				t.Fatalf("identify stream %d: sent %d bytes that are not the message", id, len(ps.got))
			}
			if ps.gotFIN && len(ps.got) != len(r.idMsg) {
				t.Fatalf("identify stream %d closed early", id)
			}
		case roleIdentifyClient:
			if ps.done == 1 && ps.doneErr == nil {
				// A result is only what the peer sent, whole and checked.
				m, err, rest := feedIdentify(ps.sent)
				if err != nil || rest != 0 || !proto.Equal(m, ps.idMsg) || !ps.sentFIN {
					t.Fatalf("identify client: result from %d bytes (rest %d, %v, FIN %v)", len(ps.sent), rest, err, ps.sentFIN)
				}
			}
		}
	}
	// Unconsumed bytes stay within what each stream granted, and an
	// identify client keeps at most one partial message.
	for id, st := range r.st {
		if st.Buffered() > int(st.RecvWindow()) {
			t.Fatalf("stream %d holds %d bytes, window %d", id, st.Buffered(), st.RecvWindow())
		}
		if role := r.streams[id].role; (role == roleIdentifyClient || role == roleIdentifyPush) && st.Buffered() > MaxIdentifyMessage+identifyLenBytes {
			t.Fatalf("identify reader holds %d bytes", st.Buffered())
		}
	}
	// A push reaches the host only as what one push stream sent, whole,
	// before its FIN.
	for _, m := range r.pushed {
		found := false
		for _, id := range r.order {
			ps := r.streams[id]
			if ps.role != roleIdentifyPush || !ps.sentFIN {
				continue
			}
			if got, err, rest := feedIdentify(ps.sent); err == nil && rest == 0 && proto.Equal(got, m) {
				found = true
			}
		}
		if !found {
			t.Fatal("an identify push that no stream sent")
		}
	}
}

func (r *handlerRig) stream(sel byte) *peerStream {
	if len(r.order) == 0 {
		return nil
	}
	return r.streams[r.order[int(sel)%len(r.order)]]
}

// FuzzStreamHandlers drives the ping, echo, identify and identify push
// handlers (inbound: stream id/2 mod 4 picks which; outbound: our identify
// and ping clients), on a session charging a memory share, with a script of peer frames (data, FIN, RST, window
// credit), output drained in pieces, stream timers firing, keepalive
// ticks, local resets and the session's end, in any order. Properties:
// never a panic; an echo is a prefix of what was sent and completes
// before the FIN; a ping echoes whole pings only, in order, and closes
// only after echoing every one; identify sends exactly its message then
// the FIN; no more than MaxInboundPings ping handlers live; a client's
// done runs exactly once, and a successful identify result is exactly
// what the peer sent, and so is every identify push the host is given;
// when the session ends, every timer is stopped, every ping slot released,
// every identify buffer returned, every stream ended once and every byte
// charged to the share given back.
func FuzzStreamHandlers(f *testing.F) {
	srv, addr := startHost(f, Config{})
	pc := dialHost(f, srv, addr, DialOptions{})
	var cur *handlerRig // the run in progress, under pc's lock
	pc.h.Notify(Notifiee{IdentifyPush: func(_ *PeerConn, m *pb.Identify) {
		if cur != nil {
			cur.pushed = append(cur.pushed, m)
		}
	}})
	var vec []byte // a valid identify response (protocol-notes §9.9)
	pc.Conn().Do(func(*engine.Conn) {
		m, _ := srv.identifyMsg()
		vec, _ = m.append(nil, nil)
	})
	ping := bytes.Repeat([]byte{7}, PingSize)
	script := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	data := func(sel byte, p []byte) []byte { return append([]byte{1, sel, byte(len(p))}, p...) }
	// Ping: two whole pings and a partial one, drained, FIN, drained.
	f.Add(script([]byte{0}, data(0, ping), data(0, ping[:20]), []byte{5, 0}, data(0, ping), []byte{2, 0, 5, 0}))
	// Echo on stream 3 in pieces with small drains; identify on 5 with a FIN.
	f.Add(script([]byte{0, 0}, data(1, []byte("hello")), []byte{5, 1, 5, 1}, data(1, []byte("world")), []byte{2, 1, 0}, []byte{2, 2, 5, 0}))
	// Three pings at once (the third is refused), timers fire, a reset.
	f.Add(script([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0}, data(0, ping), data(4, ping), data(8, ping), []byte{5, 0, 6, 0, 3, 1, 5, 0, 6, 2, 1}))
	// An identify push on stream 7 in two pieces, then its FIN.
	f.Add(script([]byte{0, 0, 0, 0}, data(3, vec[:40]), data(3, vec[40:min(len(vec), 40+255)]), []byte{2, 3, 5, 0}))
	// Held data: an echo whose answers the peer does not read stops
	// consuming; past HeldDataTimeout the stream is reset.
	held := script([]byte{0, 0})
	for i := range 10 {
		held = append(held, data(1, bytes.Repeat([]byte{byte(i)}, 255))...)
	}
	f.Add(append(held, 6, 1, 5, 0))
	// Our identify client answered with the vector in two pieces.
	f.Add(script([]byte{7, 0}, data(0, vec[:60]), data(0, vec[60:min(len(vec), 60+255)]), []byte{2, 0, 5, 0}))
	// Our ping client answered, then keepalive times out, then close.
	f.Add(script([]byte{7, 1, 5, 0}, data(0, bytes.Repeat([]byte{0x5a}, PingSize)), []byte{6, 1, 6, 1, 6, 1, 7, 2}))
	// A peer that floods an identify stream past its limit.
	flood := script([]byte{0, 0, 0})
	for range 40 {
		flood = append(flood, data(2, bytes.Repeat([]byte{1}, 255))...)
	}
	f.Add(append(flood, 5, 0))
	f.Fuzz(func(t *testing.T, script []byte) {
		pc.Conn().Do(func(*engine.Conn) {
			cur = &handlerRig{}
			runHandlerScript(t, pc, cur, script)
			cur = nil
		})
	})
}

func runHandlerScript(t *testing.T, pc *PeerConn, r *handlerRig, script []byte) {
	timersBefore := slices.Clone(pc.timers)
	pingsBefore := pc.inboundPings
	// A failed run must not leave its state on the shared connection: the
	// fuzzer re-runs inputs in the same process to minimize them.
	defer func() {
		if t.Failed() {
			pc.timers, pc.inboundPings = timersBefore, pingsBefore
		}
	}()
	*r = handlerRig{t: t, pc: pc, now: pc.c.Now(), streams: map[uint32]*peerStream{}, st: map[uint32]*mux.Stream{}, nextID: 1,
		meter: &fuzzMeter{limit: 2*mux.InitialWindow + 64<<10}, ended: map[*mux.Stream]int{}}
	var err error
	if r.idMsg, err = pc.appendIdentify(nil); err != nil {
		t.Fatal(err)
	}
	r.sess = mux.NewServer(mux.Config{
		OnStream: r.onStream, MaxStreams: 12, AcceptBacklog: 4,
		MaxOutput: 2048, MaxFramePayload: 300, MaxControlOutput: 1024,
		KeepAliveInterval: time.Second, PingTimeout: time.Second,
		Memory: r.meter, HeldDataTimeout: 500 * time.Millisecond,
		OnStreamEnd: func(st *mux.Stream) { r.ended[st]++ },
	}, r.now)
	next := func() byte {
		if len(script) == 0 {
			return 0
		}
		b := script[0]
		script = script[1:]
		return b
	}
	known := func() {
		for id := range r.streams {
			if !slices.Contains(r.order, id) {
				r.order = append(r.order, id)
			}
		}
		slices.Sort(r.order)
	}
	for len(script) > 0 {
		switch op := next(); op % 8 {
		case 0: // the peer opens a stream
			id := r.nextID
			r.nextID += 2
			r.frame(mux.Header{Type: mux.TypeWindowUpdate, Flags: mux.FlagSYN, StreamID: id}, nil)
		case 1: // the peer sends data
			ps := r.stream(next())
			n := int(next())
			p := script[:min(n, len(script))]
			script = script[len(p):]
			if ps == nil {
				continue
			}
			if !ps.sentFIN && !ps.sentRST {
				ps.sent = append(ps.sent, p...)
			}
			r.frame(mux.Header{Type: mux.TypeData, StreamID: ps.id, Length: uint32(len(p))}, p)
		case 2: // the peer half-closes
			if ps := r.stream(next()); ps != nil {
				ps.sentFIN = true
				r.frame(mux.Header{Type: mux.TypeWindowUpdate, Flags: mux.FlagFIN, StreamID: ps.id}, nil)
			}
		case 3: // the peer resets
			if ps := r.stream(next()); ps != nil {
				ps.sentRST = true
				r.frame(mux.Header{Type: mux.TypeWindowUpdate, Flags: mux.FlagRST, StreamID: ps.id}, nil)
			}
		case 4: // the peer grants window
			ps := r.stream(next())
			credit := uint32(next()) << 6
			if ps != nil {
				r.frame(mux.Header{Type: mux.TypeWindowUpdate, StreamID: ps.id, Length: credit}, nil)
			}
		case 5: // the peer reads our output (0: all of it)
			r.drain(int(next()) * 16)
		case 6: // time
			switch next() % 4 {
			case 0: // every stream timer of this run fires, as Tick does
				var due []*Timer
				for _, tm := range pc.timers {
					if !slices.Contains(timersBefore, tm) {
						due = append(due, tm)
					}
				}
				for _, tm := range due {
					pc.StopTimer(tm)
					tm.fire()
				}
			case 1: // the session's deadlines: held data (0.5 s), then an
				// unanswered keepalive (1 s)
				r.now = r.now.Add(600 * time.Millisecond)
				r.sess.Tick(r.now)
			case 3: // the peer answers the last keepalive it read
				if r.pinged {
					r.frame(mux.Header{Type: mux.TypePing, Flags: mux.FlagACK, Length: r.ping}, nil)
				}
			case 2: // a local reset from outside the handler (a limit, a
				// deadline): mux calls no OnReset for our own Reset, so the
				// resetter tells the handler, or it would keep its ping
				// slot until its idle timer and its identify buffer for
				// good.
				if ps := r.stream(next()); ps != nil {
					st := r.st[ps.id]
					if live := st.State() != mux.StreamReset && st.State() != mux.StreamClosed; live && st.Reset() == nil && st.Handler() != nil {
						st.Handler().OnReset(st, mux.ErrStreamClosed)
					}
				}
			}
		case 7: // local actions
			switch next() % 4 {
			case 0:
				r.open(roleIdentifyClient)
			case 1:
				r.open(rolePingClient)
			case 2:
				r.sess.Close(mux.CodeNormal)
			case 3:
				r.sess.GoAway()
			}
		}
		known()
		r.check()
	}
	// The end: the session closes, and everything the handlers and the
	// session held is given back.
	r.sess.Close(mux.CodeNormal)
	r.drain(0)
	known()
	r.check()
	r.sess.Free()
	if r.meter.used != 0 {
		t.Fatalf("%d bytes still charged after the session was freed", r.meter.used)
	}
	for id, st := range r.st {
		if r.ended[st] != 1 {
			t.Fatalf("stream %d ended %d times", id, r.ended[st])
		}
	}
	for _, id := range r.order {
		if ps := r.streams[id]; (ps.role == roleIdentifyClient || ps.role == rolePingClient) && ps.done != 1 {
			t.Fatalf("client stream %d: done ran %d times", id, ps.done)
		}
	}
	if pc.inboundPings != pingsBefore {
		t.Fatalf("%d ping slots held after the session ended", pc.inboundPings-pingsBefore)
	}
	if len(pc.timers) != len(timersBefore) {
		t.Fatalf("%d stream timers left after the session ended", len(pc.timers)-len(timersBefore))
	}
	for _, s := range r.idents {
		if s.rest != nil {
			t.Fatal("identify server kept its buffer after the session ended")
		}
	}
}
