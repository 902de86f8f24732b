package engine

import (
	"runtime"
	"sync"
	"time"
)

// wheel is the engine's one timer: a hashed wheel of slots that each hold an
// intrusive list of connections with a deadline. A connection with a deadline
// costs three words in its own struct and no runtime timer or goroutine, so a
// million idle connections with keepalive deadlines cost one ticking
// goroutine. Resolution is one tick; deadlines fire late by at most a tick.
//
// Instants are the engine's mono nanoseconds (Engine.mono), so a wall-clock
// step moves no deadline. A connection moves its deadline later without the
// wheel (Conn.setDeadlineAt): the wheel fires at the instant it was filed
// for and the connection files itself again, so the read path, which moves
// the keepalive deadline on every read, never takes the wheel's lock.
//
// Fired deadlines run on a few long-lived workers, not on a goroutine each:
// a deadline handler takes the connection's lock, which a flush to a slow
// peer may hold for up to WriteTimeout, so the wheel never runs them itself.
// When every worker is busy (that many slow flushes at once) a fired
// deadline gets a goroutine of its own rather than wait.
type wheel struct {
	mu     sync.Mutex
	slots  []*Conn // heads of the per-slot lists
	tick   int64   // nanoseconds
	cursor int64   // last processed tick number
	now    func() int64
	lag    *tickLag
	work   chan *Conn
	stop   chan struct{}
	done   chan struct{}
}

const (
	wheelSlots = 512
	// wheelQueue is how many fired deadlines may wait for a worker.
	wheelQueue = 4096
)

func newWheel(tick time.Duration, now func() int64, lag *tickLag) *wheel {
	w := &wheel{
		lag:   lag,
		slots: make([]*Conn, wheelSlots),
		tick:  int64(tick),
		now:   now,
		work:  make(chan *Conn, wheelQueue),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	w.cursor = w.now() / w.tick
	for range max(runtime.GOMAXPROCS(0), 2) {
		go w.worker()
	}
	go w.run()
	return w
}

// schedule files c at mono instant at, replacing where it was filed; 0
// unlinks it. Connections call it with their own lock held.
func (w *wheel) schedule(c *Conn, at int64) {
	w.mu.Lock()
	w.unlink(c)
	if at != 0 {
		c.twhen = at
		// File under the first tick at or after the deadline: a slot is
		// visited once per revolution, so it must never be visited early.
		t := (at + w.tick - 1) / w.tick
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
	t := time.NewTicker(time.Duration(w.tick))
	defer t.Stop()
	var due []*Conn
	for {
		select {
		case <-w.stop:
			close(w.work)
			return
		case at := <-t.C:
			w.lag.observe(at, time.Now()) // the ticker sends the due time
		}
		now := w.now()
		w.mu.Lock()
		end := now / w.tick
		if end-w.cursor > wheelSlots {
			w.cursor = end - wheelSlots
		}
		for ; w.cursor < end; w.cursor++ {
			s := int((w.cursor + 1) % wheelSlots)
			for c := w.slots[s]; c != nil; {
				next := c.tnext
				if c.twhen <= now {
					w.unlink(c)
					due = append(due, c)
				}
				c = next
			}
		}
		w.mu.Unlock()
		for i, c := range due {
			select {
			case w.work <- c:
			default:
				go fire(c) // every worker is waiting on a slow peer
			}
			due[i] = nil
		}
		due = due[:0]
	}
}

func (w *wheel) worker() {
	for c := range w.work {
		fire(c)
	}
}

// fire runs c's deadline handler with its lock held.
func fire(c *Conn) {
	c.lock()
	c.onDeadline()
	c.unlock()
}

func (w *wheel) close() {
	close(w.stop)
	<-w.done
}
