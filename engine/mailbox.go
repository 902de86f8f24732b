package engine

import (
	"sync"
	"sync/atomic"
)

// Cross-connection work: a connection's mailbox.
//
// A callback runs with its own connection's lock held and must never take
// another connection's lock: two callbacks on two netpoll workers, each
// holding its own lock and waiting for the other's, would deadlock (and a
// connection's lock may be held for up to WriteTimeout by a flush to a slow
// peer). Code that must act on another connection (a circuit relay writing
// bytes from one connection's stream into another's) posts a function to
// that connection's mailbox instead. Conn.Post never waits for any lock
// but the mailbox's own, which is a leaf: nothing else is ever taken while
// it is held.
//
// Who runs a posted function:
//   - if a goroutine holds the target's lock through lock() (a read
//     callback, a deadline, Do, another posted batch), it runs the mailbox
//     in unlock, before it releases the lock: a chunk relayed between two
//     busy connections costs no goroutine;
//   - otherwise Post starts one goroutine that takes the lock and runs the
//     mailbox (the target is idle, or in a locked section that does not
//     drain, such as accept and dial setup); further posts meanwhile ride
//     on that goroutine.
//
// The state word makes the hand-over race-free:
//
//	mbHeld    set by lock() once the lock is taken, cleared by unlock()
//	          with a CAS that fails while mbPending is set
//	mbPending set by Post when it queued work that nobody has promised to
//	          run; cleared by the runner right before it takes the queue
//
// Post sets mbPending only on a 0→1 transition, and starts a goroutine only
// if mbHeld was clear at that moment; a holder's unlock loops until it sees
// mbPending clear and clears mbHeld in the same CAS, so a function queued
// before that CAS is run by the holder and one queued after it finds
// mbHeld clear.
type mailbox struct {
	state atomic.Uint32
	// box holds the queue; allocated by the first Post, so a connection
	// that is never posted to pays only these two words.
	box atomic.Pointer[postQueue]
}

const (
	mbHeld uint32 = 1 << iota
	mbPending
)

// postQueue is the mailbox's queue of functions, in posting order.
type postQueue struct {
	mu sync.Mutex // leaf lock
	q  []func(*Conn)
}

// maxKeptQueue is the largest queue capacity kept for reuse once drained;
// a burst beyond it is let go, so an idle connection keeps at most this
// many slots.
const maxKeptQueue = 16

func (m *mailbox) queue() *postQueue {
	if b := m.box.Load(); b != nil {
		return b
	}
	m.box.CompareAndSwap(nil, &postQueue{})
	return m.box.Load()
}

// post queues f and reports whether the caller must start a runner.
func (m *mailbox) post(f func(*Conn)) (spawn bool) {
	b := m.queue()
	b.mu.Lock()
	b.q = append(b.q, f)
	b.mu.Unlock()
	for {
		s := m.state.Load()
		if s&mbPending != 0 {
			return false // a holder or a started runner will see it
		}
		if m.state.CompareAndSwap(s, s|mbPending) {
			return s&mbHeld == 0
		}
	}
}

// take returns the queued functions, or nil when the holder may release
// the lock (mbHeld is then cleared).
func (m *mailbox) take() []func(*Conn) {
	for {
		s := m.state.Load()
		if s&mbPending == 0 {
			if m.state.CompareAndSwap(s, s&^mbHeld) {
				return nil
			}
			continue
		}
		m.state.And(^mbPending)
		b := m.box.Load() // set before mbPending was
		b.mu.Lock()
		q := b.q
		b.q = nil
		b.mu.Unlock()
		if len(q) > 0 {
			return q
		}
	}
}

// recycle offers a drained queue's array back for the next posts.
func (m *mailbox) recycle(q []func(*Conn)) {
	if cap(q) > maxKeptQueue {
		return
	}
	clear(q)
	b := m.box.Load()
	b.mu.Lock()
	if b.q == nil {
		b.q = q[:0]
	}
	b.mu.Unlock()
}

// lock takes the connection's lock and promises to run its mailbox before
// releasing it (unlock).
func (c *Conn) lock() {
	c.mu.Lock()
	c.mbox.state.Or(mbHeld)
}

// runMailbox runs posted functions until none is left. Called with the lock
// held, right before it is released; a closed connection still runs them
// (Post's contract) but flushes nothing.
func (c *Conn) runMailbox() {
	for {
		q := c.mbox.take()
		if q == nil {
			return
		}
		for _, f := range q {
			f(c)
		}
		if c.state != stateClosed {
			c.flush()
		}
		c.mbox.recycle(q)
	}
}

// Post runs f with the connection's lock held, as a callback would, and
// then flushes; it returns at once, without waiting for any connection's
// lock. It is the way to act on a connection from a callback of another
// one (see mailbox). f runs exactly once, after every function posted
// before it (posts to one connection run in order), either right after the
// current holder of the lock finishes its callback or on a goroutine Post
// starts when the connection is idle. f also runs when the connection has
// closed meanwhile, so the poster always hears back: f must check (a
// stream's state, Closed) before it writes. Safe from any goroutine,
// including callbacks of this or another connection.
func (c *Conn) Post(f func(*Conn)) {
	if c.mbox.post(f) {
		go func() {
			c.lock()
			c.unlock()
		}()
	}
}

// Closed reports whether the connection has ended. Call it with the lock
// held (in a callback or a posted function).
func (c *Conn) Closed() bool { return c.state == stateClosed }
