package engine

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/cloudwego/netpoll"
	"golang.org/x/sys/unix"

	"github.com/swarmgate/swarmgate/simd"
	"github.com/swarmgate/swarmgate/ws"
)

// Stage is the protocol layer above the WebSocket on one connection. The
// engine calls it with the connection's lock held, from netpoll's read
// callback or the timer wheel, one call at a time; it must not block.
type Stage interface {
	// Data receives a piece of a data message's payload, unmasked. p is
	// valid only during the call and may be modified. end reports that the
	// message ends with p. An error fails the connection (close 1011, or the
	// code of a *ws.ProtocolError).
	Data(c *Conn, op ws.Opcode, p []byte, end bool) error
	// Closed is called once when the connection has ended; err is nil after
	// a clean close handshake.
	Closed(c *Conn, err error)
}

// Handler creates the stage for a connection whose upgrade succeeded. It is
// called with the connection's lock held and may write at once.
type Handler func(c *Conn) Stage

// connState is a connection's lifecycle:
//
//	handshake ──upgrade──▶ open ──Close sent──▶ closing ──Close received──▶ closed
//	    │                   │                      └────────timeout───────────▲
//	    └─refused/timeout───┴──Close received / failure / TCP end────────────┘
type connState uint8

const (
	stateHandshake connState = iota
	stateOpen
	stateClosing
	stateClosed
)

// Conn is one WebSocket connection in either role. Its methods other than
// Do, CloseWith and RemoteAddr may be called only from inside a Stage or
// Handler callback (or a function passed to Do), where the engine holds the
// connection's lock.
type Conn struct {
	mu    sync.Mutex
	nc    netpoll.Connection
	eng   *Engine
	stage Stage
	dec   ws.Decoder

	// hs is the opening handshake's state, dropped once the connection is
	// open so an open connection does not carry it.
	hs *handshake

	// Links in the engine's list of open connections.
	prev, next *Conn

	// Timer wheel links; deadline is the instant the current deadline
	// was set for, zero when none.
	tprev, tnext *Conn
	twhen        int64
	tslot        int32
	deadline     int64

	out []byte // outbound bytes of this pass (pooled), nil when none
	// tls is the connection's TLS layer (tls.go), nil for plain /ws.
	tls   *tlsConn
	fd    int
	err   error
	state connState
	role  ws.Role
	// closing TCP is left to unlock: netpoll runs close callbacks, which
	// take mu, synchronously inside Close.
	closeTCP bool
	// gauge is 1 + the connState series this connection is counted in
	// (state*2 + transport), 0 when none.
	gauge int8
	// ticket is the connection's admission claim (server role), released
	// in onClose.
	ticket Ticket
}

// count moves the connection to state's gauge (0 handshake, 1 open,
// 2 closing, -1 none), under transport ws or wss.
func (c *Conn) count(state int8) {
	m := c.eng.metrics
	if g := c.gauge - 1; g >= 0 {
		m.connState[g/2][g%2].Dec()
	}
	c.gauge = 0
	if state >= 0 {
		var tr int8
		if c.tls != nil {
			tr = 1
		}
		c.gauge = 1 + state*2 + tr
		m.connState[state][tr].Inc()
	}
}

// unlock releases the connection's lock and then closes TCP if the locked
// section ended the connection.
func (c *Conn) unlock() {
	closeTCP := c.closeTCP
	c.closeTCP = false
	c.mu.Unlock()
	if closeTCP {
		c.nc.Close()
	}
}

// Role says whether this is the server or the client end.
func (c *Conn) Role() ws.Role { return c.role }

// RemoteAddr is the peer's TCP address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Path is the request path the connection is being upgraded on. It is known
// only while the Handler runs; an open connection does not keep it.
func (c *Conn) Path() string {
	if c.hs == nil {
		return ""
	}
	return c.hs.path
}

// handshake is what a connection needs only until it is open.
type handshake struct {
	pending []byte      // a request or response that arrived in pieces
	routes  *Listener   // server: where the request path leads
	handler Handler     // client: the stage to start once upgraded
	onFail  func(error) // client: told if the connection ends before that
	key     [24]byte    // client: our Sec-WebSocket-Key
	path    string      // server: the request path, during the Handler call
	start   time.Time   // accept or dial: upgrade deadlines count from here
	sniffed bool        // server: the first byte chose TLS or plain (tls.go)
	client  netip.Addr  // server: the client behind a trusted proxy, if any
}

func (c *Conn) setDeadline(d time.Duration) {
	if d == 0 {
		c.deadline = 0
		c.eng.wheel.schedule(c, time.Time{})
		return
	}
	at := c.eng.cfg.Now().Add(d)
	c.deadline = at.UnixNano()
	c.eng.wheel.schedule(c, at)
}

