// Package wire holds what every incremental parser of swarmgate shares:
// the one "need more bytes" result and the unsigned varint (multiformats
// unsigned-varint, protobuf's base-128) that multistream-select, the
// plaintext handshake and every length-delimited protobuf protocol
// (identify, Kademlia, circuit relay) put in front of a message.
//
// Parsers here and in the packages above follow one shape:
// parse(b) (v, n, err), where err is ErrNeedMore while b holds a prefix of
// something that may still become valid, and a definite error otherwise.
package wire

import "errors"

// ErrNeedMore is returned by an incremental parser when b holds a valid but
// incomplete prefix: the caller waits for more bytes and calls again with
// them appended. It is never returned for input that can no longer become
// valid. ws, multistream, security and mux re-export it, so errors.Is works
// across the stack.
var ErrNeedMore = errors.New("need more bytes")

// MaxUvarintLen64 is the longest unsigned-varint encoding of a uint64.
// The multiformats spec caps practical use at 9 bytes (63 bits); callers
// pass a much smaller byte limit to ParseUvarint.
const MaxUvarintLen64 = 10

var (
	// ErrUvarintTooLong reports a uvarint longer than the caller's byte limit.
	ErrUvarintTooLong = errors.New("wire: uvarint longer than allowed")
	// ErrUvarintNotMinimal reports a uvarint with redundant trailing zero
	// groups (e.g. 0x81 0x00). The unsigned-varint spec: "encodings MUST be
	// minimal"; go-varint rejects them too.
	ErrUvarintNotMinimal = errors.New("wire: uvarint not minimally encoded")
	// ErrMessageTooLarge reports a length prefix above the caller's limit,
	// found from the prefix alone, before any of the body is waited for.
	ErrMessageTooLarge = errors.New("wire: message larger than allowed")
)

// ParseUvarint decodes an unsigned LEB128 integer from the front of b,
// reading at most maxLen bytes (1..MaxUvarintLen64). It returns the value
// and the bytes used; ErrNeedMore if b ends inside an encoding that could
// still be valid; ErrUvarintTooLong, without waiting, once the encoding
// needs more than maxLen bytes.
func ParseUvarint(b []byte, maxLen int) (v uint64, n int, err error) {
	if maxLen > MaxUvarintLen64 {
		maxLen = MaxUvarintLen64
	}
	var shift uint
	for i := range maxLen {
		if i >= len(b) {
			return 0, 0, ErrNeedMore
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

// UvarintLen is the length of v's minimal encoding.
func UvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// ParseDelimited parses one uvarint-length-prefixed message from the front
// of b, the framing of identify, Kademlia and circuit relay. The limit is
// checked from the prefix, before the body is waited for: a prefix above max
// is ErrMessageTooLarge at once. msg aliases b.
func ParseDelimited(b []byte, max int) (msg []byte, n int, err error) {
	l, k, err := ParseUvarint(b, UvarintLen(uint64(max)))
	if err == ErrUvarintTooLong {
		return nil, 0, ErrMessageTooLarge
	}
	if err != nil {
		return nil, 0, err
	}
	if l > uint64(max) {
		return nil, 0, ErrMessageTooLarge
	}
	end := k + int(l)
	if len(b) < end {
		return nil, 0, ErrNeedMore
	}
	return b[k:end], end, nil
}

// AppendDelimited appends msg with its uvarint length prefix.
func AppendDelimited(dst, msg []byte) []byte {
	return append(AppendUvarint(dst, uint64(len(msg))), msg...)
}
