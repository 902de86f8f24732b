package security

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"math/big"
	mrand "math/rand/v2"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	cryptopb "github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/security/noise/pb"
	"google.golang.org/protobuf/proto"
)

// feedAll presents in to h the way the engine does: pieces of the given
// sizes (cycled; nil = all at once), unconsumed bytes kept and presented
// again with the next piece. It returns all output, the bytes left over
// and the first error.
func feedAll(h *Handshake, in []byte, sizes []int) (out, rest []byte, err error) {
	if len(sizes) == 0 {
		sizes = []int{len(in)}
	}
	var buf []byte
	for i := 0; len(in) > 0; i++ {
		k := min(len(in), max(sizes[i%len(sizes)], 1))
		buf = append(buf, in[:k]...)
		in = in[k:]
		var n int
		before := len(out)
		out, n, err = h.Input(out, buf)
		if err != nil {
			return out, append(buf[n:], in...), err
		}
		if n == 0 && len(out) != before {
			return out, nil, errors.New("output without consuming")
		}
		buf = buf[n:]
	}
	return out, buf, nil
}

// vectorTranscript runs the §9.5 handshake with the given chunking and
// returns msg2, msg3 and what is left over at each side. A transport frame
// is pipelined behind msg3 (as a go initiator does with its first yamux
// frames) and must be left over at the responder.
func vectorTranscript(t *testing.T, sizes []int) (msg2, msg3, respRest []byte) {
	t.Helper()
	iCfg, rCfg := vectorConfigs(t)
	ini, resp := iCfg.NewInitiator(""), rCfg.NewResponder("")
	msg1, _ := ini.Start(nil)
	msg2, rest, err := feedAll(resp, msg1, sizes)
	if err != nil || len(rest) != 0 {
		t.Fatalf("msg1: %v rest %x", err, rest)
	}
	msg3, rest, err = feedAll(ini, msg2, sizes)
	if err != nil || len(rest) != 0 || !ini.Done() {
		t.Fatalf("msg2: %v rest %x", err, rest)
	}
	frame, _ := ini.Session().AppendSeal(nil, []byte("hello"))
	out, respRest, err := feedAll(resp, append(bytes.Clone(msg3), frame...), sizes)
	if err != nil || len(out) != 0 || !resp.Done() {
		t.Fatalf("msg3: %v out %x", err, out)
	}
	pt, n, err := resp.Session().ReadFrame(bytes.Clone(respRest))
	if err != nil || n != len(respRest) || string(pt) != "hello" {
		t.Fatalf("pipelined frame: %q %v", pt, err)
	}
	return msg2, msg3, respRest
}

func TestHandshakeChunking(t *testing.T) {
	m2, m3, rest := vectorTranscript(t, nil)
	if !bytes.Equal(m2, unhex(t, vecMsg2)) || !bytes.Equal(m3, unhex(t, vecMsg3)) {
		t.Fatal("all-at-once transcript differs from the vectors")
	}
	r := mrand.New(mrand.NewPCG(3, 4))
	randomSizes := make([]int, 64)
	for i := range randomSizes {
		randomSizes[i] = 1 + r.IntN(50)
	}
	for _, sizes := range [][]int{{1}, {2}, {33}, {34, 1}, randomSizes} {
		g2, g3, grest := vectorTranscript(t, sizes)
		if !bytes.Equal(g2, m2) || !bytes.Equal(g3, m3) || !bytes.Equal(grest, rest) {
			t.Fatalf("sizes %v: transcript differs", sizes)
		}
	}
}

// Every truncated prefix of each handshake message is need-more: nothing
// consumed, nothing written, no error, no state change.
func TestHandshakeTruncatedPrefixes(t *testing.T) {
	iCfg, rCfg := vectorConfigs(t)
	ini, resp := iCfg.NewInitiator(""), rCfg.NewResponder("")
	msg1, _ := ini.Start(nil)
	step := func(h *Handshake, msg []byte) []byte {
		for i := range msg {
			out, n, err := h.Input(nil, msg[:i])
			if err != nil || n != 0 || len(out) != 0 {
				t.Fatalf("prefix %d/%d: out %x n %d err %v", i, len(msg), out, n, err)
			}
		}
		out, n, err := h.Input(nil, msg)
		if err != nil || n != len(msg) {
			t.Fatalf("full: %d %v", n, err)
		}
		return out
	}
	msg2 := step(resp, msg1)
	msg3 := step(ini, msg2)
	step(resp, msg3)
	if !bytes.Equal(msg3, unhex(t, vecMsg3)) || !resp.Done() {
		t.Fatal("transcript changed by truncated inputs")
	}
	frame, _ := ini.Session().AppendSeal(nil, bytes.Repeat([]byte{9}, 1000))
	for i := range frame {
		if _, _, err := ParseFrame(frame[:i]); err != ErrNeedMore && !(i >= 2 && err == nil) {
			t.Fatalf("frame prefix %d: %v", i, err)
		}
		if _, n, err := resp.Session().ReadFrame(frame[:i]); err != ErrNeedMore || n != 0 {
			t.Fatalf("ReadFrame prefix %d: %d %v", i, n, err)
		}
	}
	if pt, _, err := resp.Session().ReadFrame(frame); err != nil || len(pt) != 1000 {
		t.Fatalf("frame after prefixes: %v", err)
	}
}

