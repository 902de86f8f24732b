package relay

import (
	"sync"
	"sync/atomic"

	"github.com/swarmgate/swarmgate/mux"
)

// The splice: a circuit joins the source's hop stream (half a, on the
// source's connection) and the destination's stop stream (half b, on the
// destination's connection). The two streams belong to two connections,
// whose callbacks run under two different locks, possibly on two netpoll
// workers at once. A half's fields are touched only under its own
// connection's lock; work for the other half is posted to the other
// connection (poster.Post, the engine's per-connection mailbox), never done
// by taking its lock. So no code ever holds two connection locks, and
// there is no lock order to get wrong.
//
// One direction, a → b (b → a is the mirror):
//
//	a.OnData(p)                     under A's lock
//	  limit check (total received on a > Limit.Data: kill, see below)
//	  in flight already? return 0   bytes stay in a's receive buffer:
//	                                yamux stops the sender at its window
//	  copy ≤ ChunkSize of p into a pooled chunk, hand it to b
//	  (b.incoming), Post(b.deliver); return what was copied
//	b.deliver                       under B's lock
//	  write the chunk into b's stream; a short write (mux.ErrWouldBlock:
//	  the destination's window or B's output queue is full) keeps the
//	  rest and waits for b.OnWritable
//	  chunk written whole: release it, Post(a.resume)
//	a.resume                        under A's lock
//	  take the next bytes a buffered meanwhile (Peek/Discard), or forward
//	  a's FIN once a's buffer is empty: Post(b.closeWrite)
//
// So per direction at most one chunk is in flight (ChunkSize, under one
// window), nothing is copied but into the chunk and from it into the
// output queue, a circuit that moves nothing holds no buffer, and a slow
// reader on one side slows the sender on the other through both yamux
// windows. The chunk's hand-over is ordered by the mailbox's mutex: the
// reader writes b.incoming before Post, the writer reads it in deliver.
//
// A circuit's lifecycle:
//
//	live ──both FINs forwarded──────────────────────────▶ ended (closed)
//	  └──reset by a side, its connection ended, a write
//	     failed, Limit.Data or Limit.Duration passed ──▶ ended (kill):
//	                        each half resets its stream under its own lock
//
// Data limit, at the byte: each direction is counted on its own (as
// go-libp2p counts), over every byte received on the half's stream after
// the splice (bytes the source sent behind its CONNECT included). Up to
// Limit.Data bytes per direction are relayed; a transfer of exactly
// Limit.Data bytes and a FIN completes normally. As soon as the relay has
// received more than Limit.Data bytes in one direction, none of the bytes
// past the limit is forwarded and both streams are reset at once (RST,
// like js-libp2p; go-libp2p half-closes instead). A reset is abortive:
// bytes within the limit still queued at the relay may be dropped with
// the stream, so the far side gets at most Limit.Data bytes, then the
// reset.

// ChunkSize is the most a circuit has in flight per direction between its
// two connections: one pooled buffer, taken when bytes arrive and returned
// once the other stream took them all. 16 KiB keeps DefaultMaxCircuits
// moving circuits within 128 MiB and is a quarter of yamux's largest frame.
const ChunkSize = 16 << 10

var chunkPool = sync.Pool{New: func() any { return new([ChunkSize]byte) }}

// chunksOut counts chunks taken and not yet returned (tests assert the
// in-flight bound with it).
var chunksOut atomic.Int64

func getChunk() *[ChunkSize]byte {
	chunksOut.Add(1)
	return chunkPool.Get().(*[ChunkSize]byte)
}

func putChunk(c *[ChunkSize]byte) {
	chunksOut.Add(-1)
	chunkPool.Put(c)
}

// chunkMeter is what a half's chunk is charged to: the reading
// connection's admission.Scope (Charge takes bytes whether or not they fit:
// a chunk is bounded by ChunkSize per direction and circuits by
// MaxCircuits; Release after the connection closed is a no-op).
type chunkMeter interface {
	Charge(n int)
	Release(n int)
}

