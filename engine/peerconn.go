package engine

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/swarmgate/swarmgate/multistream"
	"github.com/swarmgate/swarmgate/mux"
	"github.com/swarmgate/swarmgate/security"
	"github.com/swarmgate/swarmgate/ws"
)

// phase is a libp2p connection's upgrade state:
//
//	secNego ─/noise or /plaintext─▶ secure ─muxer inlined──────────▶ muxed
//	                                   └──▶ muxNego ─/yamux/1.0.0──▶ muxed
type phase uint8

const (
	phaseSecNego phase = iota // multistream-select for the security protocol
	phaseSecure               // Noise XX or plaintext handshake
	phaseMuxNego              // multistream-select for the muxer, secured
	phaseMuxed                // yamux streams
)

// PeerConn is one libp2p connection: the Stage above a WebSocket that runs
// the upgrade and then the yamux session. Its methods are for callbacks
// (stream handlers, OnReady), which run with the connection's lock held.
type PeerConn struct {
	c      *Conn
	h      *Host
	up     *upgrade // upgrade state, dropped once muxed
	sec    *security.Session
	sess   *mux.Session
	remote peer.ID
	rkey   crypto.PubKey
	// in holds bytes of the WebSocket stream that a layer could not use
	// yet: a partial handshake message or Noise frame (pooled, nil when
	// empty). hdr holds a partial yamux header between Noise frames.
	in           []byte
	hdr          [mux.HeaderLen]byte
	hdrN         uint8
	phase        phase
	client       bool
	goawaySent   bool // counted in swarmgate_yamux_goaway_total
	goawayRecv   bool
	inboundPings uint8         // live inbound ping streams (MaxInboundPings)
	negotiating  []*negotiator // inbound streams choosing a protocol
	proxied      *netip.Addr   // the client behind a trusted proxy (nil: the TCP peer)
	timers       []*streamTimer
	idleSince    int64 // unix nanos since the session has had no stream; 0 while busy
}

// A streamTimer is a deadline of one stream's protocol (a ping stream's
// idle limit, a request's timeout). It lives in its connection's list and
// fires from the connection's Tick on the engine's timer wheel, with the
// connection's lock held: no runtime timer, no goroutine.
type streamTimer struct {
	at   time.Time
	fire func()
}

// after schedules fire to run d from now, from a callback.
func (pc *PeerConn) after(d time.Duration, fire func()) *streamTimer {
	t := &streamTimer{at: pc.c.eng.cfg.Now().Add(d), fire: fire}
	pc.timers = append(pc.timers, t)
	pc.schedule()
	return t
}

// resetTimer moves t to d from now.
func (pc *PeerConn) resetTimer(t *streamTimer, d time.Duration) {
	t.at = pc.c.eng.cfg.Now().Add(d)
	pc.schedule()
}

// stopTimer cancels t; stopping a fired or stopped timer does nothing.
func (pc *PeerConn) stopTimer(t *streamTimer) {
	for i, x := range pc.timers {
		if x == t {
			last := len(pc.timers) - 1
			pc.timers[i] = pc.timers[last]
			pc.timers[last] = nil
			pc.timers = pc.timers[:last]
			break
		}
	}
	if len(pc.timers) == 0 {
		pc.timers = nil
	}
}

// upgrade is what a connection needs only until yamux runs.
type upgrade struct {
	lst      multistream.Listener
	dialer   *multistream.Dialer
	noise    *security.Handshake
	plain    *security.PlaintextHandshake
	pt       []byte // plaintext multistream bytes that arrived in pieces
	deadline time.Time
	expected peer.ID
	usePlain bool
	ready    func(*PeerConn, error)
	trace    *Trace
	phaseAt  time.Time // server: when the current phase began
}

// countGoAway records a yamux GoAway once per direction.
func (pc *PeerConn) countGoAway(received bool, code mux.Code) {
	seen := &pc.goawaySent
	dir := 0
	if received {
		seen, dir = &pc.goawayRecv, 1
	}
	if *seen {
		return
	}
	*seen = true
	pc.c.eng.metrics.goaway[dir][min(int(code), 3)].Inc()
}

// phaseDone times the phase that just ended (server side) and starts the
// next.
func (pc *PeerConn) phaseDone(name string) {
	if pc.client || pc.up == nil {
		return
	}
	now := pc.c.eng.cfg.Now()
	pc.c.eng.metrics.upgradePhase.WithLabelValues(name).Observe(now.Sub(pc.up.phaseAt).Seconds())
	pc.up.phaseAt = now
}

