package libp2p

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/multistream"
	"github.com/swarmgate/swarmgate/mux"
	"github.com/swarmgate/swarmgate/ws"
)

// testHosts are the server hosts startHost created, with their metrics
// registries (for livePings and failureCount).
var testHosts sync.Map // *Host → *prometheus.Registry

// startHost runs a host with echo on a /ws listener, its metrics on a
// registry of its own.
func startHost(t testing.TB, cfg Config) (*Host, ma.Multiaddr) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Engine.Logger, cfg.Engine.Registerer = testutil.Quiet, reg
	cfg.Echo = true
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testHosts.Store(h, reg)
	t.Cleanup(func() { testHosts.Delete(h); h.Close() })
	addr, err := h.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"))
	if err != nil {
		t.Fatal(err)
	}
	return h, addr
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

// dialHost dials a host with a client host of its own and waits until
// muxed.
func dialHost(t testing.TB, srv *Host, addr ma.Multiaddr, opt DialOptions) *PeerConn {
	t.Helper()
	cli, err := New(Config{Engine: engine.Config{Logger: testutil.Quiet}, InsecurePlaintext: opt.Plaintext})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pc, err := cli.Dial(ctx, addr, opt)
	if err != nil {
		t.Fatal(err)
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
	pc.Conn().Do(func(*engine.Conn) { st, err = pc.OpenStream(ProtoEcho, col) })
	if err != nil {
		t.Fatal(err)
	}
	// Write as the window allows, from outside the engine.
	rest := data
	deadline := time.Now().Add(20 * time.Second)
	for len(rest) > 0 {
		pc.Conn().Do(func(*engine.Conn) {
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
	pc.Conn().Do(func(*engine.Conn) { st.CloseWrite(); pc.flush() })
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
		srv, addr := startHost(t, Config{InsecurePlaintext: true})
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
	srv, addr := startHost(t, Config{})
	other, _ := startHost(t, Config{})
	e := engine.New(engine.Config{Logger: testutil.Quiet})
	defer e.Close()
	cli, _ := NewOn(e, Config{})
	ready := make(chan error, 1)
	cli.DialAsync(addr, DialOptions{Expect: other.ID()}, func(_ *PeerConn, err error) { ready <- err })
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
	srv, addr := startHost(t, Config{})
	hp := testutil.HostPort(t, addr)
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
		if got := failureCount(t, srv, tc.reason); got == 0 {
			t.Fatalf("%s: no failure counted under %q", tc.name, tc.reason)
		}
	}
	// A good client still gets through.
	pc := dialHost(t, srv, addr, DialOptions{Expect: srv.ID()})
	echoOver(t, pc, []byte("still serving"))
}

// regOf is a startHost host's metrics registry.
func regOf(h *Host) *prometheus.Registry {
	reg, _ := testHosts.Load(h)
	return reg.(*prometheus.Registry)
}

// failureCount sums the connection failure counters of a startHost host
// whose reason starts with prefix.
func failureCount(t testing.TB, h *Host, prefix string) float64 {
	var sum float64
	for k, v := range testutil.Gather(t, regOf(h)) {
		if strings.HasPrefix(k, "swarmgate_connection_failures_total{reason="+prefix) {
			sum += v
		}
	}
	return sum
}

func TestHostUpgradeCap(t *testing.T) {
	srv, addr := startHost(t, Config{MaxConcurrentUpgrades: 2})
	hp := testutil.HostPort(t, addr)
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
	if testutil.CounterValue(t, regOf(srv), "swarmgate_libp2p_upgrades_total", map[string]string{"result": "upgrade_cap"}) != 1 {
		t.Fatal("refusal not counted")
	}
	held[0].Close()
	testutil.WaitFor(t, 5*time.Second, func() bool { return srv.upgrading.Load() < 2 })
	pc := dialHost(t, srv, addr, DialOptions{})
	echoOver(t, pc, []byte("room again"))
}

// A listener on the unspecified address announces each interface's
// address with the bound port, never 0.0.0.0.
func TestListenUnspecifiedAnnouncesInterfaces(t *testing.T) {
	h, err := New(Config{Engine: engine.Config{Logger: testutil.Quiet}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	bound, err := h.Listen(ma.StringCast("/ip4/0.0.0.0/tcp/0/ws"))
	if err != nil {
		t.Fatal(err)
	}
	port, _ := bound.ValueForProtocol(ma.P_TCP)
	want := ma.StringCast("/ip4/127.0.0.1/tcp/" + port + "/ws")
	addrs := h.ListenAddrs()
	if !slices.ContainsFunc(addrs, want.Equal) {
		t.Fatalf("announced %v, want %v among them", addrs, want)
	}
	for _, a := range addrs {
		if manet.IsIPUnspecified(a) {
			t.Fatalf("announced %v", a)
		}
	}
}