// poster runs work under a connection's lock (libp2p.PeerConn.Post).
type poster interface {
	Post(f func())
}

// Circuit states.
const (
	circuitLive uint32 = iota
	circuitEnded
)

// splice is the byte pipe of one circuit.
type splice struct {
	a, b  half
	limit int64 // bytes per direction; 0: none
	state atomic.Uint32
	// fins counts directions whose FIN reached the other stream.
	fins atomic.Int32
	// onEnd runs once when the circuit ends, from either lock: it must
	// only take leaf locks (the store's).
	onEnd func(reason string)
	// onBytes counts relayed bytes.
	onBytes func(n int)
}

// half is one of a circuit's two streams. Its fields are guarded by its
// connection's lock, except incoming, which the other half's reader writes
// before posting deliver (the mailbox orders the two).
type half struct {
	s     *splice
	other *half
	conn  poster
	st    *mux.Stream

	// mem is charged the chunk this half's reader has in flight: the peer
	// on this stream sent the bytes, so its connection, peer and source
	// carry them (admission's scope; nil in tests without accounting).
	mem     chunkMeter
	charged bool // mem carries a chunk

	// Reading from st.
	inflight bool  // a chunk read from st is with the other half
	read     int64 // bytes taken from st (for the data limit)
	finSent  bool  // st's FIN was forwarded

	// Writing into st.
	pre      []byte // written before any chunk: the hop OK that did not fit
	out      *[ChunkSize]byte
	outN     int
	outOff   int
	incoming *[ChunkSize]byte // handed over by the other half's reader
	inN      int
	aborted  bool

	// cancel, when set, runs (under this half's lock) when the circuit is
	// killed: it stops the binding's timers.
	cancel func()

	// Prebuilt posted functions: the splice allocates nothing per chunk
	// (libp2p.PeerConn.Post wraps each post in one small closure).
	deliverFn, resumeFn, closeWriteFn, abortFn func()
}

// newSplice returns a live splice; the binding sets the halves' conn and
// st before bytes move.
func newSplice(limit int64, onEnd func(string), onBytes func(int)) *splice {
	s := &splice{limit: limit, onEnd: onEnd, onBytes: onBytes}
	for _, h := range []*half{&s.a, &s.b} {
		h.s = s
		h.deliverFn = h.deliver
		h.resumeFn = h.resume
		h.closeWriteFn = h.closeWrite
		h.abortFn = h.abort
	}
	s.a.other, s.b.other = &s.b, &s.a
	return s
}

func (s *splice) ended() bool { return s.state.Load() != circuitLive }

// end marks the circuit ended and reports the reason once.
func (s *splice) end(reason string) bool {
	if !s.state.CompareAndSwap(circuitLive, circuitEnded) {
		return false
	}
	s.onEnd(reason)
	return true
}

// kill ends the circuit for reason from h's lock: h's stream is reset now,
// the other's by a posted abort.
func (h *half) kill(reason string) {
	h.s.end(reason)
	h.abort()
	if h.other.conn != nil {
		h.other.conn.Post(h.other.abortFn)
	}
}

// abort resets the half's stream and drops what it holds (own lock).
// Idempotent.
func (h *half) abort() {
	if h.aborted {
		return
	}
	h.aborted = true
	h.uncharge() // the chunk may still be with the other half: it is dropped there
	if h.st != nil {
		h.st.Reset() // no-op on a stream already reset or closed
	}
	if h.out != nil {
		putChunk(h.out)
		h.out = nil
	}
	h.pre = nil
	if h.cancel != nil {
		h.cancel()
		h.cancel = nil
	}
}

// uncharge returns the in-flight chunk's charge (own lock).
func (h *half) uncharge() {
	if h.charged {
		h.charged = false
		h.mem.Release(ChunkSize)
	}
}

