package mux

import "github.com/swarmgate/swarmgate/internal/bufpool"

// Buffers come from bufpool's fixed classes so that sessions drop them when
// drained (an idle connection holds no large buffer) and get them back
// without allocating; the largest class is InitialWindow. A buffer larger
// than that (a receive buffer of an auto-tuned window) is allocated and left
// to the GC.
const classLarge = bufpool.Large

// queue is a FIFO byte buffer: bytes live in b[off:]. It holds no memory
// while empty.
type queue struct {
	b   []byte
	off int
}

func (q *queue) len() int      { return len(q.b) - q.off }
func (q *queue) bytes() []byte { return q.b[q.off:] }
func (q *queue) empty() bool   { return q.off == len(q.b) }

// reserve makes room for n more bytes, compacting or moving to a larger
// class. It returns the offset shift applied to existing bytes (bytes that
// were at index i are now at i-shift).
func (q *queue) reserve(n int) (shift int) {
	if cap(q.b)-len(q.b) >= n {
		return 0
	}
	live := q.len()
	if q.b != nil && cap(q.b)-live >= n {
		copy(q.b, q.b[q.off:])
		shift = q.off
		q.b = q.b[:live]
		q.off = 0
		return shift
	}
	need := live + n
	if need > classLarge {
		// Beyond the pooled classes (an auto-tuned receive window, a
		// large MaxOutput), grow geometrically to keep appends linear.
		need = max(need, 2*cap(q.b))
	}
	nb := bufpool.Get(need)
	nb = append(nb, q.b[q.off:]...)
	if q.b != nil {
		bufpool.Put(q.b)
	}
	shift = q.off
	q.b, q.off = nb, 0
	return shift
}

// write appends p (room must have been reserved or is reserved here).
func (q *queue) write(p []byte) {
	q.reserve(len(p))
	q.b = append(q.b, p...)
}

// discard drops n bytes from the front and releases the buffer when empty.
func (q *queue) discard(n int) {
	q.off += n
	if q.off == len(q.b) {
		q.release()
	}
}

// release returns the buffer to its pool.
func (q *queue) release() {
	if q.b != nil {
		bufpool.Put(q.b)
	}
	q.b, q.off = nil, 0
}
