package libp2p

import (
	"time"
)

// A streamTimer is a deadline of one stream's protocol (a ping stream's
// idle limit, a request's timeout). It lives in its connection's list and
// fires from the connection's Tick on the engine's timer wheel, with the
// connection's lock held: no runtime timer, no goroutine.
type streamTimer struct {
	at   time.Time
	fire func()
}

// after schedules fire to run d from now, from a callback.
func (pc *PeerConn) after(d time.Duration, fire func()) *streamTimer {
	t := &streamTimer{at: pc.c.Now().Add(d), fire: fire}
	pc.timers = append(pc.timers, t)
	pc.schedule()
	return t
}

// resetTimer moves t to d from now.
func (pc *PeerConn) resetTimer(t *streamTimer, d time.Duration) {
	t.at = pc.c.Now().Add(d)
	pc.schedule()
}

// stopTimer cancels t; stopping a fired or stopped timer does nothing.
func (pc *PeerConn) stopTimer(t *streamTimer) {
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