// onDeadline runs when the timer wheel fires c's deadline.
func (c *Conn) onDeadline() {
	c.mu.Lock()
	defer c.unlock()
	if c.deadline == 0 || c.eng.cfg.Now().UnixNano() < c.deadline || c.state == stateClosed {
		return // cancelled or moved since the wheel picked it
	}
	c.deadline = 0
	switch c.state {
	case stateHandshake:
		c.fail(errHandshakeTimeout, "handshake_timeout")
	case stateClosing:
		c.fail(nil, "") // the peer never answered our Close: just end TCP
	case stateOpen:
		if t, ok := c.stage.(ticker); ok {
			t.Tick(c, c.eng.cfg.Now())
			c.flush()
		}
	}
}

// ticker is a Stage with deadlines of its own (keepalive, negotiation
// timeouts); SetDeadline schedules its Tick.
type ticker interface {
	Tick(c *Conn, now time.Time)
}

// SetDeadline schedules the stage's Tick at t (zero cancels). One deadline
// per connection: a stage keeps the earliest of its own.
func (c *Conn) SetDeadline(t time.Time) {
	if c.state != stateOpen {
		return
	}
	if t.IsZero() {
		if c.deadline != 0 {
			c.setDeadline(0)
		}
		return
	}
	if t.UnixNano() == c.deadline {
		return
	}
	c.deadline = t.UnixNano()
	c.eng.wheel.schedule(c, t)
}

var (
	errHandshakeTimeout = errors.New("engine: handshake timeout")
	errWriteStalled     = errors.New("engine: peer does not read")
	errInboundFlood     = errors.New("engine: peer floods while not reading")
	// ErrConnClosed reports a write on a connection that is closing or closed.
	ErrConnClosed = errors.New("engine: connection closed")
)

// onRequest is netpoll's read callback: it handles up to maxPass bytes of
// input, then flushes what the stages wrote. netpoll calls it again while
// input remains, and only ever one at a time per connection.
func (c *Conn) onRequest() error {
	c.mu.Lock()
	defer c.unlock()
	r := c.nc.Reader()
	n := r.Len()
	if c.state == stateClosed {
		r.Skip(n)
		return r.Release()
	}
	// netpoll reads on while the engine works through a backlog; a peer
	// that sends faster than it is served is bounded here as in drain.
	if n > c.inboundLimit() {
		r.Skip(n)
		r.Release()
		c.fail(errInboundFlood, "inbound_flood")
		return nil
	}
	if n > maxPass {
		n = maxPass
	}
	b, err := r.Next(n)
	if err != nil {
		c.fail(err, "read")
		return nil
	}
	c.eng.metrics.bytesIn.Add(float64(n))
	c.receive(b)
	r.Release()
	c.flush()
	return nil
}

// input runs b through the pipeline.
func (c *Conn) input(b []byte) {
	if c.state == stateHandshake {
		var rest []byte
		var ok bool
		if rest, ok = c.handshake(b); !ok {
			return
		}
		b = rest
	}
	for len(b) > 0 && c.state != stateClosed {
		ev, n, err := c.dec.Next(b)
		b = b[n:]
		if err != nil {
			c.protocolFailure(err)
			return
		}
		c.event(ev)
	}
}

func (c *Conn) event(ev ws.Event) {
	switch ev.Kind {
	case ws.EventData:
		m := c.eng.metrics
		m.layerBytes[0][0].Add(float64(len(ev.Payload)))
		if ev.FrameEnd {
			m.frames[0][0].Inc()
		}
		if c.state != stateOpen {
			return // after our Close: "discard any more data" (RFC 6455 §1.4)
		}
		if err := c.stage.Data(c, ev.Op, ev.Payload, ev.End); err != nil {
			c.protocolFailure(err)
		}
	case ws.EventPing:
		// "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame
		// in response, unless it already received a Close frame" (§5.5.2).
		if c.state == stateOpen {
			c.writeFrame(true, ws.OpPong, ev.Payload)
		}
	case ws.EventClose:
		codeCounter(&c.eng.metrics.codeLabelsR, c.eng.metrics.closeRecv, closeLabel(ev.Code)).Inc()
		if c.state == stateOpen {
			// "If an endpoint receives a Close frame and did not previously
			// send a Close frame, the endpoint MUST send a Close frame in
			// response ... typically echoing the status code it received"
			// (§5.5.1); the server then closes TCP first (§7.1.1).
			c.sendClose(ev.Code, "")
		}
		c.end(nil)
	}
}

func closeLabel(code ws.CloseCode) uint16 {
	if code == ws.CloseNoStatus {
		return 0
	}
	return uint16(code)
}

