package libp2p

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/websocket"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/mux"
)

// go-libp2p v0.51.0 as the client of our host: identify (its identify
// service runs on connect, and NewStream waits for it), ping and echo.

// noiseNoInline builds go-libp2p's Noise without muxers, so the muxer is
// negotiated with multistream-select after the handshake instead of
// inside it.
func noiseNoInline(id protocol.ID, k crypto.PrivKey) (*noise.Transport, error) {
	return noise.New(id, k, nil)
}

func TestLibp2pClientInterop(t *testing.T) {
	cases := []struct {
		name   string
		opts   []libp2p.Option
		inline bool
	}{
		// Noise only, muxer inlined in the handshake (go's default).
		{"noise", []libp2p.Option{libp2p.Security(noise.ID, noise.New)}, true},
		// go's default security: TLS proposed first (we answer na), then Noise.
		{"default-security", []libp2p.Option{libp2p.DefaultSecurity}, true},
		// Noise without inlined muxer: multistream-select for /yamux/1.0.0.
		{"noise-no-inline", []libp2p.Option{libp2p.Security(noise.ID, noiseNoInline)}, false},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, addr := startHost(t, Config{})
			if err := srv.Handle(ProtoEcho, EchoStream); err != nil {
				t.Fatal(err)
			}
			opts := append([]libp2p.Option{libp2p.NoListenAddrs, libp2p.Transport(websocket.New)}, tc.opts...)
			cli, err := libp2p.New(opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := cli.Connect(ctx, peer.AddrInfo{ID: srv.ID(), Addrs: []ma.Multiaddr{addr}}); err != nil {
				t.Fatal(err)
			}
			conns := cli.Network().ConnsToPeer(srv.ID())
			if len(conns) != 1 {
				t.Fatalf("%d connections", len(conns))
			}
			cs := conns[0].ConnState()
			if cs.Security != noise.ID || cs.StreamMultiplexer != ProtoYamux || cs.UsedEarlyMuxerNegotiation != tc.inline {
				t.Fatalf("connection state %+v", cs)
			}
			checkLibp2pIdentify(t, ctx, cli, srv)
			libp2pPings(t, ctx, cli, srv.ID(), 10)
			if i == 0 { // the big transfer once: it costs seconds on 2 cores
				libp2pEchoes(t, ctx, cli, srv.ID(), 8, 4<<20)
			} else {
				libp2pEchoes(t, ctx, cli, srv.ID(), 2, 64<<10)
			}
		})
	}
}

