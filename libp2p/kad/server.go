// Package kad is the Kademlia server role of /ipfs/kad/1.0.0 (the IPFS
// Amino DHT), as a bootstrap node plays it: it answers FIND_NODE,
// GET_VALUE, GET_PROVIDERS and PING from a routing table holding every
// connected DHT server, stores no records (PUT_VALUE and ADD_PROVIDER are
// refused), and runs no queries of its own.
//
// The package is sans-IO below stream.go: Server decides what a request
// gets (Handle), Table holds the peers, and the stream handler frames
// requests and responses on a mux.Stream with time passed in. host.go is
// the only file that knows the engine's connection type.
//
// Wire compatibility is with go-libp2p-kad-dht v0.42.2 (handlers.go,
// dht_net.go) and js-libp2p kad-dht; see protocol-notes-kad-relay §1.
package kad

import (
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgate/swarmgate/internal/wire"
	"github.com/swarmgate/swarmgate/libp2p/kad/pb"
)

// Protocol is the Kademlia protocol of the public IPFS DHT.
const Protocol = "/ipfs/kad/1.0.0"

// BucketSize is k, the number of closer peers a reply carries: 20, which
// the /ipfs DHT requires (go-libp2p-kad-dht amino/defaults.go).
const BucketSize = 20

const (
	// MaxRequestSize bounds one request. go-libp2p reads up to 4 MiB per
	// message, but everything this server answers carries only a key: a
	// peer ID (≤ 42 bytes), a multihash (go refuses provider keys over 80
	// bytes) or a record key such as /ipns/<id>. 16 KiB admits far more
	// than that and still lets the requests we refuse arrive whole, so
	// they are counted by type rather than by size: a PUT_VALUE with an
	// IPNS record (at most 10 KiB by the IPNS spec) or an ADD_PROVIDER
	// with one peer record (≤ 8 KiB, MaxPeerRecordSize). The limit is
	// checked from the length prefix, before the body is waited for.
	MaxRequestSize = 16 << 10
	// MaxProviderKeySize is go's bound on GET_PROVIDERS and ADD_PROVIDER
	// keys (handleGetProviders: "key size too large" over 80 bytes).
	MaxProviderKeySize = 80
	// DefaultStreamIdleTimeout resets a stream that has received no
	// request for this long, measured from the stream's start or its last
	// request, as go's server does (dhtStreamIdleTimeout, 1 min). go
	// clients keep one stream per peer and count every reset as a failed
	// attempt (after 3 they stop reusing streams), so it must not be
	// shorter than theirs.
	DefaultStreamIdleTimeout = time.Minute
	// DefaultRequestRate and DefaultRequestBurst are the per-connection
	// token bucket. A node bootstrapping from us sends a burst: a
	// self-lookup, a random-key lookup per bucket it refreshes (go
	// refreshes up to 15 buckets at start) and lookup checks, each asking
	// us first while we are the only peer it knows, which 64 requests
	// cover. After that a peer asks us a few times a minute; 10 per second
	// sustained is far above it. A request over the rate is not refused
	// (go clients evict a peer whose RPC failed) but held: the stream
	// stops consuming until a token accrues, and yamux flow control slows
	// the sender.
	DefaultRequestRate  = 10
	DefaultRequestBurst = 64
	// DefaultMaxStreamsPerPeer bounds the kad streams one connection may
	// have open; more are reset. go clients use one stream per peer (a
	// second while a reset one is retried); js opens a stream per request
	// and caps inbound kad streams per connection at 32, as we do.
	DefaultMaxStreamsPerPeer = 32
)

// Config configures the server.
type Config struct {
	// Self is our peer ID; a FIND_NODE for it gets ourselves first.
	Self peer.ID
	// ListenAddrs returns our announced addresses (the host's identify
	// listen addresses); the result is cached while the same slice comes
	// back.
	ListenAddrs func() []ma.Multiaddr
	// AddrFilter applies to what peers announce and to our own addresses.
	AddrFilter AddrFilter
	// MaxAddrsPerPeer: DefaultMaxAddrsPerPeer when ≤ 0.
	MaxAddrsPerPeer int
	// GracePeriod: DefaultGracePeriod when ≤ 0.
	GracePeriod time.Duration
	// StreamIdleTimeout: DefaultStreamIdleTimeout when ≤ 0.
	StreamIdleTimeout time.Duration
	// RequestRate (per second) and RequestBurst: DefaultRequestRate and
	// DefaultRequestBurst when ≤ 0.
	RequestRate  float64
	RequestBurst int
	// MaxStreamsPerPeer: DefaultMaxStreamsPerPeer when ≤ 0.
	MaxStreamsPerPeer int
	// Registerer receives the metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.MaxAddrsPerPeer <= 0 {
		c.MaxAddrsPerPeer = DefaultMaxAddrsPerPeer
	}
	if c.StreamIdleTimeout <= 0 {
		c.StreamIdleTimeout = DefaultStreamIdleTimeout
	}
	if c.RequestRate <= 0 {
		c.RequestRate = DefaultRequestRate
	}
	if c.RequestBurst <= 0 {
		c.RequestBurst = DefaultRequestBurst
	}
	if c.MaxStreamsPerPeer <= 0 {
		c.MaxStreamsPerPeer = DefaultMaxStreamsPerPeer
	}
	if c.ListenAddrs == nil {
		c.ListenAddrs = func() []ma.Multiaddr { return nil }
	}
}

