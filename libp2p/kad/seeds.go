package kad

import (
	"context"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/libp2p"
)

// Seed backoff: a fleet member that is down is retried soon at first, then
// no more than every few minutes, and at once again after a connection
// that lasted.
const (
	seedBackoffMin = time.Second
	seedBackoffMax = 5 * time.Minute
	// seedDialTimeout bounds one dial (TCP, TLS, WebSocket, Noise, yamux).
	seedDialTimeout = 30 * time.Second
)

// KeepConnected dials each seed (a /ws or /tls/ws multiaddr ending in
// /p2p/ID) and keeps a connection to it until ctx ends, redialling with
// backoff when it closes or a dial fails: fleet members that seed each
// other learn each other as DHT servers through the identify every
// connection gets. One goroutine per seed, sleeping between dials.
func (r *Role) KeepConnected(ctx context.Context, seeds []ma.Multiaddr, log *slog.Logger) error {
	ids := make([]peer.ID, len(seeds))
	for i, s := range seeds {
		id, err := peer.IDFromP2PAddr(s)
		if err != nil {
			return err // the seed must name its peer: we check whom we reach
		}
		ids[i] = id
	}
	for i, s := range seeds {
		go r.keep(ctx, s, ids[i], log)
	}
	return nil
}

func (r *Role) keep(ctx context.Context, addr ma.Multiaddr, id peer.ID, log *slog.Logger) {
	backoff := seedBackoffMin
	for ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, seedDialTimeout)
		pc, err := r.host.Dial(dctx, addr, libp2p.DialOptions{Expect: id})
		cancel()
		if err != nil {
			log.Warn("DHT seed unreachable; retrying", "seed", addr.String(), "in", backoff.String(), "err", err)
		} else {
			start := time.Now()
			r.waitClosed(ctx, pc)
			if time.Since(start) > seedBackoffMax {
				backoff = seedBackoffMin // it lasted: the next failure starts over
			}
			log.Info("DHT seed connection ended; redialling", "seed", addr.String(), "in", backoff.String())
		}
		select {
		case <-ctx.Done():
			if err == nil {
				pc.Do(pc.Close)
			}
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, seedBackoffMax)
	}
}

// waitClosed returns when pc has ended (the role's Closed notification) or
// ctx is done.
func (r *Role) waitClosed(ctx context.Context, pc *libp2p.PeerConn) {
	done := make(chan struct{})
	r.waiters.Store(pc, done)
	defer r.waiters.Delete(pc)
	if !pc.Do(func() {}) {
		return // it ended before we started waiting
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}
