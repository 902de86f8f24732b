package admission

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swarmgate/swarmgate/internal/bufpool"
	"github.com/swarmgate/swarmgate/internal/testutil"
)

var t0 = time.Unix(1_700_000_000, 0)

// admit is Admit into a fresh scope.
func admit(a *Admission, addr netip.Addr, now time.Time) (*Scope, error) {
	s := new(Scope)
	return s, a.Admit(s, addr, now)
}

func mustAdmit(t *testing.T, a *Admission, addr string, now time.Time) *Scope {
	t.Helper()
	tk, err := admit(a, netip.MustParseAddr(addr), now)
	if err != nil {
		t.Fatalf("%s: %v", addr, err)
	}
	return tk
}

func wantRefused(t *testing.T, a *Admission, addr string, now time.Time, want *LimitError) {
	t.Helper()
	_, err := admit(a, netip.MustParseAddr(addr), now)
	if err != want {
		t.Fatalf("%s: got %v, want %v", addr, err, want)
	}
	if LimitReason(err) != want.Reason || !errors.Is(err, want) {
		t.Fatalf("reason %q", LimitReason(err))
	}
}

// The defaults are go-libp2p v0.51's: 8 per IPv4 address and IPv6 /56, 64
// per IPv6 /48, 0.2 new connections per second with a burst of 16.
func TestLimitsDefaults(t *testing.T) {
	l := Limits{}.withDefaults()
	if l.MaxConnsPerIP != 8 || l.MaxConnsPerSubnet != 64 || l.ConnRatePerIP != 0.2 || l.ConnBurstPerIP != 16 ||
		l.MaxConns != DefaultMaxConns || l.MemoryBudget != DefaultMemoryBudget || l.MaxStreams != DefaultMaxStreams || l.LimitLoopback {
		t.Fatalf("defaults %+v", l)
	}
}

func TestAdmitPerIPv4(t *testing.T) {
	a := NewAdmission(Limits{}, nil)
	var held []*Scope
	for range DefaultMaxConnsPerIP {
		held = append(held, mustAdmit(t, a, "198.51.100.7", t0))
	}
	wantRefused(t, a, "198.51.100.7", t0, ErrLimitPerIP)
	wantRefused(t, a, "::ffff:198.51.100.7", t0, ErrLimitPerIP) // the mapped form is the same source
	mustAdmit(t, a, "198.51.100.8", t0)                         // a neighbour is another source
	held[0].Close()
	held[0].Close() // idempotent
	held[0] = mustAdmit(t, a, "198.51.100.7", t0)
	if a.Open() != DefaultMaxConnsPerIP+1 {
		t.Fatalf("open %d", a.Open())
	}
	for i := range held {
		held[i].Close()
	}
	if a.Open() != 1 {
		t.Fatalf("open %d after release", a.Open())
	}
}

func TestAdmitIPv6Prefixes(t *testing.T) {
	a := NewAdmission(Limits{ConnRatePerIP: -1}, nil)
	// Addresses anywhere in one /56 are one source.
	for i := range DefaultMaxConnsPerIP {
		mustAdmit(t, a, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x01, 0, byte(i), 15: byte(i)}).String(), t0)
	}
	wantRefused(t, a, "2001:db8:1:ff::1", t0, ErrLimitPerIP)
	// Other /56s of the same /48 fill its limit of 64.
	for i := 1; i < DefaultMaxConnsPerSubnet/DefaultMaxConnsPerIP; i++ {
		for range DefaultMaxConnsPerIP {
			mustAdmit(t, a, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x01, byte(i), 15: 1}).String(), t0)
		}
	}
	wantRefused(t, a, "2001:db8:1:ff00::1", t0, ErrLimitPerSubnet)
	mustAdmit(t, a, "2001:db8:2::1", t0) // the next /48
	// A zone does not make another source.
	wantRefused(t, a, "2001:db8:1::5%eth0", t0, ErrLimitPerIP)
}

