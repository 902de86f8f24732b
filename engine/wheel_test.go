package engine

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/swarmgate/swarmgate/internal/testutil"
)

// Every deadline fires, whatever its offset within a tick, within about a
// tick of its time, and a cancelled or moved deadline does not fire early.
func TestWheelFiresEveryOffset(t *testing.T) {
	e := New(Config{Logger: testutil.Quiet, Tick: 10 * time.Millisecond})
	defer e.Close()
	const n = 200
	conns := make([]*Conn, n)
	start := time.Now()
	for i := range conns {
		c := &Conn{eng: e, state: stateOpen} // open: firing only clears the deadline
		conns[i] = c
		c.mu.Lock()
		c.setDeadline(time.Duration(i) * 997 * time.Microsecond) // spread over ticks and offsets
		c.mu.Unlock()
	}
	moved := &Conn{eng: e, state: stateOpen}
	moved.mu.Lock()
	moved.setDeadline(20 * time.Millisecond)
	moved.setDeadline(time.Hour)
	moved.mu.Unlock()
	var fired atomic.Int32
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		fired.Store(0)
		for _, c := range conns {
			c.mu.Lock()
			if c.deadline == 0 {
				fired.Add(1)
			}
			c.mu.Unlock()
		}
		if fired.Load() == n {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if fired.Load() != n {
		t.Fatalf("%d of %d deadlines fired within 3 s", fired.Load(), n)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("the last deadline (at ~200ms) fired after %v", took)
	}
	moved.mu.Lock()
	defer moved.mu.Unlock()
	if moved.deadline == 0 {
		t.Fatal("a deadline moved an hour ahead fired")
	}
}
