package kad

import (
	"time"

	"github.com/swarmgate/swarmgate/internal/wire"
	"github.com/swarmgate/swarmgate/mux"
)

// Scheduler is the clock and the timers of the connection a stream runs
// on: the engine's per-connection timers in production (fired from the
// connection's Tick with its lock held, like every stream callback), a
// fake clock in tests.
type Scheduler interface {
	Now() time.Time
	// After runs fire d from now, with the connection's lock held, unless
	// stop is called first.
	After(d time.Duration, fire func()) (stop func())
}

// NewStream returns the handler of an inbound /ipfs/kad/1.0.0 stream from
// p (the engine's stream function calls it once the protocol is agreed).
// A peer already at MaxStreamsPerPeer gets the stream reset.
//
// The handler answers any number of requests on the stream, one after the
// other, as go-libp2p's server loop does (go clients keep one stream per
// peer): it parses each uvarint-delimited request from the stream's
// buffer, answers it with one st.Write and goes on with the next, so
// requests that arrive pipelined in one read are answered in order. It
// stops consuming (returns less than it was shown from OnData; yamux flow
// control then holds the sender) while
//
//   - a response is only partly written (mux.ErrWouldBlock): OnWritable
//     writes the rest and resumes;
//   - the peer's request budget is spent: a timer resumes when a token
//     accrues.
//
// The peer's FIN ends the stream cleanly once everything before it is
// answered (we close our side, as go's server closes on EOF); a FIN inside
// a message is a truncated request. Resets, each counted by reason: a
// request over MaxRequestSize (from its length prefix), one that does not
// decode, a refused request (see Server.Handle), and StreamIdleTimeout
// without a request (go's server does the same after 60 s).
func (s *Server) NewStream(p *Peer, sched Scheduler, st *mux.Stream) mux.Handler {
	if p.streams >= s.cfg.MaxStreamsPerPeer {
		s.refuse(st, ErrTooManyStreams)
		return &mux.Funcs{}
	}
	p.streams++
	h := &stream{srv: s, p: p, sched: sched, st: st, last: sched.Now()}
	h.stopIdle = sched.After(s.cfg.StreamIdleTimeout, h.idle)
	return h
}

func (s *Server) refuse(st *mux.Stream, e *RefusedError) {
	s.m.resets.WithLabelValues(e.Reason).Inc()
	e.reset(st)
}

// stream is the handler of one kad stream. Its lifecycle:
//
//	reading ──request──▶ (answer queued) ──▶ reading
//	   │ ▲                    │ short write
//	   │ └──OnWritable─── writing
//	   │ ▲
//	   │ └──token────── waiting (budget spent)
//	   ├── peer FIN, all answered ──▶ closed (CloseWrite)
//	   └── refusal, idle, FIN mid-message ──▶ reset
//
// and released (timers stopped, stream uncounted) when closed, reset by
// either side, or ended with the session.
type stream struct {
	srv      *Server
	p        *Peer
	sched    Scheduler
	st       *mux.Stream
	last     time.Time // when the stream opened or its last request was taken
	stopIdle func()
	stopWait func() // non-nil while waiting for a request token
	pending  []byte // unwritten part of a response; nil when none
	released bool
}

func (h *stream) OnData(st *mux.Stream, p []byte) int {
	if h.released {
		return len(p)
	}
	return h.process(st, p)
}

// process answers the complete requests at the front of p and returns the
// bytes it consumed; after a reset it returns len(p) (the stream dropped
// its buffer).
func (h *stream) process(st *mux.Stream, p []byte) int {
	off := 0
	for off < len(p) && !h.released && h.pending == nil && h.stopWait == nil {
		msg, n, err := parseRequest(p[off:])
		if err == wire.ErrNeedMore {
			break
		}
		if err != nil {
			h.fail(st, err.(*RefusedError))
			return len(p)
		}
		now := h.sched.Now()
		if d := h.srv.admit(h.p, now); d > 0 {
			h.srv.m.delayed.Inc()
			h.stopWait = h.sched.After(d, h.tokenReady)
			break
		}
		h.last = now
		resp, rerr := h.srv.serve(nil, msg, h.p, now, h.sched)
		off += n
		if rerr != nil {
			h.fail(st, rerr)
			return len(p)
		}
		h.write(st, resp)
	}
	return off
}

// write sends b (owned by the handler); what does not fit waits for
// OnWritable.
func (h *stream) write(st *mux.Stream, b []byte) {
	n, err := st.Write(b)
	switch {
	case err == mux.ErrWouldBlock:
		h.pending = b[n:]
	case err != nil: // reset or closed under us: nothing more to do
		h.release()
	}
}

func (h *stream) OnWritable(st *mux.Stream) {
	if h.released || h.pending == nil {
		return
	}
	b := h.pending
	h.pending = nil
	h.write(st, b)
	h.resume()
}

func (h *stream) tokenReady() {
	h.stopWait = nil
	h.resume()
}

// resume goes on with requests buffered in the stream, then closes if the
// peer's FIN came and everything before it is answered.
func (h *stream) resume() {
	if h.released {
		return
	}
	st := h.st
	n := h.process(st, st.Peek())
	if h.released {
		return
	}
	st.Discard(n)
	h.maybeClose(st)
}

func (h *stream) OnFIN(st *mux.Stream) { h.maybeClose(st) }

// maybeClose ends the stream after the peer's FIN once nothing is being
// written or waited for: cleanly if no byte is left over, as a truncated
// request otherwise.
func (h *stream) maybeClose(st *mux.Stream) {
	if h.released || h.pending != nil || h.stopWait != nil || st.State() != mux.StreamRemoteClosed {
		return
	}
	if st.Buffered() > 0 {
		h.fail(st, ErrTruncated)
		return
	}
	st.CloseWrite()
	h.release()
}

func (h *stream) OnReset(*mux.Stream, error) { h.release() }

// idle runs StreamIdleTimeout after the stream opened and re-arms until
// that long has passed since the last request. A stream waiting for a
// token is not idle: the delay is ours.
func (h *stream) idle() {
	h.stopIdle = nil
	if h.released {
		return
	}
	timeout := h.srv.cfg.StreamIdleTimeout
	wait := timeout
	if h.stopWait == nil {
		since := h.sched.Now().Sub(h.last)
		if since >= timeout {
			h.fail(h.st, ErrIdle)
			return
		}
		wait = timeout - since
	}
	h.stopIdle = h.sched.After(wait, h.idle)
}

func (h *stream) fail(st *mux.Stream, e *RefusedError) {
	h.srv.refuse(st, e)
	h.release()
}

func (h *stream) release() {
	if h.released {
		return
	}
	h.released = true
	h.pending = nil
	if h.stopIdle != nil {
		h.stopIdle()
		h.stopIdle = nil
	}
	if h.stopWait != nil {
		h.stopWait()
		h.stopWait = nil
	}
	h.p.streams--
}