// Server is the Kademlia server role: it answers requests from its table
// and keeps the table in step with what connections report. Safe for
// concurrent use; each Peer belongs to one connection.
type Server struct {
	cfg     Config
	table   *Table
	m       *metrics
	selfKey Key
	self    atomic.Pointer[selfRecord]
}

// selfRecord is our own closerPeers record, built from the listen address
// slice it names.
type selfRecord struct {
	src *ma.Multiaddr // first element of the slice it was built from
	n   int
	rec record // "" when no address passes the filter
}

// NewServer creates a server with an empty table.
func NewServer(cfg Config) *Server {
	cfg.setDefaults()
	t := NewTable(cfg.GracePeriod)
	return &Server{cfg: cfg, table: t, m: newMetrics(cfg.Registerer, t), selfKey: PeerKey(cfg.Self)}
}

// Table is the routing table.
func (s *Server) Table() *Table { return s.table }

// Config is the configuration in use, defaults applied.
func (s *Server) Config() Config { return s.cfg }

// Peer is the server's state for one connection's remote: who it is, its
// request budget, its open streams and whether this connection counts for
// its table entry. It is owned by the connection and used only under its
// lock.
type Peer struct {
	ID  peer.ID
	Key Key
	// dht: the peer's last identify (or push) listed Protocol.
	dht bool
	// counted: Table.Connect counted this connection.
	counted bool
	streams int
	tokens  float64
	last    time.Time // the last token update (monotonic); zero: bucket full
}

// NewPeer creates the state of a connection to id.
func NewPeer(id peer.ID) *Peer { return &Peer{ID: id, Key: PeerKey(id)} }

// InTable reports whether this connection counts for a table entry.
func (p *Peer) InTable() bool { return p.counted }

// admit takes a request token from p's bucket at now, or returns how long
// until one accrues.
func (s *Server) admit(p *Peer, now time.Time) time.Duration {
	rate, burst := s.cfg.RequestRate, float64(s.cfg.RequestBurst)
	if p.last.IsZero() {
		p.tokens = burst
	} else if d := now.Sub(p.last); d > 0 {
		p.tokens = min(burst, p.tokens+d.Seconds()*rate)
	}
	p.last = now
	if p.tokens >= 1 {
		p.tokens--
		return 0
	}
	return time.Duration((1-p.tokens)/rate*1e9) + 1
}

