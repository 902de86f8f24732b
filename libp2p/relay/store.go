package relay

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
)

// Store holds the relay's reservations and circuit counts. It is sized for
// 100,000 reservations on one machine: an entry is the peer ID's string
// header (its bytes are the connection's own copy), the connection handle,
// the expiry and the source key, in one map slot, plus a per-source count
// shared by the reservations of a source (BenchmarkStoreMemory measures
// it). No timer or goroutine per reservation: expiry is checked when a
// reservation is used (Lookup, Connect, Reserve) and by Sweep, which the
// owner calls with the time.
//
// A reservation is tied to the connection that made it (C, the engine's
// *PeerConn): it ends when that connection ends (ConnClosed), when it
// expires, or when the peer reserves again on another connection (one
// reservation per peer: a refresh replaces it and moves it).
//
// All methods take the store's mutex, a leaf lock: callbacks of any
// connection call them, and nothing else is locked while it is held.
type Store[C comparable] struct {
	mu   sync.Mutex
	lim  Config // with defaults
	rsv  map[peer.ID]entry[C]
	src  map[srcKey]int32  // reservations per limited source
	circ map[peer.ID]int32 // circuits per peer (source or destination), only while > 0
	// circuits is the number of circuits open.
	circuits int
	// fullSweep is when a RESERVE at the total last swept (mono).
	fullSweep int64
	// epoch is the first instant the store was given: times are kept as
	// nanoseconds since it (mono), on the monotonic clock when the caller's
	// clock has one, so a wall-clock step moves no expiry.
	epoch time.Time
}

// mono is now as nanoseconds since the store's epoch (held under s.mu).
func (s *Store[C]) mono(now time.Time) int64 {
	if s.epoch.IsZero() {
		s.epoch = now
	}
	return int64(now.Sub(s.epoch))
}

// fullSweepEvery is how often a RESERVE that finds the store full may
// sweep it for expired reservations before refusing: a full store under a
// stream of RESERVEs costs one pass per second, not one per request.
const fullSweepEvery = time.Second

// entry is one reservation.
type entry[C comparable] struct {
	conn   C
	expire int64 // mono
	src    srcKey
}

// srcKey is a reservation's source for per-source accounting: an IPv4
// address or an IPv6 /56 with a tag bit for the family; 0 for a source
// that is exempt (loopback).
type srcKey uint64

const (
	srcV4 srcKey = 1 << 63
	srcV6 srcKey = 1 << 62
)

// sourceOf is a's source key; ok is false for an address that cannot be
// accounted (not an IP), which is refused like go-libp2p does.
func sourceOf(a netip.Addr, limitLoopback bool) (k srcKey, ok bool) {
	a = a.Unmap()
	switch {
	case !a.IsValid():
		return 0, false
	case a.IsLoopback() && !limitLoopback:
		return 0, true
	case a.Is4():
		b := a.As4()
		return srcV4 | srcKey(binary.BigEndian.Uint32(b[:])), true
	}
	b := a.As16()
	return srcV6 | srcKey(binary.BigEndian.Uint64(b[:8])>>8), true // the /56
}

// Reservation refusal reasons, the label values of
// swarmgate_relay_reservations_refused_total.
const (
	ReasonTotal      = "total"      // MaxReservations held
	ReasonPerSource  = "per_source" // MaxReservationsPerSource from this IPv4 address or IPv6 /56
	ReasonNoAddress  = "no_address" // the connection's address is not an IP
	ReasonPermission = "permission" // over a relayed connection
)

// NewStore returns an empty store with cfg's limits (zero values: the
// defaults).
func NewStore[C comparable](cfg Config) *Store[C] {
	return &Store[C]{
		lim:  cfg.withDefaults(),
		rsv:  map[peer.ID]entry[C]{},
		src:  map[srcKey]int32{},
		circ: map[peer.ID]int32{},
	}
}