func TestAdmitRate(t *testing.T) {
	a := NewAdmission(Limits{MaxConnsPerIP: -1}, nil)
	for i := range DefaultConnBurstPerIP {
		tk := mustAdmit(t, a, "203.0.113.1", t0)
		if i%2 == 0 {
			tk.Close() // closing does not refund the rate
		}
	}
	wantRefused(t, a, "203.0.113.1", t0, ErrLimitRate)
	wantRefused(t, a, "203.0.113.1", t0.Add(4*time.Second), ErrLimitRate)
	mustAdmit(t, a, "203.0.113.1", t0.Add(5*time.Second)) // one token per 5 s
	wantRefused(t, a, "203.0.113.1", t0.Add(5*time.Second), ErrLimitRate)
	mustAdmit(t, a, "203.0.113.2", t0)
}

func TestAdmitLoopbackAndExempt(t *testing.T) {
	a := NewAdmission(Limits{Exempt: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}, nil)
	for range 100 {
		mustAdmit(t, a, "127.0.0.1", t0)
		mustAdmit(t, a, "::1", t0)
		mustAdmit(t, a, "::ffff:127.0.0.2", t0)
		mustAdmit(t, a, "192.0.2.9", t0)
	}
	if a.Sources() != 0 {
		t.Fatalf("exempt sources tracked: %d", a.Sources())
	}
	a = NewAdmission(Limits{LimitLoopback: true}, nil)
	for range DefaultMaxConnsPerIP {
		mustAdmit(t, a, "127.0.0.1", t0)
	}
	wantRefused(t, a, "127.0.0.1", t0, ErrLimitPerIP)
}

func TestAdmitTotalAndMemory(t *testing.T) {
	a := NewAdmission(Limits{MaxConns: 3}, nil)
	var held []*Scope
	for i := range 3 {
		held = append(held, mustAdmit(t, a, netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}).String(), t0))
	}
	wantRefused(t, a, "10.0.0.9", t0, ErrLimitTotal)
	if a.Sources() != 3 {
		t.Fatalf("a refusal for the total left state: %d sources", a.Sources())
	}
	held[1].Close()
	mustAdmit(t, a, "10.0.0.9", t0)

	a = NewAdmission(Limits{MemoryBudget: 3 * bufpool.Medium}, nil)
	b := a.Budget()
	buf, ok := bufpool.TryGet(b, bufpool.Medium)
	if !ok || b.Used() != bufpool.Medium {
		t.Fatalf("reserve: %v used %d", ok, b.Used())
	}
	mustAdmit(t, a, "10.0.0.1", t0)
	b.Charge(bufpool.Medium + 1)
	wantRefused(t, a, "10.0.0.1", t0, ErrLimitMemory)
	if _, ok := bufpool.TryGet(b, bufpool.Medium+1); ok {
		t.Fatal("reservation beyond the budget succeeded")
	}
	if b.Failures() != 1 {
		t.Fatalf("failures %d", b.Failures())
	}
	b.Release(bufpool.Medium + 1)
	bufpool.Release(b, buf)
	if b.Used() != 0 {
		t.Fatalf("used %d after release", b.Used())
	}
	mustAdmit(t, a, "10.0.0.1", t0)
}

func TestMemoryBudgetUnlimited(t *testing.T) {
	b := NewMemoryBudget(-1)
	for _, n := range []int{1, bufpool.Small, bufpool.Medium + 1} {
		x, ok := bufpool.TryGet(b, n)
		if !ok || b.Used() != int64(bufpool.Class(n)) {
			t.Fatalf("n=%d: used %d", n, b.Used())
		}
		bufpool.Release(b, x)
		if b.Used() != 0 {
			t.Fatalf("n=%d: used %d after release", n, b.Used())
		}
	}
	if b.Available() <= 0 || !b.Reserve(1<<40) {
		t.Fatal("unlimited budget refused")
	}
}

