package main

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify/pb"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/libp2p"
	"github.com/swarmgate/swarmgate/mux"
)

// TestNode runs the example and talks to it with swarmgate's client role:
// greet, identify and ping.
func TestNode(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan ma.Multiaddr, 1)
	stopped := make(chan error, 1)
	go func() {
		stopped <- run(ctx, ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"), func(a ma.Multiaddr) { addrs <- a })
	}()
	defer func() {
		cancel()
		if err := <-stopped; err != nil {
			t.Error(err)
		}
	}()
	var addr ma.Multiaddr
	select {
	case addr = <-addrs:
	case err := <-stopped:
		t.Fatal(err)
	}
	info, err := peer.AddrInfoFromP2pAddr(addr)
	if err != nil {
		t.Fatal(err)
	}

	cli, err := libp2p.New(libp2p.Config{Engine: engine.Config{Logger: slog.New(slog.DiscardHandler)}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	// Everything below runs in engine callbacks; results come back on
	// channels.
	greeting := make(chan string, 1)
	ident := make(chan *pb.Identify, 1)
	rtts := make(chan time.Duration, 1)
	fail := make(chan error, 3)
	cli.DialAsync(info.Addrs[0], libp2p.DialOptions{Expect: info.ID}, func(pc *libp2p.PeerConn, err error) {
		if err != nil {
			fail <- err
			return
		}
		var got []byte
		_, err = pc.OpenStream("/example/greet/1.0.0", &mux.Funcs{
			Data:  func(_ *mux.Stream, p []byte) int { got = append(got, p...); return len(p) },
			FIN:   func(st *mux.Stream) { st.CloseWrite(); greeting <- string(got) },
			Reset: func(_ *mux.Stream, err error) { fail <- err },
		})
		if err != nil {
			fail <- err
		}
		pc.Identify(func(m *pb.Identify, err error) {
			if err != nil {
				fail <- err
				return
			}
			ident <- m
		})
		pc.Ping(func(rtt time.Duration, err error) {
			if err != nil {
				fail <- err
				return
			}
			rtts <- rtt
		})
	})
	for range 3 {
		select {
		case g := <-greeting:
			if want := "hello " + cli.ID().String() + "\n"; g != want {
				t.Errorf("greeting %q, want %q", g, want)
			}
		case m := <-ident:
			if !slices.Contains(m.Protocols, "/example/greet/1.0.0") || !slices.Contains(m.Protocols, libp2p.ProtoPing) {
				t.Errorf("protocols %v", m.Protocols)
			}
		case rtt := <-rtts:
			if rtt <= 0 {
				t.Errorf("rtt %v", rtt)
			}
		case err := <-fail:
			t.Fatal(err)
		case <-time.After(10 * time.Second):
			t.Fatal("timed out")
		}
	}
}
