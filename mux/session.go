package mux

import (
	"cmp"
	"encoding/binary"
	"math"
	"slices"
	"time"

	"github.com/swarmgate/swarmgate/internal/bufpool"
)

// Session is one yamux session (one per connection), as a sans-IO state
// machine: it never blocks, starts no goroutine, owns no timer and does no
// I/O. The embedder feeds it received plaintext with Input, drains frames
// to send with AppendOutput, and calls Tick when the deadline Tick returned
// passes. All methods, and the Stream methods, must be called by one owner at
// a time (the engine's per-connection lock); Handler callbacks run inside
// those calls.
//
// Once a method returns a session error (Input, Tick) the session is dead:
// call AppendOutput one last time (it may hold a GoAway) and close the
// connection.
type Session struct {
	cfg     Config
	streams map[uint32]*Stream
	client  bool
	nextID  uint64

	numInbound  int   // live streams the peer opened
	numOutbound int   // live streams we opened
	backlog     int   // inbound streams not yet accepted
	unacked     int   // outbound streams whose SYN is not yet ACKed
	refused     int   // SYNs refused in a row
	growth      int64 // Σ (recvWindow − InitialWindow) over live streams
	withheld    int   // streams whose window update Memory could not afford
	held        int   // streams holding unconsumed received bytes
	credit      int64 // Σ recvCredit over live streams: what the peer may send
	extra       int64 // Σ Stream.extra: the part of credit granted by window updates

	// Receive side: a Data frame whose payload is still arriving.
	rxRemain uint32
	rxStream *Stream // nil: skip the payload
	rxFIN    bool
	// rxBacked is how much of the rest of the frame is credit our window
	// updates granted after checking Memory (Stream.extra): those bytes
	// were promised and are charged whether or not they fit now.
	rxBacked uint32
	// rxPromised is set while the payload bytes being delivered are all
	// backed.
	rxPromised bool

	// Send side: control frames go out before stream data, switching only
	// at frame boundaries.
	ctl          queue
	data         segq
	dataMid      int // bytes left of a data-queue frame partly drained
	lastFrame    int // offset in the data queue's last segment of the last Data frame, -1 if none
	lastID       uint32
	lastLen      int
	pendingPongs int
	writers      []*Stream // streams waiting for OnWritable
	spare        []*Stream

	// Keepalive.
	epoch    time.Time // when the session started: mono() counts from it
	heldNext time.Time // no held-data deadline is due before this (zero: none)
	now      time.Time
	lastRecv time.Time
	pingSent time.Time
	rtt      time.Duration
	pingID   uint32
	pingOut  bool

	localGoAway  bool
	remoteGoAway bool
	err          error
}

// NewServer returns a session for the listening side (our streams get even
// IDs). now starts the keepalive clock.
func NewServer(cfg Config, now time.Time) *Session { return newSession(cfg, false, now) }

// NewClient returns a session for the dialing side (odd stream IDs).
func NewClient(cfg Config, now time.Time) *Session { return newSession(cfg, true, now) }

func newSession(cfg Config, client bool, now time.Time) *Session {
	cfg.setDefaults()
	s := &Session{
		cfg:       cfg,
		client:    client,
		nextID:    2,
		lastFrame: -1,
		epoch:     now,
		now:       now,
		lastRecv:  now,
	}
	if client {
		s.nextID = 1
	}
	if cfg.KeepAliveInterval > 0 {
		// Like go-yamux, ping at start: the answer gives the RTT that
		// window auto-tuning needs.
		s.sendPing(now)
	}
	return s
}

// Err returns the error that ended the session, or nil.
func (s *Session) Err() error { return s.err }

// RTT returns the last measured ping round trip (0 before the first pong).
func (s *Session) RTT() time.Duration { return s.rtt }

// NumStreams returns the number of live streams (both directions).
func (s *Session) NumStreams() int { return len(s.streams) }

// RemoteGoAway reports whether the peer sent GoAway(CodeNormal): it opens
// no new streams and Open fails; existing streams continue.
func (s *Session) RemoteGoAway() bool { return s.remoteGoAway }

// IsClient reports the role.
func (s *Session) IsClient() bool { return s.client }