// Handler returns the engine Handler that serves libp2p on a listener: use
// it as Routes.Fallback (libp2p dialers may use any path).
func (h *Host) Handler() Handler {
	return func(c *Conn) Stage {
		if h.upgrading.Add(1) > int64(h.cfg.MaxConcurrentUpgrades) {
			h.upgrading.Add(-1)
			c.eng.metrics.failures.WithLabelValues("upgrade_cap").Inc()
			c.Close(ws.CloseTryAgainLater, "too many handshakes")
			return refused{}
		}
		pc := &PeerConn{c: c, h: h, up: &upgrade{deadline: c.handshakeDeadline(), phaseAt: c.eng.cfg.Now()}}
		if c.hs.client.IsValid() {
			a := c.hs.client
			pc.proxied = &a
		}
		pc.up.lst.Reset(h.secProtos)
		// Like go-libp2p, send our multistream header at once.
		pc.writeRaw(pc.up.lst.Start(nil))
		pc.schedule()
		return pc
	}
}

// DialOptions tunes DialPeer.
type DialOptions struct {
	// Expect aborts the handshake unless the peer has this ID.
	Expect peer.ID
	// Plaintext selects /plaintext/2.0.0 instead of Noise (the host must
	// have InsecurePlaintext).
	Plaintext bool
	// Path is the WebSocket request path; empty: "/".
	Path string
	// Trace, when set, receives the instant each phase of the connection
	// ended, for latency breakdowns (loadgen's connect scenario).
	Trace *Trace
}

// Trace holds when each phase of an outgoing connection ended.
type Trace struct {
	Start       time.Time // DialPeer called
	TCP         time.Time // TCP connected (TLS, when used, is inside Upgrade)
	Upgrade     time.Time // WebSocket 101 received
	Multistream time.Time // security protocol agreed
	Security    time.Time // Noise or plaintext handshake done
	Muxer       time.Time // yamux running (equal to Security when inlined)
}

// DialPeer opens a libp2p connection over WebSocket in the client role.
// ready runs once with the connection muxed, or with the error that ended
// it; no goroutine is kept for the connection.
func (h *Host) DialPeer(addr ma.Multiaddr, opt DialOptions, ready func(*PeerConn, error)) (*PeerConn, error) {
	if opt.Plaintext && h.plaintext == nil {
		return nil, errors.New("engine: plaintext dial needs HostConfig.InsecurePlaintext")
	}
	proto := ProtoNoise
	if opt.Plaintext {
		proto = ProtoPlaintext
	}
	d, err := multistream.NewDialer(proto)
	if err != nil {
		return nil, err
	}
	pc := &PeerConn{h: h, client: true, up: &upgrade{dialer: d, expected: opt.Expect, usePlain: opt.Plaintext, ready: ready, trace: opt.Trace}}
	now := h.eng.cfg.Now
	if opt.Trace != nil {
		opt.Trace.Start = now()
	}
	tcp := make(chan time.Time, 1)
	_, err = h.eng.DialWith(addr, opt.Path, func(c *Conn) Stage {
		pc.c = c
		if tr := pc.up.trace; tr != nil {
			tr.Upgrade = now()
			tr.TCP = <-tcp // Dial has returned (sent right after), or is about to
		}
		pc.up.deadline = c.handshakeDeadline()
		pc.writeRaw(d.Start(nil))
		pc.schedule()
		return pc
	}, func(err error) {
		if ready != nil {
			ready(nil, fmt.Errorf("engine: connection ended before the WebSocket upgrade: %w", err))
		}
	})
	if opt.Trace != nil {
		tcp <- now()
	}
	if err != nil {
		return nil, err
	}
	return pc, nil
}

// handshakeDeadline is when the whole upgrade, WebSocket through security,
// must be done.
func (c *Conn) handshakeDeadline() time.Time {
	return c.hs.start.Add(c.eng.cfg.HandshakeTimeout)
}

// Conn is the WebSocket connection underneath.
func (pc *PeerConn) Conn() *Conn { return pc.c }

// Host is the host this connection belongs to.
func (pc *PeerConn) Host() *Host { return pc.h }

