package libp2p

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/bufpool"
	"github.com/swarmgate/swarmgate/multistream"
	"github.com/swarmgate/swarmgate/mux"
	"github.com/swarmgate/swarmgate/security"
	"github.com/swarmgate/swarmgate/ws"
)

// PeerConn is one libp2p connection: the Stage above a WebSocket that runs
// the upgrade and then the yamux session. Its methods are for callbacks
// (stream handlers, OnReady), which run with the connection's lock held.
type PeerConn struct {
	c      *engine.Conn
	h      *Host
	up     *upgrade // upgrade state, dropped once muxed
	sec    *security.Session
	sess   *mux.Session
	remote peer.ID
	rkey   crypto.PubKey
	// in holds bytes of the WebSocket stream that a layer could not use
	// yet (pooled, nil when empty): during the upgrade, a partial
	// handshake message; once Noise carries the session, the ciphertext
	// so far of the one Noise frame split across inputs, whose length
	// inLen says (read.go). hdr holds a partial yamux header between Noise
	// frames.
	in           []byte
	hdr          [mux.HeaderLen]byte
	hdrN         uint8
	phase        phase
	client       bool
	goawaySent   bool // counted in swarmgate_yamux_goaway_total
	goawayRecv   bool
	inboundPings uint8 // live inbound ping streams (MaxInboundPings)
	// inLen is the length of the Noise frame whose ciphertext in holds, or
	// inHalf|b when only the first byte b of a frame's length has come
	// (in is nil then); 0 while in holds upgrade bytes or nothing.
	inLen       uint32
	negotiating []*negotiator // inbound streams choosing a protocol
	proxied     *netip.Addr   // the client behind a trusted proxy (nil: the TCP peer)
	timers      []*Timer
	idleSince   int64 // engine Mono since the session has had no stream; 0 while busy
	// nextSame and prevSame link the host's index of connections to the
	// same peer (doubly, so that a connection leaves it in O(1) however
	// many the peer holds).
	nextSame, prevSame *PeerConn
}

// Conn is the WebSocket connection underneath.
func (pc *PeerConn) Conn() *engine.Conn { return pc.c }

// Post runs f with the connection's lock held, as a callback would, then
// sends what f queued on the session's streams; it returns at once, without
// waiting for any connection's lock. It is how a callback of one connection
// acts on another (a relay writing one connection's bytes into another's
// stream): a callback must never call Do or otherwise take a second
// connection's lock. f runs exactly once, in posting order, even when the
// connection has closed meanwhile: its streams are then reset, their writes
// fail and OpenStream returns an error, so f learns it from them (or from
// Conn().Closed()). See engine.Conn.Post for who runs f.
func (pc *PeerConn) Post(f func()) {
	pc.c.Post(func(c *engine.Conn) {
		f()
		if !c.Closed() {
			pc.flush()
			pc.schedule()
		}
	})
}

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
	if pc.c.IsTLS() {
		return m.Encapsulate(ma.StringCast("/tls/ws"))
	}
	return m.Encapsulate(ma.StringCast("/ws"))
}

// NumStreams is the number of live streams (0 before yamux runs).
func (pc *PeerConn) NumStreams() int {
	if pc.sess == nil {
		return 0
	}
	return pc.sess.NumStreams()
}

// RemoteGoAway reports whether the peer sent a yamux GoAway: it opens no
// more streams and accepts none.
func (pc *PeerConn) RemoteGoAway() bool { return pc.sess != nil && pc.sess.RemoteGoAway() }

// Close ends the session with GoAway and closes the WebSocket.
func (pc *PeerConn) Close() {
	if pc.sess != nil {
		pc.countGoAway(false, mux.CodeNormal)
		pc.sess.Close(mux.CodeNormal)
		pc.flush()
	}
	pc.c.Close(ws.CloseNormal, "")
}