// Input processes received bytes. It consumes every complete frame and the
// available part of a Data payload (payloads are delivered as they arrive,
// so a frame as large as the window never needs to be buffered whole). It
// leaves unconsumed only a trailing partial header (at most 11 bytes): the
// caller must present in[consumed:] again, followed by the next bytes it
// receives. Data reaches handlers through Handler.OnData during this call,
// possibly as slices of in.
//
// A protocol violation queues GoAway(CodeProtocolError), resets every
// stream and returns an *Error; a GoAway from the peer with a non-zero code
// returns an *Error with Remote set. After an error the session is dead.
func (s *Session) Input(in []byte, now time.Time) (consumed int, err error) {
	if s.err != nil {
		return 0, s.err
	}
	s.now = now
	if len(in) > 0 {
		s.lastRecv = now
	}
	i := 0
	for i < len(in) && s.err == nil {
		if s.rxRemain > 0 {
			k := len(in) - i
			if uint32(k) > s.rxRemain || k > math.MaxUint32 {
				k = int(s.rxRemain)
			}
			// rxRemain first: grant() counts it as still in flight.
			s.rxRemain -= uint32(k)
			backed := min(uint32(k), s.rxBacked)
			s.rxBacked -= backed
			if st := s.rxStream; st != nil && (st.state == StreamOpen || st.state == StreamLocalClosed) {
				s.rxPromised = backed == uint32(k)
				st.deliver(in[i : i+k])
				s.rxPromised = false
			}
			i += k
			if s.rxRemain == 0 {
				s.endData()
			}
			continue
		}
		h, n, err := ParseHeader(in[i:])
		if err == ErrNeedMore {
			break
		}
		if err != nil {
			return i, s.fail(err.(*Error))
		}
		i += n
		s.handle(h)
	}
	if s.err != nil {
		return i, s.err
	}
	// Credit the peer used on data consumed at once, and streams that
	// ended, leave room that no buffer release reports.
	s.retryWithheld()
	s.notifyWritable()
	return i, s.err
}

// endData finishes a Data frame whose payload has been delivered.
func (s *Session) endData() {
	st, fin := s.rxStream, s.rxFIN
	s.rxStream, s.rxFIN = nil, false
	if fin && st != nil {
		st.remoteFIN()
	}
}

// handle processes one frame header (and, for Data, sets up payload
// delivery).
func (s *Session) handle(h Header) {
	switch h.Type {
	case TypePing:
		s.handlePing(h)
		return
	case TypeGoAway:
		s.handleGoAway(h)
		return
	}
	// Data or WindowUpdate.
	if h.StreamID == 0 {
		// go-yamux ignores these; js-yamux answers GoAway(1). No correct
		// peer sends them.
		s.fail(errStreamZero)
		return
	}
	var st *Stream
	if h.Flags&FlagSYN != 0 {
		st = s.incoming(h.StreamID)
		if s.err != nil {
			return
		}
	} else {
		st = s.streams[h.StreamID]
	}
	// A nil st is a stream we do not know (refused, reset or closed):
	// its frames are ignored and Data payloads drained (go-yamux does
	// the same).
	if st != nil {
		if h.Flags&FlagACK != 0 && st.flags&fAwaitACK != 0 {
			st.flags &^= fAwaitACK
			s.unacked--
		}
		if h.Flags&FlagRST != 0 {
			// go-yamux v5: "Length in a window update frame with RST
			// flag encodes an error code"; never window credit.
			var code uint32
			if h.Type == TypeWindowUpdate {
				code = h.Length
			}
			st.kill(&StreamError{Code: code, Remote: true})
			st = nil
		}
	}
	if h.Type == TypeWindowUpdate {
		if st == nil {
			return
		}
		if h.Length > 0 {
			// Guard the uint32 window against overflow (peers may
			// auto-tune up to 16 MiB, never past 2^32-1).
			if uint64(st.sendWindow)+uint64(h.Length) > math.MaxUint32 {
				s.fail(errWindowOverflow)
				return
			}
			st.sendWindow += h.Length
		}
		if h.Flags&FlagFIN != 0 {
			st.remoteFIN()
		}
		return
	}
	// Data.
	if st != nil {
		// spec.md: a sender must not send more than the window; more is a
		// protocol error (go-yamux: ErrRecvWindowExceeded + GoAway(1)).
		if h.Length > st.recvCredit {
			s.fail(errRecvWindow)
			return
		}
		st.recvCredit -= h.Length
		s.credit -= int64(h.Length)
		// Data uses the credit our updates granted first: that part was
		// backed by Memory when granted, and is now held in buffers.
		take := min(h.Length, st.extra)
		st.extra -= take
		s.extra -= int64(take)
		s.rxBacked = take
		if st.state != StreamOpen && st.state != StreamLocalClosed {
			st = nil // data after the peer's FIN: drop
		}
	}
	if h.Length == 0 {
		if st != nil && h.Flags&FlagFIN != 0 {
			st.remoteFIN()
		}
		return
	}
	s.rxRemain, s.rxStream, s.rxFIN = h.Length, st, h.Flags&FlagFIN != 0
}