// RemotePeer is the authenticated peer ID ("" before security completes).
func (pc *PeerConn) RemotePeer() peer.ID { return pc.remote }

// RemotePublicKey is the peer's identity key.
func (pc *PeerConn) RemotePublicKey() crypto.PubKey { return pc.rkey }

// RemoteMultiaddr is the peer's observed address, /ip4|ip6/…/tcp/N/ws (or
// /tls/ws): the TCP peer, or for a connection through a trusted proxy the
// client the proxy names (with the proxy connection's port, the only one
// known). Identify reports it as observedAddr.
func (pc *PeerConn) RemoteMultiaddr() ma.Multiaddr {
	na := pc.c.RemoteAddr()
	if pc.proxied != nil {
		if tcp, ok := na.(*net.TCPAddr); ok {
			na = net.TCPAddrFromAddrPort(netip.AddrPortFrom(*pc.proxied, uint16(tcp.Port)))
		}
	}
	m, err := manet.FromNetAddr(na)
	if err != nil {
		return nil
	}
	if pc.c.tls != nil {
		return m.Encapsulate(ma.StringCast("/tls/ws"))
	}
	return m.Encapsulate(ma.StringCast("/ws"))
}

// Session is the yamux session (nil before the upgrade completes).
func (pc *PeerConn) Session() *mux.Session { return pc.sess }

// OpenStream opens a stream and proposes proto on it. Data written before
// the peer confirms is sent behind the proposal (lazy negotiation); h
// receives the stream's events once the peer has confirmed. When the
// session's output queue cannot take the whole proposal it returns
// mux.ErrWouldBlock without opening anything: retry once output drained
// (after a flush, or in some stream's OnWritable).
func (pc *PeerConn) OpenStream(proto string, h mux.Handler) (*mux.Stream, error) {
	if pc.sess == nil {
		return nil, ErrNotSecured
	}
	d, err := multistream.NewDialer(proto)
	if err != nil {
		return nil, err
	}
	proposal := d.Start(nil)
	if pc.sess.OutputLen()+2*mux.HeaderLen+len(proposal) > pc.maxOutput() {
		return nil, mux.ErrWouldBlock
	}
	st, err := pc.sess.Open(&proposer{d: d, next: h})
	if err != nil {
		return nil, err
	}
	// A fresh stream has the whole initial window, and the queue has room:
	// the proposal goes out whole and ahead of anything the caller writes.
	if n, err := st.Write(proposal); n != len(proposal) {
		st.Reset()
		if err == nil {
			err = mux.ErrWouldBlock
		}
		return nil, err
	}
	return st, nil
}

// inboundAllowance is what yamux flow control lets the peer have in flight
// towards us: every live stream's window at its largest, plus the session's
// window-growth allowance, plus a frame's worth of headroom. A peer that
// sends more violates its windows.
func (pc *PeerConn) inboundAllowance() int {
	if pc.sess == nil {
		return 0
	}
	cfg := pc.h.cfg.Mux
	win := int(cfg.MaxWindow)
	if win <= 0 {
		win = mux.DefaultMaxWindow
	}
	growth := int(cfg.MaxWindowGrowth)
	if growth <= 0 {
		growth = mux.DefaultMaxWindowGrowth
	}
	return pc.sess.NumStreams()*win + growth + 1<<20
}

func (pc *PeerConn) maxOutput() int {
	if n := pc.h.cfg.Mux.MaxOutput; n > 0 {
		return n
	}
	return mux.DefaultMaxOutput
}

// Close ends the session with GoAway and closes the WebSocket.
func (pc *PeerConn) Close() {
	if pc.sess != nil {
		pc.countGoAway(false, mux.CodeNormal)
		pc.sess.Close(mux.CodeNormal)
		pc.flush()
	}
	pc.c.Close(ws.CloseNormal, "")
}

// Data receives the WebSocket byte stream; message boundaries mean nothing.
func (pc *PeerConn) Data(c *Conn, _ ws.Opcode, p []byte, _ bool) error {
	err := pc.input(p)
	pc.flush()
	if err != nil {
		return pc.failure(err)
	}
	pc.schedule()
	return nil
}

