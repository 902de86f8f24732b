package engine

import (
	"sync"
	"time"
)

// wheel is the engine's one timer: a hashed wheel of slots that each hold an
// intrusive list of connections with a deadline. A connection with a deadline
// costs three words in its own struct and no runtime timer or goroutine, so a
// million idle connections with keepalive deadlines cost one ticking
// goroutine. Resolution is one tick; deadlines fire late by at most a tick.
type wheel struct {
	mu     sync.Mutex
	slots  []*Conn // heads of the per-slot lists
	tick   time.Duration
	cursor int64 // last processed tick number
	now    func() time.Time
	lag    *tickLag
	stop   chan struct{}
	done   chan struct{}
}

const wheelSlots = 512

func newWheel(tick time.Duration, now func() time.Time, lag *tickLag) *wheel {
	w := &wheel{
		lag:   lag,
		slots: make([]*Conn, wheelSlots),
		tick:  tick,
		now:   now,
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	w.cursor = w.tickOf(now())
	go w.run()
	return w
}

func (w *wheel) tickOf(t time.Time) int64 { return t.UnixNano() / int64(w.tick) }

// schedule sets c's deadline, replacing any earlier one. The zero time
// cancels it.
func (w *wheel) schedule(c *Conn, at time.Time) {
	w.mu.Lock()
	w.unlink(c)
	if !at.IsZero() {
		c.twhen = at.UnixNano()
		// File under the first tick at or after the deadline: a slot is
		// visited once per revolution, so it must never be visited early.
		t := (c.twhen + int64(w.tick) - 1) / int64(w.tick)
		if t <= w.cursor {
			t = w.cursor + 1
		}
		s := int(t % wheelSlots)
		c.tslot = int32(s)
		c.tnext = w.slots[s]
		if c.tnext != nil {
			c.tnext.tprev = c
		}
		w.slots[s] = c
	}
	w.mu.Unlock()
}

func (w *wheel) unlink(c *Conn) {
	if c.twhen == 0 {
		return
	}
	if c.tprev != nil {
		c.tprev.tnext = c.tnext
	} else {
		w.slots[c.tslot] = c.tnext
	}
	if c.tnext != nil {
		c.tnext.tprev = c.tprev
	}
	c.tprev, c.tnext, c.twhen = nil, nil, 0
}

func (w *wheel) run() {
	defer close(w.done)
	t := time.NewTicker(w.tick)
	defer t.Stop()
	var due []*Conn
	for {
		select {
		case <-w.stop:
			return
		case due := <-t.C:
			w.lag.observe(due, time.Now()) // the ticker sends the due time
		}
		now := w.now()
		nowNano := now.UnixNano()
		w.mu.Lock()
		end := w.tickOf(now)
		if end-w.cursor > wheelSlots {
			w.cursor = end - wheelSlots
		}
		for ; w.cursor < end; w.cursor++ {
			s := int((w.cursor + 1) % wheelSlots)
			for c := w.slots[s]; c != nil; {
				next := c.tnext
				if c.twhen <= nowNano {
					w.unlink(c)
					due = append(due, c)
				}
				c = next
			}
		}
		w.mu.Unlock()
		for i, c := range due {
			// A deadline handler takes the connection's lock, which a flush
			// to a slow peer may hold: never make the wheel wait for it.
			go c.onDeadline()
			due[i] = nil
		}
		due = due[:0]
	}
}

func (w *wheel) close() {
	close(w.stop)
	<-w.done
}
