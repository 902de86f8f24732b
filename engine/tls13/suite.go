package tls13

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"hash"

	"golang.org/x/crypto/chacha20poly1305"
)

// suite is what the record layer needs of a TLS 1.3 cipher suite
// (RFC 8446 §B.4): the AEAD, its key length, and the hash of the key
// schedule.
type suite struct {
	id      uint16
	keyLen  int
	hashLen int
	hash    func() hash.Hash
	aead    func(key []byte) (cipher.AEAD, error)
	// keyUpdateAfter is how many records are sealed under one key before
	// the write side moves to the next with a KeyUpdate. RFC 8446 §5.5:
	// "For AES-GCM, up to 2^24.5 full-size records (about 24 million) may
	// be encrypted on a given connection while keeping a safety margin of
	// approximately 2^-57 for Authenticated Encryption (AE) security. For
	// ChaCha20/Poly1305, the record sequence number would wrap before the
	// safety limit is reached." and "Implementations SHOULD do a key update
	// as described in Section 4.6.3 prior to reaching these limits." For
	// ChaCha20-Poly1305 the bound is only there so the sequence number
	// never wraps (§5.3).
	keyUpdateAfter uint64
}

// aeadLimitAESGCM is 2^24 records, under §5.5's 2^24.5.
const aeadLimitAESGCM = 1 << 24

// seqLimit is where any write key is replaced: far below 2^64 - 1, with
// room for the KeyUpdate record itself.
const seqLimit = 1 << 62

var suites = [...]suite{
	{tls.TLS_AES_128_GCM_SHA256, 16, sha256.Size, sha256.New, newAESGCM, aeadLimitAESGCM},
	{tls.TLS_AES_256_GCM_SHA384, 32, sha512.Size384, sha512.New384, newAESGCM, aeadLimitAESGCM},
	{tls.TLS_CHACHA20_POLY1305_SHA256, chacha20poly1305.KeySize, sha256.Size, sha256.New, chacha20poly1305.New, seqLimit},
}

// suiteByID returns the suite, or nil for one crypto/tls does not
// negotiate in TLS 1.3 (the CCM suites, any TLS 1.2 suite).
func suiteByID(id uint16) *suite {
	for i := range suites {
		if suites[i].id == id {
			return &suites[i]
		}
	}
	return nil
}

func newAESGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// Sizes fixed by the three suites: all use a 12-byte nonce and a 16-byte
// tag (RFC 5116 §5.1, RFC 8439 §2.8).
const (
	ivLen  = 12
	TagLen = 16
	// maxSecretLen is the longest traffic secret: SHA-384's output.
	maxSecretLen = sha512.Size384
	// maxKeyLen is the longest AEAD key: AES-256 and ChaCha20.
	maxKeyLen = 32
)

// hkdfLabel encodes RFC 8446 §7.1's HkdfLabel:
//
//	struct {
//	    uint16 length = Length;
//	    opaque label<7..255> = "tls13 " + Label;
//	    opaque context<0..255> = Context;
//	} HkdfLabel;
func hkdfLabel(length int, label string, context []byte) []byte {
	const prefix = "tls13 "
	b := make([]byte, 0, 2+1+len(prefix)+len(label)+1+len(context))
	b = append(b, byte(length>>8), byte(length))
	b = append(b, byte(len(prefix)+len(label)))
	b = append(b, prefix...)
	b = append(b, label...)
	b = append(b, byte(len(context)))
	return append(b, context...)
}

// expandLabel is RFC 8446 §7.1's
//
//	HKDF-Expand-Label(Secret, Label, Context, Length) =
//	     HKDF-Expand(Secret, HkdfLabel, Length)
func expandLabel(h func() hash.Hash, secret []byte, label string, context []byte, length int) []byte {
	out, err := hkdf.Expand(h, secret, string(hkdfLabel(length, label, context)), length)
	if err != nil {
		// Expand fails only for a length above 255 hash blocks, or for a
		// hash the FIPS 140-only mode refuses; the lengths here are at
		// most 48 bytes and the hashes are SHA-256 and SHA-384.
		panic("tls13: HKDF-Expand: " + err.Error())
	}
	return out
}

// trafficKey and trafficIV derive a write key and IV from a traffic
// secret (RFC 8446 §7.3):
//
//	[sender]_write_key = HKDF-Expand-Label(Secret, "key", "", key_length)
//	[sender]_write_iv  = HKDF-Expand-Label(Secret, "iv", "", iv_length)
func (s *suite) trafficKey(secret []byte) []byte {
	return expandLabel(s.hash, secret, "key", nil, s.keyLen)
}

func (s *suite) trafficIV(secret []byte) []byte {
	return expandLabel(s.hash, secret, "iv", nil, ivLen)
}

// nextSecret is RFC 8446 §7.2's
//
//	application_traffic_secret_N+1 =
//	    HKDF-Expand-Label(application_traffic_secret_N,
//	                      "traffic upd", "", Hash.length)
func (s *suite) nextSecret(secret []byte) []byte {
	return expandLabel(s.hash, secret, "traffic upd", nil, s.hashLen)
}
