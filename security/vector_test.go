package security

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ed25519Key(t testing.TB, seed []byte) crypto.PrivKey {
	t.Helper()
	k, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(seed))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// vectorConfigs builds the two deterministic sides of protocol-notes §9.5.
func vectorConfigs(t testing.TB) (ini, resp *Noise) {
	t.Helper()
	var err error
	iKey := ed25519Key(t, unhex(t, "7e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d"))
	rKey := ed25519Key(t, bytes.Repeat([]byte{0x01}, 32))
	if ini, err = newNoise(iKey, []string{"/yamux/1.0.0"}, bytes.Repeat([]byte{0x11}, 32)); err != nil {
		t.Fatal(err)
	}
	if resp, err = newNoise(rKey, []string{"/yamux/1.0.0"}, bytes.Repeat([]byte{0x22}, 32)); err != nil {
		t.Fatal(err)
	}
	ini.rand = bytes.NewReader(bytes.Repeat([]byte{0x33}, 32))
	resp.rand = bytes.NewReader(bytes.Repeat([]byte{0x44}, 32))
	return ini, resp
}

const (
	vecRespPayload = `0a24080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c
1240246d43e960be67ad57094023dc4575126f441c320b9ddc27b2dda580e884891e3892478d
03ebccbcfb5f84c603e1e6dded40e75e134ba8843bd09082a3df6108
220e120c2f79616d75782f312e302e30`
	vecInitPayload = `0a24080112201ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e
1240a32c5aaa2b9fd56ceb93f81f7dfaef0e32c2a504eee17d4dc53911da77267942bdf29f23
36f2e33b0c45d8c687fec4015321e8d984e8eb71a369f6352664960d
220e120c2f79616d75782f312e302e30`
	vecMsg1 = `0020 7b0d47d93427f8311160781c7c733fd89f88970aef490d8aa0ee19a4cb8a1b14`
	vecMsg2 = `00d8
 ff2ee45601ec1b67310c7790404585ae697331eee1c1f8cf2419731c1fff3e6bfcadb15080d9fd04
 34a18565751d3b6022bec571f33b6212486a1bffa54d1a1ee7712455070d4e3666e35c1eca6c109e
 d4e7d1b5c88bd8eb8a9245e61a6604c138b4d208576223707d63bcf2ac4d5e48d9883a68c92fa526
 a3d90de907b07855d34e52b018eb4c8c0fee3557caef2cfcd6ccde5043a27cef6350653797187a12
 2b64f0a588eacdc2851498999fb8d2a96aa22509fca371dbacf2365a8c57d730cbff4ff1920ce3c7
 25ffd25e5d8e564bf2b6042945072d5e`
	vecMsg3 = `00b8
 a7ea7dd47dddbcfcd736b91b174c6107b2ad26c161965a119a7b644e0c6b3d067256a8fead23b8c7
 3c21a399fc8cba0e7b9e4620d57d286e3be17bd0862e48168b5d863f1ff2a7566343a1193a78b184
 6fdc5f27e59cd95bb1594007e59d42e50ec4996691c340363e4899a9bf61cc9144c30497343c887b
 c558ce89383924ae0f820cc54bd0fb4c78548f2a4a1121908ea4a1c534e9c4c31f922b4ac4def408
 8ea98448d7f9ec92153771f7549a5f2a45a5632b91cff0b6`
	vecHash       = `853953c0b37e38b9da3d3ef49a4897de7177876639dae7e67d4292002ff483cc`
	vecIRHello    = `0015 ba55be97fa66e48a762932740de22240fe3f66270c`
	vecRIHello    = `0015 7c85947cdb3cf7a0ffeb88e475af559b0f805a9968`
	vecRIEmpty    = `0010 34f9db865f51b8016db1e76878bca106`
	vecInitPeer   = "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"
	vecRespPeer   = "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"
	vecStaticPubI = "7b4e909bbe7ffe44c465a220037d608ee35897d31ef972f07f74892cb0f73f13"
	vecStaticPubR = "0faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f20"
)

// TestNoiseVectors reproduces protocol-notes §9.5 byte for byte with both of
// our machines, each fed its input in one piece.
func TestNoiseVectors(t *testing.T) {
	iCfg, rCfg := vectorConfigs(t)
	if got := hex.EncodeToString(iCfg.staticPub); got != vecStaticPubI {
		t.Fatalf("initiator static pub %s", got)
	}
	if got := hex.EncodeToString(rCfg.staticPub); got != vecStaticPubR {
		t.Fatalf("responder static pub %s", got)
	}
	if !bytes.Equal(rCfg.payload, unhex(t, vecRespPayload)) {
		t.Fatalf("responder payload %x", rCfg.payload)
	}
	if !bytes.Equal(iCfg.payload, unhex(t, vecInitPayload)) {
		t.Fatalf("initiator payload %x", iCfg.payload)
	}
	wantI, _ := peer.Decode(vecInitPeer)
	wantR, _ := peer.Decode(vecRespPeer)
	ini := iCfg.NewInitiator(wantR)
	resp := rCfg.NewResponder("")

	msg1, err := ini.Start(nil)
	if err != nil || !bytes.Equal(msg1, unhex(t, vecMsg1)) {
		t.Fatalf("msg1 %x %v", msg1, err)
	}
	msg2, n, err := resp.Input(nil, msg1)
	if err != nil || n != len(msg1) || !bytes.Equal(msg2, unhex(t, vecMsg2)) {
		t.Fatalf("msg2 %x %d %v", msg2, n, err)
	}
	msg3, n, err := ini.Input(nil, msg2)
	if err != nil || n != len(msg2) || !bytes.Equal(msg3, unhex(t, vecMsg3)) || !ini.Done() {
		t.Fatalf("msg3 %x %d %v", msg3, n, err)
	}
	out, n, err := resp.Input(nil, msg3)
	if err != nil || n != len(msg3) || len(out) != 0 || !resp.Done() {
		t.Fatalf("resp after msg3: %x %d %v", out, n, err)
	}
	for _, h := range []*Handshake{ini, resp} {
		if hex.EncodeToString(h.hash) != vecHash {
			t.Fatalf("hash %x", h.hash)
		}
	}
	if r := ini.Result(); r.RemotePeer != wantR || r.Muxer != "/yamux/1.0.0" {
		t.Fatalf("initiator result %+v", r)
	}
	if r := resp.Result(); r.RemotePeer != wantI || r.Muxer != "/yamux/1.0.0" {
		t.Fatalf("responder result %+v", r)
	}

	f, err := ini.Session().AppendSeal(nil, []byte("hello"))
	if err != nil || !bytes.Equal(f, unhex(t, vecIRHello)) {
		t.Fatalf("I->R hello %x", f)
	}
	pt, n, err := resp.Session().ReadFrame(f)
	if err != nil || n != len(f) || string(pt) != "hello" {
		t.Fatalf("open I->R %q %v", pt, err)
	}
	f, _ = resp.Session().AppendSeal(nil, []byte("hello"))
	f, _ = resp.Session().AppendFrame(f, nil)
	if want := append(unhex(t, vecRIHello), unhex(t, vecRIEmpty)...); !bytes.Equal(f, want) {
		t.Fatalf("R->I frames %x", f)
	}
	pt, n, err = ini.Session().ReadFrame(f)
	if err != nil || string(pt) != "hello" {
		t.Fatalf("open R->I %q %v", pt, err)
	}
	pt, _, err = ini.Session().ReadFrame(f[n:])
	if err != nil || len(pt) != 0 {
		t.Fatalf("open R->I empty %q %v", pt, err)
	}
}
