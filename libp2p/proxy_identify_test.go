package libp2p

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"net/netip"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/libp2p/go-libp2p/core/crypto"
	pb "github.com/libp2p/go-libp2p/p2p/protocol/identify/pb"
	gonoise "github.com/libp2p/go-libp2p/p2p/security/noise"
	goyamux "github.com/libp2p/go-yamux/v4"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/multiformats/go-multistream"
	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/testutil"
	"google.golang.org/protobuf/proto"
)

// observedVia connects with the given X-Forwarded-For header and returns
// the observedAddr the server's identify reports.
func observedVia(t *testing.T, srv *Host, addr ma.Multiaddr, xff string) ma.Multiaddr {
	t.Helper()
	h := http.Header{}
	h.Set("X-Forwarded-For", xff)
	wc, _, err := websocket.DefaultDialer.Dial("ws://"+testutil.HostPort(t, addr)+"/", h)
	if err != nil {
		t.Fatal(err)
	}
	conn := &wsNetConn{Conn: wc}
	defer conn.Close()
	if err := multistream.SelectProtoOrFail(ProtoNoise, conn); err != nil {
		t.Fatal(err)
	}
	key, _, _ := crypto.GenerateEd25519Key(nil)
	tpt, _ := gonoise.New(gonoise.ID, key, yamuxMuxer)
	sc, err := tpt.SecureOutbound(context.Background(), conn, srv.ID())
	if err != nil {
		t.Fatal(err)
	}
	sess, err := goyamux.Client(sc, goyamux.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	s, err := sess.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := multistream.SelectProtoOrFail(ProtoIdentify, s); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(s)
	n, err := binary.ReadUvarint(br)
	if err != nil || n > MaxIdentifyMessage {
		t.Fatalf("identify length %d: %v", n, err)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		t.Fatal(err)
	}
	var msg pb.Identify
	if err := proto.Unmarshal(b, &msg); err != nil {
		t.Fatal(err)
	}
	m, err := ma.NewMultiaddrBytes(msg.ObservedAddr)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func observedIP(t *testing.T, m ma.Multiaddr) netip.Addr {
	t.Helper()
	ip, err := manet.ToIP(m)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// Through a trusted proxy, identify's observedAddr is the client the proxy
// names; the same header from an untrusted peer is ignored.
func TestTrustedProxyObservedAddr(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted string
		want    string
	}{
		{"trusted loopback proxy", "127.0.0.0/8", "203.0.113.7"},
		{"untrusted peer", "192.0.2.0/24", "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp, err := admission.NewTrustedProxies([]string{tc.trusted})
			if err != nil {
				t.Fatal(err)
			}
			e := engine.New(engine.Config{Logger: testutil.Quiet, TrustedProxies: tp})
			defer e.Close()
			h, _ := NewOn(e, Config{})
			h.Handle(ProtoEcho, EchoStream)
			l, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"), engine.Routes{Fallback: h.Stage})
			if err != nil {
				t.Fatal(err)
			}
			got := observedIP(t, observedVia(t, h, l.Addr(), "198.51.100.1, 203.0.113.7"))
			if got.String() != tc.want {
				t.Fatalf("observedAddr IP %s, want %s", got, tc.want)
			}
		})
	}
}
