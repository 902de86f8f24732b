package engine

import (
	"errors"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	ma "github.com/multiformats/go-multiaddr"
)

// The Origin hook refuses a browser origin with 403; other origins and
// clients without Origin get through.
func TestCheckOrigin(t *testing.T) {
	_, _, addr := startEcho(t, Config{CheckOrigin: func(origin, host []byte) bool {
		return string(origin) == "https://good.example"
	}})
	for _, tc := range []struct {
		origin string
		status int
	}{{"https://good.example", 101}, {"https://evil.example", 403}, {"", 101}} {
		h := http.Header{}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		c, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/echo", h)
		if c != nil {
			c.Close()
		}
		got := 0
		if resp != nil {
			got = resp.StatusCode
		}
		if got != tc.status {
			t.Fatalf("origin %q: status %d (%v), want %d", tc.origin, got, err, tc.status)
		}
	}
}

// The upgrade deadline covers WebSocket upgrade through security: a client
// that upgrades and then stalls before Noise is cut at HandshakeTimeout.
func TestUpgradeTimeoutCoversSecurity(t *testing.T) {
	e := New(Config{Logger: quiet, HandshakeTimeout: 300 * time.Millisecond, Tick: 20 * time.Millisecond})
	defer e.Close()
	h, _ := NewHost(e, HostConfig{})
	l, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"), Routes{Fallback: h.Handler()})
	if err != nil {
		t.Fatal(err)
	}
	wc, _, err := websocket.DefaultDialer.Dial("ws://"+hostPort(t, l.Addr())+"/", nil)
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
	if failureCount(e, "upgrade_timeout") != 1 {
		t.Fatal("timeout not counted")
	}
	waitFor(t, func() bool { return h.upgrading.Load() == 0 })
}

// 2,000 idle libp2p connections (Noise + yamux, one echo round trip each,
// our client role): goroutines stay flat on both ends.
func TestScaleIdleLibp2pGoroutinesFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 4,000 sockets")
	}
	srv, addr := startHost(t, HostConfig{})
	e := New(Config{Logger: quiet})
	defer e.Close()
	cli, _ := NewHost(e, HostConfig{})
	open := func(n int) []*PeerConn {
		done := make(chan error, n)
		pcs := make(chan *PeerConn, n)
		sem := make(chan struct{}, 64)
		for i := 0; i < n; i++ {
			sem <- struct{}{}
			_, err := cli.DialPeer(addr, DialOptions{Expect: srv.ID()}, func(pc *PeerConn, err error) {
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
			if err != nil {
				t.Fatal(err)
			}
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

// A dial whose upgrade is refused reports it: DialPeer's ready gets the
// error instead of never being called.
func TestDialPeerReportsRefusedUpgrade(t *testing.T) {
	_, l, _ := startEcho(t, Config{}) // raw echo on /echo only: "/" is 404
	e := New(Config{Logger: quiet})
	defer e.Close()
	cli, _ := NewHost(e, HostConfig{})
	ready := make(chan error, 1)
	if _, err := cli.DialPeer(l.Addr(), DialOptions{}, func(pc *PeerConn, err error) { ready <- err }); err != nil {
		t.Fatal(err)
	}
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
	e := New(Config{Logger: quiet, Tick: 20 * time.Millisecond})
	defer e.Close()
	h, _ := NewHost(e, HostConfig{IdleTimeout: 300 * time.Millisecond})
	h.Handle(ProtoEcho, EchoStream)
	l, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"), Routes{Fallback: h.Handler()})
	if err != nil {
		t.Fatal(err)
	}
	idle := dialHost(t, h, l.Addr(), DialOptions{})
	busy := dialHost(t, h, l.Addr(), DialOptions{})
	col := &collector{done: make(chan error, 1)}
	busy.Do(func() {
		if _, err := busy.OpenStream(ProtoEcho, col); err != nil {
			t.Error(err)
		}
	})
	start := time.Now()
	waitFor(t, func() bool { return e.OpenConns() == 1 })
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("idle connection closed after %v", took)
	}
	if !busy.Do(func() {}) {
		t.Fatal("the connection with an open stream was closed")
	}
	if idle.Do(func() {}) {
		t.Fatal("the idle connection is still open")
	}
	if failureCount(e, "idle_timeout") != 1 {
		t.Fatal("idle close not counted")
	}
}
