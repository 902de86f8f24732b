package admission

import (
	"errors"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// The resource model: everything a peer can make the server hold is
// charged to the connection's Scope, and through it to the peer (once its
// identity is known), to its source address and to the system. A charge
// fits only if it fits at every level; each level has a named default.
//
//	system   MemoryBudget (1 GiB), MaxSystemStreams
//	  └ source (IPv4 address, IPv6 /56; loopback and Exempt skip it)   SourceMemory
//	      └ peer (peer ID, across its connections)   PeerMemory, MaxConnsPerPeer, MaxPeerStreams, per protocol
//	          └ connection   ConnMemory
//
// It is modelled on what go-libp2p's resource manager promises (memory and
// streams per connection, peer, protocol and system) but costs one plain
// add and three atomic adds per charge, and nothing per idle connection
// beyond the Scope inside it.

// Memory and stream defaults of the resource model.
const (
	// DefaultConnMemory is the most one connection may hold: stream receive
	// buffers and unconsumed data, queued output, partial frames and
	// records, negotiation and request buffers. 4 MiB is one stream
	// auto-tuned to yamux's largest window, or about fourteen streams each
	// filled to the 256 KiB initial window beside the room the session
	// keeps for its queued output: a transfer at full speed fits, a peer
	// that makes every stream hold data does not (the streams past it are
	// reset). Near it the connection's windows stop growing and new
	// streams are refused; a peer whose unparsed input outgrows it is cut
	// (engine.InboundLimiter).
	DefaultConnMemory = 4 << 20
	// DefaultPeerMemory bounds one peer across its connections: two full
	// connections (a peer dialling both /ws and /tls/ws).
	DefaultPeerMemory = 8 << 20
	// DefaultSourceMemory bounds one source address: the per-IP connection
	// limit (8) at half their share each, so a NAT's honest users fit and
	// one host cannot take more than 32 MiB of the budget.
	DefaultSourceMemory = 32 << 20
	// DefaultMaxConnsPerPeer bounds connections of one peer ID, as
	// go-libp2p's resource manager does per peer (8).
	DefaultMaxConnsPerPeer = 8
	// DefaultMaxPeerStreams bounds the streams one peer has open towards
	// us across its connections (go-libp2p: 512 inbound per peer by
	// default; yamux's per-connection limit is MaxStreams).
	DefaultMaxPeerStreams = 512
	// DefaultMaxProtocolStreams bounds one peer's streams of one protocol,
	// unless ProtocolStreams says otherwise: a request/response protocol
	// needs a few at a time (js-libp2p kad-dht opens one per request, go
	// reuses one), and a flood of one protocol must not crowd out the rest.
	DefaultMaxProtocolStreams = 64
	// DefaultMaxSystemStreams bounds inbound streams on the whole server:
	// about 5 per connection at the default MaxConns.
	DefaultMaxSystemStreams = 1 << 20
)

// Memory scopes, the label values of swarmgate_memory_refusals_total.
const (
	ScopeConn   = "conn"
	ScopePeer   = "peer"
	ScopeSource = "source"
	ScopeSystem = "system"
)

var memoryScopes = []string{ScopeConn, ScopePeer, ScopeSource, ScopeSystem}

// Stream refusals of the resource model (swarmgate_stream_resets_total
// reasons).
var (
	ErrPeerStreams     = errors.New("admission: the peer has MaxPeerStreams streams open")
	ErrProtocolStreams = errors.New("admission: the peer has its protocol's stream limit open")
	ErrSystemStreams   = errors.New("admission: MaxSystemStreams streams are open")
	ErrPeerConns       = errors.New("admission: the peer has MaxConnsPerPeer connections open")
)

// StreamRefusal is err's metrics token ("" for other errors).
func StreamRefusal(err error) string {
	switch err {
	case ErrPeerStreams:
		return "peer_streams"
	case ErrProtocolStreams:
		return "protocol_streams"
	case ErrSystemStreams:
		return "system_streams"
	}
	return ""
}

// Scope is an admitted connection's share: its claim on the connection
// limits and everything it holds. Keep it inside the connection (no
// allocation), use it only under the connection's lock, and call Close
// once when the connection ends. The zero Scope (a connection that was not
// admitted: our own dials) charges nothing and refuses nothing.
type Scope struct {
	a      *Admission
	lim    *Limits    // the limits in force at admission
	addr   netip.Addr // the source charged (unmapped); zero: none
	src    *source    // its entry, stable while it has our connection
	peer   *peerEntry // once SetPeer knows the peer ID
	subnet bool       // counted in its /48
	used   int64      // bytes charged to this connection
	// inbound counts the peer's streams this scope holds.
	inbound int32
}

// Admit decides on a connection from addr at now and fills s. On success s
// must be closed when the connection ends; on refusal the error is one
// of the ErrLimit* sentinels, the refusal is counted and s is unchanged.
func (a *Admission) Admit(s *Scope, addr netip.Addr, now time.Time) error {
	lim := a.lim.Load()
	if a.budget.Available() < admitHeadroom {
		return a.refused(ErrLimitMemory)
	}
	if n := a.total.Add(1); lim.MaxConns > 0 && n > int64(lim.MaxConns) {
		a.total.Add(-1)
		return a.refused(ErrLimitTotal)
	}
	*s = Scope{a: a, lim: lim}
	addr = addr.Unmap().WithZone("")
	if exempt(addr, lim) {
		return nil
	}
	src, subnet, err := a.admitSource(addr, lim, now)
	if err != nil {
		a.total.Add(-1)
		*s = Scope{}
		return a.refused(err)
	}
	s.addr, s.src, s.subnet = addr, src, subnet
	return nil
}

func (a *Admission) refused(err *LimitError) error {
	a.metrics.rejected[err.Reason].Inc()
	return err
}

// ErrScopeHasSource reports AdmitSource on a scope that already counts
// against a source, or that this Admission did not admit.
var ErrScopeHasSource = errors.New("admission: connection already charged to a source")

// AdmitSource charges a connection admitted without a source to addr. A
// connection from a trusted proxy is admitted with the zero address (total
// and memory only: the proxy itself must not use up a client's per-IP
// limit), and charged here once its request has been read and
// TrustedProxies found the client's address. What the connection already
// holds moves to the source. On refusal the scope is unchanged (still to be
// closed) and the refusal is counted.
func (a *Admission) AdmitSource(s *Scope, addr netip.Addr, now time.Time) error {
	if s.a != a || s.src != nil {
		return ErrScopeHasSource
	}
	addr = addr.Unmap().WithZone("")
	if exempt(addr, s.lim) {
		return nil
	}
	src, subnet, err := a.admitSource(addr, s.lim, now)
	if err != nil {
		return a.refused(err)
	}
	s.addr, s.src, s.subnet = addr, src, subnet
	src.mem.Add(s.used)
	return nil
}

// Close returns everything the connection held: its charges at every
// level, its streams, its place in the limits. It is idempotent.
func (s *Scope) Close() {
	a := s.a
	if a == nil {
		return
	}
	if s.used != 0 {
		s.release(s.used)
	}
	if s.inbound != 0 {
		a.streams.Add(-int64(s.inbound))
		if p := s.peer; p != nil {
			p.streams.Add(-s.inbound)
		}
		s.inbound = 0
	}
	if p := s.peer; p != nil {
		a.releasePeer(p)
		s.peer = nil
	}
	if s.src != nil {
		a.releaseSource(s.addr, s.src, s.subnet)
		s.src = nil
	}
	a.total.Add(-1)
	s.a = nil
}

// Reserve takes n bytes if they fit in the connection's, the peer's, the
// source's and the system's share, and reports whether they did. A refusal
// is counted by the scope that refused.
func (s *Scope) Reserve(n int) bool {
	a := s.a
	if a == nil {
		return true
	}
	n64 := int64(n)
	if s.used+n64 > s.lim.ConnMemory {
		a.metrics.memRefused[0].Inc()
		return false
	}
	if p := s.peer; p != nil && p.mem.Add(n64) > s.lim.PeerMemory {
		p.mem.Add(-n64)
		a.metrics.memRefused[1].Inc()
		return false
	}
	if src := s.src; src != nil && src.mem.Add(n64) > s.lim.SourceMemory {
		src.mem.Add(-n64)
		if p := s.peer; p != nil {
			p.mem.Add(-n64)
		}
		a.metrics.memRefused[2].Inc()
		return false
	}
	if !a.budget.Reserve(n) {
		if src := s.src; src != nil {
			src.mem.Add(-n64)
		}
		if p := s.peer; p != nil {
			p.mem.Add(-n64)
		}
		a.metrics.memRefused[3].Inc()
		return false
	}
	s.used += n64
	return true
}

// ReserveInFlight takes n bytes if the system budget has them, charging
// the connection, the peer and the source whether or not they fit, and
// reports whether it did (a refusal is counted as the system's). It is for
// a buffer a compliant peer cannot avoid making us hold and the protocol
// bounds per connection: the one partial transport frame (a Noise frame,
// at most 64 KiB) waiting for its end. The connection's own share may be
// full of window credit it was promised (yamux's windows are checked
// against every level, and promised bytes are taken even past the share:
// mux.Config.Memory), and refusing the frame there would close a peer
// that did nothing wrong; the system budget still bounds what many
// connections hold at once.
func (s *Scope) ReserveInFlight(n int) bool {
	a := s.a
	if a == nil {
		return true
	}
	if !a.budget.Reserve(n) {
		a.metrics.memRefused[3].Inc()
		return false
	}
	s.chargeShares(int64(n))
	return true
}

// Charge takes n bytes whether or not they fit: for buffers the
// connection cannot do without, each bounded by a limit of its own (a
// pass's output, yamux's output queues).
func (s *Scope) Charge(n int) {
	if s.a == nil {
		return
	}
	s.chargeShares(int64(n))
	s.a.budget.Charge(n)
}

// chargeShares adds n to the connection's, the peer's and the source's
// shares, unchecked (the system budget is the caller's).
func (s *Scope) chargeShares(n int64) {
	s.used += n
	if p := s.peer; p != nil {
		p.mem.Add(n)
	}
	if src := s.src; src != nil {
		src.mem.Add(n)
	}
}

// Release returns n bytes taken with Reserve or Charge.
func (s *Scope) Release(n int) {
	if s.a == nil {
		return
	}
	s.release(int64(n))
}

func (s *Scope) release(n int64) {
	s.used -= n
	if p := s.peer; p != nil {
		p.mem.Add(-n)
	}
	if src := s.src; src != nil {
		src.mem.Add(-n)
	}
	s.a.budget.Release(int(n))
}

// Available is what Reserve could take now: the least room left at any
// level (math.MaxInt for a connection that was not admitted).
func (s *Scope) Available() int {
	if s.a == nil {
		return math.MaxInt
	}
	room := s.lim.ConnMemory - s.used
	if p := s.peer; p != nil {
		room = min(room, s.lim.PeerMemory-p.mem.Load())
	}
	if src := s.src; src != nil {
		room = min(room, s.lim.SourceMemory-src.mem.Load())
	}
	room = min(room, s.a.budget.Available())
	return int(max(room, 0))
}

// Used is what the connection holds now.
func (s *Scope) Used() int64 { return s.used }

// Limit is the connection's own share (ConnMemory at admission; 0 for a
// connection that was not admitted).
func (s *Scope) Limit() int64 {
	if s.lim == nil {
		return 0
	}
	return s.lim.ConnMemory
}

// SetPeer charges the connection, and what it holds, to the peer id once
// security has authenticated it. Past MaxConnsPerPeer it refuses
// (ErrPeerConns) and the connection should be closed.
func (s *Scope) SetPeer(id string) error {
	a := s.a
	if a == nil || s.peer != nil {
		return nil
	}
	p, err := a.acquirePeer(id, s.lim)
	if err != nil {
		return err
	}
	s.peer = p
	p.mem.Add(s.used)
	p.streams.Add(s.inbound)
	return nil
}

// OpenStream counts a stream the peer opened against the peer's and the
// system's stream limits.
func (s *Scope) OpenStream() error {
	a := s.a
	if a == nil {
		return nil
	}
	if lim := s.lim.MaxSystemStreams; lim > 0 && a.streams.Add(1) > int64(lim) {
		a.streams.Add(-1)
		return ErrSystemStreams
	} else if lim <= 0 {
		a.streams.Add(1)
	}
	if p := s.peer; p != nil {
		if lim := s.lim.MaxPeerStreams; p.streams.Add(1) > int32(lim) && lim > 0 {
			p.streams.Add(-1)
			a.streams.Add(-1)
			return ErrPeerStreams
		}
	}
	s.inbound++
	return nil
}

// CloseStream undoes OpenStream.
func (s *Scope) CloseStream() {
	if s.a == nil || s.inbound == 0 {
		return
	}
	s.inbound--
	s.a.streams.Add(-1)
	if p := s.peer; p != nil {
		p.streams.Add(-1)
	}
}

// OpenProtocolStream counts one of the peer's streams of protocol proto
// against its limit (Limits.ProtocolStreams, else MaxProtocolStreams). A
// connection without a peer yet is not counted.
func (s *Scope) OpenProtocolStream(proto string) error {
	p := s.peer
	if s.a == nil || p == nil {
		return nil
	}
	lim := s.lim.MaxProtocolStreams
	if n, ok := s.lim.ProtocolStreams[proto]; ok {
		lim = n
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if lim > 0 && int(p.protos[proto]) >= lim {
		return ErrProtocolStreams
	}
	if p.protos == nil {
		p.protos = map[string]int32{}
	}
	p.protos[proto]++
	return nil
}

// CloseProtocolStream undoes OpenProtocolStream.
func (s *Scope) CloseProtocolStream(proto string) {
	p := s.peer
	if s.a == nil || p == nil {
		return
	}
	p.mu.Lock()
	if n := p.protos[proto] - 1; n > 0 {
		p.protos[proto] = n
	} else {
		delete(p.protos, proto)
	}
	p.mu.Unlock()
}

// peerEntry is what one peer ID holds across its connections.
type peerEntry struct {
	id      string
	conns   int32 // under the peer shard's lock
	mem     atomic.Int64
	streams atomic.Int32
	mu      sync.Mutex
	protos  map[string]int32 // streams by protocol
}

type peerShard struct {
	mu sync.Mutex
	m  map[string]*peerEntry
	_  [40]byte // keep neighbouring shards' locks off one cache line
}

func (a *Admission) peerShard(id string) *peerShard {
	h := a.seed
	for i := 0; i < len(id); i++ {
		h = (h ^ uint64(id[i])) * 0x100000001b3
	}
	return &a.peers[h>>(64-6)]
}

func (a *Admission) acquirePeer(id string, lim *Limits) (*peerEntry, error) {
	sh := a.peerShard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	p := sh.m[id]
	if p == nil {
		p = &peerEntry{id: id}
		if sh.m == nil {
			sh.m = map[string]*peerEntry{}
		}
		sh.m[id] = p
	}
	if lim.MaxConnsPerPeer > 0 && int(p.conns) >= lim.MaxConnsPerPeer {
		if p.conns == 0 {
			delete(sh.m, id)
		}
		return nil, ErrPeerConns
	}
	p.conns++
	return p, nil
}

func (a *Admission) releasePeer(p *peerEntry) {
	sh := a.peerShard(p.id)
	sh.mu.Lock()
	if p.conns--; p.conns <= 0 && sh.m[p.id] == p {
		delete(sh.m, p.id)
	}
	sh.mu.Unlock()
}

// Peers is the number of peer IDs with a live connection.
func (a *Admission) Peers() int {
	n := 0
	for i := range a.peers {
		sh := &a.peers[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// Streams is the number of inbound streams counted now.
func (a *Admission) Streams() int64 { return a.streams.Load() }