// input runs p through the layers, keeping what no layer could use yet.
func (pc *PeerConn) input(p []byte) error {
	// What a peer leaves pending is held between passes: it is charged to
	// the memory budget, and refused when the budget is spent.
	budget := pc.c.eng.adm.Budget()
	buf := p
	if pc.in != nil {
		var ok bool
		if pc.in, ok = budget.TryGrow(pc.in, len(p)); !ok {
			return errMemoryBudget
		}
		pc.in = append(pc.in, p...)
		buf = pc.in
	}
	n, err := pc.process(buf)
	rest := buf[n:]
	switch {
	case pc.in != nil && len(rest) == 0:
		budget.PutBuf(pc.in)
		pc.in = nil
	case pc.in != nil:
		pc.in = pc.in[:copy(pc.in, rest)]
	case len(rest) > 0 && err == nil:
		nb, ok := budget.TryGetBuf(len(rest))
		if !ok {
			return errMemoryBudget
		}
		pc.in = append(nb, rest...)
	}
	return err
}

// errMemoryBudget ends a connection whose pending input the memory budget
// cannot hold: close 1013 (try again later).
var errMemoryBudget = &ws.ProtocolError{Code: ws.CloseTryAgainLater, Token: "memory_budget"}

// process consumes what it can of b and returns how much.
func (pc *PeerConn) process(b []byte) (int, error) {
	off := 0
	for pc.phase < phaseMuxNego {
		n, done, err := pc.handshakeStep(b[off:])
		off += n
		if err != nil || !done {
			return off, err
		}
	}
	if pc.sec == nil { // plaintext: the stream is the plaintext
		return len(b), pc.plainInput(b[off:])
	}
	for off < len(b) {
		pt, n, err := pc.sec.ReadFrame(b[off:])
		if err == security.ErrNeedMore {
			break
		}
		if err != nil {
			return off, err
		}
		off += n
		m := pc.c.eng.metrics
		m.frames[1][0].Inc()
		m.layerBytes[1][0].Add(float64(len(pt)))
		if err := pc.plainInput(pt); err != nil {
			return off, err
		}
	}
	return off, nil
}

// handshakeStep advances security negotiation or the security handshake by
// what b allows. done reports that the phase moved on.
func (pc *PeerConn) handshakeStep(b []byte) (int, bool, error) {
	up := pc.up
	var out []byte
	var n int
	var err error
	switch pc.phase {
	case phaseSecNego:
		if pc.client {
			out, n, err = up.dialer.Input(nil, b)
		} else {
			out, n, err = up.lst.Input(nil, b)
		}
		pc.writeRaw(out)
		if err != nil || !pc.negotiated() {
			return n, false, err
		}
		pc.startSecurity()
		return n, true, nil
	case phaseSecure:
		if up.noise != nil {
			out, n, err = up.noise.Input(nil, b)
		} else {
			out, n, err = up.plain.Input(nil, b)
		}
		pc.writeRaw(out)
		if err != nil {
			return n, false, err
		}
		if up.noise != nil && up.noise.Done() {
			r := up.noise.Result()
			pc.remote, pc.rkey = r.RemotePeer, r.RemoteKey
			s := *up.noise.Session() // by value, before first use
			pc.sec = &s
			up.noise = nil
			if r.Muxer == ProtoYamux {
				pc.startMux() // agreed inside the handshake
			} else {
				pc.startMuxNegotiation()
			}
			return n, true, nil
		}
		if up.plain != nil && up.plain.Done() {
			r := up.plain.Result()
			pc.remote, pc.rkey = r.RemotePeer, r.RemoteKey
			up.plain = nil
			pc.startMuxNegotiation()
			return n, true, nil
		}
		return n, false, nil
	}
	return 0, true, nil
}

func (pc *PeerConn) negotiated() bool {
	if pc.client {
		return pc.up.dialer.Done()
	}
	return pc.up.lst.Done()
}

func (pc *PeerConn) startSecurity() {
	pc.phaseDone("multistream")
	up := pc.up
	if up.trace != nil {
		up.trace.Multistream = pc.c.eng.cfg.Now()
	}
	plain := pc.client && up.usePlain || !pc.client && up.lst.Protocol() == ProtoPlaintext
	pc.phase = phaseSecure
	if plain {
		up.plain = pc.h.plaintext.NewHandshake(up.expected)
		out, _ := up.plain.Start(nil)
		pc.writeRaw(out)
		return
	}
	if pc.client {
		up.noise = pc.h.noise.NewInitiator(up.expected)
		out, _ := up.noise.Start(nil)
		pc.writeRaw(out)
	} else {
		up.noise = pc.h.noise.NewResponder("")
	}
}