// Entries leave the table once their source has no connection and a full
// bucket; the table never exceeds its bound, forgetting refilling entries
// before refusing, and refuses only when every entry is live.
func TestAdmitTableBounded(t *testing.T) {
	a := NewAdmission(Limits{MaxTrackedSources: admissionShards}, nil) // one entry per shard
	addr := func(i int) string { return netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}).String() }
	var held []*Scope
	refused := 0
	for i := range 4 * admissionShards {
		tk, err := admit(a, netip.MustParseAddr(addr(i)), t0)
		switch err {
		case nil:
			held = append(held, tk)
		case ErrLimitSources:
			refused++
		default:
			t.Fatal(err)
		}
	}
	if a.Sources() > admissionShards || refused == 0 || len(held) != a.Sources() {
		t.Fatalf("sources %d held %d refused %d", a.Sources(), len(held), refused)
	}
	for i := range held {
		held[i].Close()
	}
	// Refilling entries are evicted for new sources.
	for i := 1000; i < 1000+4*admissionShards; i++ {
		tk := mustAdmit(t, a, addr(i), t0)
		tk.Close()
	}
	if a.Sources() > admissionShards {
		t.Fatalf("sources %d over the bound", a.Sources())
	}
	// Once buckets are full again, the sweep empties the table.
	later := t0.Add(time.Duration(float64(DefaultConnBurstPerIP)/DefaultConnRatePerIP)*time.Second + sweepInterval)
	for i := range 4 * admissionShards {
		tk := mustAdmit(t, a, addr(5000+i), later)
		tk.Close()
	}
	later = later.Add(time.Duration(float64(DefaultConnBurstPerIP)/DefaultConnRatePerIP)*time.Second + sweepInterval)
	for i := range 4 * admissionShards {
		tk := mustAdmit(t, a, addr(9000+i), later)
		tk.Close()
	}
	// Every shard swept at `later`; what is left was admitted at `later`.
	if n := a.Sources(); n > admissionShards {
		t.Fatalf("%d sources after sweep", n)
	}
}

func TestAdmitMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := NewAdmission(Limits{MaxConns: 1, MemoryBudget: 1 << 20}, reg)
	tk := mustAdmit(t, a, "192.0.2.1", t0)
	wantRefused(t, a, "192.0.2.2", t0, ErrLimitTotal)
	wantRefused(t, a, "192.0.2.3", t0, ErrLimitTotal)
	got := testutil.Gather(t, reg)
	if got["swarmgate_limit_rejections_total{reason=total}"] != 2 || got["swarmgate_limit_connections_admitted"] != 1 ||
		got["swarmgate_memory_budget_bytes"] != 1<<20 || got["swarmgate_limit_sources_tracked"] != 1 {
		t.Fatalf("metrics %v", got)
	}
	for _, r := range limitReasons { // every reason's series exists from the start
		if _, ok := got["swarmgate_limit_rejections_total{reason="+r+"}"]; !ok {
			t.Fatalf("no series for %q", r)
		}
	}
	tk.Close()
}

// Concurrent admits and releases from many sources leave nothing held.
func TestAdmitConcurrent(t *testing.T) {
	a := NewAdmission(Limits{MaxConns: 500, ConnRatePerIP: -1}, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var held []*Scope
			for i := range 2000 {
				ip := netip.AddrFrom4([4]byte{10, byte(g), byte(i % 7), 1})
				if i%3 == 0 {
					ip = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(g), byte(i % 5), 15: 1})
				}
				if tk, err := admit(a, ip, t0); err == nil {
					held = append(held, tk)
				}
				if len(held) > 20 {
					held[0].Close()
					held = held[1:]
				}
			}
			for i := range held {
				held[i].Close()
			}
		}()
	}
	wg.Wait()
	if a.Open() != 0 {
		t.Fatalf("open %d", a.Open())
	}
	for i := range a.shards {
		sh := &a.shards[i]
		if sh.live != 0 || len(sh.subnets) != 0 {
			t.Fatalf("shard %d: live %d subnets %d", i, sh.live, len(sh.subnets))
		}
	}
}