// incoming admits or refuses a stream the peer opens with SYN.
func (s *Session) incoming(id uint32) *Stream {
	// Client streams are odd, server streams even; the peer opens the
	// other parity. go-yamux closes the session on a wrong parity.
	if (id%2 == 1) == s.client {
		s.fail(errSYNParity)
		return nil
	}
	if _, ok := s.streams[id]; ok {
		s.fail(errDuplicateSYN)
		return nil
	}
	// IDs are not required to arrive in increasing order (go-yamux
	// allocates IDs under a lock but sends each SYN from the opening
	// goroutine). A peer that reuses the ID of a stream that is gone may
	// receive our still-queued data for the old stream on the new one:
	// only that peer is confused, so this is not policed.
	if reason := s.refusal(); reason != "" {
		if s.refuse() {
			return nil
		}
		s.queueCtl(Header{Type: TypeWindowUpdate, Flags: FlagRST, StreamID: id})
		if s.cfg.OnRefuse != nil {
			s.cfg.OnRefuse(reason)
		}
		return nil
	}
	st := &Stream{
		sess:       s,
		id:         id,
		sendWindow: InitialWindow,
		recvWindow: InitialWindow,
		recvCredit: InitialWindow,
		flags:      fInbound | fBacklog,
	}
	s.track(st)
	s.numInbound++
	s.backlog++
	s.credit += InitialWindow
	s.cfg.OnStream(st)
	if st.state == StreamReset {
		// Refused by the embedder's own limits (streams per peer, say):
		// a refusal like ours, so a peer that goes on opening streams
		// past those limits is a flood too.
		s.refuse()
		return nil
	}
	s.refused = 0
	return st
}

// refuse counts a refused SYN and ends the session once MaxRefusedStreams
// were refused in a row; it reports whether it did.
func (s *Session) refuse() bool {
	s.refused++
	if s.refused > s.cfg.MaxRefusedStreams {
		s.fail(errStreamFlood)
		return true
	}
	return false
}

// refusal says why an inbound stream cannot be admitted now, "" if it can.
func (s *Session) refusal() string {
	switch {
	case s.localGoAway:
		return RefuseGoingAway
	case s.cfg.OnStream == nil:
		return RefuseNoHandler
	case s.numInbound >= s.cfg.MaxStreams:
		return RefuseStreamLimit
	case s.backlog >= s.cfg.AcceptBacklog:
		return RefuseBacklog
	case s.cfg.Memory != nil && s.room() < InitialWindow:
		// The new stream's window could be filled at once; a peer whose
		// share, less the credit we already granted, cannot back it gets
		// no more streams.
		return RefuseMemory
	}
	return ""
}

// mono is the session's clock as 1 + nanoseconds since it started (0
// stays free to mean "none"): from time.Time's monotonic reading when now
// has one, so a wall-clock step moves no deadline. at converts back.
func (s *Session) mono() int64 { return max(int64(s.now.Sub(s.epoch)), 0) + 1 }

func (s *Session) at(m int64) time.Time { return s.epoch.Add(time.Duration(m - 1)) }

// noteHeld makes sure the next deadline covers a stream that began holding
// data at mono instant since.
func (s *Session) noteHeld(since int64) {
	if s.cfg.HeldDataTimeout < 0 {
		return
	}
	s.heldNext = earliest(s.heldNext, s.at(since).Add(s.cfg.HeldDataTimeout))
}

