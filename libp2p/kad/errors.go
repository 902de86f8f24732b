package kad

import "github.com/swarmgate/swarmgate/mux"

// Reset codes we put on a stream reset, go-libp2p's stream error codes
// (core/network/mux.go; go-yamux v5 carries them in the RST frame and hands
// them to the application as network.StreamError, v4 and js ignore them).
const (
	// ResetCodeNone is what go-libp2p-kad-dht sends for a request it does
	// not serve (an unhandled type, a handler error): a plain Reset.
	ResetCodeNone uint32 = 0
	// ResetCodeResourceLimit (StreamResourceLimitExceeded) refuses a
	// stream over the per-peer stream limit.
	ResetCodeResourceLimit uint32 = 0x1002
	// ResetCodeProtocolViolation (StreamProtocolViolation) answers bytes
	// that are not a well-formed request.
	ResetCodeProtocolViolation uint32 = 0x1004
)

// RefusedError is why we reset a Kademlia stream instead of answering.
// Reason is a stable token for metrics (swarmgate_kad_stream_resets_total);
// Code is the stream reset code that goes on the wire.
type RefusedError struct {
	Reason string
	Code   uint32
}

func (e *RefusedError) Error() string { return "kad: stream reset: " + e.Reason }

// Refusals. Every one of them resets the stream; none is ever answered
// with a success the server did not earn (a PUT_VALUE echo, say).
var (
	// ErrMalformed: the message does not decode as a kad Message.
	ErrMalformed = &RefusedError{"malformed", ResetCodeProtocolViolation}
	// ErrOversize: the length prefix announces more than MaxRequestSize
	// (checked before the body is awaited), or the prefix is longer than
	// that limit's own encoding.
	ErrOversize = &RefusedError{"oversize", ResetCodeProtocolViolation}
	// ErrBadPrefix: a length prefix that is not a minimal uvarint.
	ErrBadPrefix = &RefusedError{"bad_prefix", ResetCodeProtocolViolation}
	// ErrTruncated: the peer closed its side inside a message.
	ErrTruncated = &RefusedError{"truncated", ResetCodeProtocolViolation}
	// ErrEmptyKey: FIND_NODE, GET_VALUE or GET_PROVIDERS without a key
	// (go: "handleFindPeer with empty key" and the like, then Reset).
	ErrEmptyKey = &RefusedError{"empty_key", ResetCodeProtocolViolation}
	// ErrKeyTooLong: GET_PROVIDERS with a key over MaxProviderKeySize.
	ErrKeyTooLong = &RefusedError{"key_too_long", ResetCodeProtocolViolation}
	// ErrPutValue: this node stores no records. Resetting is the honest
	// answer: an echo would tell the client the record was stored.
	ErrPutValue = &RefusedError{"put_value", ResetCodeNone}
	// ErrAddProvider: this node stores no provider records.
	ErrAddProvider = &RefusedError{"add_provider", ResetCodeNone}
	// ErrUnknownType: a message type outside the protocol.
	ErrUnknownType = &RefusedError{"unknown_type", ResetCodeNone}
	// ErrTooManyStreams: the peer already has MaxStreamsPerPeer streams.
	ErrTooManyStreams = &RefusedError{"too_many_streams", ResetCodeResourceLimit}
	// ErrIdle: no request for StreamIdleTimeout (go's server: 60 s).
	ErrIdle = &RefusedError{"idle", ResetCodeNone}
)

// reset resets st with e's code.
func (e *RefusedError) reset(st *mux.Stream) { st.ResetWithCode(e.Code) }