func checkReason(t *testing.T, err error, want *Error) {
	t.Helper()
	var e *Error
	if !errors.Is(err, want) || !errors.As(err, &e) || e.Reason() != want.Reason() {
		t.Fatalf("err = %v, want reason %q", err, want.Reason())
	}
}

// runWith runs a full handshake, our initiator (whose payload is replaced
// if payload != nil) against our responder, and returns the responder's
// error on msg 3.
func runWith(t *testing.T, payload []byte, respExpected peer.ID) (*Handshake, error) {
	t.Helper()
	iCfg, rCfg := ourNoise(t, []string{"/yamux/1.0.0"}), ourNoise(t, []string{"/yamux/1.0.0"})
	if payload != nil {
		iCfg.payload = payload
	}
	ini, resp := iCfg.NewInitiator(rCfg.LocalPeer()), rCfg.NewResponder(respExpected)
	msg1, _ := ini.Start(nil)
	msg2, _, err := resp.Input(nil, msg1)
	if err != nil {
		t.Fatal(err)
	}
	msg3, _, err := ini.Input(nil, msg2)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = resp.Input(nil, msg3)
	return resp, err
}

func marshalPayload(t *testing.T, key, sig []byte) []byte {
	t.Helper()
	b, err := proto.Marshal(&pb.NoiseHandshakePayload{IdentityKey: key, IdentitySig: sig})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func marshalKey(t *testing.T, typ cryptopb.KeyType, data []byte) []byte {
	t.Helper()
	b, err := proto.Marshal(&cryptopb.PublicKey{Type: &typ, Data: data})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rsaDER returns the PKIX encoding of an RSA public key with a random
// modulus of exactly bits bits: enough to exercise the size checks without
// generating a real key (a 9000-bit key takes minutes).
func rsaDER(t *testing.T, bits int) []byte {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), uint(bits-1)))
	if err != nil {
		t.Fatal(err)
	}
	n.SetBit(n, bits-1, 1).SetBit(n, 0, 1)
	der, err := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: n, E: 65537})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestHandshakeBadPayloads(t *testing.T) {
	good := ourNoise(t, nil)
	var gp pb.NoiseHandshakePayload
	if err := proto.Unmarshal(good.payload, &gp); err != nil {
		t.Fatal(err)
	}
	badSig := bytes.Clone(gp.IdentitySig)
	badSig[10] ^= 1
	t.Run("wrong signature", func(t *testing.T) {
		_, err := runWith(t, marshalPayload(t, gp.IdentityKey, badSig), "")
		checkReason(t, err, ErrBadSignature)
	})
	t.Run("signature over another static key", func(t *testing.T) {
		// good.payload signs good's static key, not the initiator's.
		_, err := runWith(t, good.payload, "")
		checkReason(t, err, ErrBadSignature)
	})
	t.Run("missing identity", func(t *testing.T) {
		_, err := runWith(t, marshalPayload(t, nil, gp.IdentitySig), "")
		checkReason(t, err, ErrBadKey) // required PublicKey.Type not set
	})
	t.Run("unknown key type 4", func(t *testing.T) {
		_, err := runWith(t, marshalPayload(t, marshalKey(t, 4, make([]byte, 32)), gp.IdentitySig), "")
		checkReason(t, err, ErrKeyType)
	})
	t.Run("ed25519 key of 33 bytes", func(t *testing.T) {
		_, err := runWith(t, marshalPayload(t, marshalKey(t, cryptopb.KeyType_Ed25519, make([]byte, 33)), gp.IdentitySig), "")
		checkReason(t, err, ErrBadKey)
	})
	t.Run("rsa 9000 bits", func(t *testing.T) {
		_, err := runWith(t, marshalPayload(t, marshalKey(t, cryptopb.KeyType_RSA, rsaDER(t, 9000)), gp.IdentitySig), "")
		checkReason(t, err, ErrRSATooLarge)
	})
	t.Run("rsa 8200 bits (core/crypto bound)", func(t *testing.T) {
		der := rsaDER(t, 8200)
		if len(der) > maxRSAKeyDER {
			t.Fatalf("DER %d bytes is caught by the pre-check; this case should reach core/crypto", len(der))
		}
		_, err := runWith(t, marshalPayload(t, marshalKey(t, cryptopb.KeyType_RSA, der), gp.IdentitySig), "")
		checkReason(t, err, ErrRSATooLarge)
	})
	t.Run("rsa 1024 bits", func(t *testing.T) {
		_, err := runWith(t, marshalPayload(t, marshalKey(t, cryptopb.KeyType_RSA, rsaDER(t, 1024)), gp.IdentitySig), "")
		checkReason(t, err, ErrRSATooSmall)
	})
	t.Run("garbage payload", func(t *testing.T) {
		_, err := runWith(t, []byte{0xff, 0xff, 0xff}, "")
		checkReason(t, err, ErrMalformed)
	})
	t.Run("responder expects another peer", func(t *testing.T) {
		_, err := runWith(t, nil, good.LocalPeer())
		checkReason(t, err, ErrPeerIDMismatch)
	})
}