// NextDeadline is when Tick should next run (zero: never), from the
// session's state alone: unlike Tick it changes nothing, so it is safe to
// call from inside a stream callback.
func (s *Session) NextDeadline() time.Time {
	if s.err != nil {
		return time.Time{}
	}
	next := time.Time{}
	if s.held > 0 {
		next = s.heldNext
	}
	switch {
	case s.pingOut:
		next = earliest(next, s.pingSent.Add(s.cfg.PingTimeout))
	case s.cfg.KeepAliveInterval > 0:
		next = earliest(next, s.lastRecv.Add(s.cfg.KeepAliveInterval))
	}
	return next
}

// ReceiveCredit is what the peer may send now without breaking flow
// control: the window still open on every live stream. A peer that sends
// more (plus frame headers and control frames) is not obeying yamux.
func (s *Session) ReceiveCredit() int64 { return s.credit }

func (s *Session) handlePing(h Header) {
	if h.StreamID != 0 {
		s.fail(errSessionNonZero)
		return
	}
	switch {
	case h.Flags&FlagSYN != 0:
		// Answer with the same opaque value. Beyond PingBacklog pending
		// pongs, drop (go-yamux PingBacklog): a peer that pings without
		// reading gets no growing queue.
		if s.pendingPongs < s.cfg.PingBacklog {
			s.pendingPongs++
			s.queueCtl(Header{Type: TypePing, Flags: FlagACK, Length: h.Length})
		}
	case h.Flags&FlagACK != 0:
		if s.pingOut && h.Length == s.pingID {
			s.pingOut = false
			s.rtt = max(s.now.Sub(s.pingSent), 1)
		}
	}
}

func (s *Session) handleGoAway(h Header) {
	if h.StreamID != 0 {
		s.fail(errSessionNonZero)
		return
	}
	code := Code(h.Length)
	if code == CodeNormal {
		// go-yamux v4 semantics: no new streams, existing ones finish.
		// (v5 and js peers close the connection right after.)
		s.remoteGoAway = true
		return
	}
	s.end(&Error{Code: code, Remote: true, Reason: "remote_goaway"})
}

// fail ends the session because of a local finding: queue GoAway(e.Code)
// and reset every stream.
func (s *Session) fail(e *Error) error {
	if s.err != nil {
		return s.err
	}
	s.ctl.write(AppendHeader(s.scratch(), Header{Type: TypeGoAway, Length: uint32(e.Code)}), s.cfg.Memory)
	s.localGoAway = true
	s.end(e)
	return e
}

func (s *Session) scratch() []byte {
	var b [HeaderLen]byte
	return b[:0]
}

// end makes err the session's terminal error and resets every stream.
func (s *Session) end(err error) {
	if s.err != nil {
		return
	}
	s.err = err
	s.rxStream = nil
	// Reset in stream ID order, so that handlers see a reproducible
	// sequence.
	live := make([]*Stream, 0, len(s.streams))
	for _, st := range s.streams {
		live = append(live, st)
	}
	slices.SortFunc(live, func(a, b *Stream) int { return cmp.Compare(a.id, b.id) })
	for _, st := range live {
		st.kill(err)
	}
	s.writers = s.writers[:0]
	// Queued stream data is for dead streams: drop it, except the rest of
	// a frame already partly sent, which must complete so that the GoAway
	// after it is still framed.
	if s.dataMid > 0 {
		s.data.truncate(s.dataMid, s.cfg.Memory)
	} else {
		s.data.release(s.cfg.Memory)
	}
	s.lastFrame = -1
}

// queueCtl queues a control frame. Control frames are provoked by the peer
// (window updates for its data, pongs, RSTs for refused streams); past
// MaxControlOutput unread bytes the peer is not reading and the session
// ends.
func (s *Session) queueCtl(h Header) {
	if s.err != nil {
		return
	}
	if s.ctl.len()+HeaderLen > s.cfg.MaxControlOutput {
		s.fail(errCtlOverflow)
		return
	}
	s.ctl.reserve(HeaderLen, s.cfg.Memory, -1, 0)
	s.ctl.b = AppendHeader(s.ctl.b, h)
}

// queueDataCtl queues a frame without payload (a FIN, an RST) in the data
// queue, behind the stream data already queued.
func (s *Session) queueDataCtl(h Header) {
	if s.data.tailRoom() < HeaderLen {
		s.data.grow(HeaderLen, s.cfg.Memory)
	}
	var b [HeaderLen]byte
	s.data.write(AppendHeader(b[:0], h))
	s.lastFrame = -1
}