// Closed ends the session and reports to a dialer still waiting.
func (pc *PeerConn) Closed(c *engine.Conn, err error) {
	pc.timers = nil
	if pc.in != nil {
		bufpool.Release(pc.c.Memory(), pc.in)
		pc.in = nil
	}
	if pc.sess != nil {
		pc.sess.Close(mux.CodeNormal)
		pc.sess.Free() // every buffer's charge back to the connection's share
		pc.h.metrics.peers.Dec()
		pc.h.untrack(pc)
		for _, n := range pc.h.notifiees() {
			if n.Closed != nil {
				n.Closed(pc)
			}
		}
	}
	if pc.up != nil {
		if !pc.client {
			pc.h.upgrading.Add(-1)
			result := "closed"
			var pe *ws.ProtocolError
			if errors.As(err, &pe) {
				result = pe.Token
			}
			pc.h.metrics.upgradeResult.WithLabelValues(result).Inc()
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
	case errors.Is(err, mux.ErrKeepAliveTimeout):
		// The peer did not answer a ping in time: gone, or stuck
		// sending a frame that never completes.
		token = "yamux_keepalive_timeout"
	}
	return &ws.ProtocolError{Code: ws.ClosePolicyViolation, Token: token}
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
	pc.h.metrics.goaway[dir][min(int(code), 3)].Inc()
}

// InboundAllowance is how much the peer may have sent ahead of us, read by
// netpoll but not yet processed (engine.InboundLimiter). For a connection
// with a memory share it is the share itself plus framing headroom, in
// every phase: a compliant peer may have its windows' credit in flight,
// and the initial windows of streams it is opening (pipelined behind its
// last handshake message, say) that we have not parsed yet; but the share
// is all we let a connection hold, what it sends past the share is
// refused or reset once parsed, and netpoll must not hold more of it
// unparsed either. Without a share (our own dials): what the upgrade
// needs, then the credit our windows give.
func (pc *PeerConn) InboundAllowance() int {
	if lim := pc.c.Memory().Limit(); lim > 0 {
		return int(lim) + frameAllowance
	}
	if pc.sess == nil {
		return upgradeAllowance
	}
	return int(pc.sess.ReceiveCredit()) + frameAllowance
}

// What a peer may have in flight besides stream data: before yamux runs,
// a Noise handshake message (at most 64 KiB), the multistream exchanges
// and the first frames a dialer pipelines behind them; once it runs, the
// framing of the credit (yamux headers, Noise tags and lengths, WebSocket
// headers: well under 1 %) and control frames. 256 KiB covers both with
// room to spare.
const (
	upgradeAllowance = 256 << 10
	frameAllowance   = 256 << 10
)

func (pc *PeerConn) maxOutput() int {
	if n := pc.h.cfg.Mux.MaxOutput; n > 0 {
		return n
	}
	return mux.DefaultMaxOutput
}

// schedule sets the connection's deadline to the earliest of the upgrade
// deadline, the session's keepalive and the streams' negotiation deadlines.
func (pc *PeerConn) schedule() {
	var at time.Time
	if pc.up != nil {
		at = pc.up.deadline
	}
	if pc.sess != nil {
		// NextDeadline, not Tick: schedule runs inside stream callbacks,
		// where the session must not end under the handler's feet. Tick
		// runs from the connection's own deadline (PeerConn.Tick).
		at = earliest(at, pc.sess.NextDeadline())
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
			e := pc.c.Engine()
			if pc.idleSince == 0 {
				pc.idleSince = e.Mono(pc.c.Now())
			}
			at = earliest(at, e.MonoTime(pc.idleSince).Add(d))
		}
	}
	pc.c.SetDeadline(at)
}

// keptIdle reports whether a Notifiee keeps the idle connection open.
func (pc *PeerConn) keptIdle() bool {
	for _, n := range pc.h.notifiees() {
		if n.KeepIdle != nil && n.KeepIdle(pc) {
			return true
		}
	}
	return false
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// Tick runs at the connection's deadline.
func (pc *PeerConn) Tick(c *engine.Conn, now time.Time) {
	if pc.up != nil && !now.Before(pc.up.deadline) {
		c.Fail(&ws.ProtocolError{Code: ws.ClosePolicyViolation, Token: "upgrade_timeout"})
		return
	}
	kept := pc.negotiating[:0]
	for _, ng := range pc.negotiating {
		if ng.st == nil {
			continue
		}
		if !now.Before(ng.deadline) {
			ng.st.Reset()
			pc.h.metrics.streamResets.WithLabelValues(resetNegotiationTimeout).Inc()
			continue
		}
		kept = append(kept, ng)
	}
	clear(pc.negotiating[len(kept):])
	pc.negotiating = kept
	var due []*Timer
	for _, t := range pc.timers {
		if !now.Before(t.at) {
			due = append(due, t)
		}
	}
	for _, t := range due {
		pc.StopTimer(t)
		t.fire()
	}
	if pc.sess != nil {
		if _, err := pc.sess.Tick(now); err != nil {
			pc.flush()
			c.Fail(pc.failure(err))
			return
		}
		if d := pc.h.cfg.IdleTimeout; d > 0 && pc.idleSince != 0 && pc.sess.NumStreams() == 0 &&
			!now.Before(c.Engine().MonoTime(pc.idleSince).Add(d)) {
			if pc.keptIdle() {
				pc.idleSince = c.Engine().Mono(now)
			} else {
				pc.h.metrics.idleCloses.Inc()
				pc.Close() // GoAway, then WebSocket 1000
				return
			}
		}
	}
	pc.flush()
	pc.schedule()
}

// GoingAway sends GoAway(normal) once and lets the session's streams
// finish; the connection may close when none is left. A connection still
// upgrading has nothing to finish (engine.Drainer).
func (pc *PeerConn) GoingAway(*engine.Conn) bool {
	if pc.sess == nil {
		return true
	}
	if pc.sess.Err() == nil {
		pc.countGoAway(false, mux.CodeNormal)
		pc.sess.GoAway() // idempotent
		pc.flush()
	}
	return pc.sess.NumStreams() == 0
}

// The hooks the engine looks for.
var (
	_ engine.Ticker         = (*PeerConn)(nil)
	_ engine.Drainer        = (*PeerConn)(nil)
	_ engine.InboundLimiter = (*PeerConn)(nil)
)
