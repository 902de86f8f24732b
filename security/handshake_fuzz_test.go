package security

import (
	"bytes"
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/security/noise/pb"
	"google.golang.org/protobuf/proto"
)

// initiatorRun is what an initiator made of the responder's bytes.
type initiatorRun struct {
	out, rest []byte // msg 3 (when done) and the bytes left unconsumed
	err       error
	done      bool
	result    Result
}

// runInitiator starts a deterministic initiator of iCfg (so msg 1 and
// msg 3 are the same in every run) and feeds it in, in pieces of the given
// sizes (cycled; none: all at once).
func runInitiator(iCfg *Noise, in []byte, sizes []int) initiatorRun {
	c := *iCfg
	c.rand = bytes.NewReader(bytes.Repeat([]byte{0x33}, 32))
	h := c.NewInitiator("")
	if _, err := h.Start(nil); err != nil {
		panic(err)
	}
	var r initiatorRun
	r.out, r.rest, r.err = feedAll(h, in, sizes)
	r.done, r.result = h.Done(), h.Result()
	return r
}

func sameInitiatorRun(a, b initiatorRun) bool {
	return errors.Is(a.err, b.err) && (a.err == nil) == (b.err == nil) && a.done == b.done &&
		bytes.Equal(a.out, b.out) && bytes.Equal(a.rest, b.rest) &&
		a.result.RemotePeer == b.result.RemotePeer && a.result.Muxer == b.result.Muxer
}

// respondWith answers our deterministic msg 1 with a msg 2 that carries
// payload as the responder's handshake payload: correctly encrypted, so
// what the initiator does with the payload is reached.
func respondWith(t testing.TB, iCfg, rCfg *Noise, payload []byte) []byte {
	t.Helper()
	ic := *iCfg
	ic.rand = bytes.NewReader(bytes.Repeat([]byte{0x33}, 32))
	msg1, err := ic.NewInitiator("").Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	rc := *rCfg
	rc.payload = payload
	rc.rand = bytes.NewReader(bytes.Repeat([]byte{0x44}, 32))
	msg2, _, err := rc.NewResponder("").Input(nil, msg1)
	if err != nil {
		t.Fatal(err)
	}
	return msg2
}

// Every truncated prefix of a valid msg 2, also with a transport frame
// pipelined behind it, is need-more for our initiator: nothing consumed,
// nothing written, no error, and the full message then completes the
// handshake as if the prefixes had not been seen. Responders of every key
// type we verify.
func TestInitiatorTruncatedMsg2(t *testing.T) {
	iCfg, rCfg := vectorConfigs(t)
	for _, typ := range []int{crypto.Ed25519, crypto.Secp256k1, crypto.ECDSA, crypto.RSA} {
		k, _, err := crypto.GenerateKeyPair(typ, 2048)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := newNoise(k, []string{"/yamux/1.0.0"}, rCfg.staticPriv)
		if err != nil {
			t.Fatal(err)
		}
		msg2 := respondWith(t, iCfg, resp, resp.payload)
		whole := runInitiator(iCfg, msg2, nil)
		if whole.err != nil || !whole.done || len(whole.rest) != 0 || whole.result.Muxer != "/yamux/1.0.0" {
			t.Fatalf("key type %d: %+v", typ, whole)
		}
		c := *iCfg
		c.rand = bytes.NewReader(bytes.Repeat([]byte{0x33}, 32))
		h := c.NewInitiator("")
		h.Start(nil)
		for i := range msg2 {
			out, n, err := h.Input(nil, msg2[:i])
			if err != nil || n != 0 || len(out) != 0 || h.Done() {
				t.Fatalf("key type %d prefix %d/%d: out %x n %d err %v", typ, i, len(msg2), out, n, err)
			}
		}
		out, n, err := h.Input(nil, append(bytes.Clone(msg2), 0, 17))
		if err != nil || n != len(msg2) || !bytes.Equal(out, whole.out) || h.Result().RemotePeer != whole.result.RemotePeer {
			t.Fatalf("key type %d after prefixes: n %d err %v", typ, n, err)
		}
	}
}

