package security

import (
	"crypto/ecdh"
	"crypto/rand"
	"io"
)

// x25519 is the Diffie-Hellman state of one handshake: the node's static
// key, parsed once per process, and the handshake's ephemeral key, parsed
// once when it is generated, so every DH is a single crypto/ecdh scalar
// multiplication (x/crypto's curve25519.X25519(priv, pub) re-derives the
// public key on every call: two multiplications per DH).
type x25519 struct {
	static *ecdh.PrivateKey
	eph    *ecdh.PrivateKey
}

// dhError marks a failed X25519 computation (a low-order remote point) so
// handshake errors can be classified without looking at their text.
type dhError struct{ err error }

func (e dhError) Error() string { return e.err.Error() }

// generate makes the ephemeral key from 32 bytes of random and returns its
// public key. The bytes are read here and parsed with NewPrivateKey
// because crypto/ecdh's GenerateKey ignores a custom reader (Go 1.26
// without GODEBUG=cryptocustomrand=1) and tests need deterministic
// ephemeral keys; X25519(priv, basepoint) of the same 32 bytes is what any
// Noise implementation computes.
func (x *x25519) generate(random io.Reader) ([]byte, error) {
	if random == nil {
		random = rand.Reader
	}
	var priv [dhLen]byte
	if _, err := io.ReadFull(random, priv[:]); err != nil {
		return nil, err
	}
	k, err := ecdh.X25519().NewPrivateKey(priv[:])
	clear(priv[:])
	if err != nil {
		return nil, err
	}
	x.eph = k
	return k.PublicKey().Bytes(), nil
}

// agree computes X25519(k, remote). crypto/ecdh rejects an all-zero shared
// secret (a low-order remote point), as the Noise spec allows ("may reject
// ... invalid public keys") and go-libp2p's Noise does.
func (x *x25519) agree(k *ecdh.PrivateKey, remote []byte) ([]byte, error) {
	pub, err := ecdh.X25519().NewPublicKey(remote)
	if err != nil {
		return nil, dhError{err}
	}
	out, err := k.ECDH(pub)
	if err != nil {
		return nil, dhError{err}
	}
	return out, nil
}
