package libp2p

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/mux"
	"github.com/swarmgate/swarmgate/ws"
)

// drainStream is a client echo stream whose writes the test drives.
type drainStream struct {
	got  []byte
	done chan error
}

func (d *drainStream) OnData(_ *mux.Stream, p []byte) int { d.got = append(d.got, p...); return len(p) }
func (d *drainStream) OnWritable(*mux.Stream)             {}
func (d *drainStream) OnFIN(*mux.Stream)                  { d.done <- nil }
func (d *drainStream) OnReset(_ *mux.Stream, err error)   { d.done <- fmt.Errorf("reset: %w", err) }

// partialEcho is engine.Echo that records when a message has begun to
// arrive without its end, so a test knows the server is mid-message.
type partialEcho struct {
	engine.Stage
	partial *atomic.Int32
}

func (p partialEcho) Data(c *engine.Conn, op ws.Opcode, b []byte, end bool) error {
	if !end {
		p.partial.Add(1)
	}
	return p.Stage.Data(c, op, b, end)
}

func (p partialEcho) GoingAway(c *engine.Conn) bool { return p.Stage.(engine.Drainer).GoingAway(c) }

// drainServer runs a libp2p host with echo streams on every path but
// /echo, which is a raw WebSocket echo; partial counts the pieces of
// unfinished messages the raw echo has received.
func drainServer(t *testing.T) (e *engine.Engine, addr ma.Multiaddr, partial *atomic.Int32) {
	t.Helper()
	partial = new(atomic.Int32)
	// One client identity opens every connection: per-peer limits lifted.
	lim := admission.Limits{MaxConnsPerPeer: -1, MaxPeerStreams: -1, MaxProtocolStreams: -1}
	h, err := New(Config{Engine: engine.Config{Logger: testutil.Quiet, Limits: lim}, Echo: true,
		Paths: map[string]engine.StageFunc{"/echo": func(c *engine.Conn) engine.Stage { return partialEcho{engine.Echo(c), partial} }}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	addr, err = h.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"))
	if err != nil {
		t.Fatal(err)
	}
	return h.Engine(), addr, partial
}

// 1,000 libp2p clients with an echo stream each half written, and raw
// WebSocket clients (one idle, one in the middle of a message): Drain stops accepting, sends GoAway, waits for the
// streams to finish, closes every connection with 1001, and returns well
// within its deadline.
func TestDrainLetsStreamsFinish(t *testing.T) {
	const n = 1000
	const deadline = 15 * time.Second
	srv, addr, partial := drainServer(t)

	reg := prometheus.NewRegistry()
	ce := engine.New(engine.Config{Logger: testutil.Quiet, Registerer: reg})
	t.Cleanup(func() { ce.Close() })
	cli, err := NewOn(ce, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan error, n)
	pcs := make([]*PeerConn, n)
	for i := range n {
		cli.DialAsync(addr, DialOptions{}, func(pc *PeerConn, err error) { pcs[i] = pc; ready <- err })
	}
	for range n {
		select {
		case err := <-ready:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("upgrades did not finish")
		}
	}
	// One stream per client, first half written.
	half := []byte("the first half of a request, ")
	rest := []byte("and the rest after the drain began")
	streams := make([]*mux.Stream, n)
	handlers := make([]*drainStream, n)
	for i, pc := range pcs {
		handlers[i] = &drainStream{done: make(chan error, 1)}
		pc.Conn().Do(func(*engine.Conn) {
			if streams[i], err = pc.OpenStream(ProtoEcho, handlers[i]); err == nil {
				_, err = streams[i].Write(half)
				pc.flush()
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Raw WebSocket clients: one idle, one in the middle of a fragmented
	// message.
	hp := testutil.HostPort(t, addr)
	var raws []*websocket.Conn
	for range 2 {
		wc, _, err := websocket.DefaultDialer.Dial("ws://"+hp+"/echo", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer wc.Close()
		raws = append(raws, wc)
	}
	frag, err := raws[1].NextWriter(websocket.BinaryMessage)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("m"), 10000) // past gorilla's 4 KiB buffer: a non-final frame goes out
	frag.Write(big)
	testutil.WaitFor(t, 5*time.Second, func() bool { return srv.OpenConns() == n+2 })
	// The server has read the first fragment: the message is in progress
	// there before the drain starts (else the connection is rightly idle).
	testutil.WaitFor(t, 5*time.Second, func() bool { return partial.Load() > 0 })
	// Every echo stream has its first half back: they are all live.
	for i, pc := range pcs {
		testutil.WaitFor(t, 5*time.Second, func() bool {
			var l int
			pc.Do(func() { l = len(handlers[i].got) })
			return l == len(half)
		})
	}

	start := time.Now()
	drained := make(chan error, 1)
	go func() { drained <- srv.Drain(context.Background(), deadline) }()

	// Every client hears GoAway, and no connection is closed while its
	// stream is open.
	for _, pc := range pcs {
		testutil.WaitFor(t, 5*time.Second, func() bool {
			var goaway bool
			pc.Do(func() { goaway = pc.RemoteGoAway() })
			return goaway
		})
	}
	if got := ce.OpenConns(); got != n {
		t.Fatalf("%d of %d client connections open with their streams live", got, n)
	}
	// No new connection is accepted.
	if c, err := net.DialTimeout("tcp", hp, time.Second); err == nil {
		c.Close()
		t.Fatal("listener still accepting during the drain")
	}
	// A new stream is refused: the server went away.
	pcs[0].Conn().Do(func(*engine.Conn) {
		if _, err := pcs[0].OpenStream(ProtoEcho, &drainStream{done: make(chan error, 1)}); !errors.Is(err, mux.ErrRemoteGoAway) {
			t.Errorf("new stream after GoAway: %v", err)
		}
	})

	// The idle raw client is closed with 1001 now.
	raws[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := raws[0].ReadMessage(); !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("idle raw WebSocket: %v", err)
	}

	// The streams finish: second half, FIN, full echo back.
	for i, pc := range pcs {
		pc.Conn().Do(func(*engine.Conn) {
			streams[i].Write(rest)
			streams[i].CloseWrite()
			pc.flush()
		})
	}
	// The raw message in progress finishes and is echoed, then 1001.
	frag.Write(big)
	frag.Close()
	raws[1].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, msg, err := raws[1].ReadMessage(); err != nil || len(msg) != 2*len(big) {
		t.Fatalf("raw message in progress: %d bytes, %v", len(msg), err)
	}
	if _, _, err := raws[1].ReadMessage(); !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("raw WebSocket after its message: %v", err)
	}
	want := append(append([]byte(nil), half...), rest...)
	for i := range pcs {
		select {
		case err := <-handlers[i].done:
			if err != nil {
				t.Fatalf("stream %d: %v", i, err)
			}
		case <-time.After(deadline):
			t.Fatalf("stream %d did not finish", i)
		}
		if !bytes.Equal(handlers[i].got, want) {
			t.Fatalf("stream %d echoed %q", i, handlers[i].got)
		}
	}
	select {
	case err := <-drained:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(deadline + 5*time.Second):
		t.Fatal("Drain did not return")
	}
	took := time.Since(start)
	if took > deadline {
		t.Fatalf("Drain took %v", took)
	}
	// Every libp2p client saw an orderly WebSocket close with 1001.
	testutil.WaitFor(t, 5*time.Second, func() bool { return ce.OpenConns() == 0 })
	if got := testutil.Gather(t, reg)["swarmgate_ws_close_received_total{code=1001}"]; got != n {
		t.Fatalf("%v clients received close 1001, want %d", got, n)
	}
	t.Logf("drained %d libp2p and 2 raw connections in %v", n, took)
}

// A stream that never ends holds the drain until its deadline; then the
// rest is cut and Drain reports how many.
func TestDrainDeadline(t *testing.T) {
	srv, addr, _ := drainServer(t)
	pc := dialHost(t, nil, addr, DialOptions{})
	h := &drainStream{done: make(chan error, 1)}
	var err error
	pc.Conn().Do(func(*engine.Conn) {
		var st *mux.Stream
		if st, err = pc.OpenStream(ProtoEcho, h); err == nil {
			st.Write([]byte("never finished"))
			pc.flush()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return srv.OpenConns() == 1 })
	time.Sleep(100 * time.Millisecond) // the SYN has arrived
	start := time.Now()
	err = srv.Drain(context.Background(), 500*time.Millisecond)
	var de *engine.DrainError
	if !errors.As(err, &de) || !errors.Is(err, engine.ErrDrainTimeout) || de.Remaining != 1 {
		t.Fatalf("Drain: %v", err)
	}
	if took := time.Since(start); took < 500*time.Millisecond || took > 2*time.Second {
		t.Fatalf("Drain returned after %v", took)
	}
	if err := srv.Drain(context.Background(), time.Second); !errors.Is(err, engine.ErrClosed) {
		t.Fatalf("second Drain: %v", err)
	}
	select {
	case err := <-h.done:
		if err == nil {
			t.Fatal("the cut stream ended with FIN")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("client stream not ended")
	}
}

// A cancelled context ends the drain at once.
func TestDrainContext(t *testing.T) {
	srv, addr, _ := drainServer(t)
	hp := testutil.HostPort(t, addr)
	wc, _, err := websocket.DefaultDialer.Dial("ws://"+hp+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	// Half a fragmented message keeps the raw connection busy.
	w, _ := wc.NextWriter(websocket.BinaryMessage)
	w.Write(bytes.Repeat([]byte("x"), 10000)) // a non-final frame goes out
	testutil.WaitFor(t, 5*time.Second, func() bool { return srv.OpenConns() == 1 })
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); time.Sleep(200 * time.Millisecond); cancel() }()
	start := time.Now()
	err = srv.Drain(ctx, time.Minute)
	wg.Wait()
	if !errors.Is(err, context.Canceled) || time.Since(start) > 2*time.Second {
		t.Fatalf("Drain: %v after %v", err, time.Since(start))
	}
}
