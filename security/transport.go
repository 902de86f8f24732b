package security

import (
	"crypto/cipher"
	"encoding/binary"
	"math"
	"slices"

	"golang.org/x/crypto/chacha20poly1305"
)

// Transport framing (libp2p noise spec, "Wire format"):
//
//	uint16 big-endian length L || L bytes of ChaCha20-Poly1305 ciphertext+tag
const (
	// FrameHeader is the size of the length prefix of every frame.
	FrameHeader = 2
	// MaxFrame is the largest ciphertext (including the tag) a frame can
	// carry: the Noise spec's 65535-byte message limit.
	MaxFrame = 65535
	// TagSize is the Poly1305 tag appended to every frame's plaintext.
	TagSize = chacha20poly1305.Overhead
	// MaxFramePlaintext is the most plaintext one frame carries (65519);
	// AppendSeal splits longer input into frames of this size.
	MaxFramePlaintext = MaxFrame - TagSize
)

// ParseFrame returns the ciphertext (tag included) of the next complete
// transport frame at the front of b, aliasing b, and the bytes it occupies.
// It returns ErrNeedMore for an incomplete frame and ErrFrameTooShort, as
// soon as the length prefix is known, for a frame shorter than the tag.
func ParseFrame(b []byte) (ciphertext []byte, n int, err error) {
	if len(b) < FrameHeader {
		return nil, 0, ErrNeedMore
	}
	l := int(binary.BigEndian.Uint16(b)) // ≤ MaxFrame by construction
	if l < TagSize {
		return nil, 0, ErrFrameTooShort
	}
	if len(b) < FrameHeader+l {
		return nil, 0, ErrNeedMore
	}
	return b[FrameHeader : FrameHeader+l], FrameHeader + l, nil
}

// SealedLen returns how many bytes AppendSeal adds for n bytes of
// plaintext (an empty plaintext yields no frame).
func SealedLen(n int) int {
	frames := (n + MaxFramePlaintext - 1) / MaxFramePlaintext
	return n + frames*(FrameHeader+TagSize)
}

// Session holds the two transport cipher states of a Noise connection.
//
// Seal and Open keep separate state, so one goroutine may seal while
// another opens; each direction alone is not safe for concurrent use.
// Neither allocates.
type Session struct {
	enc, dec     cipher.AEAD
	encN, decN   uint64
	encNo, decNo [chacha20poly1305.NonceSize]byte // nonce scratch, kept off the stack so it does not escape per call
}

func (s *Session) init(encKey, decKey [32]byte) {
	// chacha20poly1305.New only fails for a key of the wrong size.
	s.enc, _ = chacha20poly1305.New(encKey[:])
	s.dec, _ = chacha20poly1305.New(decKey[:])
	s.encN, s.decN = 0, 0
}

// Noise spec: nonce n = 4 zero bytes || 64-bit little-endian counter; "the
// maximum nonce value (2^64-1) is reserved" so a session fails before
// using it.
func putNonce(dst *[chacha20poly1305.NonceSize]byte, n uint64) {
	binary.LittleEndian.PutUint64(dst[4:], n)
}

// AppendSeal encrypts plaintext into frames of at most MaxFramePlaintext
// bytes and appends them, each with its length prefix, to dst. An empty
// plaintext appends nothing. plaintext must not overlap dst's spare capacity.
func (s *Session) AppendSeal(dst, plaintext []byte) ([]byte, error) {
	dst = slices.Grow(dst, SealedLen(len(plaintext)))
	for len(plaintext) > 0 {
		chunk := plaintext[:min(len(plaintext), MaxFramePlaintext)]
		plaintext = plaintext[len(chunk):]
		var err error
		if dst, err = s.AppendFrame(dst, chunk); err != nil {
			return dst, err
		}
	}
	return dst, nil
}

// AppendFrame encrypts plaintext (at most MaxFramePlaintext bytes, possibly
// empty) as exactly one frame appended to dst. plaintext must not overlap
// dst's spare capacity.
func (s *Session) AppendFrame(dst, plaintext []byte) ([]byte, error) {
	if len(plaintext) > MaxFramePlaintext {
		return dst, ErrTooLarge
	}
	if s.encN == math.MaxUint64 {
		return dst, ErrNonceExhausted
	}
	putNonce(&s.encNo, s.encN)
	s.encN++
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(plaintext)+TagSize))
	return s.enc.Seal(dst, s.encNo[:], plaintext, nil), nil
}

// Open authenticates and decrypts one frame's ciphertext (from ParseFrame)
// in place and returns the plaintext, which aliases ciphertext. A frame
// that fails authentication returns ErrAuthFailed; the connection must then
// be closed, since the nonce sequence can no longer be trusted.
func (s *Session) Open(ciphertext []byte) ([]byte, error) {
	if len(ciphertext) < TagSize {
		return nil, ErrFrameTooShort
	}
	if s.decN == math.MaxUint64 {
		return nil, ErrNonceExhausted
	}
	putNonce(&s.decNo, s.decN)
	pt, err := s.dec.Open(ciphertext[:0], s.decNo[:], ciphertext, nil)
	if err != nil {
		return nil, ErrAuthFailed
	}
	s.decN++
	return pt, nil
}

// ReadFrame parses and opens the next frame at the front of in. It returns
// the plaintext (decrypted in place: it aliases in and overwrites the
// frame's bytes) and the number of bytes of in the frame occupied, or
// ErrNeedMore when the frame is incomplete (nothing is modified then).
func (s *Session) ReadFrame(in []byte) (plaintext []byte, n int, err error) {
	ct, n, err := ParseFrame(in)
	if err != nil {
		return nil, 0, err
	}
	pt, err := s.Open(ct)
	if err != nil {
		return nil, 0, err
	}
	return pt, n, nil
}
