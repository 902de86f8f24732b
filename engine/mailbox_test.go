package engine

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/ws"
)

// pair is a server stage that, for every message its client sends, posts
// work to the other connection of the pair: the work checks it runs under
// that connection's lock, counts, checks posting order, and writes a message
// to that connection's client (so a posted write must be flushed).
type pair struct {
	c     *Conn
	mu    *sync.Mutex // guards other, set by the handler of the second
	other *pair
	// Guarded by c's lock.
	got  int            // posted functions run on this connection
	last map[string]int // last sequence number seen per poster
	sent int            // messages received from our client
}

func (p *pair) Data(c *Conn, op ws.Opcode, b []byte, end bool) error {
	if !end {
		return nil
	}
	p.sent++
	p.mu.Lock()
	o := p.other
	p.mu.Unlock()
	seq, from := p.sent, fmt.Sprintf("conn%p", p)
	o.c.Post(func(c *Conn) {
		if c.mu.TryLock() {
			panic("posted function runs without the target's lock")
		}
		if o.last[from] != seq-1 {
			panic(fmt.Sprintf("posted out of order: %d after %d", seq, o.last[from]))
		}
		o.last[from] = seq
		o.got++
		c.WriteMessage(ws.OpBinary, []byte("x"))
	})
	return nil
}

func (p *pair) Closed(*Conn, error) {}

// startPairs listens on /pair; connections are paired in arrival order.
func startPairs(t *testing.T) (string, chan *pair) {
	e := New(Config{Logger: testutil.Quiet})
	t.Cleanup(func() { e.Close() })
	made := make(chan *pair, 16)
	var mu sync.Mutex
	var waiting *pair
	l, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"), Routes{Paths: map[string]StageFunc{"/pair": func(c *Conn) Stage {
		p := &pair{c: c, mu: &mu, last: map[string]int{}}
		mu.Lock()
		if waiting == nil {
			waiting = p
		} else {
			p.other, waiting.other = waiting, p
			waiting = nil
		}
		mu.Unlock()
		made <- p
		return p
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return "ws://" + testutil.HostPort(t, l.Addr()) + "/pair", made
}

// Two connections whose callbacks post to each other at the same time, on
// different netpoll workers: every posted function runs once, under the
// target's lock, in order, and its write is flushed. Run with -race.
func TestPostBetweenBusyConnections(t *testing.T) {
	url, made := startPairs(t)
	const msgs = 2000
	var clients [2]*websocket.Conn
	var pairs [2]*pair
	for i := range clients {
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients[i] = c
		pairs[i] = <-made
	}
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() { // write
			for range msgs {
				if err := c.WriteMessage(websocket.BinaryMessage, []byte("m")); err != nil {
					t.Error(err)
					return
				}
			}
		})
		wg.Go(func() { // read what the other side's posts wrote
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			for i := range msgs {
				if _, _, err := c.ReadMessage(); err != nil {
					t.Errorf("message %d: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, p := range pairs {
		var got int
		p.c.Do(func(*Conn) { got = p.got })
		if got != msgs {
			t.Fatalf("%d posted functions ran, want %d", got, msgs)
		}
	}
}

// Posts from many goroutines to an idle connection: a goroutine started by
// Post runs them; none is lost or run twice.
func TestPostToIdleConnection(t *testing.T) {
	url, made := startPairs(t)
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := <-made
	const posters, each = 8, 500
	var wg sync.WaitGroup
	for range posters {
		wg.Go(func() {
			for range each {
				p.c.Post(func(c *Conn) {
					if c.mu.TryLock() {
						panic("posted function runs without the lock")
					}
					p.got++
				})
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got int
		p.c.Do(func(*Conn) { got = p.got })
		if got == posters*each {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d posted functions ran", got, posters*each)
		}
		time.Sleep(time.Millisecond)
	}
}

// A function posted to a connection that has closed still runs, once, and
// sees it closed.
func TestPostAfterClose(t *testing.T) {
	url, made := startPairs(t)
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := <-made
	c.Close()
	testutil.WaitFor(t, 10*time.Second, func() bool {
		closed := false
		p.c.Post(func(c *Conn) { closed = c.Closed() })
		time.Sleep(time.Millisecond)
		p.c.mu.Lock()
		defer p.c.mu.Unlock()
		return closed
	})
	ran := make(chan bool, 2)
	p.c.Post(func(c *Conn) { ran <- c.Closed() })
	select {
	case closed := <-ran:
		if !closed {
			t.Fatal("posted function saw an open connection")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("function posted after close never ran")
	}
	select {
	case <-ran:
		t.Fatal("ran twice")
	case <-time.After(50 * time.Millisecond):
	}
}
