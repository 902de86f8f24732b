package codec

import "errors"

// MaxUvarintLen64 is the longest unsigned-varint encoding of a uint64.
//
// The multiformats unsigned-varint spec caps practical use at 9 bytes
// (63 bits); we accept Go's 10-byte uint64 range but callers usually pass a
// much smaller byte limit to ParseUvarint.
const MaxUvarintLen64 = 10

// ErrShortBuffer is returned by the parsers in this package when b holds a
// valid but incomplete prefix of an encoding: the caller must wait for more
// bytes and call again with them appended. It is never returned for input
// that can no longer become valid.
var ErrShortBuffer = errors.New("codec: short buffer, need more bytes")

var (
	// ErrUvarintTooLong reports a uvarint longer than the caller's byte limit.
	ErrUvarintTooLong = errors.New("codec: uvarint longer than allowed")
	// ErrUvarintNotMinimal reports a uvarint with redundant trailing zero
	// groups (e.g. 0x81 0x00). The unsigned-varint spec: "encodings MUST be
	// minimal"; go-varint rejects them too.
	ErrUvarintNotMinimal = errors.New("codec: uvarint not minimally encoded")
)

// ParseUvarint decodes an unsigned LEB128 integer from the front of b,
// reading at most maxLen bytes (1..MaxUvarintLen64).
//
// It returns the value and the number of bytes used. If b ends inside an
// encoding that could still be valid it returns ErrShortBuffer; if the
// encoding needs more than maxLen bytes it returns ErrUvarintTooLong without
// waiting for them.
func ParseUvarint(b []byte, maxLen int) (v uint64, n int, err error) {
	if maxLen > MaxUvarintLen64 {
		maxLen = MaxUvarintLen64
	}
	var shift uint
	for i := range maxLen {
		if i >= len(b) {
			return 0, 0, ErrShortBuffer
		}
		c := b[i]
		if i == MaxUvarintLen64-1 && c > 1 {
			return 0, 0, ErrUvarintTooLong // overflows 64 bits
		}
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			if c == 0 && i > 0 {
				return 0, 0, ErrUvarintNotMinimal
			}
			return v, i + 1, nil
		}
		shift += 7
	}
	return 0, 0, ErrUvarintTooLong
}

// AppendUvarint appends the minimal unsigned LEB128 encoding of v to dst.
func AppendUvarint(dst []byte, v uint64) []byte {
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}