// protocolFailure fails the connection: a Close with the error's code, then
// TCP closes (RFC 6455 §7.1.7).
func (c *Conn) protocolFailure(err error) {
	code, token := ws.CloseInternalError, "stage_error"
	var pe *ws.ProtocolError
	if errors.As(err, &pe) {
		code, token = pe.Code, pe.Token
	}
	if c.state == stateOpen {
		c.sendClose(code, "")
	}
	c.fail(err, token)
}

// fail ends the connection after a failure counted under reason.
func (c *Conn) fail(err error, reason string) {
	if reason != "" {
		c.eng.metrics.failures.WithLabelValues(reason).Inc()
	}
	c.end(err)
}

// end flushes what is queued and has TCP closed when the lock is released.
// Stage.Closed runs from netpoll's close callback.
func (c *Conn) end(err error) {
	if c.state == stateClosed {
		return
	}
	c.state = stateClosed
	c.err = err
	c.flush()
	c.closeTCP = true
}

// onClose is netpoll's close callback, run once when the connection is gone,
// closed by either side.
func (c *Conn) onClose(netpoll.Connection) error {
	c.mu.Lock()
	if c.state != stateClosed {
		c.state = stateClosed
		if c.err == nil {
			c.err = net.ErrClosed // TCP ended without a close handshake: 1006
		}
	}
	c.setDeadline(0)
	c.count(-1)
	hs := c.hs
	c.hs = nil
	if c.tls != nil {
		c.tls.close()
	}
	stage := c.stage
	c.stage = nil
	if stage != nil {
		stage.Closed(c, c.err)
	} else if hs != nil && hs.onFail != nil {
		hs.onFail(c.err)
	}
	c.ticket.Release()
	c.mu.Unlock()
	c.eng.untrack(c)
	return nil
}

// sendClose queues a Close frame and moves to the closing state.
func (c *Conn) sendClose(code ws.CloseCode, reason string) {
	var body [ws.MaxControlPayload]byte
	c.writeFrame(true, ws.OpClose, ws.AppendCloseBody(body[:0], code, reason))
	codeCounter(&c.eng.metrics.codeLabels, c.eng.metrics.closeSent, closeLabel(code)).Inc()
	c.state = stateClosing
	c.count(2)
}

// WriteMessage queues p as one message. The engine flushes when the callback
// returns, or earlier once MaxOutbound bytes are queued.
func (c *Conn) WriteMessage(op ws.Opcode, p []byte) error {
	return c.WriteFrame(true, op, p)
}

// WriteFrame queues one frame of a message (fin false for all but the last
// fragment, op OpContinuation for all but the first).
func (c *Conn) WriteFrame(fin bool, op ws.Opcode, p []byte) error {
	if c.state != stateOpen {
		return ErrConnClosed
	}
	c.writeFrame(fin, op, p)
	if len(c.out) >= c.eng.cfg.MaxOutbound {
		c.flush()
	}
	if c.state == stateClosed {
		return ErrConnClosed
	}
	return nil
}

// writeFrame encodes a frame into the pass's outbound buffer. In the client
// role the payload is masked while it is copied.
func (c *Conn) writeFrame(fin bool, op ws.Opcode, p []byte) {
	payload, slot := c.reserveFrame(fin, op, len(p))
	if slot.masked {
		simd.MaskCopy(slot.key, 0, payload, p)
	} else {
		copy(payload, p)
	}
}

// frameSlot is a frame reserved in the outbound buffer, for commitFrame.
type frameSlot struct {
	start  int
	key    [4]byte
	masked bool
}

// reserveFrame writes a frame header for n payload bytes into the pass's
// outbound buffer and returns the payload space, so a layer above can
// produce its bytes in place (Noise seals straight into it) instead of
// copying them in. In the client role commitFrame masks the payload once it
// is filled. The buffer is flushed first rather than grown past the largest
// pool class, so outbound bytes never need a fresh large allocation.
func (c *Conn) reserveFrame(fin bool, op ws.Opcode, n int) ([]byte, frameSlot) {
	h := ws.Header{Fin: fin, Op: op, Length: int64(n)}
	var slot frameSlot
	if c.role == ws.Client {
		h.Masked = true
		h.Key = ws.NewMaskKey()
		slot.key, slot.masked = h.Key, true
	}
	if !op.IsControl() {
		c.eng.metrics.frames[0][1].Inc()
		c.eng.metrics.layerBytes[0][1].Add(float64(n))
	}
	size := ws.HeaderSize(h.Length, h.Masked) + n
	if c.out != nil && len(c.out)+size > cap(c.out) && size <= largeBuf {
		c.flush()
	}
	if c.out == nil {
		c.out = getBuf(size)
	} else {
		c.out = grow(c.out, size)
	}
	c.out = ws.AppendHeader(c.out, h)
	slot.start = len(c.out)
	c.out = c.out[:slot.start+n]
	return c.out[slot.start:], slot
}

