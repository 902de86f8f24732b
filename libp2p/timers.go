package libp2p

import (
	"slices"
	"time"
)

// A Timer is a deadline of one stream's protocol (a ping stream's idle
// limit, a request's timeout, a circuit's duration). It lives in its
// connection's list and fires from the connection's Tick on the engine's
// timer wheel, with the connection's lock held: no runtime timer, no
// goroutine, and the connection keeps one wheel entry however many it has.
type Timer struct {
	at   time.Time
	fire func()
}

// After runs fire d from now, with the connection's lock held (fire must
// not block). Call it from a callback or inside Do.
func (pc *PeerConn) After(d time.Duration, fire func()) *Timer {
	t := &Timer{at: pc.c.Now().Add(d), fire: fire}
	pc.timers = append(pc.timers, t)
	pc.schedule()
	return t
}

// ResetTimer moves t to d from now, arming it again if it fired or was
// stopped.
func (pc *PeerConn) ResetTimer(t *Timer, d time.Duration) {
	t.at = pc.c.Now().Add(d)
	if !slices.Contains(pc.timers, t) {
		pc.timers = append(pc.timers, t)
	}
	pc.schedule()
}

// StopTimer cancels t; stopping a fired or stopped timer does nothing.
func (pc *PeerConn) StopTimer(t *Timer) {
	for i, x := range pc.timers {
		if x == t {
			last := len(pc.timers) - 1
			pc.timers[i] = pc.timers[last]
			pc.timers[last] = nil
			pc.timers = pc.timers[:last]
			break
		}
	}
	if len(pc.timers) == 0 {
		pc.timers = nil
	}
}

// Now is the engine's clock, the one timers run on.
func (pc *PeerConn) Now() time.Time { return pc.c.Now() }
