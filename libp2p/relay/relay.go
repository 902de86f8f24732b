package relay

import (
	"net/netip"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/swarmgate/swarmgate/internal/wire"
	"github.com/swarmgate/swarmgate/libp2p"
	"github.com/swarmgate/swarmgate/mux"
)

// This file is the libp2p binding: the only place the server side touches
// the host (Host.Handle, Host.Notify, PeerConn.{Post, OpenStream, After,
// StopTimer, RemotePeer, RemoteMultiaddr}).

// Relay serves /libp2p/circuit/relay/0.2.0/hop on an libp2p.Host: the
// Service's decisions, with the bytes carried on the host's streams.
type Relay struct {
	svc  *Service[*libp2p.PeerConn]
	host *libp2p.Host
	now  func() time.Time
}

// New creates a relay for h and registers the hop protocol. cfg.Addrs nil
// announces h's listen addresses (public ones only, unless
// AllowPrivateAddrs).
func New(h *libp2p.Host, cfg Config) (*Relay, error) {
	if cfg.Addrs == nil {
		cfg.Addrs = h.ListenAddrs
	}
	svc, err := NewService[*libp2p.PeerConn](h.Key(), cfg)
	if err != nil {
		return nil, err
	}
	r := &Relay{svc: svc, host: h, now: svc.cfg.Now}
	if err := h.Notify(libp2p.Notifiee{Closed: r.PeerConnClosed, KeepIdle: r.reserving}); err != nil {
		return nil, err
	}
	if err := h.Handle(ProtoHop, r.serveHop); err != nil {
		return nil, err
	}
	return r, nil
}

// Service is the relay's policy and state.
func (r *Relay) Service() *Service[*libp2p.PeerConn] { return r.svc }

// PeerConnClosed ends the reservation the connection held, if any
// (libp2p.Notifiee.Closed).
func (r *Relay) PeerConnClosed(pc *libp2p.PeerConn) {
	r.svc.store.ConnClosed(pc.RemotePeer(), pc)
}

// reserving reports whether pc holds a live reservation: the host's
// IdleTimeout must not close it, though it carries no stream between
// circuits (libp2p.Notifiee.KeepIdle).
func (r *Relay) reserving(pc *libp2p.PeerConn) bool {
	c, ok := r.svc.store.Lookup(pc.RemotePeer(), r.now())
	return ok && c == pc
}

// Sweep drops reservations expired at now (Store.Sweep).
func (r *Relay) Sweep(now time.Time) int { return r.svc.store.Sweep(now) }

// SweepInterval is how often StartSweeper sweeps: go-libp2p collects
// expired reservations every minute too. Between sweeps an expired
// reservation is already refused on use.
const SweepInterval = time.Minute

// StartSweeper sweeps every SweepInterval on one goroutine until the
// returned stop is called.
func (r *Relay) StartSweeper() (stop func()) {
	done := make(chan struct{})
	var once sync.Once
	go func() {
		t := time.NewTicker(SweepInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				r.Sweep(r.now())
			}
		}
	}()
	return func() { once.Do(func() { close(done) }) }
}

// remote is pc's remote IP and whether the connection is itself relayed.
// Engine connections are WebSocket, never circuits; the check is kept for
// the transports to come.
func remote(pc *libp2p.PeerConn) (netip.Addr, bool) {
	m := pc.RemoteMultiaddr()
	if m == nil {
		return netip.Addr{}, false
	}
	relayed := false
	for _, c := range m {
		relayed = relayed || c.Code() == ma.P_CIRCUIT
	}
	ip, err := manet.ToIP(m)
	if err != nil {
		return netip.Addr{}, relayed
	}
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap(), relayed
}

// hopStream phases:
//
//	read ──RESERVE, refusal, bad request──▶ reply ──our FIN sent, peer FIN──▶ done
//	  └──CONNECT accepted──▶ connect ──stop OK──▶ spliced (handler: splice half a)
//	                            └──stop failed──▶ reply (CONNECTION_FAILED)
//
// HopTimeout from the stream's opening resets it in any phase before the
// splice.
const (
	hopRead uint8 = iota
	hopReply
	hopConnect
	hopDone
)

// hopStream serves one inbound hop stream until it is done or spliced.
type hopStream struct {
	r     *Relay
	pc    *libp2p.PeerConn
	st    *mux.Stream
	timer *libp2p.Timer
	out   []byte // reply bytes the stream has not taken yet; FIN follows
	c     *relayCircuit
	phase uint8
}

func (r *Relay) serveHop(pc *libp2p.PeerConn, st *mux.Stream) mux.Handler {
	hs := &hopStream{r: r, pc: pc, st: st}
	hs.timer = pc.After(HopTimeout, hs.timeout)
	return hs
}