// OnData reads bytes arriving on the half's stream (mux.Handler).
func (h *half) OnData(st *mux.Stream, p []byte) int {
	if h.s.ended() || h.aborted {
		return len(p) // the stream is being reset: drop
	}
	if h.overLimit(len(p)) {
		h.kill(EndDataLimit)
		return len(p)
	}
	return h.take(p)
}

// overLimit reports whether buffered unread bytes, on top of those taken,
// go past the data limit. p (in OnData, resume) is always the whole unread
// buffer, so this is the total received on the stream.
func (h *half) overLimit(buffered int) bool {
	return h.s.limit > 0 && h.read+int64(buffered) > h.s.limit
}

// take hands up to a chunk of p to the other half and returns how much it
// took: nothing while a chunk is in flight.
func (h *half) take(p []byte) int {
	if h.inflight || len(p) == 0 {
		return 0
	}
	o := h.other
	c := getChunk()
	if h.mem != nil {
		h.mem.Charge(ChunkSize)
		h.charged = true
	}
	n := copy(c[:], p)
	o.incoming, o.inN = c, n
	h.inflight = true
	h.read += int64(n)
	o.conn.Post(o.deliverFn)
	return n
}

// deliver starts writing the chunk the other half handed over (own lock).
func (h *half) deliver() {
	c, n := h.incoming, h.inN
	h.incoming = nil
	if h.s.ended() || h.aborted {
		putChunk(c)
		return
	}
	h.out, h.outN, h.outOff = c, n, 0
	h.writeOut()
}

// writeOut writes the pending preamble and chunk into the stream, as far
// as it takes them; OnWritable continues.
func (h *half) writeOut() {
	if h.aborted || h.s.ended() {
		return
	}
	if len(h.pre) > 0 {
		n, err := h.st.Write(h.pre)
		h.pre = h.pre[n:]
		if err != nil {
			if err != mux.ErrWouldBlock {
				h.kill(EndReset)
			}
			return
		}
		h.pre = nil
	}
	if h.out == nil {
		return
	}
	n, err := h.st.Write(h.out[h.outOff:h.outN])
	h.outOff += n
	if h.outOff == h.outN {
		putChunk(h.out)
		h.out = nil
		h.s.onBytes(h.outN)
		h.other.conn.Post(h.other.resumeFn)
		return
	}
	if err != mux.ErrWouldBlock {
		h.kill(EndReset)
	}
}

// resume runs once the chunk this half sent was written whole (own lock):
// take what arrived meanwhile, or forward the FIN.
func (h *half) resume() {
	h.inflight = false
	h.uncharge()
	if h.s.ended() || h.aborted {
		return
	}
	if p := h.st.Peek(); len(p) > 0 {
		if h.overLimit(len(p)) {
			h.kill(EndDataLimit)
			return
		}
		h.st.Discard(h.take(p))
		return
	}
	h.maybeFIN()
}

// maybeFIN forwards the peer's FIN once everything before it was relayed.
func (h *half) maybeFIN() {
	if h.finSent || h.inflight || h.st.Buffered() > 0 {
		return
	}
	if s := h.st.State(); s != mux.StreamRemoteClosed && s != mux.StreamClosed {
		return
	}
	h.finSent = true
	h.other.conn.Post(h.other.closeWriteFn)
}

// closeWrite forwards the other side's FIN into this stream (own lock).
func (h *half) closeWrite() {
	if h.aborted || h.s.ended() {
		return
	}
	if err := h.st.CloseWrite(); err != nil {
		h.kill(EndReset)
		return
	}
	if h.s.fins.Add(1) == 2 {
		h.s.end(EndClosed)
	}
}

// OnWritable continues a short write (mux.Handler).
func (h *half) OnWritable(*mux.Stream) { h.writeOut() }

// OnFIN: the peer closed its write side (mux.Handler).
func (h *half) OnFIN(*mux.Stream) {
	if !h.aborted && !h.s.ended() {
		h.maybeFIN()
	}
}

// OnReset: the peer reset the stream, or the connection ended
// (mux.Handler).
func (h *half) OnReset(*mux.Stream, error) { h.kill(EndReset) }