func (pc *PeerConn) startMuxNegotiation() {
	pc.phaseDone("security")
	pc.phase = phaseMuxNego
	if tr := pc.up.trace; tr != nil {
		tr.Security = pc.c.eng.cfg.Now()
	}
	if pc.client {
		pc.up.dialer.Reset(ProtoYamux)
		pc.writeSecure(pc.up.dialer.Start(nil))
	} else {
		pc.up.lst.Reset(pc.h.muxProtos)
		pc.writeSecure(pc.up.lst.Start(nil))
	}
}

func (pc *PeerConn) startMux() {
	if pc.phase == phaseMuxNego {
		pc.phaseDone("muxer")
	} else {
		pc.phaseDone("security") // muxer agreed inside the handshake
	}
	if !pc.client {
		pc.c.eng.metrics.upgradeResult.WithLabelValues("ok").Inc()
	}
	cfg := pc.h.cfg.Mux
	cfg.OnStream = pc.onStream
	now := pc.c.eng.cfg.Now()
	if pc.client {
		pc.sess = mux.NewClient(cfg, now)
	} else {
		pc.sess = mux.NewServer(cfg, now)
	}
	pc.phase = phaseMuxed
	if tr := pc.up.trace; tr != nil {
		tr.Muxer = now
		if tr.Security.IsZero() {
			tr.Security = now // muxer agreed inside the handshake
		}
	}
	ready := pc.up.ready
	pc.up = nil
	if !pc.client {
		pc.h.upgrading.Add(-1)
	}
	pc.c.eng.metrics.peers.Inc()
	if ready != nil {
		ready(pc, nil)
	}
}

// plainInput feeds decrypted bytes to the muxer negotiation or the session.
func (pc *PeerConn) plainInput(pt []byte) error {
	if pc.phase == phaseMuxNego {
		up := pc.up
		buf := pt
		if up.pt != nil {
			up.pt = append(up.pt, pt...)
			buf = up.pt
		}
		var out []byte
		var n int
		var err error
		if pc.client {
			out, n, err = up.dialer.Input(nil, buf)
		} else {
			out, n, err = up.lst.Input(nil, buf)
		}
		pc.writeSecure(out)
		if err != nil {
			return err
		}
		if !pc.negotiated() {
			up.pt = append(up.pt[:0], buf[n:]...)
			return nil
		}
		rest := buf[n:]
		pc.startMux()
		pt = rest
	}
	now := pc.c.eng.cfg.Now()
	for len(pt) > 0 {
		if pc.hdrN > 0 {
			// Complete the header that ended the previous frame.
			have := int(pc.hdrN)
			k := copy(pc.hdr[have:], pt)
			n, err := pc.sess.Input(pc.hdr[:have+k], now)
			if err != nil {
				return err
			}
			if n == 0 {
				pc.hdrN += uint8(k)
				return nil
			}
			pt = pt[n-have:]
			pc.hdrN = 0
			continue
		}
		n, err := pc.sess.Input(pt, now)
		if err != nil {
			return err
		}
		pc.hdrN = uint8(copy(pc.hdr[:], pt[n:]))
		if pc.sess.RemoteGoAway() {
			pc.countGoAway(true, mux.CodeNormal)
		}
		return nil
	}
	return nil
}

// onStream accepts an inbound stream into protocol negotiation.
func (pc *PeerConn) onStream(st *mux.Stream) {
	ps := pc.h.protos.Load()
	if ps.set == nil {
		st.Reset() // no protocol registered
		return
	}
	ng := &negotiator{pc: pc, st: st, deadline: pc.c.eng.cfg.Now().Add(pc.h.cfg.NegotiationTimeout)}
	ng.lst.Reset(ps.set)
	pc.negotiating = append(pc.negotiating, ng)
	if st.Accept(ng) == nil {
		ng.start(st) // data that came with the SYN may have started it already
	}
}

// writeRaw sends handshake bytes before security is established.
func (pc *PeerConn) writeRaw(b []byte) {
	if len(b) > 0 {
		pc.c.WriteMessage(ws.OpBinary, b)
	}
}

// maxSealInput is the most plaintext sealed into one Noise frame: the
// sealed frame and its WebSocket header (at most 10 bytes from the server,
// 14 from a client) fill one 64 KiB pooled buffer.
const maxSealInput = largeBuf - ws.MaxHeaderSize - security.FrameHeader - security.TagSize

