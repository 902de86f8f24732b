package engine

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/swarmgate/swarmgate/multistream"
	"github.com/swarmgate/swarmgate/mux"
	"github.com/swarmgate/swarmgate/ws"
)

// startHost runs an engine with a libp2p host on a /ws listener.
func startHost(t testing.TB, cfg HostConfig) (*Host, ma.Multiaddr) {
	t.Helper()
	e := New(Config{Logger: quiet})
	testEngines.Store(e, true)
	t.Cleanup(func() { testEngines.Delete(e); e.Close() })
	h, err := NewHost(e, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.Handle(ProtoEcho, EchoStream)
	l, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"), Routes{Fallback: h.Handler()})
	if err != nil {
		t.Fatal(err)
	}
	h.SetListenAddrs([]ma.Multiaddr{l.Addr()})
	return h, l.Addr()
}

// collector is a client stream handler gathering what the peer sends.
type collector struct {
	got  []byte
	done chan error
}

func (c *collector) OnData(st *mux.Stream, p []byte) int { c.got = append(c.got, p...); return len(p) }
func (c *collector) OnWritable(*mux.Stream)              {}
func (c *collector) OnFIN(*mux.Stream)                   { c.done <- nil }
func (c *collector) OnReset(_ *mux.Stream, err error)    { c.done <- err }

// dialHost dials a host with our client role and waits until muxed.
func dialHost(t testing.TB, srv *Host, addr ma.Multiaddr, opt DialOptions) *PeerConn {
	t.Helper()
	e := New(Config{Logger: quiet})
	t.Cleanup(func() { e.Close() })
	cli, err := NewHost(e, HostConfig{InsecurePlaintext: opt.Plaintext})
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan error, 1)
	var pc *PeerConn
	if _, err := cli.DialPeer(addr, opt, func(p *PeerConn, err error) { pc = p; ready <- err }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("upgrade did not finish")
	}
	return pc
}

// echoOver writes data on an echo stream from the client and checks the
// echo, in pieces that exercise yamux windows and Noise framing.
func echoOver(t *testing.T, pc *PeerConn, data []byte) {
	t.Helper()
	col := &collector{done: make(chan error, 1)}
	var st *mux.Stream
	var err error
	pc.Conn().Do(func(*Conn) { st, err = pc.OpenStream(ProtoEcho, col) })
	if err != nil {
		t.Fatal(err)
	}
	// Write as the window allows, from outside the engine.
	rest := data
	deadline := time.Now().Add(20 * time.Second)
	for len(rest) > 0 {
		pc.Conn().Do(func(*Conn) {
			n, _ := st.Write(rest)
			rest = rest[n:]
			pc.flush()
		})
		if time.Now().After(deadline) {
			t.Fatalf("stuck with %d bytes unwritten", len(rest))
		}
		if len(rest) > 0 {
			time.Sleep(time.Millisecond)
		}
	}
	pc.Conn().Do(func(*Conn) { st.CloseWrite(); pc.flush() })
	select {
	case err := <-col.done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("echo incomplete: %d of %d bytes", len(col.got), len(data))
	}
	if !bytes.Equal(col.got, data) {
		t.Fatalf("echo differs: %d bytes back of %d", len(col.got), len(data))
	}
}

func TestHostEchoOwnClient(t *testing.T) {
	for _, plain := range []bool{false, true} {
		srv, addr := startHost(t, HostConfig{InsecurePlaintext: true})
		pc := dialHost(t, srv, addr, DialOptions{Expect: srv.ID(), Plaintext: plain})
		if pc.RemotePeer() != srv.ID() {
			t.Fatalf("remote %s, want %s", pc.RemotePeer(), srv.ID())
		}
		data := make([]byte, 3<<20)
		for i := range data {
			data[i] = byte(rand.Uint32())
		}
		echoOver(t, pc, data)
		echoOver(t, pc, []byte("small"))
	}
}

func TestHostWrongPeerID(t *testing.T) {
	srv, addr := startHost(t, HostConfig{})
	other, _ := startHost(t, HostConfig{})
	e := New(Config{Logger: quiet})
	defer e.Close()
	cli, _ := NewHost(e, HostConfig{})
	ready := make(chan error, 1)
	cli.DialPeer(addr, DialOptions{Expect: other.ID()}, func(_ *PeerConn, err error) { ready <- err })
	select {
	case err := <-ready:
		if err == nil {
			t.Fatal("dial to the wrong peer ID succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no result")
	}
	_ = srv
}

// Garbage instead of a Noise handshake closes that connection with a
// counted reason; the server goes on serving others.
func TestHostBadHandshakeCounted(t *testing.T) {
	srv, addr := startHost(t, HostConfig{})
	hp := hostPort(t, addr)
	for _, tc := range []struct {
		name   string
		send   []byte
		reason string
	}{
		{"garbage noise message", append(multistream.AppendMessage(multistream.AppendMessage(nil, "/multistream/1.0.0"), ProtoNoise), 0x00, 0x05, 'h', 'e', 'l', 'l', 'o'), "noise_malformed"},
		{"multistream message without newline", []byte{0x05, 'h', 'e', 'l', 'l', 'o'}, "ms_"},
	} {
		wc, _, err := websocket.DefaultDialer.Dial("ws://"+hp+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		wc.WriteMessage(websocket.BinaryMessage, tc.send)
		wc.SetReadDeadline(time.Now().Add(5 * time.Second))
		var closeErr *websocket.CloseError
		for {
			if _, _, err = wc.ReadMessage(); err != nil {
				break
			}
		}
		if !errors.As(err, &closeErr) || closeErr.Code != int(ws.ClosePolicyViolation) {
			t.Fatalf("%s: want close 1008, got %v", tc.name, err)
		}
		wc.Close()
		if got := failureCount(srv.eng, tc.reason); got == 0 {
			t.Fatalf("%s: no failure counted under %q", tc.name, tc.reason)
		}
	}
	// A good client still gets through.
	pc := dialHost(t, srv, addr, DialOptions{Expect: srv.ID()})
	echoOver(t, pc, []byte("still serving"))
}

// failureCount sums the failure counters whose reason starts with prefix.
func failureCount(e *Engine, prefix string) float64 {
	ch := make(chan prometheus.Metric, 64)
	go func() { e.metrics.failures.Collect(ch); close(ch) }()
	var sum float64
	for m := range ch {
		var pm dto.Metric
		m.Write(&pm)
		for _, l := range pm.Label {
			if l.GetName() == "reason" && strings.HasPrefix(l.GetValue(), prefix) {
				sum += pm.Counter.GetValue()
			}
		}
	}
	return sum
}

func TestHostUpgradeCap(t *testing.T) {
	srv, addr := startHost(t, HostConfig{MaxConcurrentUpgrades: 2})
	hp := hostPort(t, addr)
	var held []*websocket.Conn
	for i := 0; i < 2; i++ { // two upgrades stalled before Noise
		wc, _, err := websocket.DefaultDialer.Dial("ws://"+hp+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer wc.Close()
		held = append(held, wc)
	}
	wc, _, err := websocket.DefaultDialer.Dial("ws://"+hp+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	wc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = wc.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 1013 {
		t.Fatalf("third upgrade: want close 1013, got %v", err)
	}
	if failureCount(srv.eng, "upgrade_cap") != 1 {
		t.Fatal("refusal not counted")
	}
	held[0].Close()
	waitFor(t, func() bool { return srv.upgrading.Load() < 2 })
	pc := dialHost(t, srv, addr, DialOptions{})
	echoOver(t, pc, []byte("room again"))
}
