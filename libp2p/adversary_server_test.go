package libp2p

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// The server side of the adversarial tests (internal/adversary is the
// client side): the server's connection to a peer, what its share holds,
// and peaks sampled while an attack runs.

// serverConn is the server's connection to peer id, nil when there is
// none (not muxed yet, or gone).
func serverConn(h *Host, id peer.ID) *PeerConn {
	if cs := h.ConnsToPeer(id); len(cs) > 0 {
		return cs[0]
	}
	return nil
}

// connUsed is what a server connection's share holds now.
func connUsed(pc *PeerConn) int64 {
	var used int64
	pc.Do(func() { used = pc.c.Memory().Used() })
	return used
}

// peakMeter samples, every millisecond while an attack runs, the
// server's accounted memory (the system budget) and, for each watched
// connection, what its share holds and the read-ahead it allows
// (InboundAllowance). Each connection has a sampler of its own: a
// connection whose flush waits for a peer that does not read holds its
// lock meanwhile, and must not stall the others' samples.
type peakMeter struct {
	stop      chan struct{}
	wg        sync.WaitGroup
	system    int64
	conn      []int64
	allowance []int
}

func meterPeaks(h *Host, pcs ...*PeerConn) *peakMeter {
	m := &peakMeter{stop: make(chan struct{}), conn: make([]int64, len(pcs)), allowance: make([]int, len(pcs))}
	sample := func(f func()) {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for {
				f()
				select {
				case <-m.stop:
					return
				case <-tick.C:
				}
			}
		}()
	}
	sample(func() { m.system = max(m.system, h.Engine().Memory().Used()) })
	for i, pc := range pcs {
		sample(func() {
			pc.Do(func() {
				m.conn[i] = max(m.conn[i], pc.c.Memory().Used())
				m.allowance[i] = max(m.allowance[i], pc.InboundAllowance())
			})
		})
	}
	return m
}

// finish stops sampling; the peaks are then in system, conn and allowance.
func (m *peakMeter) finish() {
	close(m.stop)
	m.wg.Wait()
}
