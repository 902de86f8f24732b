package libp2p

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify/pb"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/multistream"
	"github.com/swarmgate/swarmgate/mux"
	"github.com/swarmgate/swarmgate/security"
)

// Protocol ids of the connection upgrade.
const (
	ProtoNoise     = "/noise"
	ProtoPlaintext = "/plaintext/2.0.0"
	ProtoYamux     = "/yamux/1.0.0"
)

// DefaultNegotiationTimeout bounds a stream's multistream-select
// negotiation, as go-libp2p and js-libp2p do (10 s).
const DefaultNegotiationTimeout = 10 * time.Second

// StreamFunc serves one protocol. It is called once a stream has
// negotiated the protocol and returns the mux.Handler that receives the
// stream's events from then on; bytes that arrived behind the protocol id
// are delivered to it at once. Like every callback it runs with the
// connection's lock held and must not block: it writes with st.Write
// (short writes return mux.ErrWouldBlock; OnWritable follows) and consumes
// with the count OnData returns. RunBlocking adapts a blocking function.
type StreamFunc func(pc *PeerConn, st *mux.Stream) mux.Handler

// Config configures a Host. The zero value is usable: a fresh Ed25519
// identity, identify and ping served, every limit at its named default.
type Config struct {
	// Engine configures the engine New creates (limits, TLS, timeouts,
	// metrics registerer, logger). NewOn ignores it.
	Engine engine.Config
	// Key is the host's identity; nil generates an Ed25519 key.
	Key crypto.PrivKey
	// Echo also serves /echo/1.0.0 (every byte written back), for load
	// generation and tests. Off by default: on a public node it lets any
	// peer make the server move bytes for it.
	Echo bool
	// Paths serves raw WebSocket stages on these request paths of every
	// listener, beside libp2p on all others (engine.Echo on "/echo", say).
	Paths map[string]engine.StageFunc
	// InsecurePlaintext also offers /plaintext/2.0.0, which authenticates
	// nothing and encrypts nothing. For measurement only.
	InsecurePlaintext bool
	// Mux tunes yamux sessions; zero values are mux's defaults. Its
	// MaxStreams is ignored: the stream limit is the engine's
	// (admission.Limits.MaxStreams, set in one place with the other
	// limits), read when each session starts, so a reload (SetLimits)
	// reaches every new connection.
	Mux mux.Config
	// AgentVersion is announced by identify; empty: "swarmgate/<Version>".
	AgentVersion string
	// NegotiationTimeout bounds per-stream protocol negotiation.
	NegotiationTimeout time.Duration
	// IdleTimeout closes a libp2p connection (yamux GoAway, then WebSocket
	// 1000) once it has had no stream for this long. Zero keeps idle
	// connections: a bootstrap node wants them, and yamux keepalive finds
	// dead peers.
	IdleTimeout time.Duration
	// MaxConcurrentUpgrades bounds connections between WebSocket handshake
	// and a running yamux session; more are refused with close 1013 (try
	// again later) before any Noise work.
	MaxConcurrentUpgrades int
}

// DefaultMaxConcurrentUpgrades bounds upgrades in progress. A responder
// handshake costs about 250 µs of CPU here, so 2,048 in flight is several
// hundred milliseconds of work queued per core: enough for bursts, little
// for an attacker who opens connections and stalls.
const DefaultMaxConcurrentUpgrades = 2048

// Version is swarmgate's version, announced in identify's agentVersion.
const Version = "0.1.0"

// Host is a libp2p node on an engine: it serves libp2p on the engine's
// WebSocket connections (Listen) and dials libp2p peers (Dial, DialAsync):
// security, muxing and per-protocol stream functions.
type Host struct {
	eng       *engine.Engine
	ownEngine bool
	cfg       Config
	key       crypto.PrivKey
	id        peer.ID
	noise     *security.Noise
	plaintext *security.Plaintext
	secProtos *multistream.Protocols
	muxProtos *multistream.Protocols
	metrics   *metrics

	mu       sync.Mutex
	handlers map[string]StreamFunc
	// protos is the sorted protocol list and its multistream set, replaced
	// whole on Handle so streams read it without a lock.
	protos atomic.Pointer[protoSet]
	// protoIDs interns protocol ids for stream tags (append-only; index 0
	// is unused): read without a lock on every stream, written under mu.
	protoIDs  sync.Map                 // string → uint16
	protoList atomic.Pointer[[]string] // index → id
	addrs     atomic.Pointer[[]ma.Multiaddr]
	// upgrading counts connections between WebSocket handshake and yamux.
	upgrading atomic.Int64
	// idMsg is the marshalled identify message, rebuilt on change.
	idMsg atomic.Pointer[identifyMsg]

	// peers indexes the muxed connections by remote peer: the head of each
	// peer's list, linked through PeerConn.nextSame. Connections take
	// peersMu inside their callbacks (lock order: a connection's lock,
	// then peersMu); nothing takes a connection's lock while holding it.
	peersMu sync.Mutex
	peers   map[peer.ID]*PeerConn

	// notify lists the Notifiees, replaced whole by Notify.
	notify atomic.Pointer[[]Notifiee]
}

