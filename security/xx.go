package security

import (
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
	"io"

	"golang.org/x/crypto/chacha20poly1305"
)

// The Noise_XX_25519_ChaChaPoly_SHA256 handshake (the Noise Protocol
// Framework, revision 34: §5 processing rules, §7.5 the XX pattern), the
// only one libp2p uses, written for this one suite so that a handshake
// allocates almost nothing: HKDF is HMAC-SHA256 over fixed-size stack
// buffers (a generic HMAC would build two hash states per call, twelve
// calls per handshake), the handshake hash reuses one SHA-256 state, and
// every Diffie-Hellman is one crypto/ecdh scalar multiplication with keys
// parsed once (dh.go). It replaces flynn/noise's generic HandshakeState on
// the handshake path (48 allocations per responder handshake instead of
// 138, bench/RESULTS.md "Noise handshake"); flynn/noise stays in the tests
// as an independent initiator, with the recorded vectors (vector_test.go),
// crypto/hmac and crypto/hkdf (xx_test.go) and go-libp2p's Noise
// (interop_test.go) as the references.
//
//	XX:
//	  -> e
//	  <- e, ee, s, es
//	  -> s, se

// protocolName is the Noise protocol name; at 32 bytes it is exactly
// HASHLEN, so the initial handshake hash is the name itself (§5.2
// InitializeSymmetric: "If protocol_name is less than or equal to HASHLEN
// bytes in length, sets h equal to protocol_name with zero bytes appended
// to make HASHLEN bytes").
const protocolName = "Noise_XX_25519_ChaChaPoly_SHA256"

const (
	hashLen = sha256.Size // HASHLEN
	dhLen   = 32          // DHLEN
	tagLen  = 16          // the ChaChaPoly tag
	// hmacBlock is SHA-256's block size, HMAC's padded key length.
	hmacBlock = sha256.BlockSize
)

// errShortMessage reports a handshake message shorter than its tokens.
var errShortMessage = errors.New("noise: message is too short")

// errDecrypt reports a handshake ciphertext whose tag did not verify.
var errDecrypt = errors.New("noise: authentication failed")

// symmetric is the SymmetricState of §5.2 with its CipherState (§5.1).
type symmetric struct {
	ck   [hashLen]byte // chaining key
	h    [hashLen]byte // handshake hash
	k    cipher.AEAD   // nil: no key yet (EncryptAndHash passes plaintext)
	n    uint64        // nonce of k
	hash hash.Hash     // SHA-256 state reused by mixHash
}

func (s *symmetric) init() {
	copy(s.h[:], protocolName)
	s.ck = s.h
	s.hash = sha256.New()
	s.mixHash(nil) // the empty prologue (libp2p sets none)
}

// mixHash: "Sets h = HASH(h || data)."
func (s *symmetric) mixHash(data []byte) {
	s.hash.Reset()
	s.hash.Write(s.h[:])
	s.hash.Write(data)
	s.hash.Sum(s.h[:0])
}

// hmacSHA256 is HMAC-SHA256 with a HASHLEN key over msg (at most HASHLEN+1
// bytes: what HKDF hands it), on the stack (RFC 2104).
func hmacSHA256(key *[hashLen]byte, msg []byte) [hashLen]byte {
	var inner [hmacBlock + hashLen + 1]byte
	var outer [hmacBlock + hashLen]byte
	for i := range hmacBlock {
		k := byte(0)
		if i < hashLen {
			k = key[i]
		}
		inner[i] = k ^ 0x36
		outer[i] = k ^ 0x5c
	}
	n := copy(inner[hmacBlock:], msg)
	ih := sha256.Sum256(inner[:hmacBlock+n])
	copy(outer[hmacBlock:], ih[:])
	return sha256.Sum256(outer[:])
}

// hkdf2 is HKDF(chaining_key, input_key_material, 2) of §4.3: temp_key =
// HMAC(ck, ikm); output1 = HMAC(temp_key, 0x01); output2 = HMAC(temp_key,
// output1 || 0x02).
func hkdf2(ck *[hashLen]byte, ikm []byte) (out1, out2 [hashLen]byte) {
	temp := hmacSHA256(ck, ikm)
	out1 = hmacSHA256(&temp, []byte{1})
	var m [hashLen + 1]byte
	copy(m[:], out1[:])
	m[hashLen] = 2
	out2 = hmacSHA256(&temp, m[:])
	clear(temp[:])
	return out1, out2
}

// mixKey: "Sets ck, temp_k = HKDF(ck, input_key_material, 2) ...
// InitializeKey(temp_k)."
func (s *symmetric) mixKey(ikm []byte) {
	ck, k := hkdf2(&s.ck, ikm)
	s.ck = ck
	s.k, _ = chacha20poly1305.New(k[:]) // a 32-byte key cannot fail
	s.n = 0
	clear(k[:])
}

// nonce is ChaChaPoly's: "32 bits of zeros followed by little-endian
// encoding of n" (§12.3).
func nonce(n uint64) [chacha20poly1305.NonceSize]byte {
	var b [chacha20poly1305.NonceSize]byte
	binary.LittleEndian.PutUint64(b[4:], n)
	return b
}

