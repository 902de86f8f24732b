// Package admission is swarmgate's policy for what connecting peers may open
// and hold: connection limits per source address and in total, new
// connections per second per source, the memory budget that buffers a peer
// can pin are charged to, and which proxies' client-address headers are
// believed. It is pure policy over addresses, counts and bytes: it parses
// no wire format and imports neither the WebSocket codec nor the muxer, so
// the engine and the libp2p layer both consult it without a cycle.
package admission

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Connection admission: what one source may hold or open, checked when TCP
// is accepted and before any byte is parsed, as go-libp2p's resource
// manager does per IP and subnet (p2p/host/resource-manager conn_limiter.go,
// conn_rate_limiter.go) and nginx's limit_conn / limit_req do per key.
//
// A source is an IPv4 address or an IPv6 /56: one host or one customer
// site, which owns at least a /64 and can rotate addresses inside it at
// will. IPv6 /48s, one provider allocation, get a looser limit of their own.
const (
	// DefaultMaxConns bounds open connections of both roles. The engine's
	// target is hundreds of thousands on one machine (an idle connection
	// costs 3.9 KB, a libp2p session more); 256 Ki keeps the process under
	// systemd's default hard file limit of 512 Ki with room for everything
	// else.
	DefaultMaxConns = 256 << 10
	// DefaultMaxConnsPerIP bounds connections per IPv4 address and per IPv6
	// /56: go-libp2p v0.51's defaultMaxConcurrentConns (8), which matches
	// how many dials one libp2p peer races to one host.
	DefaultMaxConnsPerIP = 8
	// DefaultMaxConnsPerSubnet bounds connections per IPv6 /48: go-libp2p's
	// 8 × 8 for the /48 of defaultIP6Limits.
	DefaultMaxConnsPerSubnet = 64
	// DefaultConnRatePerIP is the sustained rate of new connections per
	// source, per second: go-libp2p's connection rate limiter (0.2/s per
	// IPv4 /32 and IPv6 /56), one new connection every 5 s once the burst
	// is spent.
	DefaultConnRatePerIP = 0.2
	// DefaultConnBurstPerIP is how many new connections a source may open
	// at once before the rate applies: go-libp2p's 2 × 8.
	DefaultConnBurstPerIP = 16
	// DefaultMemoryBudget bounds the bytes of engine buffers (outbound
	// passes, partial frames a peer leaves pending). A peer that sends half
	// a 64 KiB Noise frame and stalls pins one 64 KiB buffer; 1 GiB is
	// 16 Ki such connections before new ones are refused and buffer
	// growth fails.
	DefaultMemoryBudget = 1 << 30
	// DefaultMaxTrackedSources bounds the per-source table: every source
	// with a live connection has an entry (at most MaxConns of them) and
	// sources whose rate bucket is still refilling keep theirs until it is
	// full (80 s with the defaults). Past the bound, refilling entries are
	// forgotten first; a source that cannot get an entry is refused
	// ("sources"). About 200 bytes each: 100 MiB at the default.
	DefaultMaxTrackedSources = 2 * DefaultMaxConns
	// DefaultMaxStreams bounds yamux streams per connection and direction:
	// go-yamux MaxIncomingStreams and js-yamux maxInboundStreams (1,000).
	DefaultMaxStreams = 1000
	// admitHeadroom is the budget a new connection must find free: its
	// first pass may take one 64 KiB pooled buffer (bufpool.Medium).
	admitHeadroom = 64 << 10
	// sweepInterval is how often a shard drops idle entries (no
	// connection, full bucket), amortized into Admit: no goroutine.
	sweepInterval = 10 * time.Second
	// admissionShards spreads the table over independent locks; a source
	// and its /48 live in one shard, so a check and its increment are one
	// critical section.
	admissionShards = 64
)

// Refusal reasons, the label values of swarmgate_limit_rejections_total.
const (
	ReasonTotal     = "total"      // MaxConns open
	ReasonPerIP     = "per_ip"     // MaxConnsPerIP from this IPv4 address or IPv6 /56
	ReasonPerSubnet = "per_subnet" // MaxConnsPerSubnet from this IPv6 /48
	ReasonRate      = "rate"       // ConnRatePerIP/ConnBurstPerIP exceeded
	ReasonMemory    = "memory"     // MemoryBudget has no room for a new connection
	ReasonSources   = "sources"    // per-source table full of live sources
)

var limitReasons = []string{ReasonTotal, ReasonPerIP, ReasonPerSubnet, ReasonRate, ReasonMemory, ReasonSources}

