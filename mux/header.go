package mux

import "encoding/binary"

// HeaderLen is the size of every yamux frame header: version (1), type (1),
// flags (2), stream ID (4), length (4), all big-endian (spec.md "Framing").
const HeaderLen = 12

// Version is the only yamux protocol version defined (spec.md "Version").
const Version = 0

// FrameType is the yamux message type (header byte 1).
type FrameType uint8

// Frame types (spec.md "Type").
const (
	// TypeData carries Length payload bytes for a stream.
	TypeData FrameType = 0
	// TypeWindowUpdate adds Length to the receiver's send window of a stream;
	// with RST, go-yamux v5 puts an error code in Length instead.
	TypeWindowUpdate FrameType = 1
	// TypePing carries an opaque value in Length; stream ID 0.
	TypePing FrameType = 2
	// TypeGoAway ends the session; Length is a [Code]; stream ID 0.
	TypeGoAway FrameType = 3
)

func (t FrameType) String() string {
	switch t {
	case TypeData:
		return "Data"
	case TypeWindowUpdate:
		return "WindowUpdate"
	case TypePing:
		return "Ping"
	case TypeGoAway:
		return "GoAway"
	}
	return "Unknown"
}

// Flags is the yamux flag set (header bytes 2-3).
type Flags uint16

// Flags (spec.md "Flags"). SYN/ACK on a Ping mean request/response.
const (
	FlagSYN Flags = 1 << 0 // open a stream; Ping request
	FlagACK Flags = 1 << 1 // accept a stream; Ping response
	FlagFIN Flags = 1 << 2 // half-close: the sender writes no more
	FlagRST Flags = 1 << 3 // reset the stream in both directions
)

// Header is a decoded yamux frame header. For TypeData, Length payload bytes
// follow the header on the wire; every other type has no payload.
type Header struct {
	Type     FrameType
	Flags    Flags
	StreamID uint32
	Length   uint32
}

// ParseHeader decodes one frame header from the start of b. It returns the
// header and the number of bytes used (always HeaderLen on success).
//
// If b holds fewer than HeaderLen bytes it returns ErrNeedMore and
// consumes nothing: the caller waits for more bytes and calls again with the
// prefix plus the new bytes. A version other than 0 or an unknown type is a
// protocol error (*Error with CodeProtocolError). Unknown flag bits are kept
// and ignored, as go-yamux does.
func ParseHeader(b []byte) (Header, int, error) {
	if len(b) < HeaderLen {
		return Header{}, 0, ErrNeedMore
	}
	// spec.md: "The version field is used for future backward
	// compatibility. At the current time, the field is always set to 0".
	if b[0] != Version {
		return Header{}, 0, errBadVersion
	}
	t := FrameType(b[1])
	if t > TypeGoAway {
		return Header{}, 0, errBadType
	}
	return Header{
		Type:     t,
		Flags:    Flags(binary.BigEndian.Uint16(b[2:4])),
		StreamID: binary.BigEndian.Uint32(b[4:8]),
		Length:   binary.BigEndian.Uint32(b[8:12]),
	}, HeaderLen, nil
}

// AppendHeader appends the 12-byte wire form of h to dst.
func AppendHeader(dst []byte, h Header) []byte {
	return append(dst, Version, byte(h.Type),
		byte(h.Flags>>8), byte(h.Flags),
		byte(h.StreamID>>24), byte(h.StreamID>>16), byte(h.StreamID>>8), byte(h.StreamID),
		byte(h.Length>>24), byte(h.Length>>16), byte(h.Length>>8), byte(h.Length))
}

// putHeader writes h into b[:HeaderLen] (used to patch queued frames).
func putHeader(b []byte, h Header) {
	_ = b[HeaderLen-1]
	b[0] = Version
	b[1] = byte(h.Type)
	binary.BigEndian.PutUint16(b[2:4], uint16(h.Flags))
	binary.BigEndian.PutUint32(b[4:8], h.StreamID)
	binary.BigEndian.PutUint32(b[8:12], h.Length)
}
