// Package ws is the WebSocket wire format (RFC 6455) as incremental parsers
// over byte slices and appending encoders: frames, the opening handshake,
// close codes and UTF-8 validation of text messages.
//
// Parsers have the shape parse(b) (value, n, err): they consume n bytes of b,
// return ErrNeedMore when b holds only a prefix of a valid unit (so an event
// loop can wait for more bytes), and check every limit before allocating.
// Encoders have the shape Append…(dst, …) []byte.
//
// ws imports nothing else from this module except simd and internal/wire.
package ws

import (
	"strconv"

	"github.com/swarmgate/swarmgate/internal/wire"
)

// ErrNeedMore is wire.ErrNeedMore: b ends inside a frame or a handshake
// that may still become valid.
var ErrNeedMore = wire.ErrNeedMore

// ProtocolError is a WebSocket failure that closes the connection with a
// status code from RFC 6455 §7.4.1. Token is a stable identifier of the
// failure path, suitable as a metrics label.
type ProtocolError struct {
	Code  CloseCode
	Token string
}

func (e *ProtocolError) Error() string {
	return "ws: " + e.Token + " (close " + strconv.Itoa(int(e.Code)) + ")"
}

func protoErr(code CloseCode, token string) *ProtocolError {
	return &ProtocolError{Code: code, Token: token}
}

// The protocol errors a frame stream can produce. They are values so callers
// can compare with errors.Is and count them by Token.
var (
	ErrUnmaskedFrame     = protoErr(CloseProtocolError, "unmasked_client_frame")
	ErrMaskedFrame       = protoErr(CloseProtocolError, "masked_server_frame")
	ErrReservedBits      = protoErr(CloseProtocolError, "reserved_bits")
	ErrReservedOpcode    = protoErr(CloseProtocolError, "reserved_opcode")
	ErrLengthMSB         = protoErr(CloseProtocolError, "length_msb_set")
	ErrControlTooLong    = protoErr(CloseProtocolError, "control_frame_too_long")
	ErrControlFragmented = protoErr(CloseProtocolError, "control_frame_fragmented")
	ErrUnexpectedCont    = protoErr(CloseProtocolError, "continuation_without_start")
	ErrExpectedCont      = protoErr(CloseProtocolError, "data_frame_inside_message")
	ErrCloseBody         = protoErr(CloseProtocolError, "close_body_one_byte")
	ErrCloseCode         = protoErr(CloseProtocolError, "invalid_close_code")
	ErrInvalidUTF8       = protoErr(CloseInvalidPayload, "invalid_utf8")
	ErrCloseReasonUTF8   = protoErr(CloseInvalidPayload, "invalid_utf8_close_reason")
	ErrMessageTooBig     = protoErr(CloseMessageTooBig, "message_too_big")
)