// Notifiee receives a host's connection events, for protocol roles that
// keep per-peer state (the Kademlia server's routing table, the relay's
// reservations). Nil members are skipped. Every callback runs with the
// connection's lock held, like a stream callback, and must not block.
type Notifiee struct {
	// Connected: the connection is muxed (either role; after a dialer's
	// ready callback). Streams may be opened from here.
	Connected func(pc *PeerConn)
	// Closed: a connection that was muxed has ended; its streams have been
	// reset.
	Closed func(pc *PeerConn)
	// IdentifyPush: the peer pushed its identify state on
	// ProtoIdentifyPush (the messages of one push stream merged, its
	// public key checked when present). Protocols and listen addresses are
	// whatever the peer sent: empty when it left them out.
	IdentifyPush func(pc *PeerConn, m *pb.Identify)
	// KeepIdle is asked when Config.IdleTimeout would close a connection
	// that has had no stream for that long; true keeps it for another
	// IdleTimeout. A role whose state needs the connection without
	// streams answers for it (the relay: a reservation is reached
	// through its connection).
	KeepIdle func(pc *PeerConn) bool
}

// Notify subscribes n to the host's connection events. A Notifiee with
// IdentifyPush also has the host serve ProtoIdentifyPush.
func (h *Host) Notify(n Notifiee) error {
	h.mu.Lock()
	var list []Notifiee
	if old := h.notify.Load(); old != nil {
		list = append(list, *old...)
	}
	list = append(list, n)
	h.notify.Store(&list)
	h.mu.Unlock()
	if n.IdentifyPush != nil && h.handler(ProtoIdentifyPush) == nil {
		return h.Handle(ProtoIdentifyPush, h.identifyPushStream)
	}
	return nil
}

func (h *Host) notifiees() []Notifiee {
	if l := h.notify.Load(); l != nil {
		return *l
	}
	return nil
}

type protoSet struct {
	ids []string
	set *multistream.Protocols
}

// New starts an engine with cfg.Engine and a host on it. Close stops both.
func New(cfg Config) (*Host, error) {
	e := engine.New(cfg.Engine)
	h, err := NewOn(e, cfg)
	if err != nil {
		e.Close()
		return nil, err
	}
	h.ownEngine = true
	return h, nil
}