// Reasons lists every refusal reason token, for metrics created up front.
func Reasons() []string { return append([]string(nil), limitReasons...) }

// LimitError is a refusal by Admission. Its Reason is a stable token (the
// Reason* constants); the six possible values are the package's sentinel
// errors below, so a refusal allocates nothing and errors.Is works.
type LimitError struct {
	Reason string
}

func newLimitError(reason string) *LimitError { return &LimitError{Reason: reason} }

func (e *LimitError) Error() string { return "admission: connection limit: " + e.Reason }

// Admission refusals, one per reason.
var (
	ErrLimitTotal     = newLimitError(ReasonTotal)
	ErrLimitPerIP     = newLimitError(ReasonPerIP)
	ErrLimitPerSubnet = newLimitError(ReasonPerSubnet)
	ErrLimitRate      = newLimitError(ReasonRate)
	ErrLimitMemory    = newLimitError(ReasonMemory)
	ErrLimitSources   = newLimitError(ReasonSources)
)

// LimitReason is err's reason token, or "" when err is not a refusal.
func LimitReason(err error) string {
	var le *LimitError
	if errors.As(err, &le) {
		return le.Reason
	}
	return ""
}

// Limits configures admission. Zero values select the named defaults; a
// negative value disables that limit (for measurement, or behind a proxy
// that enforces it).
type Limits struct {
	MaxConns          int     // DefaultMaxConns
	MaxConnsPerIP     int     // DefaultMaxConnsPerIP: per IPv4 address, per IPv6 /56
	MaxConnsPerSubnet int     // DefaultMaxConnsPerSubnet: per IPv6 /48
	ConnRatePerIP     float64 // DefaultConnRatePerIP: new connections per second per source
	ConnBurstPerIP    int     // DefaultConnBurstPerIP
	// MaxStreams bounds yamux streams per connection and direction
	// (DefaultMaxStreams). The libp2p layer applies it to every session it
	// starts, so a reload reaches new connections; yamux refuses extra
	// SYNs with RST.
	MaxStreams   int
	MemoryBudget int64 // DefaultMemoryBudget bytes, for the whole server
	// The resource model's shares (scope.go); negative: unlimited.
	ConnMemory   int64 // DefaultConnMemory bytes per connection
	PeerMemory   int64 // DefaultPeerMemory bytes per peer ID
	SourceMemory int64 // DefaultSourceMemory bytes per source address
	// Connections and streams per peer, protocol and system; negative:
	// unlimited.
	MaxConnsPerPeer    int // DefaultMaxConnsPerPeer
	MaxPeerStreams     int // DefaultMaxPeerStreams: a peer's open inbound streams
	MaxProtocolStreams int // DefaultMaxProtocolStreams: a peer's streams of one protocol
	MaxSystemStreams   int // DefaultMaxSystemStreams: inbound streams on the server
	// ProtocolStreams overrides MaxProtocolStreams per protocol id (a
	// role registers its own: Kademlia, circuit relay).
	ProtocolStreams map[string]int
	// MaxTrackedSources bounds the per-source table (DefaultMaxTrackedSources).
	MaxTrackedSources int
	// LimitLoopback applies the per-source limits to loopback addresses
	// too; by default loopback (load generators, local proxies, health
	// checks) is held only to MaxConns and the memory budget, as go-libp2p
	// exempts 127.0.0.0/8 and ::1.
	LimitLoopback bool
	// Exempt lists more prefixes free of per-source limits (monitoring, a
	// known NAT gateway).
	Exempt []netip.Prefix
}

// withDefaults fills zero values; negative ones stay negative (disabled).
func (l Limits) withDefaults() Limits {
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defInt(&l.MaxConns, DefaultMaxConns)
	defInt(&l.MaxConnsPerIP, DefaultMaxConnsPerIP)
	defInt(&l.MaxConnsPerSubnet, DefaultMaxConnsPerSubnet)
	defInt(&l.ConnBurstPerIP, DefaultConnBurstPerIP)
	defInt(&l.MaxStreams, DefaultMaxStreams)
	defInt(&l.MaxTrackedSources, DefaultMaxTrackedSources)
	if l.ConnRatePerIP == 0 {
		l.ConnRatePerIP = DefaultConnRatePerIP
	}
	if l.MemoryBudget == 0 {
		l.MemoryBudget = DefaultMemoryBudget
	}
	defMem := func(v *int64, d int64) {
		switch {
		case *v == 0:
			*v = d
		case *v < 0:
			*v = math.MaxInt64 / 4 // unlimited, with room to add to
		}
	}
	defMem(&l.ConnMemory, DefaultConnMemory)
	defMem(&l.PeerMemory, DefaultPeerMemory)
	defMem(&l.SourceMemory, DefaultSourceMemory)
	defInt(&l.MaxConnsPerPeer, DefaultMaxConnsPerPeer)
	defInt(&l.MaxPeerStreams, DefaultMaxPeerStreams)
	defInt(&l.MaxProtocolStreams, DefaultMaxProtocolStreams)
	defInt(&l.MaxSystemStreams, DefaultMaxSystemStreams)
	if l.MaxTrackedSources < admissionShards {
		l.MaxTrackedSources = admissionShards
	}
	return l
}

