package mux

import (
	"io"
	"math"
)

// StreamState is where a stream is in its lifecycle (spec.md "Stream
// Close", go-yamux half-close semantics):
//
//	          Open ── (SYN sent, or SYN received; ACK may still be pending)
//	         /    \
//	CloseWrite    peer FIN
//	(FIN sent)      \
//	      v          v
//	LocalClosed   RemoteClosed
//	         \    /
//	peer FIN  \  /  CloseWrite
//	           vv
//	         Closed          (both FINs: the stream leaves the session)
//
//	any state ── RST sent or received, or the session ended ──> Reset
//
// Closed and Reset are terminal. A Closed stream keeps its unread receive
// buffer (Read/Peek still work); a Reset stream drops it.
type StreamState uint8

// Stream states.
const (
	StreamOpen StreamState = iota
	StreamLocalClosed
	StreamRemoteClosed
	StreamClosed
	StreamReset
)

func (s StreamState) String() string {
	switch s {
	case StreamOpen:
		return "open"
	case StreamLocalClosed:
		return "local-closed"
	case StreamRemoteClosed:
		return "remote-closed"
	case StreamClosed:
		return "closed"
	case StreamReset:
		return "reset"
	}
	return "invalid"
}

// Handler receives a stream's events. All methods are called by the
// session, on the goroutine that called Session.Input, Session.AppendOutput,
// Session.Tick, Session.Close, Stream.Accept or Stream.SetHandler, under the
// embedder's per-connection lock. Handlers must not block; they may call any
// Stream or Session method except Session.Input, AppendOutput and Tick.
type Handler interface {
	// OnData presents the stream's unread bytes, in order. p is borrowed:
	// it aliases either the buffer passed to Session.Input (zero-copy,
	// when nothing was buffered) or the stream's receive buffer, and is
	// valid only until OnData returns. The handler returns how many bytes
	// of p it consumed (0..len(p)); the rest stays buffered in the stream,
	// is presented again (with newer bytes appended) when more data
	// arrives, and can be taken any time with Peek/Discard or Read. Window
	// is granted back to the peer only for consumed bytes, so a handler
	// that stops consuming stops the peer (bytes buffered never exceed
	// the window we granted). Inside OnData consume only via the return
	// value, not via Read/Discard.
	OnData(st *Stream, p []byte) int

	// OnWritable is called after a Write returned ErrWouldBlock, once
	// the peer's window and the session's output queue both have room
	// again. It is called once per ErrWouldBlock.
	OnWritable(st *Stream)

	// OnFIN is called once (per handler) after the peer half-closed the
	// stream, after the data that preceded the FIN was presented to
	// OnData. Bytes the handler left unconsumed remain readable.
	OnFIN(st *Stream)

	// OnReset is called when the peer reset the stream (err is a
	// *StreamError carrying the peer's code) or the session ended (err
	// is the session error). It is not called for our own Reset. The
	// stream is dead afterwards.
	OnReset(st *Stream, err error)
}

// Funcs adapts optional functions to Handler; nil members do nothing
// (a nil Data consumes everything).
type Funcs struct {
	Data     func(st *Stream, p []byte) int
	Writable func(st *Stream)
	FIN      func(st *Stream)
	Reset    func(st *Stream, err error)
}

func (f *Funcs) OnData(st *Stream, p []byte) int {
	if f.Data == nil {
		return len(p)
	}
	return f.Data(st, p)
}

func (f *Funcs) OnWritable(st *Stream) {
	if f.Writable != nil {
		f.Writable(st)
	}
}

func (f *Funcs) OnFIN(st *Stream) {
	if f.FIN != nil {
		f.FIN(st)
	}
}

func (f *Funcs) OnReset(st *Stream, err error) {
	if f.Reset != nil {
		f.Reset(st, err)
	}
}

