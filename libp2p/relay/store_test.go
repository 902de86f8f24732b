package relay

import (
	"net/netip"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
)

var t0 = time.Unix(1_800_000_000, 0)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestStoreReserveRefreshExpiry(t *testing.T) {
	s := NewStore[int](Config{})
	p := testPeer(t)
	exp, refresh, reason := s.Reserve(p, 1, ip("192.0.2.1"), t0)
	if reason != "" || refresh || !exp.Equal(t0.Add(DefaultReservationTTL)) {
		t.Fatalf("reserve: %v %v %q", exp, refresh, reason)
	}
	// Refresh half-way: the expiry moves out by a full TTL.
	later := t0.Add(30 * time.Minute)
	exp2, refresh, reason := s.Reserve(p, 1, ip("192.0.2.1"), later)
	if reason != "" || !refresh || !exp2.Equal(later.Add(DefaultReservationTTL)) {
		t.Fatalf("refresh: %v %v %q", exp2, refresh, reason)
	}
	// Valid until just before the new expiry, not at it.
	if c, ok := s.Lookup(p, exp2.Add(-time.Second)); !ok || c != 1 {
		t.Fatal("refreshed reservation gone before its expiry")
	}
	if _, ok := s.Lookup(p, exp2); ok {
		t.Fatal("reservation used at its expiry")
	}
	if s.Len() != 0 {
		t.Fatal("expired reservation kept after a lookup")
	}
	// A reserve after expiry is a new reservation, not a refresh.
	if _, refresh, _ := s.Reserve(p, 2, ip("192.0.2.1"), exp2.Add(time.Minute)); refresh {
		t.Fatal("expired reservation refreshed")
	}
	// Expiry is in whole seconds (the wire's unit).
	q := testPeer(t)
	exp3, _, _ := s.Reserve(q, 3, ip("192.0.2.2"), t0.Add(1500*time.Millisecond))
	if exp3.Nanosecond() != 0 {
		t.Fatalf("expiry %v not whole seconds", exp3)
	}
}

func TestStoreConnClosed(t *testing.T) {
	s := NewStore[int](Config{})
	p, q := testPeer(t), testPeer(t)
	s.Reserve(p, 1, ip("192.0.2.1"), t0)
	s.Reserve(q, 2, ip("192.0.2.2"), t0)
	s.ConnClosed(p, 1)
	if _, ok := s.Lookup(p, t0); ok {
		t.Fatal("reservation outlived its connection")
	}
	// q moves to a new connection; the old one closing leaves it.
	s.Reserve(q, 3, ip("192.0.2.2"), t0)
	s.ConnClosed(q, 2)
	if c, ok := s.Lookup(q, t0); !ok || c != 3 {
		t.Fatal("moved reservation dropped by its old connection")
	}
	s.ConnClosed(q, 3)
	if s.Len() != 0 || len(s.src) != 0 {
		t.Fatalf("%d reservations, %d sources left", s.Len(), len(s.src))
	}
}

