package engine

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/cloudwego/netpoll"

	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/ws"
)

// Stage is the protocol layer above the WebSocket on one connection. The
// engine calls it with the connection's lock held, from netpoll's read
// callback or the timer wheel, one call at a time; it must not block.
//
// A stage may also implement the optional hooks Ticker, Drainer and
// InboundLimiter to take part in deadlines, graceful drain and backpressure.
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

// StageFunc creates the stage for a connection whose WebSocket handshake
// succeeded. It is called with the connection's lock held and may write at
// once; Path, ClientAddr and HandshakeDeadline are known during the call.
type StageFunc func(c *Conn) Stage

// Ticker is a Stage with deadlines of its own (keepalive, negotiation
// timeouts): Conn.SetDeadline schedules its Tick, which runs with the
// connection's lock held.
type Ticker interface {
	Tick(c *Conn, now time.Time)
}

// PassEnder is a Stage that batches what one read pass gives it: EndPass
// runs once after the pass's input has been delivered (every Data call of
// the pass), before the engine writes the pass's output, with the
// connection's lock held. A stage that answers per pass rather than per
// Data call (libp2p's: a peer's WebSocket frames may be a few KiB each)
// writes fewer, larger frames.
type PassEnder interface {
	EndPass(c *Conn)
}

// Drainer is a Stage that can tell when its connection may be closed
// without cutting work short. GoingAway runs with the connection's lock
// held when a drain starts and at each of the drain's polls after; it may
// write (a GoAway) and reports whether the connection can be closed now.
// Stages without it are closed at once.
type Drainer interface {
	GoingAway(c *Conn) bool
}

// InboundLimiter is a Stage whose protocol bounds what a compliant peer may
// send without our reading (yamux windows): netpoll may read ahead up to
// InboundAllowance bytes, instead of Config.MaxInboundBuffered, before the
// peer is cut (checked at the start of every read pass and while the
// engine waits for a slow reader).
type InboundLimiter interface {
	InboundAllowance() int
}

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
// Do, Post, CloseWith and RemoteAddr may be called only from inside a Stage
// or Handler callback (or a function passed to Do or Post), where the engine
// holds the connection's lock. A callback never takes another connection's
// lock (Do included): it posts to that connection instead (mailbox.go).
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

	// Timer wheel links, owned by the wheel under its lock: twhen is the
	// instant the connection is filed for (engine mono nanoseconds).
	tprev, tnext *Conn
	twhen        int64
	tslot        int32
	// deadline is the connection's one deadline (mono nanoseconds, 0:
	// none); filed is the instant it last asked the wheel for, so moving
	// a deadline later (every read moves the keepalive) costs no wheel
	// lock: the wheel fires at the earlier instant and onDeadline files
	// the connection again. Both are owned by mu.
	deadline int64
	filed    int64

	out []byte // outbound bytes of this pass (pooled), nil when none
	// held is the pass's filled outbound buffers, written with out in one
	// writev when the pass flushes (nil when none).
	held *heldOut
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
	// scope is the connection's share in admission's resource model
	// (server role; zero for our dials): everything the peer makes the
	// connection hold is charged to it. Closed in onClose.
	scope admission.Scope
	// mbox holds functions posted from outside the lock (Post).
	mbox mailbox
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

// unlock runs what was posted to the connection meanwhile (Post), releases
// the connection's lock and then closes TCP if the locked section ended the
// connection.
func (c *Conn) unlock() {
	c.runMailbox()
	closeTCP := c.closeTCP
	c.closeTCP = false
	c.mu.Unlock()
	if closeTCP {
		c.nc.Close()
	}
}

// Role says whether this is the server or the client end.
func (c *Conn) Role() ws.Role { return c.role }

// Engine is the engine the connection runs on.
func (c *Conn) Engine() *Engine { return c.eng }

// Now is the engine's clock.
func (c *Conn) Now() time.Time { return c.eng.cfg.Now() }

// IsOpen reports whether the connection may still send data: it is open
// and no Close was sent or received.
func (c *Conn) IsOpen() bool { return c.state == stateOpen }

// IsTLS reports whether the connection runs over TLS (/tls/ws, /wss).
func (c *Conn) IsTLS() bool { return c.tls != nil }

// Memory is the connection's share of the resource model: what the buffers
// and streams a peer can make this connection hold are charged to
// (bufpool.TryGet, TryGrow and Release take it as the meter; so does
// yamux). Use it only from callbacks.
func (c *Conn) Memory() *admission.Scope { return &c.scope }

// RemoteAddr is the peer's TCP address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Path is the request path of the WebSocket handshake. It is known only
// while the StageFunc runs; an open connection does not keep it.
func (c *Conn) Path() string {
	if c.hs == nil {
		return ""
	}
	return c.hs.path
}

// ClientAddr is the client a trusted proxy named in its request headers
// (Config.TrustedProxies), and whether there is one: the connection's TCP
// peer is then the proxy. Known only while the StageFunc runs.
func (c *Conn) ClientAddr() (netip.Addr, bool) {
	if c.hs == nil || !c.hs.client.IsValid() {
		return netip.Addr{}, false
	}
	return c.hs.client, true
}