// core/crypto itself refuses RSA keys above 8192 bits (CVE-2023-39533), and
// our DER pre-check bound admits every legitimate 8192-bit key.
func TestRSABound(t *testing.T) {
	if _, err := crypto.UnmarshalRsaPublicKey(rsaDER(t, 8193)); !errors.Is(err, crypto.ErrRsaKeyTooBig) {
		t.Fatalf("core/crypto accepted an 8193-bit key: %v", err)
	}
	der := rsaDER(t, MaxRSAKeyBits)
	if len(der) > maxRSAKeyDER {
		t.Fatalf("an 8192-bit key's DER (%d) exceeds the pre-check (%d)", len(der), maxRSAKeyDER)
	}
	if _, err := unmarshalPublicKey(marshalKey(t, cryptopb.KeyType_RSA, der)); err != nil {
		t.Fatalf("8192-bit key refused: %v", err)
	}
}

func TestHandshakeBadMessages(t *testing.T) {
	cfg := ourNoise(t, []string{"/yamux/1.0.0"})
	t.Run("msg1 shorter than 32 bytes", func(t *testing.T) {
		_, _, err := cfg.NewResponder("").Input(nil, append([]byte{0, 16}, make([]byte, 16)...))
		checkReason(t, err, ErrMalformed)
	})
	t.Run("msg1 with a payload is accepted", func(t *testing.T) {
		// The payload of msg 1 is unauthenticated; go ignores it, so do we.
		ini := ourNoise(t, nil).NewInitiator(cfg.LocalPeer())
		msg1, _ := ini.Start(nil)
		withPayload := append([]byte{0, 32 + 5}, msg1[2:]...)
		withPayload = append(withPayload, "hello"...)
		msg2, n, err := cfg.NewResponder("").Input(nil, withPayload)
		if err != nil || n != len(withPayload) || len(msg2) == 0 {
			t.Fatalf("%d %v", n, err)
		}
	})
	t.Run("low-order ephemeral", func(t *testing.T) {
		_, _, err := cfg.NewResponder("").Input(nil, append([]byte{0, 32}, make([]byte, 32)...))
		checkReason(t, err, ErrMalformed)
	})
	t.Run("garbage instead of a handshake", func(t *testing.T) {
		// Any 32+ bytes are a syntactically valid msg 1 (it is not
		// authenticated); the next message cannot authenticate.
		// An HTTP request: "GE" reads as a 18245-byte msg 1, then a 96-byte msg 3.
		g := []byte("GET / HTTP/1.1\r\nHost: example.com\r\n")
		for len(g) < 2+0x4745 {
			g = append(g, byte(len(g)*7+3))
		}
		g = append(g, 0, 96)
		g = append(g, bytes.Repeat([]byte("garbage!"), 12)...)
		h := cfg.NewResponder("")
		_, _, err := feedAll(h, g, []int{100})
		checkReason(t, err, ErrAuthFailed)
		_, _, again := h.Input(nil, []byte{0})
		checkReason(t, again, ErrAuthFailed)
	})
	t.Run("tampered msg2", func(t *testing.T) {
		ini := ourNoise(t, nil).NewInitiator("")
		msg1, _ := ini.Start(nil)
		msg2, _, _ := cfg.NewResponder("").Input(nil, msg1)
		msg2[len(msg2)-1] ^= 1
		_, _, err := ini.Input(nil, msg2)
		checkReason(t, err, ErrAuthFailed)
	})
	t.Run("tampered msg3", func(t *testing.T) {
		ini, resp := ourNoise(t, nil).NewInitiator(""), cfg.NewResponder("")
		msg1, _ := ini.Start(nil)
		msg2, _, _ := resp.Input(nil, msg1)
		msg3, _, _ := ini.Input(nil, msg2)
		msg3[40] ^= 1
		_, _, err := resp.Input(nil, msg3)
		checkReason(t, err, ErrAuthFailed)
	})
	t.Run("input before start", func(t *testing.T) {
		_, _, err := cfg.NewInitiator("").Input(nil, []byte{0, 0})
		checkReason(t, err, ErrState)
	})
}