// FuzzInitiator feeds our initiator, after its msg 1, arbitrary bytes as
// the responder's answer. With raw set they are the answer itself (a
// malformed or forged msg 2); otherwise they are the responder's handshake
// payload, wrapped in a correctly encrypted msg 2, so the fuzzer reaches
// payload verification and muxer selection. Properties: never a panic,
// only typed errors, any split equals whole (same msg 3, leftover, error,
// result), the outcome agrees with verifying the payload directly, and a
// completed handshake is need-more on every truncated prefix of its msg 2.
func FuzzInitiator(f *testing.F) {
	iCfg, rCfg := vectorConfigs(f)
	f.Add(unhex(f, vecMsg2), []byte{}, true)
	f.Add(append(unhex(f, vecMsg2), unhex(f, vecRIHello)...), []byte{33, 1}, true)
	f.Add(append([]byte{0, 32}, make([]byte, 32)...), []byte{}, true) // low-order ephemeral
	f.Add([]byte{0, 80, 1, 2, 3}, []byte{2}, true)
	f.Add([]byte{0xff, 0xff}, []byte{}, true)
	f.Add(rCfg.payload, []byte{}, false)
	f.Add(rCfg.payload, []byte{7, 100}, false)
	for _, typ := range []int{crypto.Secp256k1, crypto.ECDSA} {
		k, _, _ := crypto.GenerateKeyPair(typ, 0)
		n, _ := newNoise(k, []string{"/mplex/6.7.0", "/yamux/1.0.0"}, rCfg.staticPriv)
		f.Add(n.payload, []byte{}, false)
	}
	var p pb.NoiseHandshakePayload
	_ = proto.Unmarshal(rCfg.payload, &p)
	p.Extensions = &pb.NoiseExtensions{StreamMuxers: make([]string, MaxStreamMuxers+1)}
	p.Extensions.StreamMuxers[MaxStreamMuxers] = "/yamux/1.0.0"
	many, _ := proto.Marshal(&p)
	f.Add(many, []byte{}, false)
	p.Extensions = nil
	noExt, _ := proto.Marshal(&p)
	f.Add(noExt, []byte{}, false)
	f.Add([]byte{0x0a, 0x02, 0x08, 0x04}, []byte{}, false)
	f.Fuzz(func(t *testing.T, in, sizes []byte, raw bool) {
		msg2 := in
		if !raw {
			if 32+48+len(in)+16 > MaxHandshakeMessage {
				return
			}
			msg2 = respondWith(t, iCfg, rCfg, in)
		}
		whole := runInitiator(iCfg, msg2, nil)
		if whole.err != nil {
			var e *Error
			if !errors.As(whole.err, &e) || e.Reason() == "" {
				t.Fatalf("untyped error %v", whole.err)
			}
		}
		cut := make([]int, len(sizes))
		for i, s := range sizes {
			cut[i] = int(s) + 1
		}
		for _, split := range [][]int{cut, {1}} {
			if r := runInitiator(iCfg, msg2, split); !sameInitiatorRun(r, whole) {
				t.Fatalf("split %v: %+v, whole %+v", split, r, whole)
			}
		}
		if !raw {
			// The verdict is the payload's: the encryption around it is
			// ours and correct.
			_, id, muxers, err := verifyPayload(in, rCfg.staticPub, "")
			if !errors.Is(whole.err, err) || (err == nil) != whole.done {
				t.Fatalf("handshake %v, payload verification %v", whole.err, err)
			}
			if err == nil && (id != whole.result.RemotePeer || matchMuxers(iCfg.muxers, muxers) != whole.result.Muxer) {
				t.Fatalf("result %+v, payload says %s %q", whole.result, id, muxers)
			}
		}
		if !whole.done {
			if whole.err == nil && len(whole.out) != 0 {
				t.Fatal("output before msg 2 was complete")
			}
			return
		}
		if !whole.result.RemotePeer.MatchesPublicKey(whole.result.RemoteKey) {
			t.Fatal("peer ID does not match key")
		}
		// One initiator sees every truncated prefix, then the whole: the
		// prefixes must leave it untouched.
		used := msg2[:len(msg2)-len(whole.rest)]
		c := *iCfg
		c.rand = bytes.NewReader(bytes.Repeat([]byte{0x33}, 32))
		h := c.NewInitiator("")
		h.Start(nil)
		for i := range used {
			if out, n, err := h.Input(nil, used[:i]); err != nil || n != 0 || len(out) != 0 || h.Done() {
				t.Fatalf("prefix %d/%d of a valid msg 2: out %x n %d err %v", i, len(used), out, n, err)
			}
		}
		if out, n, err := h.Input(nil, used); err != nil || n != len(used) || !bytes.Equal(out, whole.out) {
			t.Fatalf("after the prefixes: n %d err %v", n, err)
		}
	})
}