func (hs *hopStream) OnData(st *mux.Stream, p []byte) int {
	switch hs.phase {
	case hopRead:
	case hopConnect:
		return 0 // the source's first relayed bytes: kept for the splice
	default:
		return len(p) // after our reply: dropped
	}
	m, n, err := ParseHop(p)
	if err == wire.ErrNeedMore {
		return 0
	}
	svc := hs.r.svc
	if err != nil {
		hs.reply(svc.Malformed())
		return len(p)
	}
	kind, reply := svc.Request(m)
	switch kind {
	case reqReserve:
		addr, relayed := remote(hs.pc)
		reply, _ = svc.Reserve(hs.pc.RemotePeer(), hs.pc, addr, relayed, hs.r.now())
	case reqConnect:
		if hs.connect(m) {
			return n
		}
		return len(p)
	}
	hs.reply(reply)
	return len(p)
}

// reply writes m and our FIN; what the stream does not take now follows in
// OnWritable.
func (hs *hopStream) reply(m *pb.HopMessage) {
	hs.phase = hopReply
	b, err := AppendHop(nil, m)
	if err != nil {
		hs.st.Reset()
		hs.finish()
		return
	}
	hs.out = b
	hs.writeOut()
}

func (hs *hopStream) writeOut() {
	n, err := hs.st.Write(hs.out)
	hs.out = hs.out[n:]
	switch {
	case len(hs.out) == 0:
		hs.out = nil
		hs.st.CloseWrite()
	case err != mux.ErrWouldBlock:
		hs.st.Reset()
		hs.finish()
	}
}

func (hs *hopStream) OnWritable(*mux.Stream) {
	if hs.phase == hopReply && hs.out != nil {
		hs.writeOut()
	}
}

func (hs *hopStream) OnFIN(st *mux.Stream) {
	switch hs.phase {
	case hopRead:
		// The stream ended before a whole request (go: EOF from ReadMsg
		// is answered with MALFORMED_MESSAGE).
		hs.reply(hs.r.svc.Malformed())
	case hopReply:
		if hs.out == nil {
			hs.finish() // both sides closed
		}
	}
	// hopConnect: the source closed its write side early; the splice
	// forwards the FIN after its bytes.
}

func (hs *hopStream) OnReset(*mux.Stream, error) {
	if hs.phase == hopConnect {
		hs.c.sp.a.kill(EndReset) // the source gave up: reset the stop stream
	}
	hs.finish()
}

// timeout: HopTimeout passed before the stream was done or spliced.
func (hs *hopStream) timeout() {
	hs.timer = nil
	if hs.phase == hopConnect {
		// The destination's connection never ran the stop exchange
		// (StopTimeout answers first unless its lock was held all along).
		hs.c.sp.a.kill(EndStopFailed)
	}
	hs.st.Reset()
	hs.finish()
}

// finish stops the stream's timer; the stream is over for us.
func (hs *hopStream) finish() {
	hs.phase = hopDone
	if hs.timer != nil {
		hs.pc.StopTimer(hs.timer)
		hs.timer = nil
	}
}

// relayCircuit is a circuit's host side: the splice plus what the
// handshake needs.
type relayCircuit struct {
	r        *Relay
	sp       *splice
	src, dst peer.ID
	hop      *hopStream
	srcConn  *libp2p.PeerConn
	dstConn  *libp2p.PeerConn
}

// connect decides a CONNECT (src's lock) and, when accepted, asks the
// destination's connection to open the stop stream. It reports whether
// the request was accepted: bytes behind it are then kept.
func (hs *hopStream) connect(m *pb.HopMessage) bool {
	r := hs.r
	src := hs.pc.RemotePeer()
	_, relayed := remote(hs.pc)
	dst, dconn, status := r.svc.Connect(src, relayed, m, r.now())
	if status != pb.Status_OK {
		hs.reply(hopStatus(status))
		return false
	}
	c := &relayCircuit{r: r, src: src, dst: dst, hop: hs, srcConn: hs.pc, dstConn: dconn}
	var limit int64
	if r.svc.cfg.CircuitBytes > 0 {
		limit = r.svc.cfg.CircuitBytes
	}
	c.sp = newSplice(limit, c.ended, r.svc.countBytes)
	c.sp.a.conn, c.sp.a.st, c.sp.a.mem = hs.pc, hs.st, hs.pc.Conn().Memory()
	c.sp.b.conn, c.sp.b.mem = dconn, dconn.Conn().Memory()
	hs.c = c
	hs.phase = hopConnect
	dconn.Post(c.openStop)
	return true
}

// ended releases the circuit's counts (from either lock; the store's
// mutex is a leaf).
func (c *relayCircuit) ended(reason string) { c.r.svc.CircuitEnded(c.src, c.dst, reason) }