// Stream flag bits.
const (
	fInbound      = 1 << iota // opened by the peer
	fBacklog                  // inbound, not yet accepted
	fAwaitACK                 // outbound, SYN not yet acknowledged
	fWantWrite                // a Write returned ErrWouldBlock
	fInWriters                // listed in Session.writers
	fDelivering               // inside OnData/OnFIN for this stream
	fFINDelivered             // OnFIN was called on the current handler
	fRemoved                  // no longer in Session.streams
	fWithheld                 // a window update waits for Memory (counted in Session.withheld)
)

// Stream is one yamux stream. It is owned by its Session and, like it, must
// be used under the embedder's per-connection lock. An idle stream holds no
// buffer.
type Stream struct {
	sess       *Session
	h          Handler
	err        error // why the stream was reset
	rb         queue // unread received bytes, ≤ recvWindow
	lastGrant  int64 // Session.mono() of our last window update
	heldSince  int64 // Session.mono() since rb has held bytes without the handler consuming any; 0: none
	id         uint32
	sendWindow uint32 // bytes we may still send
	recvWindow uint32 // window we grant (auto-tuned up to Config.MaxWindow)
	recvCredit uint32 // bytes the peer may still send
	extra      uint32 // the part of recvCredit granted by our window updates (backed by Memory)
	state      StreamState
	flags      uint16
	tag        uint16 // the embedder's (SetTag)
}

// SetTag stores a small number for the embedder (which protocol the stream
// carries, say), read back with Tag, in OnStreamEnd too.
func (st *Stream) SetTag(t uint16) { st.tag = t }

// Tag returns what SetTag stored (0 by default).
func (st *Stream) Tag() uint16 { return st.tag }

// ID returns the stream ID (odd: opened by the client, even: by the server).
func (st *Stream) ID() uint32 { return st.id }

// IsInbound reports whether the peer opened the stream.
func (st *Stream) IsInbound() bool { return st.flags&fInbound != 0 }

// Session returns the session the stream belongs to.
func (st *Stream) Session() *Session { return st.sess }

// State returns the lifecycle state.
func (st *Stream) State() StreamState { return st.state }

// Buffered returns the number of received bytes not yet consumed.
func (st *Stream) Buffered() int { return st.rb.len() }

// RecvWindow returns the receive window currently granted to the peer
// (InitialWindow, or more after auto-tuning). Buffered() never exceeds it.
func (st *Stream) RecvWindow() uint32 { return st.recvWindow }

// SendWindow returns how many bytes the peer currently lets us send.
func (st *Stream) SendWindow() uint32 { return st.sendWindow }

// Handler returns the current handler (nil until accepted).
func (st *Stream) Handler() Handler { return st.h }

// Accept takes an inbound stream out of the accept backlog: it queues the
// ACK and installs h. Data and a FIN that arrived before are presented to h
// before Accept returns.
func (st *Stream) Accept(h Handler) error {
	if st.flags&fBacklog == 0 {
		if st.state == StreamReset {
			return st.err
		}
		return ErrNotAcceptable
	}
	s := st.sess
	st.flags &^= fBacklog
	s.backlog--
	st.h = h
	s.queueCtl(Header{Type: TypeWindowUpdate, Flags: FlagACK, StreamID: st.id})
	st.redeliver()
	return nil
}

// SetHandler replaces the handler of an accepted or outbound stream, e.g.
// when multistream-select hands the stream to a protocol handler. Bytes
// still unconsumed, and a FIN already received, are presented to h (right
// away, or after the current OnData returns when called from inside it).
// On a stream that was already reset (the session can end inside Accept,
// when its ACK overflows the control queue), h gets OnReset at once and
// the reset's error is returned: every handler installed sees its stream
// end exactly once, so whatever it took (a ping slot, a timer) is given
// back.
func (st *Stream) SetHandler(h Handler) error {
	if st.flags&fBacklog != 0 {
		return ErrNotAcceptable
	}
	if st.state == StreamReset {
		if st.h != h && h != nil {
			st.h = h
			h.OnReset(st, st.err)
		}
		return st.err
	}
	st.h = h
	st.flags &^= fFINDelivered
	st.redeliver()
	return nil
}