// plaintextPeer is a /plaintext/2.0.0 configuration with a key of typ.
func plaintextPeer(t testing.TB, typ int) (*Plaintext, crypto.PrivKey) {
	t.Helper()
	k, _, err := crypto.GenerateKeyPair(typ, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPlaintext(k.GetPublic())
	if err != nil {
		t.Fatal(err)
	}
	return p, k
}

// plainRun is what a plaintext handshake made of the peer's bytes.
type plainRun struct {
	out      []byte
	consumed int
	err      error
	done     bool
	result   Result
}

// feedPlain presents in to a fresh exchange in pieces of the given sizes
// (cycled; none: all at once), re-presenting unconsumed bytes, until it is
// done, fails or the input ends.
func feedPlain(cfg *Plaintext, expected string, in []byte, sizes []int) plainRun {
	h := cfg.NewHandshake(peer.ID(expected))
	if len(sizes) == 0 {
		sizes = []int{len(in)}
	}
	var r plainRun
	var buf []byte
	for i, fed := 0, 0; fed < len(in); i++ {
		k := min(max(sizes[i%len(sizes)], 1), len(in)-fed)
		buf = append(buf, in[fed:fed+k]...)
		fed += k
		var n int
		r.out, n, r.err = h.Input(r.out, buf)
		r.consumed += n
		buf = buf[n:]
		if r.err != nil || h.Done() {
			break
		}
		if len(buf) > MaxPlaintextExchange+2 {
			panic("more than one message left unconsumed")
		}
	}
	r.out, _ = h.Start(r.out) // output is our message, once, whatever came in
	r.done, r.result = h.Done(), h.Result()
	return r
}

// Every truncated prefix of a valid Exchange, for every key type, is
// need-more; the whole message completes and leaves the application bytes
// behind it.
func TestPlaintextTruncatedPrefixes(t *testing.T) {
	ours, _ := plaintextPeer(t, crypto.Ed25519)
	for _, typ := range []int{crypto.Ed25519, crypto.Secp256k1, crypto.ECDSA, crypto.RSA} {
		theirs, k := plaintextPeer(t, typ)
		in := append(bytes.Clone(theirs.msg), "/multistream/1.0.0\n"...)
		for i := range theirs.msg {
			r := feedPlain(ours, "", in[:i], nil)
			if r.err != nil || r.done || r.consumed != 0 || !bytes.Equal(r.out, ours.msg) {
				t.Fatalf("key type %d prefix %d: %+v", typ, i, r)
			}
		}
		r := feedPlain(ours, "", in, []int{1})
		if r.err != nil || !r.done || r.consumed != len(theirs.msg) || !r.result.RemoteKey.Equals(k.GetPublic()) {
			t.Fatalf("key type %d: %+v", typ, r)
		}
	}
}

// FuzzPlaintextHandshake feeds arbitrary bytes as the peer's Exchange:
// never a panic, only typed errors, our own message written exactly once,
// any split equals whole, an accepted identity is self-consistent and is
// accepted again from its canonical re-encoding, and an accepted message
// is need-more on every truncated prefix.
func FuzzPlaintextHandshake(f *testing.F) {
	ours, _ := plaintextPeer(f, crypto.Ed25519)
	var first string
	for _, typ := range []int{crypto.Ed25519, crypto.Secp256k1, crypto.ECDSA, crypto.RSA} {
		theirs, k := plaintextPeer(f, typ)
		if first == "" {
			id, _ := peer.IDFromPrivateKey(k)
			first = string(id)
		}
		f.Add(theirs.msg, []byte{}, false)
		f.Add(append(bytes.Clone(theirs.msg), "app"...), []byte{1, 30}, true)
	}
	f.Add([]byte{0x81, 0x20}, []byte{}, false)
	f.Add([]byte{0x80, 0x80, 0x01}, []byte{}, false)
	f.Add([]byte{0x80, 0x00}, []byte{}, false)
	f.Add([]byte{0x02, 0x0a, 0x00}, []byte{}, false)
	f.Fuzz(func(t *testing.T, in, sizes []byte, expect bool) {
		expected := ""
		if expect {
			expected = first
		}
		whole := feedPlain(ours, expected, in, nil)
		if !bytes.Equal(whole.out, ours.msg) {
			t.Fatalf("output %x, want our message once", whole.out)
		}
		if whole.err != nil {
			var e *Error
			if !errors.As(whole.err, &e) || e.Reason() == "" {
				t.Fatalf("untyped error %v", whole.err)
			}
		}
		cut := make([]int, len(sizes))
		for i, s := range sizes {
			cut[i] = int(s) + 1
		}
		for _, split := range [][]int{cut, {1}} {
			r := feedPlain(ours, expected, in, split)
			if !errors.Is(r.err, whole.err) || (r.err == nil) != (whole.err == nil) || r.done != whole.done ||
				r.consumed != whole.consumed || r.result.RemotePeer != whole.result.RemotePeer || !bytes.Equal(r.out, whole.out) {
				t.Fatalf("split %v: %+v, whole %+v", split, r, whole)
			}
		}
		if !whole.done {
			return
		}
		if !whole.result.RemotePeer.MatchesPublicKey(whole.result.RemoteKey) || (expected != "" && string(whole.result.RemotePeer) != expected) {
			t.Fatal("accepted an identity that does not hold")
		}
		re, err := NewPlaintext(whole.result.RemoteKey)
		if err != nil {
			t.Fatal(err)
		}
		if r := feedPlain(ours, expected, re.msg, nil); !r.done || r.result.RemotePeer != whole.result.RemotePeer {
			t.Fatalf("canonical re-encoding refused: %v", r.err)
		}
		h := ours.NewHandshake(peer.ID(expected))
		for i := range whole.consumed {
			if _, n, err := h.Input(nil, in[:i]); err != nil || h.Done() || n != 0 {
				t.Fatalf("prefix %d of an accepted message: n %d err %v", i, n, err)
			}
		}
		if _, n, err := h.Input(nil, in); err != nil || n != whole.consumed || h.Result().RemotePeer != whole.result.RemotePeer {
			t.Fatalf("after the prefixes: n %d err %v", n, err)
		}
	})
}
