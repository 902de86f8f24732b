package relay

import (
	"testing"
	"time"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/testutil"
)

// BenchmarkReservationEndToEnd measures what a reservation costs the relay
// process beyond its connection, through the real path (hop stream,
// voucher, store, close notification): n clients connect, the heap is
// measured after GC, they all reserve, and it is measured again. The
// clients live in the same process, but hold nothing once their exchange
// is done, so the difference is the relay's.
//
//	flock /tmp/swarmgate-bench.lock go test -run x -bench ReservationEndToEnd -benchtime 1x ./libp2p/relay/
func BenchmarkReservationEndToEnd(b *testing.B) {
	const n = 2000
	for range b.N {
		tr := startRelay(b, Config{}, nil)
		e := engine.New(engine.Config{Logger: testutil.Quiet})
		clients := make([]*client, n)
		for i := range clients {
			clients[i] = tr.dialOn(e)
		}
		time.Sleep(200 * time.Millisecond) // identify-free, but let handshakes settle
		before := heapAfterGC()
		for _, c := range clients {
			if _, err := c.reserve(); err != nil {
				b.Fatal(err)
			}
		}
		time.Sleep(200 * time.Millisecond) // the hop streams' FINs
		after := heapAfterGC()
		if tr.relay.svc.store.Len() != n {
			b.Fatalf("%d reservations", tr.relay.svc.store.Len())
		}
		b.ReportMetric(float64(int64(after)-int64(before))/n, "B/reservation")
		e.Close()
	}
}
