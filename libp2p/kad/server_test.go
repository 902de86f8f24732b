package kad

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/libp2p/kad/pb"
	"github.com/swarmgate/swarmgate/mux"
)

func maBytes(ss ...string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = ma.StringCast(s).Bytes()
	}
	return out
}

func TestAddrFilter(t *testing.T) {
	raw := maBytes(
		"/ip4/127.0.0.1/tcp/4001/ws",
		"/ip4/192.168.1.5/tcp/4001",
		"/ip4/10.0.0.1/udp/4001/quic-v1",
		"/ip4/203.0.113.9/tcp/4001", // documentation range: not public
		"/ip4/8.8.8.8/tcp/4001",
		"/ip6/::1/tcp/4001",
		"/ip6/2606:4700::1/udp/4001/quic-v1",
		"/dns4/bootstrap.example.com/tcp/443/wss",
		"/dns/node.local/tcp/4001",
		"/ip4/8.8.8.8/tcp/4001", // repeated
	)
	raw = append(raw, []byte{0xff, 0xff, 0xff}) // does not parse
	pub := AddrsPublic.Select(raw, 0)
	want := maBytes("/ip4/8.8.8.8/tcp/4001", "/ip6/2606:4700::1/udp/4001/quic-v1", "/dns4/bootstrap.example.com/tcp/443/wss")
	if len(pub) != len(want) {
		t.Fatalf("public kept %d: %q", len(pub), pub)
	}
	for i := range want {
		if !bytes.Equal(pub[i], want[i]) {
			t.Fatalf("public[%d] = %x", i, pub[i])
		}
	}
	if all := AddrsAll.Select(raw, 0); len(all) != 9 { // all but the repeat and the bad one
		t.Fatalf("all kept %d", len(all))
	}
	if capped := AddrsAll.Select(raw, 3); len(capped) != 3 || !bytes.Equal(capped[2], raw[2]) {
		t.Fatalf("cap 3 kept %d", len(capped))
	}
	var many [][]byte
	for i := range 40 {
		many = append(many, ma.StringCast(fmt.Sprintf("/ip4/8.8.4.4/tcp/%d", 4000+i)).Bytes())
	}
	if n := len(AddrsPublic.Select(many, 0)); n != DefaultMaxAddrsPerPeer {
		t.Fatalf("default cap kept %d", n)
	}
	for _, s := range []string{"public", "all", ""} {
		if _, err := ParseAddrFilter(s); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ParseAddrFilter("private"); err == nil {
		t.Fatal("parsed a bad filter")
	}
	// Our own addresses lose a /p2p suffix.
	self := ma.StringCast("/ip4/8.8.8.8/tcp/443/wss/p2p/12D3KooWLRPJAA5o6nK8cdb2tpGgrfodp5FcW2Tyu1kbT1CVKyeZ")
	if got := AddrsPublic.SelectAddrs([]ma.Multiaddr{self}, 0); len(got) != 1 || !bytes.Equal(got[0], ma.StringCast("/ip4/8.8.8.8/tcp/443/wss").Bytes()) {
		t.Fatalf("self addrs %x", got)
	}
}

func TestServerMembership(t *testing.T) {
	h := newHarness(t, Config{AddrFilter: AddrsPublic, GracePeriod: time.Minute}, mux.Config{})
	s := h.srv
	r := rand.New(rand.NewPCG(21, 22))
	pubAddr := maBytes("/ip4/8.8.8.8/tcp/4001")
	privAddr := maBytes("/ip4/192.168.0.2/tcp/4001")

	// A client-mode peer (no kad in identify) never enters.
	cl := NewPeer(randomID(r))
	s.Identified(cl, []string{"/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"}, pubAddr)
	// A DHT server with only private addresses is refused under "public".
	priv := NewPeer(randomID(r))
	s.Identified(priv, []string{Protocol}, privAddr)
	// A DHT server with a public address enters.
	srv := NewPeer(randomID(r))
	s.Identified(srv, []string{Protocol}, append(privAddr, pubAddr...))
	if s.Table().Len() != 1 || !srv.InTable() || cl.InTable() || priv.InTable() {
		t.Fatalf("table %d, in %v %v %v", s.Table().Len(), srv.InTable(), cl.InTable(), priv.InTable())
	}
	e, _ := s.Table().Lookup(srv.ID)
	if ai, _ := e.Peer(); len(ai.Addrs) != 1 {
		t.Fatalf("private address kept: %v", ai.Addrs)
	}
	if n := h.counter("swarmgate_kad_table_changes_total", "change", "refused", "reason", "no_addrs"); n != 1 {
		t.Fatalf("refused no_addrs %v", n)
	}

	// Push: the client turns server mode on (full state), and off again.
	s.Pushed(cl, []string{"/ipfs/id/1.0.0", Protocol}, pubAddr)
	if !cl.InTable() || s.Table().Len() != 2 {
		t.Fatal("push to server mode did not add")
	}
	// A push without protocols or addresses changes nothing.
	s.Pushed(cl, nil, nil)
	if !cl.InTable() || s.Table().Len() != 2 {
		t.Fatal("an empty push evicted")
	}
	// New addresses through a push.
	newAddr := maBytes("/ip4/1.1.1.1/udp/4001/quic-v1")
	s.Pushed(cl, nil, newAddr)
	e, _ = s.Table().Lookup(cl.ID)
	if ai, _ := e.Peer(); len(ai.Addrs) != 1 || !bytes.Equal(ai.Addrs[0].Bytes(), newAddr[0]) {
		t.Fatalf("push addresses not applied: %v", ai.Addrs)
	}
	s.Pushed(cl, []string{"/ipfs/id/1.0.0"}, nil)
	if cl.InTable() || s.Table().Len() != 1 {
		t.Fatal("push to client mode did not remove")
	}
	if n := h.counter("swarmgate_kad_table_changes_total", "change", "removed", "reason", "not_dht"); n != 1 {
		t.Fatalf("removed not_dht %v", n)
	}
	// A push leaving only private addresses removes it too.
	s.Pushed(srv, nil, privAddr)
	if srv.InTable() || s.Table().Len() != 0 {
		t.Fatal("push to no usable address did not remove")
	}
	s.Pushed(srv, nil, pubAddr)
	if !srv.InTable() {
		t.Fatal("push with an address again did not add")
	}

	// Two connections of one peer: the entry waits for the last to end.
	srv2 := &Peer{ID: srv.ID, Key: srv.Key}
	s.Identified(srv2, []string{Protocol}, pubAddr)
	t1 := testT0.Add(time.Hour)
	s.Disconnected(srv, t1)
	if e, _ := s.Table().Lookup(srv.ID); !e.Connected {
		t.Fatal("disconnected while another connection lives")
	}
	s.Disconnected(srv2, t1.Add(time.Second))
	if e, _ := s.Table().Lookup(srv.ID); e.Connected {
		t.Fatal("still connected after both ended")
	}
	// Still served during the grace period, as NOT_CONNECTED.
	c := h.open()
	h.send(c, request(&pb.Message{Type: pb.Message_FIND_NODE, Key: []byte("x")}))
	resp := h.responses(c)[0]
	if len(resp.CloserPeers) != 1 || resp.CloserPeers[0].Connection != pb.Message_NOT_CONNECTED {
		t.Fatalf("grace entry served as %v", resp.CloserPeers)
	}
	if s.Sweep(t1.Add(time.Minute)) != 0 {
		t.Fatal("swept early")
	}
	if s.Sweep(t1.Add(time.Minute+time.Second)) != 1 || s.Table().Len() != 0 {
		t.Fatal("not swept after the grace period")
	}
	if n := h.counter("swarmgate_kad_table_changes_total", "change", "removed", "reason", "grace_expired"); n != 1 {
		t.Fatalf("grace_expired %v", n)
	}

	// The embedding API.
	static := randomID(r)
	if err := s.AddPeer(peer.AddrInfo{ID: static, Addrs: []ma.Multiaddr{ma.StringCast("/ip4/9.9.9.9/tcp/4001")}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPeer(peer.AddrInfo{ID: randomID(r), Addrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/1")}}); err == nil {
		t.Fatal("added a peer without a public address")
	}
	if s.Sweep(t1.Add(100*time.Hour)) != 0 || s.Table().Len() != 1 {
		t.Fatal("static entry swept")
	}
	if !s.RemovePeer(static) || s.Table().Len() != 0 {
		t.Fatal("RemovePeer")
	}
}