// writeSecure sends bytes through the security layer, one WebSocket message
// per Noise frame, sealed straight into the connection's outbound buffer.
func (pc *PeerConn) writeSecure(pt []byte) {
	if len(pt) == 0 {
		return
	}
	if pc.sec == nil {
		pc.c.WriteMessage(ws.OpBinary, pt)
		return
	}
	c := pc.c
	for len(pt) > 0 && c.state == stateOpen {
		k := min(len(pt), maxSealInput)
		dst, slot := c.reserveFrame(true, ws.OpBinary, security.SealedLen(k))
		if _, err := pc.sec.AppendFrame(dst[:0], pt[:k]); err != nil {
			c.protocolFailure(pc.failure(err))
			return
		}
		c.commitFrame(slot)
		c.eng.metrics.frames[1][1].Inc()
		c.eng.metrics.layerBytes[1][1].Add(float64(k))
		if len(c.out) >= c.eng.cfg.MaxOutbound {
			c.flush()
		}
		pt = pt[k:]
	}
}

// flush moves the session's queued frames to the WebSocket.
func (pc *PeerConn) flush() {
	if pc.sess == nil {
		return
	}
	for pc.sess.HasOutput() && pc.c.state == stateOpen {
		buf := getBuf(maxSealInput)
		pt := pc.sess.AppendOutput(buf, maxSealInput)
		pc.writeSecure(pt)
		putBuf(pt)
	}
}

// failure turns a layer's error into the WebSocket close that ends the
// connection, counted under a stable reason.
func (pc *PeerConn) failure(err error) error {
	token := "libp2p"
	var se *security.Error
	var me *mux.Error
	var mse *multistream.Error
	var pe *ws.ProtocolError
	switch {
	case errors.As(err, &pe):
		return pe // already carries its close code (errMemoryBudget)
	case errors.As(err, &se):
		token = "noise_" + se.Reason()
	case errors.As(err, &mse):
		token = mse.Reason()
	case errors.As(err, &me):
		token = "yamux_" + me.Reason
		pc.countGoAway(me.Remote, me.Code)
	}
	return &ws.ProtocolError{Code: ws.ClosePolicyViolation, Token: token}
}

// Closed ends the session and reports to a dialer still waiting.
func (pc *PeerConn) Closed(c *Conn, err error) {
	pc.timers = nil
	if pc.in != nil {
		pc.c.eng.adm.Budget().PutBuf(pc.in)
		pc.in = nil
	}
	if pc.sess != nil {
		pc.sess.Close(mux.CodeNormal)
		pc.c.eng.metrics.peers.Dec()
	}
	if pc.up != nil {
		if !pc.client {
			pc.h.upgrading.Add(-1)
			result := "closed"
			var pe *ws.ProtocolError
			if errors.As(err, &pe) {
				result = pe.Token
			}
			c.eng.metrics.upgradeResult.WithLabelValues(result).Inc()
		}
		if pc.up.ready != nil {
			if err == nil {
				err = errors.New("engine: connection closed during the upgrade")
			}
			pc.up.ready(nil, err)
		}
		pc.up = nil
	}
}

// refused is the stage of a connection turned away before its upgrade.
type refused struct{}

func (refused) Data(*Conn, ws.Opcode, []byte, bool) error { return nil }
func (refused) Closed(*Conn, error)                       {}