// NewOn creates a host on an engine the caller owns (one engine may carry
// raw WebSocket routes beside libp2p). cfg.Engine is ignored.
func NewOn(e *engine.Engine, cfg Config) (*Host, error) {
	if cfg.Key == nil {
		k, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			return nil, err
		}
		cfg.Key = k
	}
	if cfg.AgentVersion == "" {
		cfg.AgentVersion = "swarmgate/" + Version
	}
	if cfg.NegotiationTimeout <= 0 {
		cfg.NegotiationTimeout = DefaultNegotiationTimeout
	}
	if cfg.MaxConcurrentUpgrades <= 0 {
		cfg.MaxConcurrentUpgrades = DefaultMaxConcurrentUpgrades
	}
	id, err := peer.IDFromPrivateKey(cfg.Key)
	if err != nil {
		return nil, err
	}
	n, err := security.NewNoise(cfg.Key, ProtoYamux)
	if err != nil {
		return nil, err
	}
	h := &Host{eng: e, cfg: cfg, key: cfg.Key, id: id, noise: n, handlers: map[string]StreamFunc{}, peers: map[peer.ID]*PeerConn{}}
	secIDs := []string{ProtoNoise}
	if cfg.InsecurePlaintext {
		if h.plaintext, err = security.NewPlaintext(cfg.Key.GetPublic()); err != nil {
			return nil, err
		}
		secIDs = append(secIDs, ProtoPlaintext)
		e.Logger().Warn("insecure /plaintext/2.0.0 is enabled: connections using it are neither authenticated nor encrypted")
	}
	if h.secProtos, err = multistream.NewProtocols(secIDs...); err != nil {
		return nil, err
	}
	if h.muxProtos, err = multistream.NewProtocols(ProtoYamux); err != nil {
		return nil, err
	}
	h.metrics = newMetrics(e.Registerer())
	h.protos.Store(&protoSet{})
	empty := []ma.Multiaddr{}
	h.addrs.Store(&empty)
	defaults := []struct {
		id string
		f  StreamFunc
	}{{ProtoIdentify, IdentifyStream}, {ProtoPing, PingStream}}
	if cfg.Echo {
		defaults = append(defaults, struct {
			id string
			f  StreamFunc
		}{ProtoEcho, EchoStream})
	}
	for _, d := range defaults {
		if err := h.Handle(d.id, d.f); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Engine is the engine the host runs on.
func (h *Host) Engine() *engine.Engine { return h.eng }

// ID is the host's peer ID.
func (h *Host) ID() peer.ID { return h.id }

// Key is the host's identity key.
func (h *Host) Key() crypto.PrivKey { return h.key }

// AgentVersion is what identify announces.
func (h *Host) AgentVersion() string { return h.cfg.AgentVersion }

// Listen serves libp2p on addr (/ws, /tls/ws, /wss, /dns…/tls/sni/H/ws;
// port 0 picks one) on every request path but Config.Paths, and adds the
// bound address to those identify announces (an unspecified address,
// 0.0.0.0 or ::, as the address of each interface, as go-libp2p does;
// SetListenAddrs replaces them with public ones). It returns the bound
// address without /p2p.
func (h *Host) Listen(addr ma.Multiaddr) (ma.Multiaddr, error) {
	l, err := h.eng.Listen(addr, engine.Routes{Paths: h.cfg.Paths, Fallback: h.Stage})
	if err != nil {
		return nil, err
	}
	announce := []ma.Multiaddr{l.Addr()}
	if manet.IsIPUnspecified(l.Addr()) {
		if ifaces, err := manet.InterfaceMultiaddrs(); err == nil {
			if resolved, err := manet.ResolveUnspecifiedAddress(l.Addr(), ifaces); err == nil && len(resolved) > 0 {
				announce = resolved
			}
		}
	}
	h.mu.Lock()
	addrs := append(append([]ma.Multiaddr(nil), *h.addrs.Load()...), announce...)
	h.addrs.Store(&addrs)
	h.mu.Unlock()
	return l.Addr(), nil
}

// Close closes every connection at once and, for a host made by New, its
// engine.
func (h *Host) Close() error {
	if h.ownEngine {
		return h.eng.Close()
	}
	return nil
}

// Drain shuts the host's engine down gracefully (engine.Engine.Drain):
// every libp2p connection gets a yamux GoAway and closes once its streams
// end, or at the deadline.
func (h *Host) Drain(ctx context.Context, deadline time.Duration) error {
	return h.eng.Drain(ctx, deadline)
}

// Handle registers f for protocol id, replacing an earlier one. Identify
// announces the new list to peers that connect afterwards.
func (h *Host) Handle(id string, f StreamFunc) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	old, had := h.handlers[id]
	h.handlers[id] = f
	if err := h.storeProtos(); err != nil {
		if had {
			h.handlers[id] = old
		} else {
			delete(h.handlers, id)
		}
		return fmt.Errorf("libp2p: protocol %q: %w", id, err)
	}
	return nil
}

// storeProtos publishes the handlers' protocol list; h.mu is held.
func (h *Host) storeProtos() error {
	ids := make([]string, 0, len(h.handlers))
	for p := range h.handlers {
		ids = append(ids, p)
	}
	sort.Strings(ids)
	ps := &protoSet{ids: ids}
	if len(ids) > 0 {
		set, err := multistream.NewProtocols(ids...)
		if err != nil {
			return err
		}
		ps.set = set
	}
	h.protos.Store(ps)
	return nil
}