// Handle answers one decoded request from p: it appends the
// length-delimited response to dst, or returns a *RefusedError for which
// the stream must be reset. What each type gets (protocol-notes §1.4–1.5):
//
//   - FIND_NODE: the BucketSize entries nearest to SHA-256(key), without
//     the requester and ourselves, each with its addresses. A key that is
//     our own ID puts ourselves first with our filtered listen addresses
//     (go lookup checks ask a peer for its own ID, and a go node with a
//     full table drops a peer that answers nothing). A key that is the ID
//     of a table entry gets that entry first, even when it is the
//     requester, as go's handleFindPeer prepends the target: for any
//     other entry that already holds, it is at distance zero. Unlike go we
//     prepend only peers in the table (DHT servers), not every peer we
//     hold addresses for: we keep none for clients. No key is echoed.
//   - GET_VALUE, GET_PROVIDERS: the key echoed and closer peers only, as
//     a node without records answers (the rust-libp2p bootstrapper does
//     the same). go requires a key, and a provider key of at most 80
//     bytes.
//   - PING: the request echoed without peer lists.
//   - PUT_VALUE (also a message without a type: proto3 reads it as 0),
//     ADD_PROVIDER and unknown types: refused.
//
// clusterLevelRaw: replies carry max(raw−1, 0)+1, as go's
// NewMessage(…, GetClusterLevel()) writes; PING echoes it unchanged.
// Entries without addresses are never in the table, so none is sent.
func (s *Server) Handle(dst []byte, req *pb.Message, p *Peer) ([]byte, error) {
	switch req.Type {
	case pb.Message_FIND_NODE:
		return s.findNode(dst, req, p)
	case pb.Message_GET_VALUE:
		if len(req.Key) == 0 {
			return dst, ErrEmptyKey
		}
		return s.closer(dst, req, p)
	case pb.Message_GET_PROVIDERS:
		if len(req.Key) == 0 {
			return dst, ErrEmptyKey
		}
		if len(req.Key) > MaxProviderKeySize {
			return dst, ErrKeyTooLong
		}
		return s.closer(dst, req, p)
	case pb.Message_PING:
		// go's handlePing: the request, peer lists stripped (they would
		// re-emit records nobody checked).
		req.CloserPeers, req.ProviderPeers = nil, nil
		return appendResponse(dst, req, &pb.Message{}, nil)
	case pb.Message_PUT_VALUE:
		return dst, ErrPutValue
	case pb.Message_ADD_PROVIDER:
		return dst, ErrAddProvider
	}
	return dst, ErrUnknownType
}

// replyLevel is clusterLevelRaw of a reply to req (go: level+1 with level
// = max(raw−1, 0)).
func replyLevel(req *pb.Message) int32 { return max(req.ClusterLevelRaw-1, 0) + 1 }

func (s *Server) findNode(dst []byte, req *pb.Message, p *Peer) ([]byte, error) {
	if len(req.Key) == 0 {
		return dst, ErrEmptyKey
	}
	target := KeyOf(req.Key)
	var buf [BucketSize + 1]record
	recs := buf[:0]
	switch target {
	case s.selfKey:
		if r := s.selfRecord(); r != "" {
			recs = append(recs, r)
		}
	case p.Key:
		if r := s.table.record(&target); r != "" {
			recs = append(recs, r)
		}
	}
	recs = s.table.closestRecords(&target, BucketSize, recs, []Key{p.Key, s.selfKey})
	head := pb.Message{Type: pb.Message_FIND_NODE}
	tail := pb.Message{ClusterLevelRaw: replyLevel(req)}
	return appendResponse(dst, &head, &tail, recs)
}

// closer answers GET_VALUE and GET_PROVIDERS: key echoed, closer peers.
func (s *Server) closer(dst []byte, req *pb.Message, p *Peer) ([]byte, error) {
	target := KeyOf(req.Key)
	var buf [BucketSize]record
	recs := s.table.closestRecords(&target, BucketSize, buf[:0], []Key{p.Key, s.selfKey})
	head := pb.Message{Type: req.Type, Key: req.Key}
	tail := pb.Message{ClusterLevelRaw: replyLevel(req)}
	return appendResponse(dst, &head, &tail, recs)
}

// selfRecord is our own record with the filtered listen addresses, or ""
// without any.
func (s *Server) selfRecord() record {
	addrs := s.cfg.ListenAddrs()
	var src *ma.Multiaddr
	if len(addrs) > 0 {
		src = unsafe.SliceData(addrs)
	}
	if r := s.self.Load(); r != nil && r.src == src && r.n == len(addrs) {
		return r.rec
	}
	r := &selfRecord{src: src, n: len(addrs)}
	r.rec, _ = encodeRecord([]byte(s.cfg.Self), s.cfg.AddrFilter.SelectAddrs(addrs, s.cfg.MaxAddrsPerPeer), pb.Message_NOT_CONNECTED)
	s.self.Store(r)
	return r.rec
}

// serve decodes and answers one request (msg, without its length prefix,
// borrowed for the call), counting it: the response goes after dst.
// started is when the request was complete; clock is read again once the
// response is built, for the latency histogram.
func (s *Server) serve(dst, msg []byte, p *Peer, started time.Time, clock interface{ Now() time.Time }) ([]byte, *RefusedError) {
	var req pb.Message
	if err := proto.Unmarshal(msg, &req); err != nil {
		s.m.requests.WithLabelValues("unknown", ErrMalformed.Reason).Inc()
		return dst, ErrMalformed
	}
	out, err := s.Handle(dst, &req, p)
	if err != nil {
		re, ok := err.(*RefusedError)
		if !ok { // an encoding failure: ours, but the stream cannot go on
			re = &RefusedError{Reason: "internal", Code: ResetCodeNone}
		}
		s.m.request(req.Type, re, 0)
		return dst, re
	}
	s.m.request(req.Type, nil, clock.Now().Sub(started))
	return out, nil
}

