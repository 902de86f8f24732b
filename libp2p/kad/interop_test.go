package kad

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	golibp2p "github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	dhtpb "github.com/libp2p/go-libp2p-kad-dht/pb"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/websocket"
	"github.com/libp2p/go-msgio/pbio"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/libp2p"
)

// Interop with go-libp2p v0.51.0 and go-libp2p-kad-dht v0.42.2 over /ws on
// loopback (address filter "all"). Everything the go side checks it
// checks with its own code: the closest sets come from
// go-libp2p-kbucket's SortClosestPeers, requests and replies are
// go-libp2p-kad-dht's pb types.

// startServer runs our host with the role attached.
func startServer(t testing.TB) (*libp2p.Host, *Role, peer.AddrInfo) {
	t.Helper()
	h, err := libp2p.New(libp2p.Config{Engine: engine.Config{Logger: slog.New(slog.DiscardHandler)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	role, err := Attach(h, Config{AddrFilter: AddrsAll})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(role.Close)
	addr, err := h.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"))
	if err != nil {
		t.Fatal(err)
	}
	return h, role, peer.AddrInfo{ID: h.ID(), Addrs: []ma.Multiaddr{addr}}
}

func goHost(t testing.TB, listen bool) host.Host {
	t.Helper()
	opts := []golibp2p.Option{
		golibp2p.Transport(websocket.New),
		golibp2p.Security(noise.ID, noise.New),
		golibp2p.DisableRelay(),
		// Thirty go nodes starting their DHTs on two shared cores can
		// take longer than go's 5 s for a loopback dial.
		golibp2p.SwarmOpts(swarm.WithDialTimeoutLocal(30 * time.Second)),
	}
	if listen {
		opts = append(opts, golibp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0/ws"))
	} else {
		opts = append(opts, golibp2p.NoListenAddrs)
	}
	h, err := golibp2p.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func goDHT(t testing.TB, h host.Host, mode dht.ModeOpt, boot peer.AddrInfo) *dht.IpfsDHT {
	t.Helper()
	d, err := dht.New(h, dht.Mode(mode), dht.BootstrapPeers(boot))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func waitFor(t testing.TB, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// findNode sends one raw FIND_NODE from h with go's pb types on a stream
// it then reuses for a second request, as go's message sender does.
func findNode(t testing.TB, ctx context.Context, h host.Host, to peer.ID, keys ...[]byte) []*dhtpb.Message {
	t.Helper()
	s, err := h.NewStream(ctx, to, Protocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(10 * time.Second))
	w := pbio.NewDelimitedWriter(s)
	r := pbio.NewDelimitedReader(s, 4<<20)
	var out []*dhtpb.Message
	for _, key := range keys {
		if err := w.WriteMsg(dhtpb.NewMessage(dhtpb.Message_FIND_NODE, key, 0)); err != nil {
			t.Fatal(err)
		}
		var resp dhtpb.Message
		if err := r.ReadMsg(&resp); err != nil {
			t.Fatal(err)
		}
		out = append(out, &resp)
	}
	s.CloseWrite()
	if n, err := s.Read(make([]byte, 1)); err != io.EOF || n != 0 {
		t.Fatalf("after our FIN: %d %v, want EOF", n, err)
	}
	return out
}

func TestInteropGoKadDHT(t *testing.T) {
	const nServers = 30 // more than k, so a reply is a real choice (the convergence size)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	_, role, ours := startServer(t)

	// Server-mode go nodes join over /ws and appear in our table.
	servers := make([]host.Host, nServers)
	dhts := make([]*dht.IpfsDHT, nServers)
	listen := map[peer.ID]ma.Multiaddr{}
	ids := make([]peer.ID, nServers)
	for i := range servers {
		servers[i] = goHost(t, true)
		dhts[i] = goDHT(t, servers[i], dht.ModeServer, ours)
		ids[i] = servers[i].ID()
		listen[ids[i]] = servers[i].Addrs()[0]
		if err := servers[i].Connect(ctx, ours); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, ctx, "every server in our table", func() bool { return role.Table().Len() == nServers })
	for _, id := range ids {
		e, ok := role.Table().Lookup(id)
		if !ok || !e.Connected {
			t.Fatalf("%v: %v %+v", id, ok, e)
		}
	}

	// Our server enters the server-mode nodes' routing tables (after go's
	// lookup check, a FIND_NODE for our own ID).
	waitFor(t, ctx, "us in every go routing table", func() bool {
		for _, d := range dhts {
			if d.RoutingTable().Find(ours.ID) == "" {
				return false
			}
		}
		return true
	})

	// Raw FIND_NODE: exactly the k closest by go-libp2p-kbucket's sort,
	// each with its listen address; the requester (a server) left out.
	asker := servers[0]
	var keys [][]byte
	for range 6 {
		k := make([]byte, 34)
		rand.Read(k)
		keys = append(keys, k)
	}
	keys = append(keys, []byte(ids[5]), []byte(ours.ID))
	resps := findNode(t, ctx, asker, ours.ID, keys...)
	others := slices.DeleteFunc(slices.Clone(ids), func(id peer.ID) bool { return id == asker.ID() })
	for i, resp := range resps {
		if resp.Type != dhtpb.Message_FIND_NODE {
			t.Fatalf("reply type %v", resp.Type)
		}
		want := kb.SortClosestPeers(others, kb.ConvertKey(string(keys[i])))[:BucketSize]
		if string(keys[i]) == string(ours.ID) {
			want = append([]peer.ID{ours.ID}, want...)
		}
		var got []peer.ID
		for _, p := range dhtpb.PBPeersToPeerInfos(resp.CloserPeers) {
			got = append(got, p.ID)
			wantAddr := listen[p.ID]
			if p.ID == ours.ID {
				wantAddr = ours.Addrs[0]
			}
			if len(p.Addrs) == 0 || !slices.ContainsFunc(p.Addrs, wantAddr.Equal) {
				t.Fatalf("%v sent with %v, want %v among them", p.ID, p.Addrs, wantAddr)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("key %d: closer peers\n got %v\nwant %v", i, got, want)
		}
	}
	// The addresses are dialable: a fresh go host reaches a peer by them.
	probe := goHost(t, false)
	far := dhtpb.PBPeersToPeerInfos(resps[0].CloserPeers)[BucketSize-1]
	if err := probe.Connect(ctx, *far); err != nil {
		t.Fatalf("dialing %v at the addresses we sent: %v", far.ID, err)
	}

	// A client-mode node that knows only our server completes
	// GetClosestPeers and FindPeer.
	ch := goHost(t, false)
	cd := goDHT(t, ch, dht.ModeClient, ours)
	if err := ch.Connect(ctx, ours); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "our server in the client's routing table", func() bool { return cd.RoutingTable().Find(ours.ID) != "" })
	key := make([]byte, 34)
	rand.Read(key)
	closest, err := cd.GetClosestPeers(ctx, string(key))
	if err != nil {
		t.Fatal(err)
	}
	everyone := append(slices.Clone(ids), ours.ID)
	want := kb.SortClosestPeers(everyone, kb.ConvertKey(string(key)))[:BucketSize]
	if !slices.Equal(kb.SortClosestPeers(closest, kb.ConvertKey(string(key))), want) {
		t.Fatalf("GetClosestPeers\n got %v\nwant %v", closest, want)
	}
	target := ids[nServers-1]
	ai, err := cd.FindPeer(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	if ai.ID != target || !slices.ContainsFunc(ai.Addrs, listen[target].Equal) {
		t.Fatalf("FindPeer: %v", ai)
	}

	// A server that leaves enters its grace period, then expires.
	gone := servers[3].ID()
	servers[3].Close()
	waitFor(t, ctx, "the closed server disconnected", func() bool {
		e, ok := role.Table().Lookup(gone)
		return ok && !e.Connected
	})
	if role.Sweep(time.Now().Add(DefaultGracePeriod+time.Second)) != 1 {
		t.Fatal("the closed server was not swept after its grace period")
	}
	if _, ok := role.Table().Lookup(gone); ok {
		t.Fatal("still in the table")
	}
}

// TestInteropPushModeSwitch: a go host that starts serving the protocol
// after it connected (go-libp2p-kad-dht's switch to server mode registers
// the handler the same way) pushes identify and enters our table; when it
// stops serving it, the next push takes it out.
func TestInteropPushModeSwitch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, role, ours := startServer(t)
	g := goHost(t, true)
	if err := g.Connect(ctx, ours); err != nil {
		t.Fatal(err)
	}
	// Our identify of it is done once its peerstore knows our protocols
	// (it identifies us at the same time); it is not a DHT server yet.
	waitFor(t, ctx, "go identified us", func() bool {
		ps, _ := g.Peerstore().GetProtocols(ours.ID)
		return slices.Contains(ps, "/ipfs/id/push/1.0.0")
	})
	time.Sleep(100 * time.Millisecond)
	if role.Table().Len() != 0 {
		t.Fatal("a client-mode host entered the table")
	}
	g.SetStreamHandler(Protocol, func(s network.Stream) { s.Reset() })
	waitFor(t, ctx, "the pushed server mode", func() bool { return role.Table().Len() == 1 })
	if e, ok := role.Table().Lookup(g.ID()); !ok || !e.Connected {
		t.Fatal("not connected in the table")
	}
	g.RemoveStreamHandler(Protocol)
	waitFor(t, ctx, "the pushed client mode", func() bool { return role.Table().Len() == 0 })
}
