package libp2p

import (
	"time"

	"github.com/swarmgate/swarmgate/mux"
)

// request is the client side of a one-shot exchange on a stream (identify,
// ping): it ends exactly once, with a result, an error, the stream's reset
// or its timeout, and then calls done and stops its timer.
type request[T any] struct {
	pc    *PeerConn
	done  func(T, error) // nil once called
	timer *Timer
}

// pending reports whether the exchange has not ended yet.
func (r *request[T]) pending() bool { return r.done != nil }

// expire ends the exchange with err (and resets st) if it is still pending
// d from now.
func (r *request[T]) expire(st *mux.Stream, d time.Duration, err error) {
	r.timer = r.pc.After(d, func() {
		if r.pending() {
			r.fail(st, err)
		}
	})
}

// fail resets st and ends the exchange with err.
func (r *request[T]) fail(st *mux.Stream, err error) {
	st.Reset()
	var zero T
	r.finish(zero, err)
}

// finish ends the exchange; later calls do nothing.
func (r *request[T]) finish(v T, err error) {
	done := r.done
	if done == nil {
		return
	}
	r.done = nil
	if r.timer != nil {
		r.pc.StopTimer(r.timer)
	}
	if err != nil {
		var zero T
		v = zero
	}
	done(v, err)
}
