package engine

import (
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

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

// StreamHandler serves one protocol. It is called once the stream has
// negotiated the protocol and returns the handler that receives the
// stream's events from then on; bytes that arrived behind the protocol id
// are delivered to it at once. Like every callback it runs with the
// connection's lock held and must not block: it writes with st.Write
// (short writes return mux.ErrWouldBlock; OnWritable follows) and consumes
// with the count OnData returns. RunBlocking adapts a blocking handler.
type StreamHandler func(pc *PeerConn, st *mux.Stream) mux.Handler

// HostConfig configures the libp2p layer.
type HostConfig struct {
	// Key is the host's identity; nil generates an Ed25519 key.
	Key crypto.PrivKey
	// InsecurePlaintext also offers /plaintext/2.0.0, which authenticates
	// nothing and encrypts nothing. For measurement only.
	InsecurePlaintext bool
	// Mux tunes yamux sessions; zero values are mux's defaults.
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
	// MaxConcurrentUpgrades bounds connections between WebSocket upgrade
	// and a running yamux session; more are refused with close 1013 (try
	// again later) before any Noise work.
	MaxConcurrentUpgrades int
}

// DefaultMaxConcurrentUpgrades bounds handshakes in progress. A responder
// handshake costs about 250 µs of CPU here, so 2,048 in flight is several
// hundred milliseconds of work queued per core: enough for bursts, little
// for an attacker who opens connections and stalls.
const DefaultMaxConcurrentUpgrades = 2048

// Version is swarmgate's version, announced in identify's agentVersion.
const Version = "0.1.0"

// Host serves libp2p on the engine's WebSocket connections (Handler) and
// dials libp2p peers (DialPeer): security, muxing and per-protocol stream
// handlers.
type Host struct {
	eng       *Engine
	cfg       HostConfig
	key       crypto.PrivKey
	id        peer.ID
	noise     *security.Noise
	plaintext *security.Plaintext
	secProtos *multistream.Protocols
	muxProtos *multistream.Protocols

	mu       sync.Mutex
	handlers map[string]StreamHandler
	// protos is the sorted protocol list and its multistream set, replaced
	// whole on Handle so streams read it without a lock.
	protos atomic.Pointer[protoSet]
	addrs  atomic.Pointer[[]ma.Multiaddr]
	// upgrading counts connections between WebSocket upgrade and yamux.
	upgrading atomic.Int64
	// idMsg is the marshalled identify message, rebuilt on change.
	idMsg atomic.Pointer[identifyMsg]
}

type protoSet struct {
	ids []string
	set *multistream.Protocols
}

// NewHost creates the libp2p layer on e.
func NewHost(e *Engine, cfg HostConfig) (*Host, error) {
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
	h := &Host{eng: e, cfg: cfg, key: cfg.Key, id: id, noise: n, handlers: map[string]StreamHandler{}}
	secIDs := []string{ProtoNoise}
	if cfg.InsecurePlaintext {
		if h.plaintext, err = security.NewPlaintext(cfg.Key.GetPublic()); err != nil {
			return nil, err
		}
		secIDs = append(secIDs, ProtoPlaintext)
		e.log.Warn("insecure /plaintext/2.0.0 is enabled: connections using it are neither authenticated nor encrypted")
	}
	if h.secProtos, err = multistream.NewProtocols(secIDs...); err != nil {
		return nil, err
	}
	if h.muxProtos, err = multistream.NewProtocols(ProtoYamux); err != nil {
		return nil, err
	}
	h.protos.Store(&protoSet{})
	empty := []ma.Multiaddr{}
	h.addrs.Store(&empty)
	return h, nil
}

// ID is the host's peer ID.
func (h *Host) ID() peer.ID { return h.id }

// Key is the host's identity key.
func (h *Host) Key() crypto.PrivKey { return h.key }

// AgentVersion is what identify announces.
func (h *Host) AgentVersion() string { return h.cfg.AgentVersion }

// Handle registers sh for protocol id, replacing an earlier one.
func (h *Host) Handle(id string, sh StreamHandler) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.handlers[id] = sh
	ids := make([]string, 0, len(h.handlers))
	for p := range h.handlers {
		ids = append(ids, p)
	}
	sort.Strings(ids)
	set, err := multistream.NewProtocols(ids...)
	if err != nil {
		delete(h.handlers, id)
		return err
	}
	h.protos.Store(&protoSet{ids: ids, set: set})
	return nil
}

// Protocols lists the registered protocol ids, sorted.
func (h *Host) Protocols() []string { return h.protos.Load().ids }

func (h *Host) handler(id string) StreamHandler {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.handlers[id]
}

// SetListenAddrs records the addresses identify announces (without /p2p).
func (h *Host) SetListenAddrs(addrs []ma.Multiaddr) {
	c := append([]ma.Multiaddr(nil), addrs...)
	h.addrs.Store(&c)
}

// ListenAddrs are the addresses identify announces.
func (h *Host) ListenAddrs() []ma.Multiaddr { return *h.addrs.Load() }

// ErrNotSecured reports a PeerConn method used before security completed.
var ErrNotSecured = errors.New("engine: connection not secured yet")