// minFramePiece is the least payload a Data frame starts with at the end
// of a data-queue segment; with less room left, the frame starts a segment
// of its own.
const minFramePiece = 1 << 10

// dataSegment is the size of a data-queue segment started while data is
// queued: one full Data frame.
const dataSegment = bufpool.Medium

// remove takes a stream out of the session's table and counters.
// track adds a live stream, creating the table on first use.
func (s *Session) track(st *Stream) {
	if s.streams == nil {
		s.streams = make(map[uint32]*Stream, 1)
	}
	s.streams[st.id] = st
}

func (s *Session) remove(st *Stream) {
	if st.flags&fRemoved != 0 {
		return
	}
	st.flags |= fRemoved
	delete(s.streams, st.id)
	if len(s.streams) == 0 {
		s.streams = nil // maps never shrink: an idle session keeps no table
	}
	if st.flags&fInbound != 0 {
		s.numInbound--
		if st.flags&fBacklog != 0 {
			st.flags &^= fBacklog
			s.backlog--
		}
	} else {
		s.numOutbound--
		if st.flags&fAwaitACK != 0 {
			st.flags &^= fAwaitACK
			s.unacked--
		}
	}
	s.growth -= int64(st.recvWindow - InitialWindow)
	s.credit -= int64(st.recvCredit)
	st.recvCredit = 0
	s.extra -= int64(st.extra)
	st.extra = 0
	if st.flags&fWithheld != 0 {
		st.flags &^= fWithheld
		s.withheld--
	}
	if st.heldSince != 0 {
		st.heldSince = 0
		s.held--
	}
	if s.cfg.OnStreamEnd != nil {
		s.cfg.OnStreamEnd(st)
	}
	s.retryWithheld() // its credit is no longer promised
}

// Open opens an outbound stream with handler h: the SYN is queued, and data
// may be written right away (before the peer's ACK).
func (s *Session) Open(h Handler) (*Stream, error) {
	switch {
	case s.err != nil:
		return nil, s.err
	case s.remoteGoAway:
		return nil, ErrRemoteGoAway
	case s.localGoAway:
		return nil, ErrSessionClosed
	case s.numOutbound >= s.cfg.MaxStreams || s.unacked >= s.cfg.AcceptBacklog:
		return nil, ErrTooManyStreams
	case s.nextID > math.MaxUint32:
		return nil, ErrStreamsExhausted
	}
	st := &Stream{
		sess:       s,
		h:          h,
		id:         uint32(s.nextID),
		sendWindow: InitialWindow,
		recvWindow: InitialWindow,
		recvCredit: InitialWindow,
		flags:      fAwaitACK,
	}
	s.nextID += 2
	s.track(st)
	s.numOutbound++
	s.unacked++
	s.credit += InitialWindow
	s.queueCtl(Header{Type: TypeWindowUpdate, Flags: FlagSYN, StreamID: st.id})
	return st, s.err
}

// GoAway queues GoAway(CodeNormal) and refuses streams the peer opens from
// now on; existing streams continue. Close the connection when they are done.
func (s *Session) GoAway() {
	if s.err != nil || s.localGoAway {
		return
	}
	s.localGoAway = true
	s.queueCtl(Header{Type: TypeGoAway, Length: uint32(CodeNormal)})
}

// Close ends the session with GoAway(code): every live stream gets OnReset
// with ErrSessionClosed. Drain AppendOutput, then close the connection.
func (s *Session) Close(code Code) {
	if s.err != nil {
		return
	}
	s.ctl.write(AppendHeader(s.scratch(), Header{Type: TypeGoAway, Length: uint32(code)}), s.cfg.Memory)
	s.localGoAway = true
	s.end(ErrSessionClosed)
}

// Free releases every buffer the session still holds, once it is dead and
// its output has been written for the last time (or will never be): the
// queues' charges return to Config.Memory. The session is unusable after.
func (s *Session) Free() {
	if s.err == nil {
		s.end(ErrSessionClosed)
	}
	s.ctl.release(s.cfg.Memory)
	s.data.release(s.cfg.Memory)
	s.dataMid = 0
}