// Admission decides whether a new connection may be accepted and counts
// what admitted connections hold until their Scope is closed. It is safe
// for concurrent use: the total is an atomic counter, per-source state
// lives in sharded maps under short mutex sections.
type Admission struct {
	lim     atomic.Pointer[Limits] // replaced whole by SetLimits
	total   atomic.Int64
	budget  *MemoryBudget
	seed    uint64
	shards  [admissionShards]admissionShard
	peers   [admissionShards]peerShard
	streams atomic.Int64 // inbound streams counted by scopes
	metrics *limitMetrics
}

type admissionShard struct {
	mu        sync.Mutex
	src       map[srcKey]*source
	subnets   map[srcKey]int32 // live connections per IPv6 /48
	live      int              // entries of src with a live connection
	lastSweep int64            // unix nanoseconds
	_         [32]byte         // keep neighbouring shards' locks off one cache line
}

// srcKey is a source (IPv4 address, IPv6 /56) or an IPv6 /48 as 16 bytes.
// IPv4 keys keep the ::ffff:0:0/96 mapping, so lo is never zero for them,
// and IPv6 prefixes of 64 bits or less have lo zero: the two never collide.
type srcKey struct{ hi, lo uint64 }

// source is what one source holds: live connections, the memory they are
// charged, and its rate bucket.
type source struct {
	conns  int32
	mem    atomic.Int64  // bytes charged by its connections' scopes
	bucket *rate.Limiter // nil when the rate limit is off
}

// NewAdmission applies lim's defaults and registers the limit metrics on
// reg when it is not nil.
func NewAdmission(lim Limits, reg prometheus.Registerer) *Admission {
	a := &Admission{seed: rand.Uint64() | 1}
	l := lim.withDefaults()
	a.lim.Store(&l)
	a.budget = NewMemoryBudget(l.MemoryBudget)
	for i := range a.shards {
		a.shards[i].src = make(map[srcKey]*source)
		a.shards[i].subnets = make(map[srcKey]int32)
	}
	a.metrics = newLimitMetrics(reg, a)
	return a
}

// Limits returns the limits in force, defaults applied.
func (a *Admission) Limits() Limits { return *a.lim.Load() }

// SetLimits replaces the limits in force (SIGHUP in loadgen serve). What
// sources hold now is kept: a lower per-source limit refuses their next
// connection, it closes none; a new rate applies to sources first seen
// after the change; the memory budget's size changes at once.
func (a *Admission) SetLimits(lim Limits) {
	l := lim.withDefaults()
	a.lim.Store(&l)
	a.budget.setLimit(l.MemoryBudget)
}

// Budget is the memory budget buffers reserve against.
func (a *Admission) Budget() *MemoryBudget { return a.budget }

// Open is the number of admitted connections not yet released.
func (a *Admission) Open() int64 { return a.total.Load() }

