package security

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

// The stack HMAC and HKDF equal crypto/hmac and the Noise spec's HKDF
// built on it, for every input length they are used with.
func TestHKDFAgainstStdlib(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; n <= hashLen+1; n++ {
		for range 20 {
			var key [hashLen]byte
			for i := range key {
				key[i] = byte(rng.Uint32())
			}
			msg := make([]byte, n)
			for i := range msg {
				msg[i] = byte(rng.Uint32())
			}
			m := hmac.New(sha256.New, key[:])
			m.Write(msg)
			got := hmacSHA256(&key, msg)
			if !bytes.Equal(got[:], m.Sum(nil)) {
				t.Fatalf("HMAC over %d bytes differs", n)
			}
			if n > hashLen {
				continue
			}
			// Noise's HKDF with two outputs is RFC 5869's with the chaining
			// key as salt, an empty info and 64 bytes of output.
			o1, o2 := hkdf2(&key, msg)
			std, err := hkdf.Key(sha256.New, msg, key[:], "", 2*hashLen)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(append(o1[:], o2[:]...), std) {
				t.Fatalf("HKDF over %d bytes differs", n)
			}
		}
	}
}

// A handshake allocates little besides the keys, the AEADs and the
// payloads (flynn/noise's generic state made about 60 allocations).
func TestHandshakeAllocations(t *testing.T) {
	ini, resp := vectorConfigs(t)
	ini.rand, resp.rand = constReader(1), constReader(2)
	allocs := testing.AllocsPerRun(20, func() {
		i, r := ini.NewInitiator(""), resp.NewResponder("")
		m1, _ := i.Start(nil)
		m2, _, _ := r.Input(nil, m1)
		m3, _, _ := i.Input(nil, m2)
		r.Input(nil, m3)
		if !r.Done() || !i.Done() {
			t.Fatal("handshake did not complete")
		}
	})
	if allocs > 120 {
		t.Fatalf("%.0f allocations for both sides of a handshake", allocs)
	}
	t.Logf("%.0f allocations for both sides", allocs)
}
