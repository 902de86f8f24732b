package security

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/sec"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"
	libp2pnoise "github.com/libp2p/go-libp2p/p2p/security/noise"
)

// pumpHandshake drives h over conn the way the engine's event loop would:
// read whatever arrived, hand it to Input, write what Input produced. It
// returns the bytes that arrived behind the handshake.
func pumpHandshake(conn net.Conn, h machine, chunk int) ([]byte, error) {
	out, err := h.Start(nil)
	if err != nil {
		return nil, err
	}
	if len(out) > 0 {
		if _, err := conn.Write(out); err != nil {
			return nil, err
		}
	}
	var buf []byte
	tmp := make([]byte, chunk)
	for !h.Done() {
		n, err := conn.Read(tmp)
		if err != nil {
			return nil, err
		}
		buf = append(buf, tmp[:n]...)
		out, k, err := h.Input(nil, buf)
		buf = buf[k:]
		if len(out) > 0 {
			if _, werr := conn.Write(out); werr != nil {
				return nil, werr
			}
		}
		if err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// machine is what Handshake and PlaintextHandshake have in common.
type machine interface {
	Start(out []byte) ([]byte, error)
	Input(out, in []byte) ([]byte, int, error)
	Done() bool
}

// sessionConn adapts a Session to io.ReadWriter over conn for tests.
type sessionConn struct {
	conn  net.Conn
	s     *Session
	in    []byte // ciphertext received, not yet a whole frame
	plain []byte // opened plaintext not yet returned
	wbuf  []byte
}

func (c *sessionConn) Read(p []byte) (int, error) {
	for len(c.plain) == 0 {
		pt, n, err := c.s.ReadFrame(c.in)
		if err == nil {
			c.plain = append(c.plain[:0], pt...)
			c.in = c.in[n:]
			continue
		}
		if err != ErrNeedMore {
			return 0, err
		}
		tmp := make([]byte, 1+rand.IntN(8192))
		k, rerr := c.conn.Read(tmp)
		c.in = append(c.in, tmp[:k]...)
		if rerr != nil {
			return 0, rerr
		}
	}
	n := copy(p, c.plain)
	c.plain = c.plain[n:]
	return n, nil
}

func (c *sessionConn) Write(p []byte) (int, error) {
	var err error
	if c.wbuf, err = c.s.AppendSeal(c.wbuf[:0], p); err != nil {
		return 0, err
	}
	if _, err := c.conn.Write(c.wbuf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// exchange sends 1 MiB each way in random chunk sizes, concurrently, and
// checks both directions byte for byte.
func exchange(t *testing.T, ours io.ReadWriter, theirs io.ReadWriter) {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	a := make([]byte, 1<<20)
	b := make([]byte, 1<<20)
	for i := range a {
		a[i], b[i] = byte(r.Uint32()), byte(r.Uint32())
	}
	send := func(w io.Writer, data []byte, seed uint64) error {
		r := rand.New(rand.NewPCG(seed, seed))
		for len(data) > 0 {
			n := min(len(data), 1+r.IntN(100_000))
			if _, err := w.Write(data[:n]); err != nil {
				return err
			}
			data = data[n:]
		}
		return nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for _, d := range []struct {
		w    io.Writer
		r    io.Reader
		data []byte
	}{{ours, theirs, a}, {theirs, ours, b}} {
		wg.Add(2)
		go func() { defer wg.Done(); errs <- send(d.w, d.data, uint64(len(d.data))) }()
		go func() {
			defer wg.Done()
			got := make([]byte, len(d.data))
			if _, err := io.ReadFull(d.r, got); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, d.data) {
				errs <- errors.New("data mismatch")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func muxerList(ids ...string) []tptu.StreamMuxer {
	var m []tptu.StreamMuxer
	for _, id := range ids {
		m = append(m, tptu.StreamMuxer{ID: protocol.ID(id)})
	}
	return m
}

type interopCase struct {
	name          string
	ours, theirs  []string
	theirKeyType  int
	theirKeyBits  int
	handshakeRead int // our read chunk size
}

var interopCases = []interopCase{
	{"inlined yamux", []string{"/yamux/1.0.0"}, []string{"/yamux/1.0.0"}, crypto.Ed25519, 0, 4096},
	{"they send no muxers", []string{"/yamux/1.0.0"}, nil, crypto.Ed25519, 0, 1},
	{"we send no muxers", nil, []string{"/yamux/1.0.0"}, crypto.Ed25519, 0, 7},
	{"no overlap", []string{"/yamux/1.0.0"}, []string{"/mplex/6.7.0"}, crypto.Ed25519, 0, 4096},
	{"initiator preference", []string{"/mplex/6.7.0", "/yamux/1.0.0"}, []string{"/yamux/1.0.0", "/mplex/6.7.0"}, crypto.Ed25519, 0, 4096},
	{"secp256k1 peer", []string{"/yamux/1.0.0"}, []string{"/yamux/1.0.0"}, crypto.Secp256k1, 0, 4096},
	{"ecdsa peer", []string{"/yamux/1.0.0"}, []string{"/yamux/1.0.0"}, crypto.ECDSA, 0, 4096},
	{"rsa peer", []string{"/yamux/1.0.0"}, []string{"/yamux/1.0.0"}, crypto.RSA, 2048, 4096},
}

func goNoise(t *testing.T, keyType, bits int, muxers []string) (*libp2pnoise.Transport, peer.ID, crypto.PubKey) {
	t.Helper()
	k, _, err := crypto.GenerateKeyPair(keyType, bits)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := libp2pnoise.New(libp2pnoise.ID, k, muxerList(muxers...))
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	return tr, id, k.GetPublic()
}

func ourNoise(t *testing.T, muxers []string) *Noise {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := NewNoise(k, muxers...)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func pipe(t *testing.T) (net.Conn, net.Conn) {
	a, b := net.Pipe()
	dl := time.Now().Add(20 * time.Second)
	_ = a.SetDeadline(dl)
	_ = b.SetDeadline(dl)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// wantMuxer computes the expected result for our role: the initiator's
// first muxer that the responder lists.
func expectMuxer(initiator, responder []string) string { return matchMuxers(initiator, responder) }

func TestInteropOurResponderGoInitiator(t *testing.T) {
	for _, c := range interopCases {
		t.Run(c.name, func(t *testing.T) {
			ours := ourNoise(t, c.ours)
			theirs, theirID, theirKey := goNoise(t, c.theirKeyType, c.theirKeyBits, c.theirs)
			ca, sa := pipe(t)
			type res struct {
				conn sec.SecureConn
				err  error
			}
			ch := make(chan res, 1)
			go func() {
				sc, err := theirs.SecureOutbound(context.Background(), ca, ours.LocalPeer())
				ch <- res{sc, err}
			}()
			h := ours.NewResponder("")
			rest, err := pumpHandshake(sa, h, c.handshakeRead)
			if err != nil {
				t.Fatal(err)
			}
			r := <-ch
			if r.err != nil {
				t.Fatal(r.err)
			}
			want := expectMuxer(c.theirs, c.ours)
			if got := h.Result(); got.RemotePeer != theirID || got.Muxer != want || !got.RemoteKey.Equals(theirKey) {
				t.Fatalf("result %+v, want peer %s muxer %q", got, theirID, want)
			}
			if got := string(r.conn.ConnState().StreamMultiplexer); got != want {
				t.Fatalf("go side muxer %q, want %q", got, want)
			}
			if r.conn.RemotePeer() != ours.LocalPeer() {
				t.Fatalf("go side sees %s", r.conn.RemotePeer())
			}
			exchange(t, &sessionConn{conn: sa, s: h.Session(), in: rest}, r.conn)
		})
	}
}

func TestInteropOurInitiatorGoResponder(t *testing.T) {
	for _, c := range interopCases {
		t.Run(c.name, func(t *testing.T) {
			ours := ourNoise(t, c.ours)
			theirs, theirID, theirKey := goNoise(t, c.theirKeyType, c.theirKeyBits, c.theirs)
			ca, sa := pipe(t)
			type res struct {
				conn sec.SecureConn
				err  error
			}
			ch := make(chan res, 1)
			go func() {
				sc, err := theirs.SecureInbound(context.Background(), sa, "")
				ch <- res{sc, err}
			}()
			h := ours.NewInitiator(theirID)
			rest, err := pumpHandshake(ca, h, c.handshakeRead)
			if err != nil {
				t.Fatal(err)
			}
			r := <-ch
			if r.err != nil {
				t.Fatal(r.err)
			}
			want := expectMuxer(c.ours, c.theirs)
			if got := h.Result(); got.RemotePeer != theirID || got.Muxer != want || !got.RemoteKey.Equals(theirKey) {
				t.Fatalf("result %+v, want peer %s muxer %q", got, theirID, want)
			}
			if got := string(r.conn.ConnState().StreamMultiplexer); got != want {
				t.Fatalf("go side muxer %q, want %q", got, want)
			}
			if r.conn.RemotePeer() != ours.LocalPeer() {
				t.Fatalf("go side sees %s", r.conn.RemotePeer())
			}
			exchange(t, &sessionConn{conn: ca, s: h.Session(), in: rest}, r.conn)
		})
	}
}

// An initiator expecting another peer ID fails with peer_id_mismatch after
// msg 2, before revealing its identity.
func TestInteropPeerIDMismatch(t *testing.T) {
	ours := ourNoise(t, nil)
	theirs, _, _ := goNoise(t, crypto.Ed25519, 0, nil)
	_, otherID, _ := goNoise(t, crypto.Ed25519, 0, nil)
	ca, sa := pipe(t)
	go func() { _, _ = theirs.SecureInbound(context.Background(), sa, "") }()
	_, err := pumpHandshake(ca, ours.NewInitiator(otherID), 4096)
	if !errors.Is(err, ErrPeerIDMismatch) {
		t.Fatalf("err = %v", err)
	}
}