// Write queues up to len(p) bytes as Data frames and returns how many it
// took. It never blocks and never retains p. A short count comes with
// ErrWouldBlock: the peer's window or the session's output queue
// (Config.MaxOutput) is full; Handler.OnWritable will be called when both
// have room. Other errors: ErrStreamClosed after CloseWrite, a
// *StreamError after a reset, the session error after the session ended,
// ErrNotAcceptable before Accept.
func (st *Stream) Write(p []byte) (int, error) {
	if err := st.writable(); err != nil {
		return 0, err
	}
	s := st.sess
	total := 0
	for total < len(p) && st.sendWindow > 0 {
		room := s.cfg.MaxOutput - s.data.len()
		rest := len(p) - total
		if s.lastFrame >= 0 && s.lastID == st.id && s.lastLen < s.cfg.MaxFramePayload &&
			(!s.data.onlySegment() || s.lastFrame >= s.data.off) {
			// Grow the last queued Data frame of this stream, not yet
			// being sent, within its segment: small writes cost one
			// header per frame, not per write.
			n := min(rest, int(st.sendWindow), s.cfg.MaxFramePayload-s.lastLen, room, s.data.tailRoom())
			if n > 0 {
				s.data.write(p[total : total+n])
				s.lastLen += n
				putHeader(s.data.tail()[s.lastFrame:], Header{Type: TypeData, StreamID: st.id, Length: uint32(s.lastLen)})
				st.sendWindow -= uint32(n)
				total += n
				continue
			}
		}
		n := min(rest, int(st.sendWindow), s.cfg.MaxFramePayload, room-HeaderLen)
		if n <= 0 {
			break
		}
		// A frame lies within one segment: it takes what the last one
		// holds, or starts a segment when that is less than a useful
		// piece (one sized for this write when the queue is empty, a
		// full frame's otherwise).
		if s.data.tailRoom()-HeaderLen < min(n, minFramePiece) {
			want := HeaderLen + n
			if !s.data.empty() {
				want = max(want, dataSegment)
			}
			s.data.grow(want, s.cfg.Memory)
		}
		n = min(n, s.data.tailRoom()-HeaderLen)
		s.lastFrame, s.lastID, s.lastLen = s.data.tailLen(), st.id, n
		var hdr [HeaderLen]byte
		s.data.write(AppendHeader(hdr[:0], Header{Type: TypeData, StreamID: st.id, Length: uint32(n)}))
		s.data.write(p[total : total+n])
		st.sendWindow -= uint32(n)
		total += n
	}
	if total < len(p) {
		st.flags |= fWantWrite
		if st.flags&fInWriters == 0 {
			st.flags |= fInWriters
			s.writers = append(s.writers, st)
		}
		return total, ErrWouldBlock
	}
	return total, nil
}

func (st *Stream) writable() error {
	switch {
	case st.state == StreamReset:
		return st.err
	case st.state == StreamLocalClosed || st.state == StreamClosed:
		return ErrStreamClosed
	case st.sess.err != nil:
		return st.sess.err
	case st.flags&fBacklog != 0:
		return ErrNotAcceptable
	}
	return nil
}

// CloseWrite half-closes the stream: a FIN is queued after the data already
// written. It always succeeds on a writable stream (the FIN frame may exceed
// MaxOutput by its 12 bytes).
func (st *Stream) CloseWrite() error {
	if err := st.writable(); err != nil {
		return err
	}
	s := st.sess
	s.queueDataCtl(Header{Type: TypeWindowUpdate, Flags: FlagFIN, StreamID: st.id})
	if st.state == StreamOpen {
		st.state = StreamLocalClosed
	} else {
		st.state = StreamClosed
		st.removeIfDrained()
	}
	return nil
}

