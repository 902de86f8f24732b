package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	golibp2p "github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	circuitclient "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/libp2p/go-libp2p/p2p/transport/websocket"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/libp2p"
)

// go-libp2p v0.51.0 hosts without listen addresses use our relay over /ws
// and /tls/ws (self-signed on loopback; go skips verification here):
// one reserves (go's client verifies the voucher and the expiry), another
// dials it through /p2p/RELAY/p2p-circuit and runs Noise, yamux and an
// echo stream over the circuit.

func newGoHost(t *testing.T) host.Host {
	t.Helper()
	h, err := golibp2p.New(
		golibp2p.NoListenAddrs,
		golibp2p.Transport(websocket.New, websocket.WithTLSClientConfig(&tls.Config{InsecureSkipVerify: true})),
		golibp2p.EnableRelay(),
		golibp2p.DisableMetrics(),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func TestGoLibp2pThroughRelay(t *testing.T) {
	for _, tc := range []struct {
		name    string
		listen  string
		cfg     Config
		limited bool
		size    int
	}{
		{"limited", "/ws", Config{}, true, 100_000},
		{"limited-tls", "/tls/ws", Config{}, true, 100_000},
		{"unlimited", "/ws", Config{CircuitDuration: -1, CircuitBytes: -1}, false, 4 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := startRelayOn(t, "/ip4/127.0.0.1/tcp/0"+tc.listen, tc.cfg, nil)
			relayInfo := peer.AddrInfo{ID: tr.host.ID(), Addrs: []ma.Multiaddr{tr.addr}}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			target := newGoHost(t)
			target.SetStreamHandler(libp2p.ProtoEcho, func(s network.Stream) {
				io.Copy(s, s)
				s.Close()
			})
			if err := target.Connect(ctx, relayInfo); err != nil {
				t.Fatal(err)
			}
			rsvp, err := circuitclient.Reserve(ctx, target, relayInfo)
			if err != nil {
				t.Fatal(err)
			}
			if rsvp.Voucher == nil || rsvp.Voucher.Relay != tr.host.ID() || rsvp.Voucher.Peer != target.ID() {
				t.Fatalf("voucher %+v", rsvp.Voucher)
			}
			if d := time.Until(rsvp.Expiration); d < 59*time.Minute || d > time.Hour {
				t.Fatalf("expires in %v", d)
			}
			if tc.limited && (rsvp.LimitDuration != DefaultCircuitDuration || rsvp.LimitData != DefaultCircuitBytes) {
				t.Fatalf("limit %v, %d B", rsvp.LimitDuration, rsvp.LimitData)
			}
			if !tc.limited && (rsvp.LimitDuration != 0 || rsvp.LimitData != 0) {
				t.Fatalf("unlimited relay announced %v, %d B", rsvp.LimitDuration, rsvp.LimitData)
			}

			dialer := newGoHost(t)
			circuitAddr := tr.addr.Encapsulate(ma.StringCast("/p2p/" + tr.host.ID().String() + "/p2p-circuit"))
			if err := dialer.Connect(ctx, peer.AddrInfo{ID: target.ID(), Addrs: []ma.Multiaddr{circuitAddr}}); err != nil {
				t.Fatal(err)
			}
			conns := dialer.Network().ConnsToPeer(target.ID())
			if len(conns) != 1 || conns[0].Stat().Limited != tc.limited {
				t.Fatalf("%d connections, limited %v", len(conns), len(conns) > 0 && conns[0].Stat().Limited)
			}
			sctx := ctx
			if tc.limited {
				sctx = network.WithAllowLimitedConn(ctx, "relay test")
			}
			s, err := dialer.NewStream(sctx, target.ID(), libp2p.ProtoEcho)
			if err != nil {
				t.Fatal(err)
			}
			data := randomBytes(tc.size)
			go func() {
				s.Write(data)
				s.CloseWrite()
			}()
			got, err := io.ReadAll(s)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("echo through the relay: %d of %d bytes, %v", len(got), len(data), err)
			}
			s.Close()
		})
	}
}

// Issue 15's acceptance: forty go-libp2p peers reserve on the relay over
// /ws and are each reached through it by another go-libp2p peer, echoing
// byte-exact, all at once.
func TestFortyGoPeers(t *testing.T) {
	if testing.Short() {
		t.Skip("80 go-libp2p hosts")
	}
	const n = 40
	tr := startRelay(t, Config{}, nil)
	relayInfo := peer.AddrInfo{ID: tr.host.ID(), Addrs: []ma.Multiaddr{tr.addr}}
	circuitAddr := tr.addr.Encapsulate(ma.StringCast("/p2p/" + tr.host.ID().String() + "/p2p-circuit"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	targets := make([]host.Host, n)
	for i := range targets {
		targets[i] = newGoHost(t)
		targets[i].SetStreamHandler(libp2p.ProtoEcho, func(s network.Stream) {
			io.Copy(s, s)
			s.Close()
		})
	}
	errs := make(chan error, 2*n)
	var wg sync.WaitGroup
	for _, h := range targets {
		wg.Go(func() {
			if err := h.Connect(ctx, relayInfo); err != nil {
				errs <- err
				return
			}
			if _, err := circuitclient.Reserve(ctx, h, relayInfo); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	if got := tr.relay.svc.store.Len(); got != n {
		t.Fatalf("%d reservations held, want %d", got, n)
	}
	for _, target := range targets {
		dialer := newGoHost(t)
		wg.Go(func() {
			if err := dialer.Connect(ctx, peer.AddrInfo{ID: target.ID(), Addrs: []ma.Multiaddr{circuitAddr}}); err != nil {
				errs <- err
				return
			}
			s, err := dialer.NewStream(network.WithAllowLimitedConn(ctx, "relay test"), target.ID(), libp2p.ProtoEcho)
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			data := randomBytes(32 << 10)
			go func() {
				s.Write(data)
				s.CloseWrite()
			}()
			got, err := io.ReadAll(s)
			if err == nil && !bytes.Equal(got, data) {
				err = fmt.Errorf("echo differs: %d of %d bytes", len(got), len(data))
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if made := counterValue(tr.relay.svc.m.made); made != n {
		t.Fatalf("%v circuits made, want %d", made, n)
	}
}
