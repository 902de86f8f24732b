package libp2p

import (
	"errors"
	"os"
	"sync/atomic"
	"time"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/mux"
)

// Blocking adapter: a goroutine per stream, for code written against
// io.Reader/io.Writer (io.Copy, bufio, encoders). The event-driven
// StreamHandler remains the way to serve many streams cheaply; this is the
// bridge for handlers that are not worth rewriting.
//
// Cost (TestBlockingCost, linux/amd64, Go 1.26, 800 streams held open):
// while fn runs, a stream holds one goroutine plus one BlockingStream (two
// 1-slot channels); with an fn that reads into a small buffer that adds
// 2.2–2.9 KiB per stream (mostly the goroutine's initial stack), against
// ≈ 300 B for an event-driven stream counted at both ends. fn's own
// buffers come on top. Nothing is held once fn returns.
//
// Goroutines are plain `go` statements, not a pool: BenchmarkSpawn starts a
// short handler in 0.56 µs with `go` and 1.0 µs with gopool.Go (the
// runtime already reuses goroutine descriptors and stacks), and gopool
// recovers panics in tasks, which would hide a handler's bug.

// ErrReadClosed reports a Read after CloseRead.
var ErrReadClosed = errors.New("engine: stream closed for reading")

// Do runs f with the connection's lock held, as a callback would, then
// sends what f queued on the session's streams and the WebSocket. It
// reports whether f ran: once the connection has closed it does not. It is
// for goroutines outside the engine; a callback must not call it (the lock
// is not reentrant).
func (pc *PeerConn) Do(f func()) bool {
	ran := false
	pc.c.Do(func(*engine.Conn) {
		ran = true
		f()
		pc.flush()
	})
	return ran
}

// BlockingStream is a stream seen through blocking calls. Read and Write
// each wait on the engine's events, so one goroutine may read while another
// writes; two concurrent Reads (or Writes) are not supported.
//
// Buffering: received bytes stay in the stream's receive buffer until Read
// copies them out, and window is granted back to the peer only then, so a
// slow reader holds at most the stream's receive window and the peer is
// stopped by yamux flow control. Write returns once the session queued
// every byte (its output queue is bounded by mux.Config.MaxOutput).
type BlockingStream struct {
	pc *PeerConn
	st *mux.Stream
	// rwake and wwake carry one pending wakeup each, for a waiting Read
	// and a waiting Write. Callbacks send without blocking; a wakeup sent
	// before the waiter waits is kept in the slot, so none is lost.
	rwake, wwake chan struct{}
	// Deadlines, nanoseconds since deadlineEpoch (monoDeadline), 0 for none.
	rdl, wdl atomic.Int64

	// Guarded by the connection's lock.
	err        error // reset or session error reported by OnReset
	readClosed bool  // CloseRead: later bytes are discarded
	wclosed    bool  // our FIN is queued
}

// RunBlocking returns a StreamHandler that runs fn in a goroutine of its
// own for each stream. When fn returns, the stream is closed like
// go-libp2p's Stream.Close: our FIN is sent if fn did not send it, and
// bytes the peer still sends are discarded (CloseRead) until its FIN.
func RunBlocking(fn func(pc *PeerConn, s *BlockingStream)) StreamFunc {
	return func(pc *PeerConn, st *mux.Stream) mux.Handler {
		b := newBlockingStream(pc)
		b.st = st
		go b.run(fn)
		return b
	}
}

func newBlockingStream(pc *PeerConn) *BlockingStream {
	return &BlockingStream{pc: pc, rwake: make(chan struct{}, 1), wwake: make(chan struct{}, 1)}
}

func (b *BlockingStream) run(fn func(pc *PeerConn, s *BlockingStream)) {
	fn(b.pc, b)
	b.pc.Do(b.finish)
}

// finish ends our part of the stream after fn returned (lock held).
func (b *BlockingStream) finish() {
	st := b.st
	switch st.State() {
	case mux.StreamReset, mux.StreamClosed:
	case mux.StreamOpen, mux.StreamLocalClosed:
		b.readClosed = true // the peer has not finished sending
		fallthrough
	default:
		if !b.wclosed {
			b.wclosed = true
			st.CloseWrite()
		}
	}
	if n := st.Buffered(); n > 0 && st.State() != mux.StreamReset {
		st.Discard(n) // returns the receive buffer to its pool
	}
}