// commitFrame finishes a frame whose payload was filled in place.
func (c *Conn) commitFrame(slot frameSlot) {
	if slot.masked && c.out != nil {
		simd.Mask(slot.key, 0, c.out[slot.start:])
	}
}

// writeRaw queues bytes that are not a frame (HTTP handshake lines).
func (c *Conn) writeRaw(p []byte) {
	if c.out == nil {
		c.out = getBuf(len(p))
	} else {
		c.out = grow(c.out, len(p))
	}
	c.out = append(c.out, p...)
}

// flush hands the pass's outbound bytes to the kernel with one write(2).
// The engine never uses netpoll's output queue, so writing straight to the
// socket keeps order. When the kernel takes only part, the connection waits
// for the peer to drain (see drain): its input is not processed meanwhile,
// which is the backpressure.
func (c *Conn) flush() {
	out := c.out
	c.out = nil
	if c.tls != nil {
		out = c.tls.seal(out) // encrypt-on-flush hook
	}
	if out == nil {
		return
	}
	defer putBuf(out)
	c.eng.metrics.bytesOut.Add(float64(len(out)))
	n, err := writeFD(c.fd, out)
	if err == nil && n < len(out) {
		err = c.drain(out[n:])
	}
	if err != nil && c.state != stateClosed {
		reason := "write"
		switch err {
		case errWriteStalled:
			reason = "write_timeout"
		case errInboundFlood:
			reason = "inbound_flood"
		}
		c.fail(err, reason)
	}
}

// inboundAllowancer is a stage whose protocol bounds what a compliant peer
// may send without our reading (yamux windows); drain allows that much.
type inboundAllowancer interface {
	inboundAllowance() int
}

// inboundLimit is how much netpoll may have read ahead of the engine for
// this connection: MaxInboundBuffered, or what the stage's protocol lets a
// compliant peer have in flight when that is more.
func (c *Conn) inboundLimit() int {
	limit := c.eng.cfg.MaxInboundBuffered
	if a, ok := c.stage.(inboundAllowancer); ok {
		limit = max(limit, a.inboundAllowance())
	}
	return limit
}

// drainSlice is how long drain sleeps in poll(2) between checks.
const drainSlice = 10 * time.Millisecond

// drain writes rest as the peer makes room, for at most WriteTimeout.
// netpoll keeps reading the socket meanwhile (it cannot pause reads,
// cloudwego/netpoll#422), so between waits drain checks how much it has read
// ahead and cuts a peer that floods while not reading.
func (c *Conn) drain(rest []byte) error {
	deadline := time.Now().Add(c.eng.cfg.WriteTimeout)
	fds := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLOUT}}
	limit := c.inboundLimit()
	for len(rest) > 0 {
		if c.nc.Reader().Len() > limit {
			return errInboundFlood
		}
		if time.Now().After(deadline) {
			return errWriteStalled
		}
		if _, err := unix.Poll(fds, int(drainSlice/time.Millisecond)); err != nil && err != unix.EINTR {
			return err
		}
		n, err := writeFD(c.fd, rest)
		if err != nil {
			return err
		}
		rest = rest[n:]
	}
	return nil
}

// writeFD writes what the socket takes without blocking; EAGAIN is not an
// error, just a short count.
func writeFD(fd int, b []byte) (int, error) {
	for {
		n, err := syscall.Write(fd, b)
		switch err {
		case nil:
			return n, nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, nil
		}
		return 0, err
	}
}

// Do runs f with the connection's lock held, as if from a callback, then
// flushes. Goroutines outside the engine use it to write.
func (c *Conn) Do(f func(c *Conn)) {
	c.mu.Lock()
	defer c.unlock()
	if c.state == stateClosed {
		return
	}
	f(c)
	c.flush()
}

// CloseWith starts the close handshake with code and reason; TCP closes
// when the peer answers or after CloseTimeout. Safe from any goroutine.
func (c *Conn) CloseWith(code ws.CloseCode, reason string) {
	c.Do(func(c *Conn) { c.Close(code, reason) })
}

// Close starts the close handshake from inside a callback.
func (c *Conn) Close(code ws.CloseCode, reason string) {
	switch c.state {
	case stateOpen:
		c.sendClose(code, reason)
		c.setDeadline(c.eng.cfg.CloseTimeout)
	case stateHandshake:
		c.end(nil)
	}
}
