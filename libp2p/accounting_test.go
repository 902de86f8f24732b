package libp2p

import (
	"context"
	"crypto/tls"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/libp2p/go-libp2p/core/crypto"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/adversary"
	"github.com/swarmgate/swarmgate/internal/bufpool"
	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/mux"
)

// chargedGauges are the resource model's gauges that count what
// connections hold: each must return to zero once every peer has left.
var chargedGauges = []string{
	"swarmgate_memory_used_bytes",
	"swarmgate_streams_inbound",
	"swarmgate_limit_peers_tracked",
	"swarmgate_limit_connections_admitted",
	"swarmgate_libp2p_sessions_open",
	"swarmgate_connections_open",
}

// The accounting is exact: a mix of attacks and clean traffic, over /ws
// and /tls/ws, with per-source limits on for loopback (so the source
// level is charged too) and one identity on several connections (so the
// peer level is shared), and once every peer has left every charged
// gauge is back at zero and the pooled buffers borrowed are back where
// they were.
func TestAccountingReturnsToZero(t *testing.T) {
	cert, pool := testutil.SelfSigned(t, engine.SelfSignedCertificate)
	srv, addr := startHost(t, Config{
		Engine: engine.Config{Tick: 20 * time.Millisecond, WriteTimeout: time.Second, HandshakeTimeout: time.Second,
			TLS:    &tls.Config{Certificates: []tls.Certificate{cert}},
			Limits: admission.Limits{LimitLoopback: true, MaxConnsPerIP: 1000, MaxConnsPerSubnet: -1, ConnRatePerIP: -1}},
		NegotiationTimeout: 300 * time.Millisecond,
		Mux:                mux.Config{HeldDataTimeout: 500 * time.Millisecond},
	})
	tlsAddr, err := srv.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/tls/ws"))
	if err != nil {
		t.Fatal(err)
	}
	reg := regOf(srv)
	borrowed := bufpool.Borrowed()

	// Clean traffic: echo, identify and ping over /ws and /tls/ws, from a
	// client host of our own (closed at the end).
	cli, err := New(Config{Engine: engine.Config{Logger: testutil.Quiet, TLSClient: &tls.Config{RootCAs: pool, ServerName: "localhost"}}})
	if err != nil {
		t.Fatal(err)
	}
	var goods []*goodClient
	for _, a := range []ma.Multiaddr{addr, tlsAddr, addr} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		pc, err := cli.Dial(ctx, a, DialOptions{})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		goods = append(goods, &goodClient{t: t, pc: pc, rng: rand.New(rand.NewPCG(uint64(len(goods)), 2))})
	}
	var wg sync.WaitGroup
	for _, g := range goods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				if err := echoData(g.pc, g.random(256<<10)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	if _, err := identifyOver(t, goods[1].pc); err != nil {
		t.Fatal(err)
	}

	// Attacks, one identity across several connections.
	key, _, _ := crypto.GenerateEd25519Key(nil)
	var raws []*adversary.Peer
	for i := range 3 {
		p := adversary.Dial(t, addr, key)
		p.StartReader()
		raws = append(raws, p)
		switch i {
		case 0: // streams filled and held, then reset for held data
			go fillEchoStreams(p, 24, 10)
		case 1: // open and reset, abandoned negotiations
			var frames [][]byte
			for id := uint32(1); id < 2000; id += 2 {
				frames = append(frames, adversary.OpenStream(id, ProtoEcho, []byte("x")), adversary.Frame(mux.TypeWindowUpdate, mux.FlagRST, id, 0, nil))
			}
			for id := uint32(2001); id < 2200; id += 2 {
				frames = append(frames, adversary.Data(mux.FlagSYN, id, []byte{0x13}))
			}
			p.Send(frames...)
		case 2: // a Noise frame left half sent
			p.WriteRaw(append([]byte{0xff, 0xff}, make([]byte, 3000)...))
		}
	}
	overflow := adversary.Dial(t, addr, nil) // a protocol violation
	overflow.StartReader()
	overflow.Send(adversary.OpenStream(1, ProtoEcho, nil), adversary.Frame(mux.TypeWindowUpdate, 0, 1, 1<<32-1, nil))
	flood := adversary.Dial(t, addr, nil) // reads nothing, floods new streams
	go floodNewStreams(flood, 200)
	// Stalled in the upgrade, over both transports.
	stalled := adversary.DialWS(t, addr)
	stalled.WriteMessage(websocket.BinaryMessage, append(adversary.Propose(ProtoNoise), 0x01)) // Noise, one byte of a length
	td := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}
	stalledTLS, _, err := td.Dial("wss://"+testutil.HostPort(t, tlsAddr)+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	stalledTLS.WriteMessage(websocket.BinaryMessage, []byte{0x13, '/', 'm'})

	wg.Wait()
	overflow.WaitEnd(5 * time.Second)
	time.Sleep(300 * time.Millisecond) // the attacks under way
	busy := testutil.Gather(t, reg)
	t.Logf("under attack: %v bytes charged, %v inbound streams, %v peers, %v connections admitted",
		busy["swarmgate_memory_used_bytes"], busy["swarmgate_streams_inbound"], busy["swarmgate_limit_peers_tracked"], busy["swarmgate_limit_connections_admitted"])
	if busy["swarmgate_limit_connections_admitted"] == 0 || busy["swarmgate_limit_peers_tracked"] == 0 {
		t.Fatal("nothing was charged")
	}

	// Everyone leaves.
	for _, p := range append(raws, overflow, flood) {
		p.WS.Close()
	}
	stalled.Close()
	stalledTLS.Close()
	cli.Close()
	testutil.WaitFor(t, 10*time.Second, func() bool {
		got := testutil.Gather(t, reg)
		for _, g := range chargedGauges {
			if got[g] != 0 {
				return false
			}
		}
		return true
	})
	// The pooled buffers the connections borrowed are back (the pool is
	// the process's: the clients' buffers count too, and they are gone).
	testutil.WaitFor(t, 5*time.Second, func() bool { return bufpool.Borrowed() <= borrowed })
	if s := srv.Engine().Memory().Used(); s != 0 {
		t.Fatalf("budget holds %d", s)
	}
}