// OpenBlocking opens an outbound stream proposing proto and returns it as
// a BlockingStream. Writes may start at once (they follow the proposal,
// lazily); a refusal shows up as the error of the next Read or Write. Call
// it from a goroutine, not from a callback.
func (pc *PeerConn) OpenBlocking(proto string) (*BlockingStream, error) {
	b := newBlockingStream(pc)
	var err error
	if !pc.Do(func() { b.st, err = pc.OpenStream(proto, b) }) {
		return nil, engine.ErrConnClosed
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Stream is the underlying stream; use it only inside PeerConn.Do.
func (b *BlockingStream) Stream() *mux.Stream { return b.st }

// PeerConn is the connection the stream belongs to.
func (b *BlockingStream) PeerConn() *PeerConn { return b.pc }

// Read reads received bytes, waiting until some arrive. It returns io.EOF
// after the peer's FIN, the reset error (a *mux.StreamError, or the
// session's error) after a reset, os.ErrDeadlineExceeded past the read
// deadline, ErrReadClosed after CloseRead and engine.ErrConnClosed once the
// connection is gone.
func (b *BlockingStream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if expired(&b.rdl) {
			return 0, os.ErrDeadlineExceeded
		}
		var n int
		var err error
		ran := b.pc.Do(func() {
			switch {
			case b.err != nil:
				err = b.err
			case b.readClosed:
				err = ErrReadClosed
			default:
				n, err = b.st.Read(p) // grants window for what it takes
			}
		})
		if !ran {
			return 0, engine.ErrConnClosed
		}
		if err != mux.ErrWouldBlock {
			return n, err
		}
		if err := b.wait(b.rwake, &b.rdl); err != nil {
			return 0, err
		}
	}
}

// Write queues all of p, waiting while the peer's window or the session's
// output queue is full. On error it reports how much was queued.
func (b *BlockingStream) Write(p []byte) (int, error) {
	total := 0
	for {
		if expired(&b.wdl) {
			return total, os.ErrDeadlineExceeded
		}
		var n int
		var err error
		ran := b.pc.Do(func() {
			if b.err != nil {
				err = b.err
				return
			}
			n, err = b.st.Write(p[total:])
		})
		if !ran {
			return total, engine.ErrConnClosed
		}
		total += n
		if err != mux.ErrWouldBlock {
			return total, err
		}
		if err := b.wait(b.wwake, &b.wdl); err != nil {
			return total, err
		}
	}
}

// Close half-closes the stream: our FIN follows the bytes written. Reading
// continues until the peer's FIN (use CloseRead to stop reading, Reset to
// abort both directions). Closing twice is not an error.
func (b *BlockingStream) Close() error {
	var err error
	if !b.pc.Do(func() {
		if b.wclosed {
			return
		}
		b.wclosed = true
		if b.err != nil {
			err = b.err
			return
		}
		err = b.st.CloseWrite()
	}) {
		return engine.ErrConnClosed
	}
	return err
}

// CloseWrite is Close.
func (b *BlockingStream) CloseWrite() error { return b.Close() }

// CloseRead stops reading: buffered and later bytes are discarded (their
// window is granted back, so the peer is not stalled) and Read returns
// ErrReadClosed. Like go-yamux, the peer is not told; it should stop
// sending at the application level.
func (b *BlockingStream) CloseRead() error {
	if !b.pc.Do(func() {
		b.readClosed = true
		if n := b.st.Buffered(); n > 0 && b.st.State() != mux.StreamReset {
			b.st.Discard(n)
		}
	}) {
		return engine.ErrConnClosed
	}
	b.kick(b.rwake)
	return nil
}

// Reset aborts both directions with an RST.
func (b *BlockingStream) Reset() error {
	var err error
	if !b.pc.Do(func() { err = b.st.Reset() }) {
		return engine.ErrConnClosed
	}
	b.kick(b.rwake)
	b.kick(b.wwake)
	return err
}

// SetDeadline sets the read and write deadlines (zero: none), as net.Conn.
func (b *BlockingStream) SetDeadline(t time.Time) error {
	b.SetReadDeadline(t)
	return b.SetWriteDeadline(t)
}

// SetReadDeadline makes a waiting or later Read fail with
// os.ErrDeadlineExceeded after t.
func (b *BlockingStream) SetReadDeadline(t time.Time) error {
	b.rdl.Store(monoDeadline(t))
	b.kick(b.rwake) // a waiting Read recomputes its timer
	return nil
}

// SetWriteDeadline makes a waiting or later Write fail with
// os.ErrDeadlineExceeded after t.
func (b *BlockingStream) SetWriteDeadline(t time.Time) error {
	b.wdl.Store(monoDeadline(t))
	b.kick(b.wwake)
	return nil
}

// deadlineEpoch anchors the streams' deadlines on the monotonic clock:
// a deadline is kept as nanoseconds since it (≥ 1; 0 means none), so a
// wall-clock step moves no deadline, as time.Time's own comparisons would
// not. A deadline without a monotonic reading (built with time.Unix, say)
// falls back to the wall clock, as it would anyway.
var deadlineEpoch = time.Now()

func monoDeadline(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(int64(t.Sub(deadlineEpoch)), 1)
}

// untilDeadline is how long is left before deadline d (≠ 0).
func untilDeadline(d int64) time.Duration {
	return time.Duration(d) - time.Since(deadlineEpoch)
}

func expired(dl *atomic.Int64) bool {
	d := dl.Load()
	return d != 0 && untilDeadline(d) <= 0
}

// wait blocks until a wakeup on ch or the deadline in dl.
func (b *BlockingStream) wait(ch chan struct{}, dl *atomic.Int64) error {
	d := dl.Load()
	if d == 0 {
		<-ch
		return nil
	}
	left := untilDeadline(d)
	if left <= 0 {
		return os.ErrDeadlineExceeded
	}
	t := time.NewTimer(left)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-t.C:
		return os.ErrDeadlineExceeded
	}
}

// kick records a wakeup without blocking.
func (b *BlockingStream) kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// OnData leaves the bytes buffered for Read (the stream keeps them, within
// the window) unless reading was closed.
func (b *BlockingStream) OnData(_ *mux.Stream, p []byte) int {
	if b.readClosed {
		return len(p)
	}
	b.kick(b.rwake)
	return 0
}

func (b *BlockingStream) OnWritable(*mux.Stream) { b.kick(b.wwake) }
func (b *BlockingStream) OnFIN(*mux.Stream)      { b.kick(b.rwake) }

func (b *BlockingStream) OnReset(_ *mux.Stream, err error) {
	b.err = err
	b.kick(b.rwake)
	b.kick(b.wwake)
}