// checkLibp2pIdentify waits until go-libp2p's peerstore holds what our
// identify announced.
func checkLibp2pIdentify(t *testing.T, ctx context.Context, cli host.Host, srv *Host) {
	t.Helper()
	for {
		av, _ := cli.Peerstore().Get(srv.ID(), "AgentVersion")
		protos, _ := cli.Peerstore().GetProtocols(srv.ID())
		if av != nil && len(protos) > 0 {
			if s, _ := av.(string); !strings.HasPrefix(s, "swarmgate/") {
				t.Fatalf("AgentVersion %v", av)
			}
			pv, _ := cli.Peerstore().Get(srv.ID(), "ProtocolVersion")
			if pv != IdentifyProtocolVersion {
				t.Fatalf("ProtocolVersion %v", pv)
			}
			got := protocol.ConvertToStrings(protos)
			slices.Sort(got)
			if !slices.Equal(got, srv.Protocols()) {
				t.Fatalf("protocols %v, want %v", got, srv.Protocols())
			}
			if k := cli.Peerstore().PubKey(srv.ID()); k == nil || !k.Equals(srv.Key().GetPublic()) {
				t.Fatal("public key not recorded")
			}
			// Listen addresses: loopback is announced over loopback.
			addrs := cli.Peerstore().Addrs(srv.ID())
			if !slices.ContainsFunc(addrs, func(a ma.Multiaddr) bool { return a.Equal(srv.ListenAddrs()[0]) }) {
				t.Fatalf("addrs %v lack %v", addrs, srv.ListenAddrs()[0])
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("identify did not reach the peerstore (agent %v, protocols %v)", av, protos)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// libp2pPings runs n pings on one stream, as go-libp2p's ping.Ping does.
func libp2pPings(t *testing.T, ctx context.Context, cli host.Host, id peer.ID, n int) {
	t.Helper()
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res := ping.Ping(pctx, cli, id)
	for i := range n {
		select {
		case r := <-res:
			if r.Error != nil {
				t.Fatalf("ping %d: %v", i, r.Error)
			}
			if r.RTT <= 0 {
				t.Fatalf("ping %d: rtt %v", i, r.RTT)
			}
		case <-ctx.Done():
			t.Fatalf("ping %d timed out", i)
		}
	}
}

// libp2pEchoes runs n concurrent echo streams of size bytes each.
func libp2pEchoes(t *testing.T, ctx context.Context, cli host.Host, id peer.ID, n, size int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rand.Uint32())
		}
		wg.Go(func() {
			s, err := cli.NewStream(ctx, id, ProtoEcho)
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			werr := make(chan error, 1)
			go func() {
				_, err := s.Write(data)
				if err == nil {
					err = s.CloseWrite()
				}
				werr <- err
			}()
			got, err := io.ReadAll(s)
			if err == nil {
				err = <-werr
			}
			if err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, data) {
				t.Errorf("echo differs: %d bytes of %d", len(got), len(data))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestLibp2pServerInterop: our client role (identify, ping, blocking echo)
// against a go-libp2p v0.51.0 host, which also identifies us.
func TestLibp2pServerInterop(t *testing.T) {
	gh, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0/ws"),
		libp2p.Transport(websocket.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.UserAgent("go-libp2p-interop/1"),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer gh.Close()
	gh.SetStreamHandler(ProtoEcho, func(s network.Stream) {
		io.Copy(s, s)
		s.Close()
	})

	e := engine.New(engine.Config{Logger: testutil.Quiet})
	defer e.Close()
	cli, err := NewOn(e, Config{})
	if err != nil {
		t.Fatal(err)
	}
	cli.Handle(ProtoEcho, EchoStream) // go-libp2p identifies us too
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	pc, err := cli.Dial(dctx, gh.Addrs()[0], DialOptions{Expect: gh.ID()})
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
	for _, p := range []string{ProtoIdentify, ProtoPing, ProtoEcho} {
		if !slices.Contains(m.Protocols, p) {
			t.Fatalf("protocols %v lack %s", m.Protocols, p)
		}
	}
	if len(m.SignedPeerRecord) == 0 || len(m.ListenAddrs) == 0 {
		t.Fatalf("signed record %d B, %d listen addrs", len(m.SignedPeerRecord), len(m.ListenAddrs))
	}
	for i := range 5 {
		if _, err := pingOver(t, pc); err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
	}
	s, err := pc.OpenBlocking(ProtoEcho)
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(1 << 20)
	go func() {
		s.Write(data)
		s.Close()
	}()
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("echo: %d of %d bytes, %v", len(got), len(data), err)
	}
	// go-libp2p's identify of us landed in its peerstore.
	deadline := time.Now().Add(5 * time.Second)
	for {
		av, _ := gh.Peerstore().Get(cli.ID(), "AgentVersion")
		if av == "swarmgate/"+Version {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("go-libp2p did not identify us: agent %v", av)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// With an output queue too small for multistream's answers, go-libp2p's
// lazy negotiation (header, protocol and the first data in one write)
// leaves the data buffered while our answer waits: once the answer is out,
// the echo handler gets exactly the data, not the negotiation's bytes.
func TestLibp2pNegotiationAnswerWaits(t *testing.T) {
	srv, addr := startHost(t, Config{Mux: mux.Config{MaxOutput: 24}})
	if err := srv.Handle(ProtoEcho, EchoStream); err != nil {
		t.Fatal(err)
	}
	cli, err := libp2p.New(libp2p.NoListenAddrs, libp2p.Transport(websocket.New), libp2p.Security(noise.ID, noise.New))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cli.Connect(ctx, peer.AddrInfo{ID: srv.ID(), Addrs: []ma.Multiaddr{addr}}); err != nil {
		t.Fatal(err)
	}
	libp2pEchoes(t, ctx, cli, srv.ID(), 16, 1000)
	reg, _ := testHosts.Load(srv)
	for k, v := range testutil.Gather(t, reg.(*prometheus.Registry)) {
		if strings.Contains(k, "reset") && v > 0 {
			t.Errorf("%s = %v", k, v)
		}
	}
}