// BenchmarkAdmit is one Admit and its Release: run with
// flock /tmp/swarmgate-bench.lock go test -run XXX -bench Admit ./engine/
func BenchmarkAdmit(b *testing.B) {
	for _, bc := range []struct {
		name  string
		addrs int
		v6    bool
		rate  bool
	}{
		{"ipv4-one-source", 1, false, false}, {"ipv4-64k-sources", 1 << 16, false, false},
		{"ipv6-64k-sources", 1 << 16, true, false}, {"ipv4-64k-sources-rate", 1 << 16, false, true},
		{"loopback", 0, false, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			lim := Limits{ConnRatePerIP: -1}
			if bc.rate { // buckets kept per source, never empty
				lim = Limits{ConnRatePerIP: 1e9, ConnBurstPerIP: 1 << 30}
			}
			a := NewAdmission(lim, nil)
			addrs := make([]netip.Addr, max(bc.addrs, 1))
			for i := range addrs {
				switch {
				case bc.addrs == 0:
					addrs[i] = netip.MustParseAddr("127.0.0.1")
				case bc.v6:
					addrs[i] = netip.AddrFrom16([16]byte{0x20, 0x01, byte(i >> 8), byte(i), 5: byte(i), 15: 1})
				default:
					addrs[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
				}
			}
			now := t0
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					tk, err := admit(a, addrs[i%len(addrs)], now)
					if err == nil {
						tk.Close()
					}
					i++
				}
			})
		})
	}
}

// A trusted proxy's connection is admitted without a source and charged to
// the client address found in its request.
func TestAdmitSourceAfterProxy(t *testing.T) {
	a := NewAdmission(Limits{MaxConnsPerIP: 2}, nil)
	var held []*Scope
	for range 5 { // the proxy's own address is not limited per source
		tk, err := admit(a, netip.Addr{}, t0)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, tk)
	}
	client := netip.MustParseAddr("203.0.113.5")
	for i := range 2 {
		if err := a.AdmitSource(held[i], client, t0); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.AdmitSource(held[0], client, t0); err != ErrScopeHasSource {
		t.Fatalf("second AdmitSource: %v", err)
	}
	err := a.AdmitSource(held[2], client, t0)
	if err != ErrLimitPerIP {
		t.Fatalf("third client connection: %v", err)
	}
	if err := a.AdmitSource(held[3], netip.MustParseAddr("127.0.0.1"), t0); err != nil {
		t.Fatalf("loopback client: %v", err)
	}
	for i := range held {
		held[i].Close()
	}
	if a.Open() != 0 {
		t.Fatalf("open %d", a.Open())
	}
	if tk, err := admit(a, client, t0); err != nil {
		t.Fatal(err)
	} else {
		tk.Close()
	}
}

func TestMemoryBudgetGrow(t *testing.T) {
	b := NewMemoryBudget(bufpool.Small + bufpool.Medium)
	buf, _ := bufpool.TryGet(b, 10)
	buf = append(buf, "0123456789"...)
	buf, ok := bufpool.TryGrow(b, buf, 100) // fits
	if !ok || b.Used() != bufpool.Small {
		t.Fatalf("used %d", b.Used())
	}
	buf, ok = bufpool.TryGrow(b, buf, bufpool.Small) // 4 KiB → 64 KiB: the small one is released after
	if !ok || cap(buf) != bufpool.Medium || b.Used() != bufpool.Medium || string(buf) != "0123456789" {
		t.Fatalf("TryGrow: %v cap %d used %d", ok, cap(buf), b.Used())
	}
	if _, ok := bufpool.TryGrow(b, buf, bufpool.Medium); ok {
		t.Fatal("grew past the budget")
	}
	b.Charge(bufpool.Large) // charged regardless
	if b.Used() != bufpool.Medium+bufpool.Large || b.Available() >= 0 {
		t.Fatalf("used %d", b.Used())
	}
	b.Release(bufpool.Large)
	bufpool.Release(b, buf)
	if b.Used() != 0 {
		t.Fatalf("used %d after put", b.Used())
	}
}