// openStop opens the stop stream on the destination's reserving
// connection (its lock) and sends STOP CONNECT. The relay never dials.
func (c *relayCircuit) openStop() {
	if c.sp.ended() {
		return // the source left meanwhile
	}
	ss := &stopStream{c: c}
	st, err := c.dstConn.OpenStream(ProtoStop, ss)
	if err != nil {
		c.stopFailed() // closed, going away, or output full
		return
	}
	c.sp.b.st = st
	msg, err := AppendStop(nil, &pb.StopMessage{
		Type:  pb.StopMessage_CONNECT.Enum(),
		Peer:  &pb.Peer{Id: []byte(c.src)},
		Limit: c.r.svc.Limit(),
	})
	if err != nil {
		c.stopFailed()
		return
	}
	ss.out = msg
	ss.timer = c.dstConn.After(StopTimeout, ss.timeout)
	c.sp.b.cancel = func() { c.dstConn.StopTimer(ss.timer) }
	ss.writeOut()
}

// stopFailed ends a circuit whose stop exchange failed, from the
// destination's lock: the stop stream is reset and the source gets
// CONNECTION_FAILED.
func (c *relayCircuit) stopFailed() {
	b := &c.sp.b
	if !c.sp.end(EndStopFailed) {
		b.abort() // ended meanwhile (the source reset): its abort may be on the way
		return
	}
	b.abort()
	c.srcConn.Post(c.hop.connectFailed)
}

// connectFailed answers the source CONNECTION_FAILED (its lock).
func (hs *hopStream) connectFailed() {
	if hs.phase != hopConnect {
		return
	}
	if n := hs.st.Buffered(); n > 0 && hs.st.State() != mux.StreamReset {
		hs.st.Discard(n)
	}
	hs.c.sp.a.aborted = true // the splice never runs on this stream
	hs.reply(hopStatus(pb.Status_CONNECTION_FAILED))
}

// spliceSource runs on the source's lock once the destination answered
// OK: the hop OK goes out, then bytes flow both ways.
func (c *relayCircuit) spliceSource() {
	hs := c.hop
	if c.sp.ended() || hs.phase != hopConnect {
		return
	}
	ok, err := AppendHop(nil, &pb.HopMessage{
		Type:   pb.HopMessage_STATUS.Enum(),
		Status: pb.Status_OK.Enum(),
		Limit:  c.r.svc.Limit(),
	})
	if err != nil {
		c.sp.a.kill(EndReset)
		return
	}
	hs.finish()
	a := &c.sp.a
	if d := c.r.svc.cfg.CircuitDuration; d > 0 {
		pc := c.srcConn
		t := pc.After(d, func() { a.kill(EndDuration) })
		a.cancel = func() { pc.StopTimer(t) }
	}
	c.r.svc.CircuitSpliced()
	a.pre = ok
	a.writeOut()
	if !a.aborted {
		hs.st.SetHandler(a) // presents what the source sent behind CONNECT
	}
}

// stopStream runs the relay's side of the stop exchange on the
// destination's connection, until the splice takes the stream over.
type stopStream struct {
	c     *relayCircuit
	timer *libp2p.Timer
	out   []byte // STOP CONNECT bytes not yet taken
}

func (ss *stopStream) writeOut() {
	st := ss.c.sp.b.st
	n, err := st.Write(ss.out)
	ss.out = ss.out[n:]
	if len(ss.out) == 0 {
		ss.out = nil
	} else if err != mux.ErrWouldBlock {
		ss.c.stopFailed()
	}
}

func (ss *stopStream) OnData(st *mux.Stream, p []byte) int {
	c := ss.c
	if c.sp.ended() {
		return len(p)
	}
	m, n, err := ParseStop(p)
	if err == wire.ErrNeedMore {
		return 0
	}
	// go-libp2p's relay requires a STATUS with OK; js checks only the
	// status. Anything else fails the circuit.
	if err != nil || m.GetType() != pb.StopMessage_STATUS || m.GetStatus() != pb.Status_OK {
		c.stopFailed()
		return len(p)
	}
	if ss.timer != nil {
		c.dstConn.StopTimer(ss.timer)
	}
	c.sp.b.cancel = nil
	ss.out = nil // an OK before our request was read whole: the rest is moot
	// Posted before any relayed chunk: the source's mailbox runs in order,
	// so the hop OK precedes the destination's first bytes.
	c.srcConn.Post(c.spliceSource)
	st.SetHandler(&c.sp.b) // bytes behind the STATUS go to the splice
	return n
}

func (ss *stopStream) OnWritable(*mux.Stream) {
	if ss.out != nil && !ss.c.sp.ended() {
		ss.writeOut()
	}
}

func (ss *stopStream) OnFIN(*mux.Stream)          { ss.c.stopFailed() }
func (ss *stopStream) OnReset(*mux.Stream, error) { ss.c.stopFailed() }

func (ss *stopStream) timeout() {
	ss.timer = nil
	ss.c.sp.b.cancel = nil
	ss.c.stopFailed()
}