// exempt reports whether addr is free of per-source limits under lim.
func exempt(addr netip.Addr, lim *Limits) bool {
	if !addr.IsValid() {
		return true
	}
	if addr.IsLoopback() && !lim.LimitLoopback {
		return true
	}
	for _, p := range lim.Exempt {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// keys returns addr's source key, its /48 key (the address itself for
// IPv4, which also picks the shard) and whether it is IPv6.
func (a *Admission) keys(addr netip.Addr) (key, sub srcKey, v6 bool) {
	b := addr.As16()
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	if addr.Is4() {
		k := srcKey{hi, lo}
		return k, k, false
	}
	return srcKey{hi: hi &^ (1<<8 - 1)}, srcKey{hi: hi &^ (1<<16 - 1)}, true
}

func (a *Admission) shard(sub srcKey) *admissionShard {
	h := (sub.hi ^ sub.lo ^ a.seed) * 0x9e3779b97f4a7c15
	return &a.shards[h>>(64-6)]
}

// admitSource checks and takes the per-source and per-/48 counts and one
// rate token, all or nothing, under the shard's lock. It returns the
// source's entry, which stays in the table while it has a connection, and
// whether the connection was counted in its /48 (the release must undo
// exactly that, whatever the limits are by then).
func (a *Admission) admitSource(addr netip.Addr, lim *Limits, now time.Time) (*source, bool, *LimitError) {
	key, sub, v6 := a.keys(addr)
	sh := a.shard(sub)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	nowNano := now.UnixNano()
	if nowNano-sh.lastSweep >= int64(sweepInterval) {
		sh.sweep(now)
		sh.lastSweep = nowNano
	}
	s := sh.src[key]
	if s == nil {
		if len(sh.src) >= lim.MaxTrackedSources/admissionShards && !sh.evictOne() {
			return nil, false, ErrLimitSources
		}
		s = &source{}
		if lim.ConnRatePerIP > 0 {
			s.bucket = rate.NewLimiter(rate.Limit(lim.ConnRatePerIP), max(lim.ConnBurstPerIP, 1))
		}
		sh.src[key] = s
	}
	if lim.MaxConnsPerIP > 0 && int(s.conns) >= lim.MaxConnsPerIP {
		return nil, false, ErrLimitPerIP
	}
	subnet := v6 && lim.MaxConnsPerSubnet > 0
	if subnet && int(sh.subnets[sub]) >= lim.MaxConnsPerSubnet {
		return nil, false, ErrLimitPerSubnet
	}
	if s.bucket != nil && !s.bucket.AllowN(now, 1) {
		return nil, false, ErrLimitRate
	}
	if s.conns++; s.conns == 1 {
		sh.live++
	}
	if subnet {
		sh.subnets[sub]++
	}
	return s, subnet, nil
}

// releaseSource undoes admitSource.
func (a *Admission) releaseSource(addr netip.Addr, s *source, subnet bool) {
	key, sub, _ := a.keys(addr)
	sh := a.shard(sub)
	sh.mu.Lock()
	if s.conns > 0 {
		if s.conns--; s.conns == 0 {
			sh.live--
			if s.bucket == nil && sh.src[key] == s {
				delete(sh.src, key) // nothing left to remember
			}
		}
	}
	if subnet {
		if n := sh.subnets[sub] - 1; n > 0 {
			sh.subnets[sub] = n
		} else {
			delete(sh.subnets, sub)
		}
	}
	sh.mu.Unlock()
}

// idle reports whether s remembers nothing a fresh entry would not: no
// live connection and a full bucket.
func (s *source) idle(now time.Time) bool {
	return s.conns == 0 && (s.bucket == nil || s.bucket.TokensAt(now) >= float64(s.bucket.Burst()))
}

// sweep drops idle entries.
func (sh *admissionShard) sweep(now time.Time) {
	for k, s := range sh.src {
		if s.idle(now) {
			delete(sh.src, k)
		}
	}
}

// evictOne makes room in a full shard by forgetting one entry without a
// live connection: its source gets a fresh burst early, the least harm
// available. Map iteration starts at a random entry, so this is O(1) while
// such entries are common. It reports false when every entry has a live
// connection (then nothing is scanned).
func (sh *admissionShard) evictOne() bool {
	if sh.live >= len(sh.src) {
		return false
	}
	for k, s := range sh.src {
		if s.conns == 0 {
			delete(sh.src, k)
			return true
		}
	}
	return false
}

// Sources is the number of per-source entries held.
func (a *Admission) Sources() int {
	n := 0
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.Lock()
		n += len(sh.src)
		sh.mu.Unlock()
	}
	return n
}

// MemoryBudget is a global byte budget for the buffers a peer can make a
// connection hold between passes (the libp2p layer's pending input: a
// partial Noise frame or handshake message, up to 64 KiB each). Buffers that
// live only inside one pass (outbound bytes, sealing) are bounded by the
// number of passes running at once and need no budget. Refusable buffers
// Reserve (bufpool.TryGet, TryGrow) and fail when the budget is spent, which
// ends that connection with 1013; what the engine cannot do without is
// Charged, which always succeeds, so Used may pass Limit. Admission refuses
// new connections once less than one 64 KiB buffer is free. Every Reserve
// or Charge is matched by one Release of the same n.
type MemoryBudget struct {
	limit atomic.Int64
	used  atomic.Int64
	fails atomic.Int64
}

// NewMemoryBudget returns a budget of limit bytes; limit < 0 is unlimited
// (accounting only).
func NewMemoryBudget(limit int64) *MemoryBudget {
	b := &MemoryBudget{}
	b.limit.Store(limit)
	return b
}

// setLimit changes the budget's size; what is in use stays charged.
func (b *MemoryBudget) setLimit(limit int64) { b.limit.Store(limit) }

// Reserve takes n bytes if they fit, and reports whether they did.
func (b *MemoryBudget) Reserve(n int) bool {
	if b.limit.Load() < 0 {
		b.used.Add(int64(n))
		return true
	}
	for {
		u := b.used.Load()
		if u+int64(n) > b.limit.Load() {
			b.fails.Add(1)
			return false
		}
		if b.used.CompareAndSwap(u, u+int64(n)) {
			return true
		}
	}
}

// Charge takes n bytes whether or not they fit.
func (b *MemoryBudget) Charge(n int) { b.used.Add(int64(n)) }

// Release returns n bytes taken with Reserve or Charge.
func (b *MemoryBudget) Release(n int) { b.used.Add(-int64(n)) }

// Used is the bytes currently reserved or charged.
func (b *MemoryBudget) Used() int64 { return b.used.Load() }

// Limit is the budget in bytes (negative: unlimited).
func (b *MemoryBudget) Limit() int64 { return b.limit.Load() }

// Available is what Reserve could still take (MaxInt64 when unlimited).
func (b *MemoryBudget) Available() int64 {
	if b.limit.Load() < 0 {
		return 1<<63 - 1
	}
	return b.limit.Load() - b.used.Load()
}

// Failures counts refused reservations.
func (b *MemoryBudget) Failures() int64 { return b.fails.Load() }

// limitMetrics are the admission and budget series.
type limitMetrics struct {
	rejections *prometheus.CounterVec
	rejected   map[string]prometheus.Counter // by reason, created up front
	memRefused [4]prometheus.Counter         // by scope: conn, peer, source, system
}

// newLimitMetrics creates the series and registers them on reg (nil: kept
// unregistered). Every reason's counter exists from the start at zero, so
// dashboards and alerts see the series before the first refusal.
//
//	swarmgate_limit_rejections_total{reason}   refusals by reason token
//	swarmgate_limit_connections_admitted       admitted connections open
//	swarmgate_limit_sources_tracked            per-source table entries
//	swarmgate_limit_max_connections            MaxConns in force
//	swarmgate_memory_budget_bytes              MemoryBudget in force
//	swarmgate_memory_used_bytes                bytes reserved or charged
//	swarmgate_memory_reserve_failures_total    reservations refused
func newLimitMetrics(reg prometheus.Registerer, a *Admission) *limitMetrics {
	m := &limitMetrics{
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swarmgate_limit_rejections_total", Help: "Connections refused at admission, by reason (total, per_ip, per_subnet, rate, memory, sources)."}, []string{"reason"}),
		rejected: make(map[string]prometheus.Counter, len(limitReasons)),
	}
	for _, r := range limitReasons {
		m.rejected[r] = m.rejections.WithLabelValues(r)
	}
	memRefusals := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "swarmgate_memory_refusals_total", Help: "Buffer reservations refused by the resource model, by the scope that was full (conn, peer, source, system)."}, []string{"scope"})
	for i, sc := range memoryScopes {
		m.memRefused[i] = memRefusals.WithLabelValues(sc)
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(memRefusals,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "swarmgate_limit_peers_tracked", Help: "Peer IDs with a live connection in the resource model."},
			func() float64 { return float64(a.Peers()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "swarmgate_streams_inbound", Help: "Inbound streams counted by the resource model (the system scope)."},
			func() float64 { return float64(a.Streams()) }),
	)
	b := a.budget
	reg.MustRegister(m.rejections,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "swarmgate_limit_connections_admitted", Help: "Admitted connections not yet released."},
			func() float64 { return float64(a.Open()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "swarmgate_limit_sources_tracked", Help: "Entries in the per-source admission table (IPv4 addresses, IPv6 /56s)."},
			func() float64 { return float64(a.Sources()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "swarmgate_limit_max_connections", Help: "MaxConns in force (negative: unlimited)."},
			func() float64 { return float64(a.lim.Load().MaxConns) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "swarmgate_memory_budget_bytes", Help: "Byte budget for engine buffers (negative: unlimited)."},
			func() float64 { return float64(b.Limit()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "swarmgate_memory_used_bytes", Help: "Bytes of engine buffers reserved or charged against the budget."},
			func() float64 { return float64(b.Used()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "swarmgate_memory_reserve_failures_total", Help: "Buffer reservations refused because the memory budget was spent."},
			func() float64 { return float64(b.Failures()) }),
	)
	return m
}
