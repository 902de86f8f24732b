package libp2p

import (
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/testutil"
)

// The upgrade deadline covers WebSocket upgrade through security: a client
// that upgrades and then stalls before Noise is cut at HandshakeTimeout.
func TestUpgradeTimeoutCoversSecurity(t *testing.T) {
	h, addr := startHost(t, Config{Engine: engine.Config{HandshakeTimeout: 300 * time.Millisecond, Tick: 20 * time.Millisecond}})
	wc, _, err := websocket.DefaultDialer.Dial("ws://"+testutil.HostPort(t, addr)+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	start := time.Now()
	wc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err = wc.ReadMessage(); err != nil {
			break // our multistream header arrives first
		}
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 1008 {
		t.Fatalf("want close 1008, got %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("cut after %v, want about 300ms", took)
	}
	if failureCount(t, h, "upgrade_timeout") != 1 {
		t.Fatal("timeout not counted")
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return h.upgrading.Load() == 0 })
}

// 2,000 idle libp2p connections (Noise + yamux, one echo round trip each,
// our client role): goroutines stay flat on both ends.
func TestScaleIdleLibp2pGoroutinesFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 4,000 sockets")
	}
	// One client identity opens them all: lift the per-peer limit.
	srv, addr := startHost(t, Config{Engine: engine.Config{Limits: admission.Limits{MaxConnsPerPeer: -1}}})
	e := engine.New(engine.Config{Logger: testutil.Quiet})
	defer e.Close()
	cli, _ := NewOn(e, Config{})
	open := func(n int) []*PeerConn {
		done := make(chan error, n)
		pcs := make(chan *PeerConn, n)
		sem := make(chan struct{}, 64)
		for i := 0; i < n; i++ {
			sem <- struct{}{}
			cli.DialAsync(addr, DialOptions{Expect: srv.ID()}, func(pc *PeerConn, err error) {
				<-sem
				if err != nil {
					done <- err
					return
				}
				pcs <- pc
				col := &collector{done: done}
				st, err := pc.OpenStream(ProtoEcho, col)
				if err != nil {
					done <- err
					return
				}
				st.Write([]byte("hello"))
				st.CloseWrite()
			})
		}
		timeout := time.After(60 * time.Second)
		for i := 0; i < n; i++ {
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-timeout:
				t.Fatalf("%d of %d connections not ready", n-i, n)
			}
		}
		out := make([]*PeerConn, 0, n)
		for i := 0; i < n; i++ {
			out = append(out, <-pcs)
		}
		return out
	}
	open(10)
	time.Sleep(200 * time.Millisecond)
	before := runtime.NumGoroutine()
	conns := open(2000)
	time.Sleep(300 * time.Millisecond)
	after := runtime.NumGoroutine()
	if after-before >= 50 {
		t.Fatalf("goroutines grew by %d for 2000 idle libp2p connections", after-before)
	}
	if got := srv.eng.OpenConns(); got != 2010 {
		t.Fatalf("server holds %d connections, want 2010", got)
	}
	t.Logf("2000 idle libp2p connections: goroutines %d -> %d", before, after)
	runtime.KeepAlive(conns)
}

// A dial whose WebSocket handshake is refused reports it: DialAsync's
// ready gets the error instead of never being called.
func TestDialPeerReportsRefusedUpgrade(t *testing.T) {
	e := engine.New(engine.Config{Logger: testutil.Quiet})
	defer e.Close()
	l, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"), engine.Routes{Paths: map[string]engine.StageFunc{"/echo": engine.Echo}}) // "/" is 404
	if err != nil {
		t.Fatal(err)
	}
	cli, _ := NewOn(e, Config{})
	ready := make(chan error, 1)
	cli.DialAsync(l.Addr(), DialOptions{}, func(pc *PeerConn, err error) { ready <- err })
	select {
	case err := <-ready:
		if err == nil {
			t.Fatal("refused upgrade reported as success")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("refused upgrade never reported")
	}
}

// With IdleTimeout, a libp2p connection without a stream for that long is
// closed (GoAway, then 1000); one with an open stream is kept.
func TestIdleTimeout(t *testing.T) {
	h, addr := startHost(t, Config{Engine: engine.Config{Tick: 20 * time.Millisecond}, IdleTimeout: 300 * time.Millisecond})
	e := h.Engine()
	idle := dialHost(t, h, addr, DialOptions{})
	busy := dialHost(t, h, addr, DialOptions{})
	col := &collector{done: make(chan error, 1)}
	busy.Do(func() {
		if _, err := busy.OpenStream(ProtoEcho, col); err != nil {
			t.Error(err)
		}
	})
	start := time.Now()
	testutil.WaitFor(t, 5*time.Second, func() bool { return e.OpenConns() == 1 })
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("idle connection closed after %v", took)
	}
	if !busy.Do(func() {}) {
		t.Fatal("the connection with an open stream was closed")
	}
	if idle.Do(func() {}) {
		t.Fatal("the idle connection is still open")
	}
	if testutil.CounterValue(t, regOf(h), "swarmgate_libp2p_idle_closes_total", nil) != 1 {
		t.Fatal("idle close not counted")
	}
}

// A Notifiee's KeepIdle keeps an idle connection past IdleTimeout for as
// long as it answers true (a relay reservation); then it is closed.
func TestIdleTimeoutKeptByNotifiee(t *testing.T) {
	h, addr := startHost(t, Config{Engine: engine.Config{Tick: 20 * time.Millisecond}, IdleTimeout: 200 * time.Millisecond})
	var keep atomic.Bool
	keep.Store(true)
	var asked atomic.Int32
	if err := h.Notify(Notifiee{KeepIdle: func(*PeerConn) bool { asked.Add(1); return keep.Load() }}); err != nil {
		t.Fatal(err)
	}
	c := dialHost(t, h, addr, DialOptions{})
	testutil.WaitFor(t, 5*time.Second, func() bool { return asked.Load() >= 3 })
	if !c.Do(func() {}) || h.Engine().OpenConns() != 1 {
		t.Fatal("a kept connection was closed")
	}
	keep.Store(false)
	testutil.WaitFor(t, 5*time.Second, func() bool { return h.Engine().OpenConns() == 0 })
	if testutil.CounterValue(t, regOf(h), "swarmgate_libp2p_idle_closes_total", nil) != 1 {
		t.Fatal("idle close not counted")
	}
}