// hasProtocol reports whether protos lists Protocol.
func hasProtocol(protos []string) bool {
	for _, p := range protos {
		if p == Protocol {
			return true
		}
	}
	return false
}

// Identified applies a completed identify of p's connection: protocols and
// listen addresses (binary multiaddrs) as the peer announced them. A peer
// listing Protocol with at least one address passing the filter enters the
// table (this connection counted); one without Protocol leaves it.
func (s *Server) Identified(p *Peer, protocols []string, listenAddrs [][]byte) {
	p.dht = hasProtocol(protocols)
	s.apply(p, listenAddrs, reasonIdentify)
}

// Pushed applies an identify push. Empty fields leave the previous state
// as it was (js-libp2p's reading); go replaces protocols even with an
// empty list, but every real push carries the full list (go and js both
// push their whole state), so an empty one can only be a partial push, and
// evicting a server over it would be wrong. A peer that turns DHT server
// mode on or off pushes a list with or without Protocol and moves in or
// out of the table.
func (s *Server) Pushed(p *Peer, protocols []string, listenAddrs [][]byte) {
	if len(protocols) > 0 {
		p.dht = hasProtocol(protocols)
	}
	if p.dht && len(listenAddrs) == 0 {
		return // addresses unchanged (and none to add a new entry with)
	}
	s.apply(p, listenAddrs, reasonPush)
}

func (s *Server) apply(p *Peer, listenAddrs [][]byte, reason string) {
	if !p.dht {
		if s.table.Remove(p.ID) {
			s.m.change("removed", reasonNotDHT, 1)
		}
		p.counted = false
		return
	}
	addrs := s.cfg.AddrFilter.Select(listenAddrs, s.cfg.MaxAddrsPerPeer)
	if len(addrs) == 0 {
		if s.table.Remove(p.ID) {
			s.m.change("removed", reasonNoAddrs, 1)
		} else {
			s.m.change("refused", reasonNoAddrs, 1)
		}
		p.counted = false
		return
	}
	if p.counted {
		if err := s.table.Update(p.ID, addrs); err == nil {
			return
		}
		p.counted = false // removed meanwhile (another connection's push)
	}
	added, err := s.table.Connect(p.ID, addrs)
	if err != nil {
		return
	}
	p.counted = true
	if added {
		s.m.change("added", reason, 1)
	}
}

// Disconnected records that p's connection ended at now: once the peer
// has no counted connection left, its entry enters the grace period.
func (s *Server) Disconnected(p *Peer, now time.Time) {
	if p.counted {
		s.table.Disconnect(p.ID, now)
		p.counted = false
	}
}

// Sweep removes entries whose grace period has passed (see Table.Sweep)
// and counts them.
func (s *Server) Sweep(now time.Time) int {
	n := s.table.Sweep(now)
	s.m.change("removed", reasonExpired, n)
	return n
}

// AddPeer puts a peer the embedder knows (from its own DHT node, say) in
// the table as a static entry, kept until RemovePeer. Addresses go through
// the filter; none left is an error.
func (s *Server) AddPeer(ai peer.AddrInfo) error {
	if ai.ID == s.cfg.Self {
		return nil
	}
	addrs := s.cfg.AddrFilter.SelectAddrs(ai.Addrs, s.cfg.MaxAddrsPerPeer)
	added, err := s.table.Add(ai.ID, addrs)
	if err != nil {
		s.m.change("refused", reasonNoAddrs, 1)
		return err
	}
	if added {
		s.m.change("added", reasonAPI, 1)
	}
	return nil
}

// RemovePeer takes a peer out of the table at once, connected or not.
func (s *Server) RemovePeer(id peer.ID) bool {
	ok := s.table.Remove(id)
	if ok {
		s.m.change("removed", reasonAPI, 1)
	}
	return ok
}

// parseRequest takes the next length-delimited request from the front of
// b: ErrNeedMore while b holds a prefix of one, a *RefusedError when the
// bytes can no longer become a request within MaxRequestSize.
func parseRequest(b []byte) (msg []byte, n int, err error) {
	msg, n, err = wire.ParseDelimited(b, MaxRequestSize)
	switch err {
	case nil, wire.ErrNeedMore:
		return msg, n, err
	case wire.ErrMessageTooLarge, wire.ErrUvarintTooLong:
		return nil, 0, ErrOversize
	}
	return nil, 0, ErrBadPrefix
}
