package libp2p

import (
	"context"
	"crypto/tls"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	lpws "github.com/libp2p/go-libp2p/p2p/transport/websocket"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/testutil"
)

// A go-libp2p v0.51.0 host dials /tls/ws (its websocket transport with a
// client TLS config) and runs identify, ping and echo against our host.
func TestTLSLibp2pClientInterop(t *testing.T) {
	cert, pool := testutil.SelfSigned(t, engine.SelfSignedCertificate)
	reg := prometheus.NewRegistry()
	e := engine.New(engine.Config{Logger: testutil.Quiet, Registerer: reg, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	t.Cleanup(func() { e.Close() })
	srv, err := NewOn(e, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Handle(ProtoEcho, EchoStream); err != nil {
		t.Fatal(err)
	}
	l, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/tls/ws"), engine.Routes{Fallback: srv.Stage})
	if err != nil {
		t.Fatal(err)
	}
	srv.SetListenAddrs([]ma.Multiaddr{l.Addr()})
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			cli, err := libp2p.New(libp2p.NoListenAddrs, libp2p.Security(noise.ID, noise.New),
				libp2p.Transport(lpws.New, lpws.WithTLSClientConfig(&tls.Config{RootCAs: pool, MinVersion: v, MaxVersion: v})))
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			before := testutil.CounterValue(t, reg, "swarmgate_tls_handshakes_total", map[string]string{"result": "ok", "version": tls.VersionName(v)})
			if err := cli.Connect(ctx, peer.AddrInfo{ID: srv.ID(), Addrs: []ma.Multiaddr{l.Addr()}}); err != nil {
				t.Fatal(err)
			}
			checkLibp2pIdentify(t, ctx, cli, srv)
			libp2pPings(t, ctx, cli, srv.ID(), 5)
			size := 64 << 10
			if v == tls.VersionTLS13 {
				size = 1 << 20
			}
			libp2pEchoes(t, ctx, cli, srv.ID(), 4, size)
			if after := testutil.CounterValue(t, reg, "swarmgate_tls_handshakes_total", map[string]string{"result": "ok", "version": tls.VersionName(v)}); after != before+1 {
				t.Fatalf("handshakes %v → %v", before, after)
			}
		})
	}
}

// Our client role dials /tls/ws: 2,000 idle libp2p connections over TLS
// keep no goroutine each, on either side.
func TestTLSIdlePeers(t *testing.T) {
	cert, pool := testutil.SelfSigned(t, engine.SelfSignedCertificate)
	e := engine.New(engine.Config{Logger: testutil.Quiet, TLS: &tls.Config{Certificates: []tls.Certificate{cert}},
		Limits: admission.Limits{MaxConnsPerPeer: -1}}) // one client identity opens them all
	t.Cleanup(func() { e.Close() })
	srv, err := NewOn(e, Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv.Handle(ProtoEcho, EchoStream)
	l, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/tls/ws"), engine.Routes{Fallback: srv.Stage})
	if err != nil {
		t.Fatal(err)
	}
	ce := engine.New(engine.Config{Logger: testutil.Quiet, TLSClient: &tls.Config{RootCAs: pool}})
	t.Cleanup(func() { ce.Close() })
	cli, err := NewOn(ce, Config{})
	if err != nil {
		t.Fatal(err)
	}
	n := 2000
	if testing.Short() {
		n = 300
	}
	runtime.GC()
	g0 := runtime.NumGoroutine()
	var wg sync.WaitGroup
	var failed atomic.Int64
	sem := make(chan struct{}, 64)
	for range n {
		sem <- struct{}{}
		wg.Add(1)
		cli.DialAsync(l.Addr(), DialOptions{Expect: srv.ID()}, func(pc *PeerConn, err error) {
			if err != nil {
				failed.Add(1)
			}
			<-sem
			wg.Done()
		})
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d dials failed", f, n)
	}
	if e.OpenConns() != int64(n) || ce.OpenConns() != int64(n) {
		t.Fatalf("open: server %d, client %d", e.OpenConns(), ce.OpenConns())
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return runtime.NumGoroutine()-g0 < 50 })
	t.Logf("%d idle TLS libp2p connections: %d goroutines more than before", n, runtime.NumGoroutine()-g0)
}

// Our client role over TLS against go-libp2p v0.51.0's own wss listener
// (its websocket transport with a server TLS config): identify and ping.
func TestTLSLibp2pServerInterop(t *testing.T) {
	cert, pool := testutil.SelfSigned(t, engine.SelfSignedCertificate)
	gh, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0/tls/ws"),
		libp2p.Transport(lpws.New, lpws.WithTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}})),
		libp2p.Security(noise.ID, noise.New),
		libp2p.UserAgent("go-libp2p-interop/1"),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer gh.Close()
	var target ma.Multiaddr
	for _, a := range gh.Addrs() {
		if _, err := a.ValueForProtocol(ma.P_TLS); err == nil {
			target = a
		}
	}
	if target == nil {
		t.Fatalf("no /tls/ws address in %v", gh.Addrs())
	}
	e := engine.New(engine.Config{Logger: testutil.Quiet, TLSClient: &tls.Config{RootCAs: pool, ServerName: "localhost"}})
	defer e.Close()
	cli, err := NewOn(e, Config{})
	if err != nil {
		t.Fatal(err)
	}
	cli.Handle(ProtoEcho, EchoStream)
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	pc, err := cli.Dial(dctx, target, DialOptions{Expect: gh.ID()})
	if err != nil {
		t.Fatal(err)
	}
	m, err := identifyOver(t, pc)
	if err != nil {
		t.Fatal(err)
	}
	if m.GetAgentVersion() != "go-libp2p-interop/1" {
		t.Fatalf("agent %q", m.GetAgentVersion())
	}
	for i := range 3 {
		if _, err := pingOver(t, pc); err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
	}
}
