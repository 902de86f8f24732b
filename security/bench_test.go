package security

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pnoise "github.com/libp2p/go-libp2p/p2p/security/noise"
	"golang.org/x/crypto/chacha20poly1305"
)

// constReader fills every read with one byte value: a responder reading
// its ephemeral key from it produces the same msg 2 on every run, so msg 3
// can be recorded once and replayed. X25519, Ed25519 and ChaCha20-Poly1305
// run in constant time, so the replay costs what a fresh handshake costs.
type constReader byte

func (c constReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(c)
	}
	return len(p), nil
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHandshake compares, in one run, the server (responder) side of
// our handshake with the crypto it cannot avoid and with go-libp2p.
//
//	floor:          1 X25519 key generation + 3 X25519 DH (crypto/ecdh) + 1 Ed25519 verify
//	responder:      our responder consuming msg 1 and msg 3 (Ed25519 initiator)
//	go-libp2p-pair: go-libp2p initiator and responder over net.Pipe; cpu-µs/side
//	                is process CPU time ÷ 2 (both sides do the same work)
//	ours-pair:      our initiator and responder in memory, same metric
func BenchmarkHandshake(b *testing.B) {
	iKey, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	rKey, _, _ := crypto.GenerateEd25519Key(rand.Reader)

	b.Run("floor", func(b *testing.B) {
		peerPriv, _ := ecdh.X25519().GenerateKey(rand.Reader)
		remote := peerPriv.PublicKey().Bytes()
		static, _ := ecdh.X25519().GenerateKey(rand.Reader)
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		msg := []byte(sigPrefix + "0123456789abcdef0123456789abcdef")
		sig := ed25519.Sign(priv, msg)
		b.ReportAllocs()
		start := cpuTime()
		for b.Loop() {
			var seed [32]byte
			_, _ = rand.Read(seed[:])
			eph, _ := ecdh.X25519().NewPrivateKey(seed[:])
			for _, k := range []*ecdh.PrivateKey{eph, static, eph} { // ee, es, se
				rp, _ := ecdh.X25519().NewPublicKey(remote)
				if _, err := k.ECDH(rp); err != nil {
					b.Fatal(err)
				}
			}
			if !ed25519.Verify(pub, msg, sig) {
				b.Fatal("verify")
			}
		}
		b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N), "cpu-µs/handshake")
	})

	b.Run("responder", func(b *testing.B) {
		ini, err := NewNoise(iKey, "/yamux/1.0.0")
		if err != nil {
			b.Fatal(err)
		}
		resp, err := NewNoise(rKey, "/yamux/1.0.0")
		if err != nil {
			b.Fatal(err)
		}
		resp.rand = constReader(0x44)
		ih := ini.NewInitiator(resp.LocalPeer())
		msg1, _ := ih.Start(nil)
		msg2, _, err := resp.NewResponder("").Input(nil, msg1)
		if err != nil {
			b.Fatal(err)
		}
		msg3, _, err := ih.Input(nil, msg2)
		if err != nil {
			b.Fatal(err)
		}
		out := make([]byte, 0, 512)
		b.ReportAllocs()
		start := cpuTime()
		for b.Loop() {
			h := resp.NewResponder("")
			if _, _, err := h.Input(out[:0], msg1); err != nil {
				b.Fatal(err)
			}
			if _, _, err := h.Input(out[:0], msg3); err != nil || !h.Done() {
				b.Fatal(err)
			}
		}
		us := float64((cpuTime() - start).Microseconds()) / float64(b.N)
		b.ReportMetric(us, "cpu-µs/handshake")
		b.ReportMetric(1e6/us, "handshakes/cpu-s")
	})

	b.Run("go-libp2p-pair", func(b *testing.B) {
		it, _ := libp2pnoise.New(libp2pnoise.ID, iKey, muxerList("/yamux/1.0.0"))
		rt, _ := libp2pnoise.New(libp2pnoise.ID, rKey, muxerList("/yamux/1.0.0"))
		rid, _ := peer.IDFromPrivateKey(rKey)
		ctx := context.Background()
		b.ReportAllocs()
		start := cpuTime()
		for b.Loop() {
			a, c := net.Pipe()
			done := make(chan error, 1)
			go func() { _, err := rt.SecureInbound(ctx, c, ""); done <- err }()
			if _, err := it.SecureOutbound(ctx, a, rid); err != nil {
				b.Fatal(err)
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			a.Close()
			c.Close()
		}
		b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N)/2, "cpu-µs/side")
	})

	b.Run("ours-pair", func(b *testing.B) {
		ini, _ := NewNoise(iKey, "/yamux/1.0.0")
		resp, _ := NewNoise(rKey, "/yamux/1.0.0")
		b.ReportAllocs()
		start := cpuTime()
		for b.Loop() {
			ih, rh := ini.NewInitiator(resp.LocalPeer()), resp.NewResponder("")
			m1, _ := ih.Start(nil)
			m2, _, _ := rh.Input(nil, m1)
			m3, _, _ := ih.Input(nil, m2)
			if _, _, err := rh.Input(nil, m3); err != nil || !rh.Done() {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N)/2, "cpu-µs/side")
	})
}

var benchSizes = []int{64, 1024, 16384, MaxFramePlaintext}

// BenchmarkTransport measures Session against raw x/crypto
// chacha20poly1305 on the same sizes. Open benchmarks copy a sealed frame
// into the work buffer before decrypting it in place (in-place decryption
// destroys the ciphertext); both variants pay the same copy.
func BenchmarkTransport(b *testing.B) {
	var key [32]byte
	key[0] = 7
	for _, n := range benchSizes {
		pt := bytes.Repeat([]byte{0xa5}, n)
		b.Run(fmt.Sprintf("seal/session/%d", n), func(b *testing.B) {
			s := new(Session)
			s.init(key, key)
			buf := make([]byte, 0, SealedLen(n))
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = s.AppendFrame(buf[:0], pt)
			}
		})
		b.Run(fmt.Sprintf("seal/xcrypto/%d", n), func(b *testing.B) {
			aead, _ := chacha20poly1305.New(key[:])
			nonce := make([]byte, chacha20poly1305.NonceSize)
			buf := make([]byte, 0, n+TagSize)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				buf = aead.Seal(buf[:0], nonce, pt, nil)
			}
		})
		b.Run(fmt.Sprintf("open/session/%d", n), func(b *testing.B) {
			enc, dec := new(Session), new(Session)
			enc.init(key, key)
			dec.init(key, key)
			frame, _ := enc.AppendFrame(nil, pt)
			work := make([]byte, len(frame))
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				copy(work, frame)
				dec.decN = 0
				if _, _, err := dec.ReadFrame(work); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("open/xcrypto/%d", n), func(b *testing.B) {
			aead, _ := chacha20poly1305.New(key[:])
			nonce := make([]byte, chacha20poly1305.NonceSize)
			ct := aead.Seal(nil, nonce, pt, nil)
			work := make([]byte, len(ct))
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				copy(work, ct)
				if _, err := aead.Open(work[:0], nonce, work, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("seal/session/1MiB-split", func(b *testing.B) {
		s := new(Session)
		s.init(key, key)
		pt := make([]byte, 1<<20)
		buf := make([]byte, 0, SealedLen(len(pt)))
		b.SetBytes(int64(len(pt)))
		b.ReportAllocs()
		for b.Loop() {
			buf, _ = s.AppendSeal(buf[:0], pt)
		}
	})
}
