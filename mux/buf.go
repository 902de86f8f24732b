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
// buffer of at most ceil bytes when ceil > 0 (a receive buffer never holds
// more than the window credit its stream granted). It returns the offset
// shift applied to existing bytes (bytes that were at index i are now at
// i-shift). With keep < 0, m is charged regardless; otherwise a larger
// buffer must fit m with keep bytes left over, or reserve returns false
// and changes nothing.
//
// A move is charged as the difference between the new buffer and the old,
// which is released as soon as its bytes are copied: the meter counts what
// the queue holds.
func (q *queue) reserve(n int, m Meter, keep int64, ceil int) (shift int, ok bool) {
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
		// large MaxOutput), grow geometrically to keep appends linear,
		// within the ceiling.
		grown := 2 * cap(q.b)
		if ceil > 0 {
			grown = min(grown, ceil)
		}
		need = max(need, grown)
	}
	if m != nil {
		delta := bufpool.Class(need) - cap(q.b)
		if keep < 0 {
			m.Charge(delta)
		} else if int64(m.Available())-keep < int64(delta) || !m.Reserve(delta) {
			return 0, false
		}
	}
	nb := bufpool.Get(need)
	nb = append(nb, q.b[q.off:]...)
	if q.b != nil {
		bufpool.Put(q.b)
	}
	shift = q.off
	q.b, q.off = nb, 0
	return shift, true
}

// write appends p, charging m regardless (room must have been reserved or
// is reserved here).
func (q *queue) write(p []byte, m Meter) {
	q.reserve(len(p), m, -1, 0)
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

// segq is the data queue: a FIFO of pooled segments that no frame
// straddles, so appending never moves queued bytes (no compaction, no
// growth copy) and the consumer takes frames from the head segment where
// they lie (Session.NextOutput). A segment is sized by the frame that
// starts it: the small class for small writes, one 64 KiB class for a full
// Data frame. Each segment's class is charged to the meter while queued.
type segq struct {
	segs [][]byte // live bytes: segs[0][off:], then segs[1:] whole
	off  int
	n    int
}

func (q *segq) len() int { return q.n }

// charged is the capacity of the segments held: what the meter was
// charged for them.
func (q *segq) charged() int {
	c := 0
	for _, b := range q.segs {
		c += cap(b)
	}
	return c
}
func (q *segq) empty() bool { return q.n == 0 }

// head is the live bytes of the first segment.
func (q *segq) head() []byte {
	if len(q.segs) == 0 {
		return nil
	}
	return q.segs[0][q.off:]
}

// tailRoom is what the last segment can still take.
func (q *segq) tailRoom() int {
	if len(q.segs) == 0 {
		return 0
	}
	t := q.segs[len(q.segs)-1]
	return cap(t) - len(t)
}

// tailLen is the length of the last segment (where the next byte goes).
func (q *segq) tailLen() int {
	if len(q.segs) == 0 {
		return 0
	}
	return len(q.segs[len(q.segs)-1])
}

// onlySegment reports whether the tail is also the head.
func (q *segq) onlySegment() bool { return len(q.segs) == 1 }

// grow starts a segment with room for at least n bytes, charged to m
// regardless (the data queue is bounded by MaxOutput).
func (q *segq) grow(n int, m Meter) {
	if m != nil {
		m.Charge(bufpool.Class(n))
	}
	q.segs = append(q.segs, bufpool.Get(n))
}

// write appends p to the last segment, which must have room.
func (q *segq) write(p []byte) {
	t := &q.segs[len(q.segs)-1]
	*t = append(*t, p...)
	q.n += len(p)
}

// tail returns the last segment, for patching a header written in it.
func (q *segq) tail() []byte { return q.segs[len(q.segs)-1] }

// discard drops k bytes from the front, returning each segment emptied.
func (q *segq) discard(k int, m Meter) {
	q.off += k
	q.n -= k
	for len(q.segs) > 0 && q.off == len(q.segs[0]) && (len(q.segs) > 1 || q.n == 0) {
		q.drop(m)
	}
}

// drop returns the head segment.
func (q *segq) drop(m Meter) {
	b := q.segs[0]
	if m != nil {
		m.Release(cap(b))
	}
	bufpool.Put(b)
	copy(q.segs, q.segs[1:])
	q.segs[len(q.segs)-1] = nil
	q.segs = q.segs[:len(q.segs)-1]
	q.off = 0
	if len(q.segs) == 0 {
		q.segs = nil // an idle session keeps no segment list
	}
}

// truncate keeps only the next k bytes of the head segment.
func (q *segq) truncate(k int, m Meter) {
	for len(q.segs) > 1 {
		last := q.segs[len(q.segs)-1]
		if m != nil {
			m.Release(cap(last))
		}
		bufpool.Put(last)
		q.segs[len(q.segs)-1] = nil
		q.segs = q.segs[:len(q.segs)-1]
	}
	if len(q.segs) == 1 {
		q.segs[0] = q.segs[0][:q.off+k]
	}
	q.n = k
	if k == 0 {
		q.release(m)
	}
}

// release returns every segment.
func (q *segq) release(m Meter) {
	for len(q.segs) > 0 {
		q.off = len(q.segs[0])
		q.drop(m)
	}
	q.off, q.n = 0, 0
}
