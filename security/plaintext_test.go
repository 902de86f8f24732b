package security

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	cryptopb "github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/sec"
	"github.com/libp2p/go-libp2p/p2p/security/insecure"
	"github.com/libp2p/go-libp2p/p2p/security/insecure/pb"
	"github.com/swarmgate/swarmgate/internal/wire"
	"google.golang.org/protobuf/proto"
)

func newPlaintextPeer(t *testing.T) (*Plaintext, crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPlaintext(k.GetPublic())
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	return p, k, id
}

func TestPlaintextInterop(t *testing.T) {
	for _, inbound := range []bool{true, false} {
		ours, _, ourID := newPlaintextPeer(t)
		theirKey, _, _ := crypto.GenerateEd25519Key(nil)
		theirID, _ := peer.IDFromPrivateKey(theirKey)
		theirs := insecure.NewWithIdentity(insecure.ID, theirID, theirKey)
		a, b := pipe(t)
		type res struct {
			c   sec.SecureConn
			err error
		}
		ch := make(chan res, 1)
		go func() {
			var r res
			if inbound {
				r.c, r.err = theirs.SecureOutbound(context.Background(), a, ourID)
			} else {
				r.c, r.err = theirs.SecureInbound(context.Background(), a, "")
			}
			ch <- r
		}()
		h := ours.NewHandshake(theirID)
		rest, err := pumpHandshake(b, h, 3)
		if err != nil {
			t.Fatal(err)
		}
		r := <-ch
		if r.err != nil {
			t.Fatal(r.err)
		}
		if h.Result().RemotePeer != theirID || !h.Result().RemoteKey.Equals(theirKey.GetPublic()) || r.c.RemotePeer() != ourID {
			t.Fatalf("identities: %s / %s", h.Result().RemotePeer, r.c.RemotePeer())
		}
		// After the exchange the stream is unframed.
		go func() { _, _ = r.c.Write([]byte("ping")) }()
		got := make([]byte, 4)
		n := copy(got, rest)
		if _, err := io.ReadFull(b, got[n:]); err != nil || string(got) != "ping" {
			t.Fatalf("data %q %v", got, err)
		}
	}
}

func TestPlaintextChunkingAndErrors(t *testing.T) {
	peerA, _, idA := newPlaintextPeer(t)
	peerB, _, _ := newPlaintextPeer(t)
	in := append(bytes.Clone(peerA.msg), "app"...)
	for i := range len(peerA.msg) {
		h := peerB.NewHandshake(idA)
		out, n, err := h.Input(nil, in[:i])
		if err != nil || n != 0 || h.Done() || !bytes.Equal(out, peerB.msg) {
			t.Fatalf("prefix %d: %d %v", i, n, err)
		}
	}
	h := peerB.NewHandshake(idA)
	_, n, err := h.Input(nil, in)
	if err != nil || !h.Done() || string(in[n:]) != "app" {
		t.Fatalf("full: %d %v", n, err)
	}
	_, _, err = peerB.NewHandshake(peerB.NewHandshake("").expected+"x").Input(nil, peerA.msg)
	checkReason(t, err, ErrPeerIDMismatch)

	_, otherKey, _ := newPlaintextPeer(t)
	pk, _ := crypto.PublicKeyToProto(otherKey.GetPublic())
	forged, _ := proto.Marshal(&pb.Exchange{Id: []byte(idA), Pubkey: pk})
	_, _, err = peerB.NewHandshake("").Input(nil, wire.AppendDelimited(nil, forged))
	checkReason(t, err, ErrIDKeyMismatch)

	typ := cryptopb.KeyType(9)
	bad, _ := proto.Marshal(&pb.Exchange{Id: []byte(idA), Pubkey: &cryptopb.PublicKey{Type: &typ, Data: []byte{1}}})
	_, _, err = peerB.NewHandshake("").Input(nil, wire.AppendDelimited(nil, bad))
	checkReason(t, err, ErrKeyType)

	_, _, err = peerB.NewHandshake("").Input(nil, []byte{0x81, 0x20}) // 4097
	checkReason(t, err, ErrTooLarge)
	_, _, err = peerB.NewHandshake("").Input(nil, []byte{0x80, 0x80, 0x01})
	checkReason(t, err, ErrTooLarge)
}

func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.key")
	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if k1.Type() != cryptopb.KeyType_Ed25519 {
		t.Fatalf("type %v", k1.Type())
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v", st.Mode(), err)
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil || !k1.Equals(k2) {
		t.Fatalf("reload: %v", err)
	}
	b, _ := os.ReadFile(path)
	if k3, err := crypto.UnmarshalPrivateKey(b); err != nil || !k3.Equals(k1) {
		t.Fatal("file is not a libp2p private key protobuf")
	}
	if err := os.WriteFile(path, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(path); err == nil {
		t.Fatal("junk key accepted")
	}
	missing := filepath.Join(t.TempDir(), "missing-dir", "k")
	_, err = LoadOrCreateKey(missing)
	if err == nil || errors.Is(err, os.ErrExist) {
		t.Fatalf("missing dir: %v", err)
	}
	// The error names the file the operator gave, not a temporary one.
	if !strings.Contains(err.Error(), missing) || strings.Contains(err.Error(), ".identity-") {
		t.Fatalf("missing dir error does not name %s: %v", missing, err)
	}
}