// schedule sets the connection's deadline to the earliest of the upgrade
// deadline, the session's keepalive and the streams' negotiation deadlines.
func (pc *PeerConn) schedule() {
	var at time.Time
	if pc.up != nil {
		at = pc.up.deadline
	}
	if pc.sess != nil {
		next, _ := pc.sess.Tick(pc.c.eng.cfg.Now())
		at = earliest(at, next)
	}
	for _, ng := range pc.negotiating {
		at = earliest(at, ng.deadline)
	}
	for _, t := range pc.timers {
		at = earliest(at, t.at)
	}
	if d := pc.h.cfg.IdleTimeout; d > 0 && pc.sess != nil {
		if pc.sess.NumStreams() > 0 {
			pc.idleSince = 0
		} else {
			if pc.idleSince == 0 {
				pc.idleSince = pc.c.eng.cfg.Now().UnixNano()
			}
			at = earliest(at, time.Unix(0, pc.idleSince).Add(d))
		}
	}
	pc.c.SetDeadline(at)
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// Tick runs at the connection's deadline.
func (pc *PeerConn) Tick(c *Conn, now time.Time) {
	if pc.up != nil && !now.Before(pc.up.deadline) {
		c.protocolFailure(&ws.ProtocolError{Code: ws.ClosePolicyViolation, Token: "upgrade_timeout"})
		return
	}
	kept := pc.negotiating[:0]
	for _, ng := range pc.negotiating {
		if ng.st == nil {
			continue
		}
		if !now.Before(ng.deadline) {
			ng.st.Reset()
			c.eng.metrics.failures.WithLabelValues("stream_negotiation_timeout").Inc()
			continue
		}
		kept = append(kept, ng)
	}
	clear(pc.negotiating[len(kept):])
	pc.negotiating = kept
	var due []*streamTimer
	for _, t := range pc.timers {
		if !now.Before(t.at) {
			due = append(due, t)
		}
	}
	for _, t := range due {
		pc.stopTimer(t)
		t.fire()
	}
	if pc.sess != nil {
		if _, err := pc.sess.Tick(now); err != nil {
			pc.flush()
			c.protocolFailure(pc.failure(err))
			return
		}
		if d := pc.h.cfg.IdleTimeout; d > 0 && pc.idleSince != 0 && pc.sess.NumStreams() == 0 &&
			!now.Before(time.Unix(0, pc.idleSince).Add(d)) {
			c.eng.metrics.failures.WithLabelValues("idle_timeout").Inc()
			pc.Close() // GoAway, then WebSocket 1000
			return
		}
	}
	pc.flush()
	pc.schedule()
}

// negotiator runs multistream-select on an inbound stream and hands the
// stream to the chosen protocol's handler.
type negotiator struct {
	pc       *PeerConn
	st       *mux.Stream
	lst      multistream.Listener
	deadline time.Time
	started  bool
}

// start sends our multistream header, eagerly like go-libp2p.
func (ng *negotiator) start(st *mux.Stream) {
	if !ng.started {
		ng.started = true
		st.Write(ng.lst.Start(nil))
	}
}

func (ng *negotiator) OnData(st *mux.Stream, p []byte) int {
	ng.start(st)
	out, n, err := ng.lst.Input(nil, p)
	if len(out) > 0 {
		st.Write(out)
	}
	if err != nil {
		ng.done()
		st.Reset()
		return len(p)
	}
	if !ng.lst.Done() {
		return n
	}
	ng.done()
	sh := ng.pc.h.handler(ng.lst.Protocol())
	if sh == nil { // unregistered since the set was taken
		st.Reset()
		return len(p)
	}
	st.SetHandler(sh(ng.pc, st))
	return n
}

// done takes the stream out of negotiation: an idle connection keeps no
// negotiator.
func (ng *negotiator) done() {
	if ng.st == nil {
		return
	}
	ng.st = nil
	list := ng.pc.negotiating
	for i, x := range list {
		if x == ng {
			list = append(list[:i], list[i+1:]...)
			list[len(list):cap(list)][0] = nil
			break
		}
	}
	if len(list) == 0 {
		list = nil
	}
	ng.pc.negotiating = list
}

func (ng *negotiator) OnWritable(*mux.Stream)     {}
func (ng *negotiator) OnFIN(st *mux.Stream)       { ng.done(); st.Reset() }
func (ng *negotiator) OnReset(*mux.Stream, error) { ng.done() }

// proposer runs the dialer side of multistream-select on an outbound stream.
type proposer struct {
	d    *multistream.Dialer
	next mux.Handler
}

func (p *proposer) OnData(st *mux.Stream, b []byte) int {
	_, n, err := p.d.Input(nil, b)
	if err != nil {
		st.Reset()
		p.next.OnReset(st, err)
		return len(b)
	}
	if p.d.Done() {
		st.SetHandler(p.next)
	}
	return n
}

func (p *proposer) OnWritable(st *mux.Stream)         { p.next.OnWritable(st) }
func (p *proposer) OnFIN(st *mux.Stream)              { p.next.OnReset(st, mux.ErrStreamClosed) }
func (p *proposer) OnReset(st *mux.Stream, err error) { p.next.OnReset(st, err) }