// Tick runs keepalive at time now and returns when it wants to be called
// next. A ping is sent after KeepAliveInterval without receiving anything;
// if it is not answered within PingTimeout, Tick returns
// ErrKeepAliveTimeout (no GoAway is sent, as go-yamux) and the session is
// dead. With keepalive disabled, next is the zero time.
func (s *Session) Tick(now time.Time) (next time.Time, err error) {
	if s.err != nil {
		return time.Time{}, s.err
	}
	s.now = now
	s.retryWithheld() // the share may have room again (other connections of the peer released theirs)
	next = s.expireHeld(now)
	if s.pingOut {
		deadline := s.pingSent.Add(s.cfg.PingTimeout)
		if !now.Before(deadline) {
			s.end(ErrKeepAliveTimeout)
			return time.Time{}, s.err
		}
		return earliest(next, deadline), nil
	}
	if s.cfg.KeepAliveInterval <= 0 {
		return next, s.err
	}
	due := s.lastRecv.Add(s.cfg.KeepAliveInterval)
	if now.Before(due) {
		return earliest(next, due), s.err
	}
	s.sendPing(now)
	return earliest(next, now.Add(s.cfg.PingTimeout)), s.err
}

// expireHeld resets the streams whose unconsumed data is older than
// HeldDataTimeout and returns when the next one would be due (zero: none).
func (s *Session) expireHeld(now time.Time) (next time.Time) {
	if s.held == 0 || s.cfg.HeldDataTimeout < 0 {
		return time.Time{}
	}
	var due []*Stream
	for _, st := range s.streams {
		if st.heldSince == 0 {
			continue
		}
		at := s.at(st.heldSince).Add(s.cfg.HeldDataTimeout)
		if !now.Before(at) {
			due = append(due, st)
			continue
		}
		next = earliest(next, at)
	}
	s.heldNext = next
	slices.SortFunc(due, func(a, b *Stream) int { return cmp.Compare(a.id, b.id) })
	for _, st := range due {
		st.resetFor(ResetHeldData, ErrHeldData)
	}
	return next
}

// earliest is the earlier of two instants, the zero time meaning none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// retryWithheld grants the window updates Memory could not afford before,
// when room may have come back: a buffer released, a stream ended (its
// promised credit returned), a pass of input (credit used on data the
// handler consumed at once), a tick (the share is shared with the peer's
// other connections). A grant nobody retries would leave a peer out of
// window waiting for good.
// room is what Memory can still take for stream data we have not promised
// yet: what is available, less the credit our window updates promised
// (extra) and the headroom kept for the charges nothing refuses (the
// output queues up to their bounds, the layers below). A new stream is
// admitted against it: its initial window is yamux's, granted unbacked.
func (s *Session) room() int64 {
	return int64(s.cfg.Memory.Available()) - s.extra - s.headroom()
}

// grantRoom is what a window update may promise: room, less the credit
// the peer holds unbacked (the initial windows of open streams) and the
// rest of a Data frame still arriving. Credit granted to one stream must
// never take the room another stream's initial window needs: a compliant
// peer that fills the initial windows of a few streams after we promised
// more to others would otherwise have those streams reset.
func (s *Session) grantRoom() int64 {
	inFrame := int64(0)
	if s.rxStream != nil {
		inFrame = int64(s.rxRemain)
	}
	return s.room() - (s.credit - s.extra) - inFrame
}

// headroom is what may still be charged without refusal: the output
// queues' room up to MaxOutput (plus the slack of a data-queue segment a
// frame did not fill) and MaxControlOutput, and MemoryHeadroom.
func (s *Session) headroom() int64 {
	h := max(s.cfg.MaxOutput+dataSegment-s.data.charged(), 0) + max(s.cfg.MaxControlOutput-cap(s.ctl.b), 0) + s.cfg.MemoryHeadroom
	return int64(h)
}

func (s *Session) retryWithheld() {
	if s.withheld == 0 || s.err != nil {
		return
	}
	ids := make([]*Stream, 0, s.withheld)
	for _, st := range s.streams {
		if st.flags&fWithheld != 0 {
			ids = append(ids, st)
		}
	}
	slices.SortFunc(ids, func(a, b *Stream) int { return cmp.Compare(a.id, b.id) })
	for _, st := range ids {
		st.grant()
	}
}

