package libp2p

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"
	gonoise "github.com/libp2p/go-libp2p/p2p/security/noise"
	goyamux "github.com/libp2p/go-yamux/v4"
	"github.com/multiformats/go-multistream"

	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/mux"
)

// wsNetConn is a WebSocket client or server connection as a byte stream,
// the way go-libp2p's websocket transport presents one: each Write is one
// binary message, Read concatenates message payloads.
type wsNetConn struct {
	*websocket.Conn
	r  io.Reader
	wm sync.Mutex
}

func (c *wsNetConn) Read(b []byte) (int, error) {
	for {
		if c.r == nil {
			_, r, err := c.NextReader()
			if err != nil {
				return 0, err
			}
			c.r = r
		}
		n, err := c.r.Read(b)
		if err == io.EOF {
			c.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *wsNetConn) Write(b []byte) (int, error) {
	c.wm.Lock()
	defer c.wm.Unlock()
	if err := c.WriteMessage(websocket.BinaryMessage, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (c *wsNetConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

var yamuxMuxer = []tptu.StreamMuxer{{ID: ProtoYamux, Muxer: yamux.DefaultTransport}}

// whoami answers with the peer ID the server authenticated, so tests check
// peer IDs in both directions.
const protoWhoami = "/test/whoami/1.0.0"

func whoamiStream(pc *PeerConn, st *mux.Stream) mux.Handler {
	st.Write([]byte(pc.RemotePeer().String()))
	st.CloseWrite()
	return &mux.Funcs{}
}

// goStreamEcho runs an echo of data over a go-yamux stream negotiated with
// go-multistream.
func goStreamEcho(t *testing.T, sess *goyamux.Session, data []byte) {
	t.Helper()
	s, err := sess.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := multistream.SelectProtoOrFail(ProtoEcho, s); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.Write(data)
		s.CloseWrite()
	}()
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("echo: %d of %d bytes, %v", len(got), len(data), err)
	}
}

func goWhoami(t *testing.T, sess *goyamux.Session) string {
	t.Helper()
	s, err := sess.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := multistream.SelectProtoOrFail(protoWhoami, s); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// go-libp2p's noise transport and go-multistream, over a gorilla WebSocket,
// dial our server, with and without the muxer inlined in the handshake; then
// go-yamux v4 runs streams over it.
func TestGoNoiseDialsOurServer(t *testing.T) {
	srv, addr := startHost(t, Config{})
	srv.Handle(protoWhoami, whoamiStream)
	hp := testutil.HostPort(t, addr)
	for _, inline := range []bool{true, false} {
		t.Run("inline="+strconv.FormatBool(inline), func(t *testing.T) {
			wc, _, err := websocket.DefaultDialer.Dial("ws://"+hp+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			conn := &wsNetConn{Conn: wc}
			defer conn.Close()
			// A default go-libp2p dialer proposes TLS first: we say na.
			if got, err := multistream.SelectOneOf([]string{"/tls/1.0.0", ProtoNoise}, conn); err != nil || got != ProtoNoise {
				t.Fatalf("selected %q, %v", got, err)
			}
			key, _, _ := crypto.GenerateEd25519Key(nil)
			var muxers []tptu.StreamMuxer
			if inline {
				muxers = yamuxMuxer
			}
			tpt, err := gonoise.New(gonoise.ID, key, muxers)
			if err != nil {
				t.Fatal(err)
			}
			sc, err := tpt.SecureOutbound(context.Background(), conn, srv.ID())
			if err != nil {
				t.Fatal(err)
			}
			if sc.RemotePeer() != srv.ID() {
				t.Fatalf("remote %s, want %s", sc.RemotePeer(), srv.ID())
			}
			if got := string(sc.ConnState().StreamMultiplexer); inline != (got == ProtoYamux) {
				t.Fatalf("inlined muxer %q with inline=%v", got, inline)
			}
			if !inline {
				if err := multistream.SelectProtoOrFail(ProtoYamux, sc); err != nil {
					t.Fatal(err)
				}
			}
			sess, err := goyamux.Client(sc, goyamux.DefaultConfig(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			me, _ := peer.IDFromPrivateKey(key)
			if got := goWhoami(t, sess); got != me.String() {
				t.Fatalf("server saw %s, we are %s", got, me)
			}
			data := make([]byte, 4<<20)
			for i := range data {
				data[i] = byte(rand.Uint32())
			}
			var wg sync.WaitGroup
			for i := 0; i < 4; i++ {
				wg.Add(1)
				go func() { defer wg.Done(); goStreamEcho(t, sess, data) }()
			}
			wg.Wait()
		})
	}
}

// Our client role against go-libp2p's noise transport, go-multistream and a
// go-yamux v4 server behind a gorilla WebSocket server, with the muxer
// inlined in the handshake and negotiated after it.
func TestOurClientAgainstGoNoiseServer(t *testing.T) {
	for _, inline := range []bool{true, false} {
		t.Run("inline="+strconv.FormatBool(inline), func(t *testing.T) {
			remote := make(chan peer.ID, 1)
			addr, srvID := goYamuxEchoServer(t, 4, inline, remote)
			pc := dialHost(t, nil, addr, DialOptions{Expect: srvID})
			if pc.RemotePeer() != srvID {
				t.Fatalf("remote %s, want %s", pc.RemotePeer(), srvID)
			}
			select {
			case id := <-remote:
				if id != pc.Host().ID() {
					t.Fatalf("go server saw %s, we are %s", id, pc.Host().ID())
				}
			case <-time.After(5 * time.Second):
				t.Fatal("go server did not finish the handshake")
			}
			data := make([]byte, 4<<20)
			for i := range data {
				data[i] = byte(rand.Uint32())
			}
			echoOver(t, pc, data)
		})
	}
}
