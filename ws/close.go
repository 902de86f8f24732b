package ws

import (
	"encoding/binary"
	"unicode/utf8"
)

// CloseCode is a WebSocket close status code (RFC 6455 §7.4).
type CloseCode uint16

// Close codes used by the engine. 1005, 1006 and 1015 exist only as local
// reports and are never sent (RFC 6455 §7.4.1).
const (
	CloseNormal          CloseCode = 1000
	CloseGoingAway       CloseCode = 1001
	CloseProtocolError   CloseCode = 1002
	CloseUnsupportedData CloseCode = 1003
	CloseNoStatus        CloseCode = 1005
	CloseAbnormal        CloseCode = 1006
	CloseInvalidPayload  CloseCode = 1007
	ClosePolicyViolation CloseCode = 1008
	CloseMessageTooBig   CloseCode = 1009
	CloseInternalError   CloseCode = 1011
	CloseTryAgainLater   CloseCode = 1013
)

// MaxControlPayload is the largest payload of a control frame:
// "All control frames MUST have a payload length of 125 bytes or less"
// (RFC 6455 §5.5).
const MaxControlPayload = 125

// ValidReceived reports whether a peer may send code in a Close frame.
// 1004, 1005, 1006 and 1015 are reserved or local-only, 1016–2999 are
// unassigned, below 1000 and above 4999 are outside the defined ranges
// (RFC 6455 §7.4.1, §7.4.2); 1012–1014 were registered with IANA later.
func (c CloseCode) ValidReceived() bool {
	switch {
	case c >= 1000 && c <= 1003, c >= 1007 && c <= 1014:
		return true
	case c >= 3000 && c <= 4999:
		return true
	}
	return false
}

// ParseClose decodes the payload of a Close frame. An empty payload means no
// status code (reported as CloseNoStatus). The reason aliases p.
func ParseClose(p []byte) (CloseCode, []byte, error) {
	switch len(p) {
	case 0:
		return CloseNoStatus, nil, nil
	case 1:
		// "If there is a body, the first two bytes of the body MUST be a
		// 2-byte unsigned integer" (RFC 6455 §5.5.1).
		return 0, nil, ErrCloseBody
	}
	code := CloseCode(binary.BigEndian.Uint16(p))
	if !code.ValidReceived() {
		return 0, nil, ErrCloseCode
	}
	reason := p[2:]
	// "the body ... MAY contain UTF-8-encoded data" and an endpoint that
	// receives invalid UTF-8 must fail the connection (RFC 6455 §5.5.1, §8.1).
	if !utf8.Valid(reason) {
		return 0, nil, ErrCloseReasonUTF8
	}
	return code, reason, nil
}

// AppendCloseBody appends a Close payload: the code and as much of reason as
// fits in a control frame. CloseNoStatus appends nothing (an empty Close).
func AppendCloseBody(dst []byte, code CloseCode, reason string) []byte {
	if code == CloseNoStatus || code == 0 {
		return dst
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	if len(reason) > MaxControlPayload-2 {
		reason = reason[:MaxControlPayload-2]
		for len(reason) > 0 && !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	return append(dst, reason...)
}