// removeIfDrained takes a stream closed both ways out of the session once
// nothing of the peer's is left in its buffer. Until then it stays: its
// bytes are charged to the connection, the held-data deadline and the
// stream limits still see it, and Free or the session's end releases them
// (a handler that half-closes without reading everything cannot pin them
// past the connection).
func (st *Stream) removeIfDrained() {
	if st.state == StreamClosed && st.rb.len() == 0 {
		st.sess.remove(st)
	}
}

// Reset resets the stream with code 0. See ResetWithCode.
func (st *Stream) Reset() error { return st.ResetWithCode(0) }

// ResetWithCode aborts both directions: it queues an RST window update whose
// Length carries code (go-yamux v5 reads it as the reset reason; v4 and js
// ignore it), drops buffered data and removes the stream. OnReset is not
// called. Resetting a Reset stream does nothing; resetting a Closed one
// (both FINs exchanged) only drops what it still buffers: the peer has
// forgotten the stream, so no RST is sent.
func (st *Stream) ResetWithCode(code uint32) error {
	if st.state == StreamReset {
		return nil
	}
	s := st.sess
	if st.state == StreamClosed {
		if st.flags&fRemoved == 0 {
			st.state = StreamReset
			st.err = &StreamError{Code: code}
			s.remove(st)
			st.releaseBuffer()
		}
		return nil
	}
	if s.err != nil {
		return s.err
	}
	st.state = StreamReset
	st.err = &StreamError{Code: code}
	rst := Header{Type: TypeWindowUpdate, Flags: FlagRST, StreamID: st.id, Length: code}
	if s.data.empty() {
		s.queueCtl(rst)
	} else {
		// Data already queued (an answer the handler wrote before it
		// reset, say) goes out first: control frames overtake the data
		// queue, and an RST ahead of the stream's data would drop it at
		// the peer. Like a FIN, the RST may pass MaxOutput by 12 bytes.
		s.queueDataCtl(rst)
	}
	s.remove(st)
	st.releaseBuffer()
	return nil
}

// resetFor resets the stream on the session's own finding (reason, a
// Reset* token), and tells the handler err.
func (st *Stream) resetFor(reason string, err error) {
	s := st.sess
	h := st.h
	st.ResetWithCode(0)
	st.err = err
	if s.cfg.OnRefuse != nil {
		s.cfg.OnRefuse(reason)
	}
	if h != nil {
		h.OnReset(st, err)
	}
}

// releaseBuffer drops the receive buffer, returns its charge, and lets
// streams waiting for memory have their window.
func (st *Stream) releaseBuffer() {
	had := st.rb.b != nil
	st.rb.release(st.sess.cfg.Memory)
	if had {
		st.sess.retryWithheld()
	}
}

// buffer keeps p, which arrived within the window but was not consumed, in
// the receive buffer, reserving its memory. A stream whose unbacked data
// (its initial window) does not fit the meter is reset (the rest of its
// frame is skipped); the connection goes on.
func (st *Stream) buffer(p []byte) bool {
	s := st.sess
	empty := st.rb.len() == 0
	// The most this buffer can come to hold before we grant more window:
	// what it has, p, the rest of this frame, and the credit still out.
	most := st.rb.len() + len(p) + int(st.recvCredit)
	if s.rxStream == st {
		most += int(s.rxRemain)
	}
	// Bytes of credit granted after checking the meter were promised:
	// they are charged whether or not they fit now (output queued since
	// may have taken the room). Others (a stream's initial window) must
	// fit, leaving what is promised to streams untouched.
	keep := s.extra + s.headroom()
	if s.rxPromised {
		keep = -1
	}
	if _, ok := st.rb.reserve(len(p), s.cfg.Memory, keep, most); !ok {
		st.resetFor(ResetMemory, ErrStreamMemory)
		return false
	}
	st.rb.b = append(st.rb.b, p...)
	if empty {
		st.heldSince = s.mono()
		s.held++
		s.noteHeld(st.heldSince)
	}
	return true
}