func TestStoreLimits(t *testing.T) {
	peers := make([]peer.ID, 8)
	for i := range peers {
		peers[i] = testPeer(t)
	}
	t.Run("total", func(t *testing.T) {
		s := NewStore[int](Config{MaxReservations: 3})
		for i := range 3 {
			if _, _, r := s.Reserve(peers[i], i, ip("192.0.2.1").Next(), t0); r != "" {
				t.Fatal(r)
			}
		}
		if _, _, r := s.Reserve(peers[3], 3, ip("198.51.100.1"), t0); r != ReasonTotal {
			t.Fatalf("4th of 3: %q", r)
		}
		// A refresh always fits the total.
		if _, refresh, r := s.Reserve(peers[0], 0, ip("192.0.2.1").Next(), t0); r != "" || !refresh {
			t.Fatalf("refresh at the total: %q", r)
		}
		// An expired one makes room.
		if _, _, r := s.Reserve(peers[3], 3, ip("198.51.100.1"), t0.Add(2*time.Hour)); r != "" {
			t.Fatalf("after expiry: %q", r)
		}
	})
	t.Run("per source", func(t *testing.T) {
		s := NewStore[int](Config{MaxReservationsPerSource: 2})
		ok := func(i int, a string) {
			t.Helper()
			if _, _, r := s.Reserve(peers[i], i, ip(a), t0); r != "" {
				t.Fatalf("peer %d from %s: %q", i, a, r)
			}
		}
		refused := func(i int, a string) {
			t.Helper()
			if _, _, r := s.Reserve(peers[i], i, ip(a), t0); r != ReasonPerSource {
				t.Fatalf("peer %d from %s: %q, want per_source", i, a, r)
			}
		}
		ok(0, "203.0.113.7")
		ok(1, "::ffff:203.0.113.7") // the same IPv4 address, mapped
		refused(2, "203.0.113.7")
		ok(2, "203.0.113.8")
		ok(0, "203.0.113.7") // refresh from the same full source fits
		refused(3, "203.0.113.7")
		// IPv6: one /56 is one source, whatever the /64.
		ok(3, "2001:db8:0:100::1")
		ok(4, "2001:db8:0:1ff::2")
		refused(5, "2001:db8:0:142::3")
		ok(5, "2001:db8:0:200::1") // the next /56
		// A refresh that moves to a full source is refused.
		refused(2, "2001:db8:0:100::9")
		// Loopback is exempt.
		for i := range 4 {
			ok(6+i%2, "127.0.0.1")
		}
		if _, _, r := s.Reserve(peers[7], 7, netip.Addr{}, t0); r != ReasonNoAddress {
			t.Fatalf("no address: %q", r)
		}
		l := NewStore[int](Config{MaxReservationsPerSource: 1, LimitLoopback: true})
		l.Reserve(peers[0], 0, ip("::1"), t0)
		if _, _, r := l.Reserve(peers[1], 1, ip("::1"), t0); r != ReasonPerSource {
			t.Fatalf("LimitLoopback: %q", r)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		s := NewStore[int](Config{MaxReservations: -1, MaxReservationsPerSource: -1})
		for i := range peers {
			if _, _, r := s.Reserve(peers[i], i, ip("192.0.2.1"), t0); r != "" {
				t.Fatal(r)
			}
		}
	})
}

func TestStoreSweep(t *testing.T) {
	s := NewStore[int](Config{ReservationTTL: time.Minute, MaxReservationsPerSource: 10})
	for i := range 10 {
		s.Reserve(testPeer(t), i, ip("192.0.2.1").Next(), t0.Add(time.Duration(i)*time.Second))
	}
	if n := s.Sweep(t0.Add(time.Minute + 4*time.Second)); n != 5 {
		t.Fatalf("swept %d, want 5", n)
	}
	if s.Len() != 5 || s.src[srcV4|0xc0000202] != 5 {
		t.Fatalf("%d left, source count %d", s.Len(), s.src[srcV4|0xc0000202])
	}
}

func TestStoreCircuits(t *testing.T) {
	s := NewStore[int](Config{MaxCircuitsPerPeer: 2, MaxCircuits: 3})
	a, b, c, d := testPeer(t), testPeer(t), testPeer(t), testPeer(t)
	if _, st := s.Connect(a, b, t0); st != pb.Status_NO_RESERVATION {
		t.Fatalf("no reservation: %v", st)
	}
	s.Reserve(b, 7, ip("192.0.2.1"), t0)
	s.Reserve(d, 8, ip("192.0.2.2"), t0)
	for range 2 {
		if conn, st := s.Connect(a, b, t0); st != pb.Status_OK || conn != 7 {
			t.Fatalf("connect: %v %v", conn, st)
		}
	}
	// b takes part in 2: refused as destination, whoever the source.
	if _, st := s.Connect(c, b, t0); st != pb.Status_RESOURCE_LIMIT_EXCEEDED {
		t.Fatalf("per destination: %v", st)
	}
	// a takes part in 2: refused as source.
	if _, st := s.Connect(a, d, t0); st != pb.Status_RESOURCE_LIMIT_EXCEEDED {
		t.Fatalf("per source: %v", st)
	}
	if _, st := s.Connect(c, d, t0); st != pb.Status_OK {
		t.Fatalf("third: %v", st)
	}
	if !s.CircuitsFull() {
		t.Fatal("3 of 3 open, not full")
	}
	s.CircuitEnded(a, b)
	s.CircuitEnded(a, b)
	s.CircuitEnded(c, d)
	if s.Circuits() != 0 || len(s.circ) != 0 {
		t.Fatalf("%d circuits, %d peer counts left", s.Circuits(), len(s.circ))
	}
	// An expired reservation is no reservation.
	if _, st := s.Connect(a, b, t0.Add(DefaultReservationTTL)); st != pb.Status_NO_RESERVATION {
		t.Fatalf("expired: %v", st)
	}
}