// Unhandle stops serving protocol id (identify or ping included): new
// streams proposing it get na. Identify announces the shorter list to peers
// that connect afterwards.
func (h *Host) Unhandle(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.handlers, id)
	h.storeProtos()
}

// protoIndex is proto's stream-tag index, interned on first use (at most
// tagProtoMask protocols ever; past that, 0: the stream is counted under no
// protocol).
func (h *Host) protoIndex(proto string) uint16 {
	if i, ok := h.protoIDs.Load(proto); ok {
		return i.(uint16)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if i, ok := h.protoIDs.Load(proto); ok {
		return i.(uint16)
	}
	var list []string
	if p := h.protoList.Load(); p != nil {
		list = *p
	} else {
		list = []string{""}
	}
	if len(list) > tagProtoMask {
		return 0
	}
	i := uint16(len(list))
	list = append(list[:len(list):len(list)], proto) // copy on write: readers keep theirs
	h.protoList.Store(&list)
	h.protoIDs.Store(proto, i)
	return i
}

// protoName is the protocol id of a stream-tag index.
func (h *Host) protoName(i uint16) string { return (*h.protoList.Load())[i] }

// Protocols lists the registered protocol ids, sorted.
func (h *Host) Protocols() []string { return h.protos.Load().ids }

func (h *Host) handler(id string) StreamFunc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.handlers[id]
}

// SetListenAddrs replaces the addresses identify announces (without /p2p):
// the public addresses of a node behind NAT or a load balancer, say.
func (h *Host) SetListenAddrs(addrs []ma.Multiaddr) {
	c := append([]ma.Multiaddr(nil), addrs...)
	h.mu.Lock()
	h.addrs.Store(&c)
	h.mu.Unlock()
}

// ListenAddrs are the addresses identify announces.
func (h *Host) ListenAddrs() []ma.Multiaddr { return *h.addrs.Load() }

// ErrNotSecured reports a PeerConn method used before security completed.
var ErrNotSecured = errors.New("libp2p: connection not secured yet")

// muxConfig is the yamux configuration for a session starting now.
func (h *Host) muxConfig() mux.Config {
	cfg := h.cfg.Mux
	if n := h.eng.Limits().MaxStreams; n > 0 {
		cfg.MaxStreams = n
	}
	return cfg
}

// track adds a connection that just finished its upgrade to the peer index.
func (h *Host) track(pc *PeerConn) {
	h.peersMu.Lock()
	pc.prevSame, pc.nextSame = nil, h.peers[pc.remote]
	if pc.nextSame != nil {
		pc.nextSame.prevSame = pc
	}
	h.peers[pc.remote] = pc
	h.peersMu.Unlock()
}

// untrack removes a muxed connection that ended from the peer index.
func (h *Host) untrack(pc *PeerConn) {
	h.peersMu.Lock()
	switch {
	case pc.prevSame != nil:
		pc.prevSame.nextSame = pc.nextSame
	case h.peers[pc.remote] == pc:
		if pc.nextSame == nil {
			delete(h.peers, pc.remote)
		} else {
			h.peers[pc.remote] = pc.nextSame
		}
	}
	if pc.nextSame != nil {
		pc.nextSame.prevSame = pc.prevSame
	}
	pc.nextSame, pc.prevSame = nil, nil
	h.peersMu.Unlock()
}

// ConnsToPeer lists the live libp2p connections (yamux running) to p.
// Their methods are for their own callbacks or PeerConn.Do.
func (h *Host) ConnsToPeer(p peer.ID) []*PeerConn {
	h.peersMu.Lock()
	defer h.peersMu.Unlock()
	var out []*PeerConn
	for pc := h.peers[p]; pc != nil; pc = pc.nextSame {
		out = append(out, pc)
	}
	return out
}

// NumPeers is the number of distinct peers with a live connection.
func (h *Host) NumPeers() int {
	h.peersMu.Lock()
	defer h.peersMu.Unlock()
	return len(h.peers)
}

// conns lists every live libp2p connection (tests, diagnostics).
func (h *Host) conns() []*PeerConn {
	h.peersMu.Lock()
	defer h.peersMu.Unlock()
	var out []*PeerConn
	for _, pc := range h.peers {
		for ; pc != nil; pc = pc.nextSame {
			out = append(out, pc)
		}
	}
	return out
}