// consumed records that the handler took n > 0 buffered bytes: the hold
// timer restarts, or stops when the buffer is empty.
func (st *Stream) consumed() {
	s := st.sess
	if st.heldSince == 0 {
		return
	}
	if st.rb.len() == 0 {
		st.heldSince = 0
		s.held--
		return
	}
	st.heldSince = s.mono()
}

// Peek returns the unread bytes buffered in the stream. The slice is valid
// until the next call that consumes (Discard, Read) or until the session
// receives more data for this stream.
func (st *Stream) Peek() []byte { return st.rb.bytes() }

// Discard consumes n buffered bytes (n ≤ Buffered()) and grants window back
// to the peer as needed.
func (st *Stream) Discard(n int) {
	if n < 0 || n > st.rb.len() {
		panic("mux: Discard beyond buffered bytes")
	}
	if n == 0 {
		return
	}
	st.discard(n)
	st.grant()
}

// discard drops n consumed bytes from the receive buffer.
func (st *Stream) discard(n int) {
	st.rb.off += n
	if st.rb.off == len(st.rb.b) {
		st.releaseBuffer()
	}
	st.consumed()
	st.removeIfDrained()
}

// Read copies buffered bytes into p and consumes them. With nothing
// buffered it returns io.EOF after the peer's FIN, the reset error after a
// reset, the session error after the session ended, and otherwise
// (0, ErrWouldBlock): wait for OnData.
func (st *Stream) Read(p []byte) (int, error) {
	if st.state == StreamReset {
		return 0, st.err
	}
	if st.rb.len() == 0 {
		switch {
		case st.state == StreamRemoteClosed || st.state == StreamClosed:
			return 0, io.EOF
		case st.sess.err != nil:
			return 0, st.sess.err
		}
		return 0, ErrWouldBlock
	}
	n := copy(p, st.rb.bytes())
	st.Discard(n)
	return n, nil
}

// deliver hands payload bytes that just arrived to the handler (zero-copy
// when nothing is buffered) and buffers what it leaves.
func (st *Stream) deliver(p []byte) {
	if st.h == nil || st.rb.len() > 0 || st.flags&fDelivering != 0 {
		if st.buffer(p) {
			st.redeliver()
		}
		return
	}
	st.flags |= fDelivering
	for len(p) > 0 {
		h := st.h
		n := h.OnData(st, p)
		if n < 0 || n > len(p) {
			panic("mux: Handler.OnData returned a count outside 0..len(p)")
		}
		p = p[n:]
		if st.state == StreamReset || st.sess.err != nil {
			st.flags &^= fDelivering
			return
		}
		if st.h == h || st.h == nil {
			break
		}
	}
	st.flags &^= fDelivering
	if len(p) > 0 && !st.buffer(p) {
		return
	}
	st.grant()
}

// redeliver presents buffered bytes, then a received FIN, to the current
// handler, again to a handler installed meanwhile.
func (st *Stream) redeliver() {
	if st.flags&fDelivering != 0 {
		return
	}
	st.flags |= fDelivering
	defer func() { st.flags &^= fDelivering }()
	for st.h != nil && st.state != StreamReset && st.sess.err == nil {
		h := st.h
		if st.rb.len() > 0 {
			p := st.rb.bytes()
			n := h.OnData(st, p)
			if n < 0 || n > len(p) {
				panic("mux: Handler.OnData returned a count outside 0..len(p)")
			}
			if st.state == StreamReset {
				return
			}
			if n > 0 {
				st.discard(n)
				st.grant()
			}
			if st.h != h {
				st.flags &^= fFINDelivered
				continue
			}
		}
		if (st.state == StreamRemoteClosed || st.state == StreamClosed) && st.flags&fFINDelivered == 0 {
			st.flags |= fFINDelivered
			h.OnFIN(st)
			if st.h != h && st.h != nil {
				st.flags &^= fFINDelivered
				continue
			}
		}
		return
	}
}

