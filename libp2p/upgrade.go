package libp2p

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/bufpool"
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

// Stage is the engine.StageFunc that serves libp2p on a WebSocket
// connection (Listen uses it as the routes' fallback: libp2p dialers may use
// any path). Past MaxConcurrentUpgrades the connection is refused with close
// 1013 before any Noise work.
func (h *Host) Stage(c *engine.Conn) engine.Stage {
	if h.upgrading.Add(1) > int64(h.cfg.MaxConcurrentUpgrades) {
		h.upgrading.Add(-1)
		h.metrics.upgradeResult.WithLabelValues("upgrade_cap").Inc()
		c.Close(ws.CloseTryAgainLater, "too many handshakes")
		return refused{}
	}
	pc := &PeerConn{c: c, h: h, up: &upgrade{deadline: c.HandshakeDeadline(), phaseAt: c.Now()}}
	if a, ok := c.ClientAddr(); ok {
		pc.proxied = &a
	}
	pc.up.lst.Reset(h.secProtos)
	// Like go-libp2p, send our multistream header at once.
	pc.writeRaw(pc.up.lst.Start(nil))
	pc.schedule()
	return pc
}

// refused is the stage of a connection turned away before its upgrade.
type refused struct{}

func (refused) Data(*engine.Conn, ws.Opcode, []byte, bool) error { return nil }

func (refused) Closed(*engine.Conn, error) {}

// phaseDone times the phase that just ended (server side) and starts the
// next.
func (pc *PeerConn) phaseDone(name string) {
	if pc.client || pc.up == nil {
		return
	}
	now := pc.c.Now()
	pc.h.metrics.upgradePhase.WithLabelValues(name).Observe(now.Sub(pc.up.phaseAt).Seconds())
	pc.up.phaseAt = now
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
			if err := pc.authenticated(r); err != nil {
				return n, false, err
			}
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
			if err := pc.authenticated(r); err != nil {
				return n, false, err
			}
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
		up.trace.Multistream = pc.c.Now()
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
		tr.Security = pc.c.Now()
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
		pc.h.metrics.upgradeResult.WithLabelValues("ok").Inc()
	}
	cfg := pc.h.muxConfig()
	cfg.OnStream = pc.onStream
	cfg.Memory = pc.c.Memory() // stream buffers and output charged to the connection's share
	// A partial Noise frame kept between reads (PeerConn.in: at most one
	// frame's ciphertext, one Medium buffer) is charged below the session;
	// the rest of this room absorbs promised credit rounded up to buffer
	// classes (taken past the share: mux.Config.Memory), so that the
	// connection stays within its share plus its output queues.
	cfg.MemoryHeadroom = bufpool.Large
	// One stream's window may grow to half the share at most: the rest
	// stays for other streams, queued output and a partial frame, so a
	// single fast stream cannot crowd its connection out of its share.
	if lim := pc.c.Memory().Limit(); lim > 0 {
		w := cfg.MaxWindow
		if w == 0 {
			w = mux.DefaultMaxWindow
		}
		cfg.MaxWindow = uint32(max(min(int64(w), lim/2), mux.InitialWindow))
	}
	cfg.OnRefuse = pc.h.metrics.countReset
	cfg.OnStreamEnd = pc.streamEnded
	now := pc.c.Now()
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
	pc.h.metrics.peers.Inc()
	pc.h.track(pc)
	if ready != nil {
		ready(pc, nil)
	}
	for _, n := range pc.h.notifiees() {
		if n.Connected != nil {
			n.Connected(pc)
		}
	}
}

// errPeerConns ends a connection of a peer that already has
// MaxConnsPerPeer: close 1013 (try again later).
var errPeerConns = &ws.ProtocolError{Code: ws.CloseTryAgainLater, Token: "peer_conns"}

// authenticated records the peer security proved and charges the
// connection to that peer in the resource model.
func (pc *PeerConn) authenticated(r security.Result) error {
	pc.remote, pc.rkey = r.RemotePeer, r.RemoteKey
	if err := pc.c.Memory().SetPeer(string(r.RemotePeer)); err != nil {
		return errPeerConns
	}
	return nil
}
