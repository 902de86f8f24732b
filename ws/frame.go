package ws

import (
	"encoding/binary"
	"math"
)

// Opcode is the 4-bit frame type (RFC 6455 §5.2).
type Opcode uint8

// Defined opcodes; 0x3–0x7 and 0xB–0xF are reserved.
const (
	OpContinuation Opcode = 0x0
	OpText         Opcode = 0x1
	OpBinary       Opcode = 0x2
	OpClose        Opcode = 0x8
	OpPing         Opcode = 0x9
	OpPong         Opcode = 0xA
)

// IsControl reports whether op is a control opcode (high bit set).
func (op Opcode) IsControl() bool { return op&0x8 != 0 }

func (op Opcode) reserved() bool {
	return (op > OpBinary && op < OpClose) || op > OpPong
}

// Header is a decoded frame header.
type Header struct {
	Fin    bool
	Rsv    uint8 // RSV1..RSV3 as the bits 0x4, 0x2, 0x1
	Op     Opcode
	Masked bool
	Key    [4]byte
	Length int64
}

// MaxHeaderSize is the longest frame header: 2 bytes, an 8-byte extended
// length and a 4-byte masking key.
const MaxHeaderSize = 14

// ParseHeader decodes the frame header at the start of b and returns it with
// its size. It returns ErrNeedMore when b ends inside the header. It
// checks only what the header alone decides (the 64-bit length's top bit);
// sequencing rules are the Decoder's.
func ParseHeader(b []byte) (Header, int, error) {
	if len(b) < 2 {
		return Header{}, 0, ErrNeedMore
	}
	h := Header{
		Fin:    b[0]&0x80 != 0,
		Rsv:    (b[0] >> 4) & 0x7,
		Op:     Opcode(b[0] & 0x0f),
		Masked: b[1]&0x80 != 0,
	}
	n := 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return Header{}, 0, ErrNeedMore
		}
		h.Length = int64(binary.BigEndian.Uint16(b[2:]))
		n = 4
	case 127:
		if len(b) < 10 {
			return Header{}, 0, ErrNeedMore
		}
		u := binary.BigEndian.Uint64(b[2:])
		// "the most significant bit MUST be 0" (RFC 6455 §5.2).
		if u > math.MaxInt64 {
			return Header{}, 0, ErrLengthMSB
		}
		h.Length = int64(u)
		n = 10
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		if len(b) < n+4 {
			return Header{}, 0, ErrNeedMore
		}
		copy(h.Key[:], b[n:n+4])
		n += 4
	}
	return h, n, nil
}

// HeaderSize is the encoded size of a header with this payload length.
func HeaderSize(length int64, masked bool) int {
	n := 2
	switch {
	case length > math.MaxUint16:
		n = 10
	case length > 125:
		n = 4
	}
	if masked {
		n += 4
	}
	return n
}

// AppendHeader appends h in the shortest length form, which senders MUST use
// (RFC 6455 §5.2).
func AppendHeader(dst []byte, h Header) []byte {
	b0 := byte(h.Op) | h.Rsv<<4
	if h.Fin {
		b0 |= 0x80
	}
	var b1 byte
	if h.Masked {
		b1 = 0x80
	}
	switch {
	case h.Length > math.MaxUint16:
		dst = append(dst, b0, b1|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(h.Length))
	case h.Length > 125:
		dst = append(dst, b0, b1|126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(h.Length))
	default:
		dst = append(dst, b0, b1|byte(h.Length))
	}
	if h.Masked {
		dst = append(dst, h.Key[:]...)
	}
	return dst
}