func (s *Session) sendPing(now time.Time) {
	if s.pingOut {
		return
	}
	s.pingID++
	s.pingOut = true
	s.pingSent = now
	s.queueCtl(Header{Type: TypePing, Flags: FlagSYN, Length: s.pingID})
}

// HasOutput reports whether frames are waiting to be sent.
func (s *Session) HasOutput() bool { return !s.ctl.empty() || !s.data.empty() }

// OutputLen returns the number of bytes waiting to be sent.
func (s *Session) OutputLen() int { return s.ctl.len() + s.data.len() }

// AppendOutput appends up to limit bytes of queued output to dst and
// returns the extended slice (limit ≤ 0: everything). The session keeps no
// reference to dst. The bytes are a plain byte
// stream: a call may end mid-frame and the next continues it. Control
// frames (window updates, pongs, SYN/ACK, RST, GoAway) go before queued
// stream data. Freeing queue space may call Handler.OnWritable, whose
// writes are drained by the next call.
func (s *Session) AppendOutput(dst []byte, limit int) []byte {
	if limit <= 0 {
		limit = math.MaxInt
	}
	for limit > 0 {
		b := s.NextOutput(limit)
		if len(b) == 0 {
			break
		}
		dst = append(dst, b...)
		s.consume(len(b))
		limit -= len(b)
	}
	s.notifyWritable()
	return dst
}

// NextOutput returns the next queued output, at most limit bytes (limit ≤
// 0: no limit), where it lies in the session's queues: no copy. The slice
// is valid until the session is used again; the caller sends some or all
// of it and reports how much with ConsumeOutput before anything else
// touches the session. Control frames go before stream data, switching
// only at Data frame boundaries; a run of stream data is one or more
// frames of one queue segment (at most 64 KiB).
func (s *Session) NextOutput(limit int) []byte {
	if limit <= 0 {
		limit = math.MaxInt
	}
	var b []byte
	switch {
	case s.dataMid > 0 && !s.ctl.empty():
		b = s.data.head()[:s.dataMid] // finish the frame, then the control frames
	case s.dataMid > 0 || s.ctl.empty():
		b = s.data.head()
	default:
		b = s.ctl.bytes()
	}
	return b[:min(len(b), limit)]
}

// ConsumeOutput records that the first n bytes NextOutput returned were
// sent. Freeing queue space may call Handler.OnWritable, whose writes
// NextOutput returns next.
func (s *Session) ConsumeOutput(n int) {
	if n == 0 {
		return
	}
	s.consume(n)
	s.notifyWritable()
}

// consume drops n sent bytes from the queue NextOutput took them from.
func (s *Session) consume(n int) {
	if s.dataMid == 0 && !s.ctl.empty() {
		s.ctl.discard(n, s.cfg.Memory)
		if s.ctl.empty() {
			s.pendingPongs = 0
		}
		return
	}
	m := s.cfg.Memory
	for n > 0 {
		if s.dataMid == 0 {
			// Frames lie whole in one segment: the header is here.
			b := s.data.head()
			s.dataMid = HeaderLen
			if FrameType(b[1]) == TypeData {
				s.dataMid += int(binary.BigEndian.Uint32(b[8:12]))
			}
		}
		k := min(s.dataMid, n)
		s.data.discard(k, m)
		s.dataMid -= k
		n -= k
	}
	if s.data.empty() {
		s.lastFrame = -1
	}
}

// notifyWritable calls OnWritable for streams whose Write was short, once
// their window and the output queue have room.
func (s *Session) notifyWritable() {
	if len(s.writers) == 0 || s.err != nil || s.cfg.MaxOutput-s.data.len() <= HeaderLen {
		return
	}
	list := s.writers
	s.writers = s.spare[:0]
	for i, st := range list {
		list[i] = nil
		if st.flags&fWantWrite == 0 || st.state == StreamReset || st.state == StreamLocalClosed || st.state == StreamClosed {
			st.flags &^= fInWriters | fWantWrite
			continue
		}
		if st.sendWindow == 0 || s.cfg.MaxOutput-s.data.len() <= HeaderLen || s.err != nil {
			s.writers = append(s.writers, st) // still blocked
			continue
		}
		st.flags &^= fInWriters | fWantWrite
		if st.h != nil {
			st.h.OnWritable(st)
		}
	}
	s.spare = list[:0]
}
