package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/swarmgate/swarmgate/ws"
)

// Graceful drain, for rolling restarts of a fleet: stop accepting, tell
// every peer we are going away, let the work in flight finish, and cut what
// is left at a deadline.
//
//	listeners closed ─▶ libp2p: yamux GoAway, WebSocket 1001 once no stream is left
//	                    raw WebSocket: 1001 once no message is half received
//	                    upgrading: TCP closed
//	─▶ all gone: Close ─▶ nil
//	─▶ deadline or ctx: Close (TCP cut) ─▶ *DrainError
//
// The drain runs in the caller's goroutine and revisits the connections
// still busy every drainPoll: no goroutine or timer per connection.

// drainPoll is how often Drain revisits connections that were busy. A
// stream finishing is noticed at most this late.
const drainPoll = 50 * time.Millisecond

// DefaultDrainTimeout is a drain's deadline when none is given: long enough
// for request-sized streams, shorter than the 60 s a process manager
// usually waits before SIGKILL (loadgen serve -drain-timeout).
const DefaultDrainTimeout = 30 * time.Second

// drainReason is the Close reason peers see (RFC 6455 §7.4.1: 1001, "a
// server going down").
const drainReason = "server shutting down"

// ErrDrainTimeout reports a drain that reached its deadline with
// connections still open; they were closed without a handshake.
var ErrDrainTimeout = errors.New("engine: drain deadline passed")

// DrainError says how many connections a drain had to cut, and why
// (ErrDrainTimeout, or the context's error).
type DrainError struct {
	Remaining int64
	Err       error
}

func (e *DrainError) Error() string {
	return fmt.Sprintf("%v: %d connections closed without a handshake", e.Err, e.Remaining)
}

func (e *DrainError) Unwrap() error { return e.Err }

// Drain shuts the engine down gracefully: its listeners stop accepting at
// once; libp2p connections get a yamux GoAway (no new streams, existing
// ones continue) and a WebSocket Close 1001 when their last stream ends;
// raw WebSocket connections get Close 1001 between messages; connections
// still upgrading are closed. Drain returns nil once every connection is
// gone, or when deadline (DefaultDrainTimeout if <= 0) passes or ctx ends
// it closes the rest at once and returns a *DrainError. The engine is
// closed when Drain returns either way.
func (e *Engine) Drain(ctx context.Context, deadline time.Duration) error {
	if deadline <= 0 {
		deadline = DefaultDrainTimeout
	}
	end := time.Now().Add(deadline)
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	lns := append([]*Listener(nil), e.listeners...)
	var busy []*Conn
	for c := e.conns; c != nil; c = c.next {
		busy = append(busy, c)
	}
	e.mu.Unlock()
	for _, l := range lns {
		l.Close()
	}
	e.log.Info("drain started", "conns", len(busy), "deadline", deadline.String())

	for {
		// Revisit only connections that were busy last time: the others
		// have had their Close and end within CloseTimeout.
		kept := busy[:0]
		for _, c := range busy {
			if !c.drainStep() {
				kept = append(kept, c)
			}
		}
		clear(busy[len(kept):])
		busy = kept
		if e.OpenConns() == 0 {
			e.log.Info("drain done")
			e.Close()
			return nil
		}
		wait := min(drainPoll, time.Until(end))
		var err error
		if wait <= 0 {
			err = ErrDrainTimeout
		} else {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				err = ctx.Err()
			case <-t.C:
			}
			t.Stop()
		}
		if err != nil {
			n := e.OpenConns()
			e.log.Warn("drain cut connections", "remaining", n, "err", err)
			e.Close()
			if n == 0 {
				return nil // the last ones ended meanwhile
			}
			return &DrainError{Remaining: n, Err: err}
		}
	}
}

// drainStep moves c towards its close and reports whether it is done with
// (closing or closed) rather than still busy.
func (c *Conn) drainStep() (done bool) {
	done = true
	c.Do(func(c *Conn) {
		switch c.state {
		case stateHandshake:
			c.Close(ws.CloseGoingAway, drainReason) // before the upgrade: TCP closes
		case stateOpen:
			if d, ok := c.stage.(Drainer); ok && !d.GoingAway(c) {
				done = false
				return
			}
			c.Close(ws.CloseGoingAway, drainReason)
		}
	})
	return done
}
