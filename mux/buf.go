package mux

import "github.com/swarmgate/swarmgate/internal/bufpool"

// Buffers come from bufpool's fixed classes so that sessions drop them when
// drained (an idle connection holds no large buffer) and get them back
// without allocating; the largest class is InitialWindow. A buffer larger
// than that (a receive buffer of an auto-tuned window) is allocated and left
// to the GC.
const classLarge = bufpool.Large

// Meter is what a session's buffers are charged to: the connection's share
// of the memory a peer may make the server hold (admission's connection
// scope). Reserve and Release are bufpool.Meter's; Charge takes bytes
// whether or not they fit (for buffers the session cannot do without, each
// bounded by its own limit); Available is what Reserve could still take.
type Meter interface {
	bufpool.Meter
	Charge(n int)
	Available() int
}

// queue is a FIFO byte buffer: bytes live in b[off:]. It holds no memory
// while empty. When a Meter is given, the buffer's capacity is charged to
// it while the queue holds it.
type queue struct {
	b   []byte
	off int
}

func (q *queue) len() int      { return len(q.b) - q.off }
func (q *queue) bytes() []byte { return q.b[q.off:] }
func (q *queue) empty() bool   { return q.off == len(q.b) }

// reserve makes room for n more bytes, compacting or moving to a larger
// class. It returns the offset shift applied to existing bytes (bytes that
// were at index i are now at i-shift) and false, changing nothing, when a
// larger buffer is needed and refuse is set and m refuses it (without
// refuse, m is charged regardless).
func (q *queue) reserve(n int, m Meter, refuse bool) (shift int, ok bool) {
	if cap(q.b)-len(q.b) >= n {
		return 0, true
	}
	live := q.len()
	if q.b != nil && cap(q.b)-live >= n {
		copy(q.b, q.b[q.off:])
		shift = q.off
		q.b = q.b[:live]
		q.off = 0
		return shift, true
	}
	need := live + n
	if need > classLarge {
		// Beyond the pooled classes (an auto-tuned receive window, a
		// large MaxOutput), grow geometrically to keep appends linear.
		need = max(need, 2*cap(q.b))
	}
	if m != nil {
		c := bufpool.Class(need)
		if refuse {
			if !m.Reserve(c) {
				return 0, false
			}
		} else {
			m.Charge(c)
		}
	}
	nb := bufpool.Get(need)
	nb = append(nb, q.b[q.off:]...)
	if q.b != nil {
		if m != nil {
			m.Release(cap(q.b))
		}
		bufpool.Put(q.b)
	}
	shift = q.off
	q.b, q.off = nb, 0
	return shift, true
}

// write appends p, charging m regardless (room must have been reserved or
// is reserved here).
func (q *queue) write(p []byte, m Meter) {
	q.reserve(len(p), m, false)
	q.b = append(q.b, p...)
}

// discard drops n bytes from the front and releases the buffer when empty.
func (q *queue) discard(n int, m Meter) {
	q.off += n
	if q.off == len(q.b) {
		q.release(m)
	}
}

// release returns the buffer to its pool and its charge to m.
func (q *queue) release(m Meter) {
	if q.b != nil {
		if m != nil {
			m.Release(cap(q.b))
		}
		bufpool.Put(q.b)
	}
	q.b, q.off = nil, 0
}
