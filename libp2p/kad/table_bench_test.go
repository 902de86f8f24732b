package kad

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgate/swarmgate/libp2p/kad/pb"
)

// Run under the machine-wide lock:
//
//	flock /tmp/swarmgate-bench.lock go test -run x -bench Table -benchmem ./libp2p/kad/

// benchAddrs are address sets a table entry holds: one WebSocket address,
// and a typical public DHT server's four (TCP and QUIC over IPv4 and IPv6).
var benchAddrs = map[string][]ma.Multiaddr{
	"1addr": {ma.StringCast("/ip4/203.0.113.7/tcp/4001/ws")},
	"4addrs": {
		ma.StringCast("/ip4/203.0.113.7/tcp/4001"),
		ma.StringCast("/ip4/203.0.113.7/udp/4001/quic-v1"),
		ma.StringCast("/ip6/2001:db8::7/tcp/4001"),
		ma.StringCast("/ip6/2001:db8::7/udp/4001/quic-v1"),
	},
}

func benchPeers(n int, addrs []ma.Multiaddr) ([]peer.ID, [][]byte) {
	r := rand.New(rand.NewPCG(uint64(n), 9))
	ids := make([]peer.ID, n)
	for i := range ids {
		ids[i] = randomID(r)
	}
	raw := make([][]byte, len(addrs))
	for i, a := range addrs {
		raw[i] = a.Bytes()
	}
	return ids, raw
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkTableMemory reports the heap a table holds per entry (B/entry):
// the heap after GC with the table built, minus the heap after GC before,
// over the number of entries. The peer IDs and addresses passed in exist
// before and are not counted; what the table keeps of them (the record) is.
func BenchmarkTableMemory(b *testing.B) {
	for _, n := range []int{15_000, 100_000} {
		for _, name := range []string{"1addr", "4addrs"} {
			b.Run(fmt.Sprintf("n=%d/%s", n, name), func(b *testing.B) {
				ids, raw := benchPeers(n, benchAddrs[name])
				var perEntry float64
				for b.Loop() {
					before := heapAlloc()
					tb := NewTable(0)
					for _, id := range ids {
						if _, err := tb.Connect(id, raw); err != nil {
							b.Fatal(err)
						}
					}
					after := heapAlloc()
					perEntry = float64(after-before) / float64(n)
					runtime.KeepAlive(tb)
				}
				b.ReportMetric(perEntry, "B/entry")
				runtime.KeepAlive(ids)
			})
		}
	}
}

// BenchmarkTableClosest is one Closest(k=20) at random targets, excluding
// the requester and ourselves as FIND_NODE does; parallel runs it from
// every core at once (read lock only).
func BenchmarkTableClosest(b *testing.B) {
	for _, n := range []int{15_000, 100_000} {
		ids, raw := benchPeers(n, benchAddrs["1addr"])
		tb := NewTable(0)
		for _, id := range ids {
			tb.Connect(id, raw)
		}
		r := rand.New(rand.NewPCG(1, 1))
		targets := make([]Key, 1024)
		for i := range targets {
			targets[i] = randomKey(r)
		}
		exclude := []Key{PeerKey(ids[0]), randomKey(r)}
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			var dst []record
			i := 0
			for b.Loop() {
				dst = tb.closestRecords(&targets[i%len(targets)], 20, dst[:0], exclude)
				i++
			}
		})
		b.Run(fmt.Sprintf("n=%d/parallel", n), func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				var dst []record
				i := 0
				for pb.Next() {
					dst = tb.closestRecords(&targets[i%len(targets)], 20, dst[:0], exclude)
					i++
				}
			})
		})
		b.Run(fmt.Sprintf("n=%d/entries", n), func(b *testing.B) {
			var dst []Entry
			i := 0
			for b.Loop() {
				dst = tb.Closest(targets[i%len(targets)], 20, dst[:0], exclude...)
				i++
			}
		})
	}
}

// BenchmarkTableChurn is a connect and a remove of one peer in a table of
// 100,000: the write-lock hold time identify and sweeps cost.
func BenchmarkTableChurn(b *testing.B) {
	ids, raw := benchPeers(100_000, benchAddrs["4addrs"])
	tb := NewTable(0)
	for _, id := range ids[1:] {
		tb.Connect(id, raw)
	}
	for b.Loop() {
		tb.Connect(ids[0], raw)
		tb.Remove(ids[0])
	}
}

// BenchmarkServeFindNode is one FIND_NODE as the stream handler serves it
// at 100,000 entries: decode the request, find the 20 closest, encode the
// reply (1 address per entry).
func BenchmarkServeFindNode(b *testing.B) {
	ids, raw := benchPeers(100_000, benchAddrs["1addr"])
	s := NewServer(Config{Self: ids[0], AddrFilter: AddrsAll})
	for _, id := range ids[1:] {
		s.Table().Connect(id, raw)
	}
	r := rand.New(rand.NewPCG(2, 2))
	reqs := make([][]byte, 256)
	for i := range reqs {
		k := make([]byte, 38)
		for j := range k {
			k[j] = byte(r.Uint32())
		}
		b, _ := proto.Marshal(&pb.Message{Type: pb.Message_FIND_NODE, Key: k, ClusterLevelRaw: 1})
		reqs[i] = b
	}
	p := NewPeer(ids[1])
	var clock fixedClock
	var size int
	i := 0
	for b.Loop() {
		resp, err := s.serve(nil, reqs[i%len(reqs)], p, clock.now, clock)
		if err != nil {
			b.Fatal(err)
		}
		size = len(resp)
		i++
	}
	b.ReportMetric(float64(size), "B/reply")
}

type fixedClock struct{ now time.Time }

func (c fixedClock) Now() time.Time { return c.now }