// encryptAndHash appends the (encrypted, once a key is set) plaintext to
// out with h as associated data, and mixes the ciphertext into h.
func (s *symmetric) encryptAndHash(out, plaintext []byte) []byte {
	start := len(out)
	if s.k == nil {
		out = append(out, plaintext...)
	} else {
		nc := nonce(s.n)
		out = s.k.Seal(out, nc[:], plaintext, s.h[:])
		s.n++
	}
	s.mixHash(out[start:])
	return out
}

// decryptAndHash returns the plaintext of ciphertext (in a new slice),
// mixing the ciphertext into h.
func (s *symmetric) decryptAndHash(ciphertext []byte) ([]byte, error) {
	if s.k == nil {
		s.mixHash(ciphertext)
		return ciphertext, nil
	}
	nc := nonce(s.n)
	pt, err := s.k.Open(nil, nc[:], ciphertext, s.h[:])
	if err != nil {
		return nil, errDecrypt
	}
	s.n++
	s.mixHash(ciphertext)
	return pt, nil
}

// split returns the two transport keys: "temp_k1, temp_k2 = HKDF(ck,
// zerolen, 2)"; the first encrypts initiator to responder.
func (s *symmetric) split() (k1, k2 [hashLen]byte) {
	k1, k2 = hkdf2(&s.ck, nil)
	clear(s.ck[:])
	s.k = nil
	return k1, k2
}

// xx is the HandshakeState of one XX handshake (§5.3), for either role.
type xx struct {
	sym       symmetric
	dh        *x25519
	staticPub []byte
	rand      io.Reader
	re, rs    [dhLen]byte
	haveRS    bool
	initiator bool
}

func (x *xx) init(dh *x25519, staticPub []byte, random io.Reader, initiator bool) {
	x.sym.init()
	x.dh, x.staticPub, x.rand, x.initiator = dh, staticPub, random, initiator
}

// dhMix computes the DH of one of our keys with a remote public key and
// mixes it into the chaining key.
func (x *xx) dhMix(k *ecdh.PrivateKey, remote []byte) error {
	shared, err := x.dh.agree(k, remote)
	if err != nil {
		return err
	}
	x.sym.mixKey(shared)
	clear(shared)
	return nil
}

// writeE generates the ephemeral key and appends it ("e").
func (x *xx) writeE(out []byte) ([]byte, error) {
	pub, err := x.dh.generate(x.rand)
	if err != nil {
		return out, err
	}
	out = append(out, pub...)
	x.sym.mixHash(pub)
	return out, nil
}

// readE takes the remote ephemeral key from the front of msg ("e").
func (x *xx) readE(msg []byte) ([]byte, error) {
	if len(msg) < dhLen {
		return nil, errShortMessage
	}
	copy(x.re[:], msg)
	x.sym.mixHash(x.re[:])
	return msg[dhLen:], nil
}

// readS decrypts the remote static key from the front of msg ("s").
func (x *xx) readS(msg []byte) ([]byte, error) {
	if len(msg) < dhLen+tagLen {
		return nil, errShortMessage
	}
	rs, err := x.sym.decryptAndHash(msg[:dhLen+tagLen])
	if err != nil {
		return nil, err
	}
	copy(x.rs[:], rs)
	x.haveRS = true
	return msg[dhLen+tagLen:], nil
}

// writeMessage appends our next message carrying payload: msg 1 for an
// initiator (e), msg 2 for a responder (e, ee, s, es), msg 3 for an
// initiator (s, se). msg says which.
func (x *xx) writeMessage(out []byte, msg int, payload []byte) ([]byte, error) {
	var err error
	switch msg {
	case 1: // -> e
		if out, err = x.writeE(out); err != nil {
			return out, err
		}
	case 2: // <- e, ee, s, es
		if out, err = x.writeE(out); err != nil {
			return out, err
		}
		if err = x.dhMix(x.dh.eph, x.re[:]); err != nil { // ee
			return out, err
		}
		out = x.sym.encryptAndHash(out, x.staticPub)         // s
		if err = x.dhMix(x.dh.static, x.re[:]); err != nil { // es, responder: DH(s, re)
			return out, err
		}
	case 3: // -> s, se
		out = x.sym.encryptAndHash(out, x.staticPub)         // s
		if err = x.dhMix(x.dh.static, x.re[:]); err != nil { // se, initiator: DH(s, re)
			return out, err
		}
	}
	return x.sym.encryptAndHash(out, payload), nil
}

// readMessage processes the peer's message number msg and returns its
// payload.
func (x *xx) readMessage(msg int, in []byte) ([]byte, error) {
	var err error
	switch msg {
	case 1: // -> e
		if in, err = x.readE(in); err != nil {
			return nil, err
		}
	case 2: // <- e, ee, s, es
		if in, err = x.readE(in); err != nil {
			return nil, err
		}
		if err = x.dhMix(x.dh.eph, x.re[:]); err != nil { // ee
			return nil, err
		}
		if in, err = x.readS(in); err != nil {
			return nil, err
		}
		if err = x.dhMix(x.dh.eph, x.rs[:]); err != nil { // es, initiator: DH(e, rs)
			return nil, err
		}
	case 3: // -> s, se
		if in, err = x.readS(in); err != nil {
			return nil, err
		}
		if err = x.dhMix(x.dh.eph, x.rs[:]); err != nil { // se, responder: DH(e, rs)
			return nil, err
		}
	}
	return x.sym.decryptAndHash(in)
}