// Reserve makes or refreshes p's reservation, tied to conn, from address
// addr. It returns the new expiry and whether p already held a live
// reservation, or the refusal reason. A refresh never fails on the total:
// the old reservation is counted out first, as go-libp2p does; it can
// fail on the per-source limit when it comes from another source.
func (s *Store[C]) Reserve(p peer.ID, conn C, addr netip.Addr, now time.Time) (expire time.Time, refresh bool, reason string) {
	key, ok := sourceOf(addr, s.lim.LimitLoopback)
	if !ok {
		return time.Time{}, false, ReasonNoAddress
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.mono(now)
	old, had := s.rsv[p]
	if had && old.expire <= t {
		s.remove(p, old)
		had = false
	}
	n := len(s.rsv)
	if had {
		n-- // counted out: a refresh always fits the total
	}
	if max := s.lim.MaxReservations; !unlimited(max) && n >= max {
		if t-s.fullSweep >= int64(fullSweepEvery) {
			s.fullSweep = t
			n -= s.sweep(t)
		}
		if n >= max {
			return time.Time{}, false, ReasonTotal
		}
	}
	if key != 0 && !unlimited(s.lim.MaxReservationsPerSource) {
		held := s.src[key]
		if had && old.src == key {
			held--
		}
		if int(held) >= s.lim.MaxReservationsPerSource {
			return time.Time{}, false, ReasonPerSource
		}
	}
	if had {
		s.remove(p, old)
	}
	expire = now.Add(s.lim.ReservationTTL).Truncate(time.Second) // Unix seconds on the wire
	s.rsv[p] = entry[C]{conn: conn, expire: t + int64(expire.Sub(now)), src: key}
	if key != 0 {
		s.src[key]++
	}
	return expire, had, ""
}

// remove drops p's reservation e (held under s.mu).
func (s *Store[C]) remove(p peer.ID, e entry[C]) {
	delete(s.rsv, p)
	if e.src == 0 {
		return
	}
	if n := s.src[e.src] - 1; n > 0 {
		s.src[e.src] = n
	} else {
		delete(s.src, e.src)
	}
}

// Lookup returns the connection of p's live reservation. An expired one is
// dropped on the way.
func (s *Store[C]) Lookup(p peer.ID, now time.Time) (conn C, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lookup(p, now)
}

func (s *Store[C]) lookup(p peer.ID, now time.Time) (conn C, ok bool) {
	e, ok := s.rsv[p]
	if !ok {
		return conn, false
	}
	if e.expire <= s.mono(now) {
		s.remove(p, e)
		return conn, false
	}
	return e.conn, true
}

// ConnClosed ends p's reservation if conn holds it (a reservation moved to
// a newer connection of p stays).
func (s *Store[C]) ConnClosed(p peer.ID, conn C) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.rsv[p]; ok && e.conn == conn {
		s.remove(p, e)
	}
}

// Sweep drops every reservation expired at now and returns how many. Its
// cost is a pass over the map (1.4–1.8 ms for 100,000 entries,
// BenchmarkStoreSweep); the owner
// calls it about once a minute, as go-libp2p's relay collects garbage.
func (s *Store[C]) Sweep(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sweep(s.mono(now))
}

func (s *Store[C]) sweep(t int64) int {
	n := 0
	for p, e := range s.rsv {
		if e.expire <= t {
			s.remove(p, e)
			n++
		}
	}
	return n
}

// Len is the number of reservations held, expired ones not yet swept
// included.
func (s *Store[C]) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.rsv)
}

// Circuits is the number of circuits open.
func (s *Store[C]) Circuits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.circuits
}

// Connect checks, in go-libp2p's order, the store's part of a CONNECT from
// src to dst and opens the circuit's count: NO_RESERVATION when dst holds
// no live reservation (expiry checked here, unlike go-libp2p which only
// checks presence), RESOURCE_LIMIT_EXCEEDED when src or dst already takes
// part in MaxCircuitsPerPeer circuits or MaxCircuits are open. On OK it
// returns dst's connection; CircuitEnded must follow once.
func (s *Store[C]) Connect(src, dst peer.ID, now time.Time) (conn C, status pb.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	conn, ok := s.lookup(dst, now)
	if !ok {
		return conn, pb.Status_NO_RESERVATION
	}
	if max := s.lim.MaxCircuitsPerPeer; !unlimited(max) && (int(s.circ[src]) >= max || int(s.circ[dst]) >= max) {
		return conn, pb.Status_RESOURCE_LIMIT_EXCEEDED
	}
	if max := s.lim.MaxCircuits; !unlimited(max) && s.circuits >= max {
		return conn, pb.Status_RESOURCE_LIMIT_EXCEEDED
	}
	s.circ[src]++
	s.circ[dst]++
	s.circuits++
	return conn, pb.Status_OK
}

// CircuitsFull reports whether MaxCircuits are open: the first check of a
// CONNECT, before the request is even looked at (go-libp2p's order).
func (s *Store[C]) CircuitsFull() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !unlimited(s.lim.MaxCircuits) && s.circuits >= s.lim.MaxCircuits
}

// CircuitEnded releases what Connect counted.
func (s *Store[C]) CircuitEnded(src, dst peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range [2]peer.ID{src, dst} {
		if n := s.circ[p] - 1; n > 0 {
			s.circ[p] = n
		} else {
			delete(s.circ, p)
		}
	}
	s.circuits--
}
