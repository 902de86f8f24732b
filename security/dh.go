package security

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"hash"
	"io"

	"github.com/flynn/noise"
)

// x25519 is the Diffie-Hellman state of one handshake, plugged into
// flynn/noise as its DHFunc.
//
// flynn/noise's stock DH25519 calls x/crypto's curve25519.X25519(priv, pub),
// which parses the private scalar into a crypto/ecdh key on every call and
// so also computes the matching public key: two scalar multiplications per
// DH. Here the private keys are parsed once (the static key once per
// process, the ephemeral key when it is generated) and every DH is a single
// crypto/ecdh scalar multiplication. The bytes that enter the handshake
// hash are identical: flynn/noise generates an ephemeral key by reading 32
// random bytes and computing X25519(priv, basepoint), which is exactly what
// ecdh.X25519().NewPrivateKey does with the same 32 bytes.
type x25519 struct {
	static     *ecdh.PrivateKey
	staticPriv []byte // the slice handed to flynn/noise as StaticKeypair.Private
	eph        *ecdh.PrivateKey
	ephPriv    []byte // the slice returned by GenerateKeypair
}

// dhError marks a failed X25519 computation (a low-order remote point) so
// handshake errors can be classified without looking at their text.
type dhError struct{ err error }

func (e dhError) Error() string { return e.err.Error() }

// GenerateKeypair reads the 32-byte private scalar from random, as
// flynn/noise does. crypto/ecdh's GenerateKey ignores a custom reader (Go
// 1.26 without GODEBUG=cryptocustomrand=1), and tests need deterministic
// ephemeral keys, so the bytes are read here and parsed with NewPrivateKey.
func (x *x25519) GenerateKeypair(random io.Reader) (noise.DHKey, error) {
	if random == nil {
		random = rand.Reader
	}
	priv := make([]byte, 32)
	if _, err := io.ReadFull(random, priv); err != nil {
		return noise.DHKey{}, err
	}
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return noise.DHKey{}, err
	}
	x.eph, x.ephPriv = k, priv
	return noise.DHKey{Private: priv, Public: k.PublicKey().Bytes()}, nil
}

// DH computes X25519(privkey, pubkey). privkey is one of the slices this
// handshake handed to flynn/noise, recognised by identity so the parsed key
// is reused; any other slice is parsed (correct, just slower).
func (x *x25519) DH(privkey, pubkey []byte) ([]byte, error) {
	var k *ecdh.PrivateKey
	switch {
	case len(privkey) == 0:
	case len(x.ephPriv) > 0 && &privkey[0] == &x.ephPriv[0]:
		k = x.eph
	case len(x.staticPriv) > 0 && &privkey[0] == &x.staticPriv[0]:
		k = x.static
	}
	if k == nil {
		var err error
		if k, err = ecdh.X25519().NewPrivateKey(privkey); err != nil {
			return nil, dhError{err}
		}
	}
	pub, err := ecdh.X25519().NewPublicKey(pubkey)
	if err != nil {
		return nil, dhError{err}
	}
	// crypto/ecdh rejects an all-zero shared secret (low-order point), as
	// x/crypto's X25519 does for flynn/noise's DH25519.
	out, err := k.ECDH(pub)
	if err != nil {
		return nil, dhError{err}
	}
	return out, nil
}

func (*x25519) DHLen() int     { return 32 }
func (*x25519) DHName() string { return "25519" }

// suite is the Noise_XX_25519_ChaChaPoly_SHA256 cipher suite with the
// handshake's own DH state.
type suite struct{ *x25519 }

var suiteName = []byte("25519_ChaChaPoly_SHA256")

func (suite) Cipher(k [32]byte) noise.Cipher { return noise.CipherChaChaPoly.Cipher(k) }
func (suite) CipherName() string             { return "ChaChaPoly" }
func (suite) Hash() hash.Hash                { return sha256.New() }
func (suite) HashName() string               { return "SHA256" }
func (suite) Name() []byte                   { return suiteName }
