package admission

import (
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/swarmgate/swarmgate/internal/testutil"
)

// levelsAdmission has small memory shares at every level: a connection
// 100 bytes, a peer 150, a source 250, the system 400 beyond what
// admission keeps for accepting.
func levelsAdmission(reg *prometheus.Registry) *Admission {
	return NewAdmission(Limits{LimitLoopback: true, MaxConnsPerIP: 100, ConnRatePerIP: -1,
		ConnMemory: 100, PeerMemory: 150, SourceMemory: 250, MemoryBudget: admitHeadroom + 400}, reg)
}

// A charge fits only where it fits at every level; each refusal is counted
// by its scope; closing every scope returns every level to zero.
func TestScopeMemoryLevels(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := levelsAdmission(reg)
	ip := netip.MustParseAddr("198.51.100.7")
	c1, err := admit(a, ip, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !c1.Reserve(100) || c1.Reserve(1) {
		t.Fatal("connection share not enforced")
	}
	if c1.Available() != 0 {
		t.Fatalf("available %d at the connection's limit", c1.Available())
	}
	c1.Release(40) // 60 held
	if err := c1.SetPeer("peer-A"); err != nil {
		t.Fatal(err)
	}
	c2, _ := admit(a, ip, t0)
	c2.SetPeer("peer-A")
	if !c2.Reserve(90) || c2.Reserve(1) { // the peer holds 150
		t.Fatal("peer share not enforced")
	}
	if c2.Available() != 0 {
		t.Fatalf("available %d at the peer's limit", c2.Available())
	}
	c3, _ := admit(a, ip, t0)
	c3.SetPeer("peer-B")
	if !c3.Reserve(100) {
		t.Fatal("a second peer from the source refused below its share")
	}
	c4, _ := admit(a, ip, t0) // the source holds 250
	if c4.Reserve(1) {
		t.Fatal("source share not enforced")
	}
	c5, _ := admit(a, netip.MustParseAddr("203.0.113.1"), t0)
	c6, _ := admit(a, netip.MustParseAddr("203.0.113.2"), t0)
	c5.Charge(admitHeadroom + 140) // the system holds all but 10; charged past c5's own share
	if c6.Reserve(20) {
		t.Fatal("system budget not enforced")
	}
	got := testutil.Gather(t, reg)
	for _, sc := range memoryScopes {
		if got["swarmgate_memory_refusals_total{scope="+sc+"}"] != 1 {
			t.Errorf("refusals by %s: %v", sc, got["swarmgate_memory_refusals_total{scope="+sc+"}"])
		}
	}
	if got["swarmgate_limit_peers_tracked"] != 2 {
		t.Errorf("peers tracked %v", got["swarmgate_limit_peers_tracked"])
	}
	for _, c := range []*Scope{c1, c2, c3, c4, c5, c6} {
		c.Close()
		c.Close() // idempotent
	}
	if a.Budget().Used() != 0 || a.Peers() != 0 || a.Open() != 0 || a.Sources() != 0 {
		t.Fatalf("after every connection closed: used %d, peers %d, open %d, sources %d", a.Budget().Used(), a.Peers(), a.Open(), a.Sources())
	}
}

// ReserveInFlight takes what the connection's, the peer's and the source's
// shares no longer have, charging them all, and refuses only when the
// system budget cannot take it (counted as the system's refusal).
func TestScopeReserveInFlight(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := levelsAdmission(reg)
	ip := netip.MustParseAddr("198.51.100.7")
	c1, _ := admit(a, ip, t0)
	c1.SetPeer("peer-A")
	c2, _ := admit(a, ip, t0)
	c2.SetPeer("peer-A")
	if !c1.Reserve(100) || c1.Reserve(1) {
		t.Fatal("connection share not enforced")
	}
	if !c1.ReserveInFlight(60) { // past the connection's and the peer's share
		t.Fatal("refused with the system budget free")
	}
	if c1.Used() != 160 || c2.Available() != 0 || c2.Reserve(1) {
		t.Fatalf("in-flight bytes not charged to every level: used %d, the peer's other connection may take %d", c1.Used(), c2.Available())
	}
	c3, _ := admit(a, ip, t0)
	if !c3.ReserveInFlight(100) { // the source is at 260 of 250
		t.Fatal("refused by the source's share")
	}
	if c3.Reserve(1) {
		t.Fatal("the source's share over its limit still lends")
	}
	c4, _ := admit(a, netip.MustParseAddr("203.0.113.1"), t0)
	c4.Charge(admitHeadroom + 140 - 5) // the system has 5 left
	before := testutil.Gather(t, reg)["swarmgate_memory_refusals_total{scope=system}"]
	if c4.ReserveInFlight(10) {
		t.Fatal("taken past the system budget")
	}
	if got := testutil.Gather(t, reg)["swarmgate_memory_refusals_total{scope=system}"]; got != before+1 {
		t.Fatalf("system refusals %v, want %v", got, before+1)
	}
	c1.Release(160)
	c3.Release(100)
	for _, c := range []*Scope{c1, c2, c3, c4} {
		c.Close()
	}
	if a.Budget().Used() != 0 || a.Sources() != 0 || a.Peers() != 0 {
		t.Fatalf("after every connection closed: used %d, sources %d, peers %d", a.Budget().Used(), a.Sources(), a.Peers())
	}
}

// Streams count per peer, per protocol per peer and system-wide; the
// peer's connection limit refuses SetPeer.
func TestScopeStreams(t *testing.T) {
	a := NewAdmission(Limits{MaxPeerStreams: 3, MaxProtocolStreams: 2, ProtocolStreams: map[string]int{"/kad": 1},
		MaxSystemStreams: 4, MaxConnsPerPeer: 2}, nil)
	lo := netip.MustParseAddr("127.0.0.1")
	c1, _ := admit(a, lo, t0)
	c2, _ := admit(a, lo, t0)
	c3, _ := admit(a, lo, t0)
	for _, c := range []*Scope{c1, c2} {
		if err := c.SetPeer("P"); err != nil {
			t.Fatal(err)
		}
	}
	if err := c3.SetPeer("P"); err != ErrPeerConns {
		t.Fatalf("third connection of a peer: %v", err)
	}
	for range 3 {
		if err := c1.OpenStream(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c2.OpenStream(); err != ErrPeerStreams {
		t.Fatalf("fourth stream of the peer: %v", err)
	}
	c3.SetPeer("Q") // c3 is still a connection of its own
	c3.OpenStream()
	if err := c3.OpenStream(); err != ErrSystemStreams {
		t.Fatalf("fifth stream of the system: %v", err)
	}
	if err := c1.OpenProtocolStream("/kad"); err != nil {
		t.Fatal(err)
	}
	if err := c2.OpenProtocolStream("/kad"); err != ErrProtocolStreams {
		t.Fatalf("second /kad stream: %v", err)
	}
	c1.OpenProtocolStream("/id")
	if err := c2.OpenProtocolStream("/id"); err != nil {
		t.Fatal(err)
	}
	if err := c2.OpenProtocolStream("/id"); err != ErrProtocolStreams {
		t.Fatalf("third /id stream: %v", err)
	}
	c1.CloseProtocolStream("/kad")
	if err := c2.OpenProtocolStream("/kad"); err != nil {
		t.Fatalf("/kad after one closed: %v", err)
	}
	c1.CloseStream()
	if err := c2.OpenStream(); err != nil {
		t.Fatalf("a stream after one closed: %v", err)
	}
	for _, c := range []*Scope{c1, c2, c3} {
		c.Close()
	}
	if a.Streams() != 0 || a.Peers() != 0 {
		t.Fatalf("streams %d peers %d after close", a.Streams(), a.Peers())
	}
}

// A reload between admission and release must not leak or undercount: the
// release undoes what the admission took, whatever the limits are by then.
func TestReleaseUsesAdmissionTimeLimits(t *testing.T) {
	a := NewAdmission(Limits{MaxConnsPerSubnet: 2, ConnRatePerIP: -1}, nil)
	// One /48, sources (/56s) apart.
	v6 := func(i byte) netip.Addr { return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, i, 15: 1}) }
	s1, err := admit(a, v6(1), t0)
	if err != nil {
		t.Fatal(err)
	}
	a.SetLimits(Limits{MaxConnsPerSubnet: -1, ConnRatePerIP: -1}) // /48 limit off
	s1.Close()
	a.SetLimits(Limits{MaxConnsPerSubnet: 2, ConnRatePerIP: -1}) // and back on
	s2, err := admit(a, v6(2), t0)
	if err != nil {
		t.Fatal(err)
	}
	s3, err := admit(a, v6(3), t0)
	if err != nil {
		t.Fatalf("the released connection still counts in its /48: %v", err)
	}
	if _, err := admit(a, v6(4), t0); err != ErrLimitPerSubnet {
		t.Fatalf("third in the /48: %v", err)
	}
	s2.Close()
	s3.Close()
}