// HandshakeDeadline is when a connection accepted or dialed at the same
// time must have finished its whole handshake (Config.HandshakeTimeout from
// TCP accept or dial), for a stage that continues it (the libp2p upgrade).
// Known only while the StageFunc runs.
func (c *Conn) HandshakeDeadline() time.Time {
	if c.hs == nil {
		return time.Time{}
	}
	return c.hs.start.Add(c.eng.cfg.HandshakeTimeout)
}

// handshake is what a connection needs only until it is open.
type handshake struct {
	pending []byte      // a request or response that arrived in pieces
	routes  *Listener   // server: where the request path leads
	stage   StageFunc   // client: the stage to start once upgraded
	onFail  func(error) // client: told if the connection ends before that
	key     [24]byte    // client: our Sec-WebSocket-Key
	path    string      // server: the request path, during the StageFunc call
	start   time.Time   // accept or dial: upgrade deadlines count from here
	sniffed bool        // server: the first byte chose TLS or plain (tls.go)
	client  netip.Addr  // server: the client behind a trusted proxy, if any
}

// setDeadline sets the connection's deadline d from now (0 cancels).
func (c *Conn) setDeadline(d time.Duration) {
	if d == 0 {
		c.setDeadlineAt(0)
		return
	}
	c.setDeadlineAt(c.eng.mono(c.eng.cfg.Now().Add(d)))
}

// setDeadlineAt sets the deadline to mono instant at (0 cancels). Only an
// earlier instant than the one filed with the wheel takes the wheel's lock;
// a later one or a cancel waits for the filed instant, where onDeadline
// files the connection again or lets it go.
func (c *Conn) setDeadlineAt(at int64) {
	c.deadline = at
	if at != 0 && (c.filed == 0 || at < c.filed) {
		c.filed = at
		c.eng.wheel.schedule(c, at)
	}
}

// onDeadline runs when the timer wheel reaches the instant c is filed for;
// the wheel has already unlinked it. Called with c.mu held.
func (c *Conn) onDeadline() {
	c.filed = 0
	if c.state == stateClosed {
		return
	}
	now := c.eng.cfg.Now()
	m := c.eng.mono(now)
	// The TLS record layer's quiet-period release shares the filing.
	next := c.tlsQuietCheck(m)
	if c.deadline == 0 || m < c.deadline {
		if c.deadline != 0 && (next == 0 || c.deadline < next) {
			next = c.deadline // moved later since it was filed
		}
		if next != 0 {
			c.filed = next
			c.eng.wheel.schedule(c, next)
		}
		return
	}
	if next != 0 {
		c.filed = next
		c.eng.wheel.schedule(c, next)
	}
	c.deadline = 0
	switch c.state {
	case stateHandshake:
		c.fail(errHandshakeTimeout, "handshake_timeout")
	case stateClosing:
		c.fail(nil, "") // the peer never answered our Close: just end TCP
	case stateOpen:
		if t, ok := c.stage.(Ticker); ok {
			t.Tick(c, now)
			c.flush()
		}
	}
}

// SetDeadline schedules the stage's Tick at t (zero cancels). One deadline
// per connection: a stage keeps the earliest of its own. Moving it later,
// as every read does with a keepalive, touches only the connection.
func (c *Conn) SetDeadline(t time.Time) {
	if c.state != stateOpen {
		return
	}
	if t.IsZero() {
		c.deadline = 0
		return
	}
	if at := c.eng.mono(t); at != c.deadline {
		c.setDeadlineAt(at)
	}
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
	c.lock()
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
	c.endPass()
	c.flush()
	return nil
}

// endPass tells a PassEnder stage that the pass's input is delivered.
func (c *Conn) endPass() {
	if c.state != stateOpen && c.state != stateClosing {
		return
	}
	if pe, ok := c.stage.(PassEnder); ok {
		pe.EndPass(c)
	}
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
			c.Fail(err)
			return
		}
		c.event(ev)
	}
}

func (c *Conn) event(ev ws.Event) {
	switch ev.Kind {
	case ws.EventData:
		m := c.eng.metrics
		m.layerBytes[0].Add(float64(len(ev.Payload)))
		if ev.FrameEnd {
			m.frames[0].Inc()
		}
		if c.state != stateOpen {
			return // after our Close: "discard any more data" (RFC 6455 §1.4)
		}
		if err := c.stage.Data(c, ev.Op, ev.Payload, ev.End); err != nil {
			c.Fail(err)
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

// Fail fails the connection: a Close with the error's code (a
// *ws.ProtocolError's, else 1011), then TCP closes (RFC 6455 §7.1.7). The
// error's Token, or "stage_error", is counted in
// swarmgate_connection_failures_total.
func (c *Conn) Fail(err error) {
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
	c.lock()
	if c.state != stateClosed {
		c.state = stateClosed
		if c.err == nil {
			c.err = net.ErrClosed // TCP ended without a close handshake: 1006
		}
	}
	c.deadline = 0
	if c.filed != 0 { // unlink now: the wheel must not keep a closed connection
		c.filed = 0
		c.eng.wheel.schedule(c, 0)
	}
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
	c.scope.Close()
	c.runMailbox() // posted functions still run, and see the connection closed
	c.mu.Unlock()
	c.eng.untrack(c)
	return nil
}
