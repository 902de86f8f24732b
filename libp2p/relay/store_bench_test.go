package relay

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// fakeConn stands for the engine's *PeerConn: the store keeps a pointer.
type fakeConn struct{ _ [64]byte }

// BenchmarkStoreMemory measures what reservations cost on top of what
// their connections already hold (the peer ID's bytes, the PeerConn):
// the heap after GC with n reservations, minus the heap before, over n.
// "distinct" gives every reservation its own IPv4 source (the per-source
// table's worst case); "loopback" has none (exempt).
//
//	flock /tmp/swarmgate-bench.lock go test -run x -bench StoreMemory -benchtime 1x ./libp2p/relay/
func BenchmarkStoreMemory(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		for _, distinct := range []bool{true, false} {
			name := fmt.Sprintf("%d/loopback", n)
			if distinct {
				name = fmt.Sprintf("%d/distinct", n)
			}
			b.Run(name, func(b *testing.B) {
				for range b.N {
					b.ReportMetric(storeBytesPer(n, distinct), "B/reservation")
				}
			})
		}
	}
}

func storeBytesPer(n int, distinct bool) float64 {
	ids := make([]peer.ID, n)
	conns := make([]*fakeConn, n)
	addrs := make([]netip.Addr, n)
	for i := range ids {
		var b [38]byte // an Ed25519 peer ID's length
		binary.LittleEndian.PutUint64(b[6:], rand.Uint64())
		binary.LittleEndian.PutUint64(b[14:], uint64(i))
		ids[i] = peer.ID(b[:])
		conns[i] = new(fakeConn)
		addrs[i] = netip.MustParseAddr("127.0.0.1")
		if distinct {
			var a [4]byte
			binary.BigEndian.PutUint32(a[:], 0x0b000000+uint32(i))
			addrs[i] = netip.AddrFrom4(a)
		}
	}
	s := NewStore[*fakeConn](Config{MaxReservations: -1})
	before := heapAfterGC()
	now := time.Now()
	for i := range ids {
		if _, _, r := s.Reserve(ids[i], conns[i], addrs[i], now); r != "" {
			panic(r)
		}
	}
	after := heapAfterGC()
	runtime.KeepAlive(ids)
	runtime.KeepAlive(conns)
	runtime.KeepAlive(addrs)
	runtime.KeepAlive(s)
	return float64(after-before) / float64(n)
}

func heapAfterGC() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// The sweep over 100,000 reservations, for the cost quoted in Store.Sweep.
func BenchmarkStoreSweep(b *testing.B) {
	s := NewStore[*fakeConn](Config{MaxReservations: -1, MaxReservationsPerSource: -1})
	now := time.Now()
	for i := range 100_000 {
		var id [38]byte
		binary.LittleEndian.PutUint64(id[6:], uint64(i))
		s.Reserve(peer.ID(id[:]), nil, netip.MustParseAddr("10.0.0.1"), now)
	}
	b.ResetTimer()
	for range b.N {
		if s.Sweep(now) != 0 {
			b.Fatal("swept a live reservation")
		}
	}
}