func sessionPair(t testing.TB) (a, b *Session) {
	var ka, kb [32]byte
	ka[0], kb[0] = 1, 2
	a, b = new(Session), new(Session)
	a.init(ka, kb)
	b.init(kb, ka)
	return a, b
}

func TestTransport(t *testing.T) {
	a, b := sessionPair(t)
	for _, n := range []int{0, 1, 100, MaxFramePlaintext - 1, MaxFramePlaintext, MaxFramePlaintext + 1, 3*MaxFramePlaintext + 5} {
		pt := make([]byte, n)
		for i := range pt {
			pt[i] = byte(i)
		}
		wire, err := a.AppendSeal([]byte("prefix"), pt)
		if err != nil || len(wire) != 6+SealedLen(n) {
			t.Fatalf("%d: %d bytes %v", n, len(wire), err)
		}
		wire = wire[6:]
		var got []byte
		for len(wire) > 0 {
			p, k, err := b.ReadFrame(wire)
			if err != nil {
				t.Fatalf("%d: %v", n, err)
			}
			if len(p) > MaxFramePlaintext || k > FrameHeader+MaxFrame {
				t.Fatalf("oversized frame %d", k)
			}
			got = append(got, p...)
			wire = wire[k:]
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("%d: round trip differs", n)
		}
	}
	if _, err := a.AppendFrame(nil, make([]byte, MaxFramePlaintext+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized frame: %v", err)
	}
	t.Run("tampered tag", func(t *testing.T) {
		f, _ := a.AppendSeal(nil, []byte("data"))
		f[len(f)-1] ^= 1
		_, _, err := b.ReadFrame(f)
		checkReason(t, err, ErrAuthFailed)
	})
	t.Run("frame shorter than tag", func(t *testing.T) {
		_, _, err := ParseFrame([]byte{0, 15})
		checkReason(t, err, ErrFrameTooShort)
	})
	t.Run("nonce exhausted", func(t *testing.T) {
		a, b := sessionPair(t)
		a.encN, b.decN = 1<<64-2, 1<<64-2
		f, err := a.AppendSeal(nil, []byte("last"))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := b.ReadFrame(f); err != nil {
			t.Fatal(err)
		}
		_, err = a.AppendSeal(nil, []byte("x"))
		checkReason(t, err, ErrNonceExhausted)
	})
}

func TestTransportAllocs(t *testing.T) {
	a, b := sessionPair(t)
	pt := make([]byte, 1000)
	buf := make([]byte, 0, 2000)
	allocs := testing.AllocsPerRun(100, func() {
		wire, _ := a.AppendSeal(buf[:0], pt)
		if _, _, err := b.ReadFrame(wire); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per frame", allocs)
	}
}

func FuzzHandshakePayload(f *testing.F) {
	iCfg, rCfg := vectorConfigs(f)
	f.Add(iCfg.payload, iCfg.staticPub)
	f.Add(rCfg.payload, rCfg.staticPub)
	for _, typ := range []int{crypto.Secp256k1, crypto.ECDSA} {
		k, _, _ := crypto.GenerateKeyPair(typ, 0)
		n, _ := newNoise(k, []string{"/yamux/1.0.0", "/mplex/6.7.0"}, bytes.Repeat([]byte{5}, 32))
		f.Add(n.payload, n.staticPub)
	}
	f.Add([]byte{0x0a, 0x02, 0x08, 0x04}, make([]byte, 32))
	f.Fuzz(func(t *testing.T, payload, static []byte) {
		if len(static) != 32 {
			return
		}
		key, id, muxers, err := verifyPayload(payload, static, "")
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Reason() == "" {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// Re-serialize: the ID is the canonical key encoding's.
		if !id.MatchesPublicKey(key) {
			t.Fatal("peer ID does not match key")
		}
		if len(muxers) > MaxStreamMuxers {
			t.Fatal("muxer limit not applied")
		}
		// A verified payload verifies again when re-marshalled.
		var p pb.NoiseHandshakePayload
		_ = proto.Unmarshal(payload, &p)
		re, _ := proto.Marshal(&p)
		if _, id2, _, err := verifyPayload(re, static, id); err != nil || id2 != id {
			t.Fatalf("re-marshalled payload: %v", err)
		}
	})
}

func FuzzFrame(f *testing.F) {
	a, _ := sessionPair(f)
	for _, n := range []int{0, 1, 5, 100, 1500} {
		w, _ := a.AppendSeal(nil, bytes.Repeat([]byte{byte(n)}, n))
		if n == 0 {
			w, _ = a.AppendFrame(nil, nil)
		}
		f.Add(w)
	}
	f.Add([]byte{0, 15})
	f.Add([]byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		ct, n, err := ParseFrame(in)
		switch {
		case err == ErrNeedMore:
			for i := range in {
				if _, _, e := ParseFrame(in[:i]); e != ErrNeedMore {
					t.Fatalf("prefix %d of need-more input: %v", i, e)
				}
			}
			return
		case err != nil:
			checkReason(t, err, ErrFrameTooShort)
			return
		}
		if n != FrameHeader+len(ct) || len(ct) < TagSize || len(ct) > MaxFrame {
			t.Fatalf("n=%d len=%d", n, len(ct))
		}
		// Opening with a fresh receiver (nonce 0) either fails with
		// auth_failed or yields a plaintext that re-seals to the same frame.
		_, b := sessionPair(t)
		pt, err := b.Open(bytes.Clone(ct))
		if err != nil {
			checkReason(t, err, ErrAuthFailed)
			return
		}
		a2, _ := sessionPair(t)
		re, _ := a2.AppendFrame(nil, pt)
		if !bytes.Equal(re, in[:n]) {
			t.Fatal("re-sealed frame differs")
		}
	})
}

// FuzzResponder feeds arbitrary bytes to a responder: never a panic or an
// untyped error, and byte-at-a-time equals all-at-once.
func FuzzResponder(f *testing.F) {
	_, rCfg := vectorConfigs(f)
	rCfg.rand = nil // deterministic ephemeral per run below
	f.Add(unhex(f, vecMsg1))
	f.Add(append(unhex(f, vecMsg1), unhex(f, vecMsg3)...))
	f.Add([]byte{0, 1, 2})
	f.Fuzz(func(t *testing.T, in []byte) {
		run := func(sizes []int) ([]byte, []byte, error) {
			c := *rCfg
			c.rand = bytes.NewReader(bytes.Repeat([]byte{0x44}, 32))
			return feedAll(c.NewResponder(""), in, sizes)
		}
		o1, r1, e1 := run(nil)
		o2, r2, e2 := run([]int{1})
		if !errors.Is(e1, e2) || !bytes.Equal(o1, o2) || !bytes.Equal(r1, r2) {
			t.Fatalf("chunked differs: %v / %v", e1, e2)
		}
		if e1 != nil {
			var e *Error
			if !errors.As(e1, &e) {
				t.Fatalf("untyped error %v", e1)
			}
		}
	})
}

// Each DH is one scalar multiplication with the parsed key: the static
// key's and the ephemeral key's results equal crypto/ecdh's own, and a
// low-order remote point is refused as a dhError (malformed).
func TestDHKeys(t *testing.T) {
	peerKey, _ := ecdh.X25519().NewPrivateKey(bytes.Repeat([]byte{3}, 32))
	pub := peerKey.PublicKey().Bytes()
	static, _ := ecdh.X25519().NewPrivateKey(bytes.Repeat([]byte{1}, 32))
	x := x25519{static: static}
	got, err := x.agree(x.static, pub)
	if want, _ := static.ECDH(peerKey.PublicKey()); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("static DH: %v", err)
	}
	ephPub, err := x.generate(constReader(9))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ecdh.X25519().NewPrivateKey(bytes.Repeat([]byte{9}, 32))
	if !bytes.Equal(ephPub, want.PublicKey().Bytes()) {
		t.Fatal("ephemeral public key is not X25519(random, basepoint)")
	}
	got, _ = x.agree(x.eph, pub)
	if w, _ := want.ECDH(peerKey.PublicKey()); !bytes.Equal(got, w) {
		t.Fatal("ephemeral DH")
	}
	var de dhError
	if _, err := x.agree(x.static, make([]byte, 32)); !errors.As(err, &de) {
		t.Fatalf("low-order point: %v", err)
	}
}
