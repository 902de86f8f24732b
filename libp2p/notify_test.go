package libp2p

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify/pb"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/websocket"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgate/swarmgate/internal/wire"
)

func TestNotifyConnectedClosed(t *testing.T) {
	srv, addr := startHost(t, Config{})
	connected := make(chan peer.ID, 1)
	closed := make(chan peer.ID, 1)
	srv.Notify(Notifiee{
		Connected: func(pc *PeerConn) { connected <- pc.RemotePeer() },
		Closed:    func(pc *PeerConn) { closed <- pc.RemotePeer() },
	})
	pc := dialHost(t, srv, addr, DialOptions{})
	select {
	case id := <-connected:
		if id != pc.Host().ID() {
			t.Fatalf("connected %v, want %v", id, pc.Host().ID())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no Connected")
	}
	pc.Do(pc.Close)
	select {
	case id := <-closed:
		if id != pc.Host().ID() {
			t.Fatalf("closed %v", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no Closed")
	}
}

// TestIdentifyPushFromOurClient pushes raw messages: one without a public
// key (as js sends them) is reported, one under another peer's key is not.
func TestIdentifyPushFromOurClient(t *testing.T) {
	srv, addr := startHost(t, Config{})
	pushes := make(chan *pb.Identify, 4)
	if err := srv.Notify(Notifiee{IdentifyPush: func(_ *PeerConn, m *pb.Identify) { pushes <- m }}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(srv.Protocols(), ProtoIdentifyPush) {
		t.Fatalf("push not served: %v", srv.Protocols())
	}
	pc := dialHost(t, srv, addr, DialOptions{})
	push := func(msgs ...*pb.Identify) {
		s, err := pc.OpenBlocking(ProtoIdentifyPush)
		if err != nil {
			t.Fatal(err)
		}
		var b []byte
		for _, m := range msgs {
			body, _ := proto.Marshal(m)
			b = wire.AppendDelimited(b, body)
		}
		if _, err := s.Write(b); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	la := ma.StringCast("/ip4/192.0.2.1/tcp/4001").Bytes()
	// Two messages merged: protocols from one, addresses from the other.
	push(&pb.Identify{Protocols: []string{"/ipfs/kad/1.0.0"}}, &pb.Identify{ListenAddrs: [][]byte{la}})
	select {
	case m := <-pushes:
		if !slices.Equal(m.Protocols, []string{"/ipfs/kad/1.0.0"}) || len(m.ListenAddrs) != 1 {
			t.Fatalf("push %v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("push not reported")
	}
	other, _, _ := crypto.GenerateEd25519Key(nil)
	kb, _ := crypto.MarshalPublicKey(other.GetPublic())
	push(&pb.Identify{PublicKey: kb, Protocols: []string{"/x"}})
	push(&pb.Identify{Protocols: []string{"/y"}})
	select {
	case m := <-pushes:
		if !slices.Equal(m.Protocols, []string{"/y"}) {
			t.Fatalf("a push under a foreign key was reported: %v", m.Protocols)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("push not reported")
	}
}

// TestIdentifyPushFromLibp2p: go-libp2p v0.51.0 pushes when its protocols
// change, to peers whose identify lists the push protocol.
func TestIdentifyPushFromLibp2p(t *testing.T) {
	srv, addr := startHost(t, Config{})
	pushes := make(chan *pb.Identify, 4)
	srv.Notify(Notifiee{IdentifyPush: func(pc *PeerConn, m *pb.Identify) { pushes <- m }})
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
	checkLibp2pIdentify(t, ctx, cli, srv) // it knows we take pushes
	cli.SetStreamHandler("/swarmgate/test/1.0.0", func(s network.Stream) { s.Reset() })
	for {
		select {
		case m := <-pushes:
			if slices.Contains(m.Protocols, "/swarmgate/test/1.0.0") {
				if len(m.PublicKey) == 0 {
					t.Fatal("go push without its key")
				}
				return
			}
		case <-ctx.Done():
			t.Fatal("go-libp2p's push did not arrive")
		}
	}
}