// grant sends a window update once at least half of the receive window is
// free again (go-yamux's rule), doubling the window first when the previous
// update was less than 4 RTTs ago (the peer is window-limited), within
// Config.MaxWindow and the session's Config.MaxWindowGrowth.
func (st *Stream) grant() {
	s := st.sess
	if st.state != StreamOpen && st.state != StreamLocalClosed || s.err != nil || st.flags&fBacklog != 0 {
		return
	}
	// Bytes the window still covers: buffered, still allowed, and the
	// rest of a Data frame whose header we have parsed but whose payload
	// is still arriving.
	used := uint32(st.rb.len()) + st.recvCredit
	if s.rxStream == st {
		used += s.rxRemain
	}
	free := st.recvWindow - used
	if free < st.recvWindow/2 {
		return
	}
	// A stream holding bytes its handler has not consumed (an echo whose
	// own peer reads slowly) gains nothing from more credit than keeps
	// what it holds and may receive within one pooled buffer: its data
	// would only wait longer. So its buffer stays a pool class (no large
	// allocation, no doubling, no copy into it), and the full window
	// returns once the handler catches up.
	held := st.rb.len() > 0
	if held && used+free > classLarge {
		if used+minHeldGrant > classLarge {
			return // granted when the handler consumes (deliver, Discard)
		}
		free = classLarge - used
	}
	// The credit we grant may all arrive and be held: withhold it while the
	// meter, less all the credit the peer already holds (promised, and the
	// initial windows of open streams), cannot afford it (the peer waits,
	// as flow control intends) and grant it once buffers are released
	// (Session.retryWithheld). Only a stream's initial window is credit we
	// never backed: yamux grants it at open, and a peer that fills more of
	// those than the share holds gets those streams reset.
	m := s.cfg.Memory
	room := int64(math.MaxInt64)
	if m != nil {
		room = s.grantRoom()
	}
	if room < int64(free) {
		if st.flags&fWithheld == 0 {
			st.flags |= fWithheld
			s.withheld++
		}
		return
	}
	if st.flags&fWithheld != 0 {
		st.flags &^= fWithheld
		s.withheld--
	}
	now := s.mono()
	if !held && s.rtt > 0 && st.lastGrant != 0 && now-st.lastGrant < 4*int64(s.rtt) && st.recvWindow < s.cfg.MaxWindow {
		nw := s.cfg.MaxWindow
		if st.recvWindow <= nw/2 {
			nw = st.recvWindow * 2
		}
		grow := nw - st.recvWindow
		if s.growth+int64(grow) <= s.cfg.MaxWindowGrowth && room >= int64(free+grow) {
			s.growth += int64(grow)
			st.recvWindow = nw
			free += grow
		}
	}
	st.lastGrant = now
	st.recvCredit += free
	s.credit += int64(free)
	st.extra += free
	s.extra += int64(free)
	s.queueCtl(Header{Type: TypeWindowUpdate, StreamID: st.id, Length: free})
}

// minHeldGrant is the least window update a stream holding data gets:
// smaller ones would cost a frame each for little.
const minHeldGrant = 32 << 10

// remoteFIN applies a FIN from the peer.
func (st *Stream) remoteFIN() {
	switch st.state {
	case StreamOpen:
		st.state = StreamRemoteClosed
	case StreamLocalClosed:
		st.state = StreamClosed
		st.removeIfDrained()
	default:
		return
	}
	st.redeliver()
}

// kill resets the stream because of err (peer RST or session end) and
// tells the handler.
func (st *Stream) kill(err error) {
	if st.state == StreamReset {
		return
	}
	st.state = StreamReset
	st.err = err
	st.sess.remove(st)
	st.releaseBuffer()
	if st.h != nil {
		st.h.OnReset(st, err)
	}
}
