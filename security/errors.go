package security

import "github.com/swarmgate/swarmgate/internal/wire"

// ErrNeedMore (wire.ErrNeedMore) is returned by the frame parsers when the
// buffer holds a valid but incomplete prefix: wait for more bytes and call
// again with them appended. It is never returned for input that can no
// longer become valid.
var ErrNeedMore = wire.ErrNeedMore

// Error is a handshake or transport failure. Every failure path maps to one
// of the sentinel values below, so callers compare with errors.Is and label
// metrics with Reason; the wrapped cause (if any) is only for logs.
type Error struct {
	reason string
	msg    string
	cause  error
}

func (e *Error) Error() string {
	if e.cause != nil {
		return "security: " + e.msg + ": " + e.cause.Error()
	}
	return "security: " + e.msg
}

// Reason is a stable, low-cardinality token naming the failure path, e.g.
// "bad_signature" or "auth_failed".
func (e *Error) Reason() string { return e.reason }

// Unwrap returns the underlying cause, if any.
func (e *Error) Unwrap() error { return e.cause }

// Is reports whether target is the sentinel with the same reason, so a
// wrapped error (with a cause) still matches errors.Is(err, ErrBadSignature).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.reason == e.reason
}

// wrap returns a copy of the sentinel e carrying cause.
func (e *Error) wrap(cause error) *Error {
	return &Error{reason: e.reason, msg: e.msg, cause: cause}
}

// Sentinel errors, one per failure path. Reason tokens are in parentheses.
var (
	// ErrMalformed (malformed): a handshake message or payload that does not
	// parse: short Noise message, bad protobuf, a low-order X25519 point.
	ErrMalformed = &Error{reason: "malformed", msg: "malformed handshake message"}
	// ErrTooLarge (too_large): a length prefix above the limit.
	ErrTooLarge = &Error{reason: "too_large", msg: "message exceeds size limit"}
	// ErrAuthFailed (auth_failed): an AEAD tag did not verify, in a handshake
	// message or a transport frame. Fatal: the nonce sequence is lost.
	ErrAuthFailed = &Error{reason: "auth_failed", msg: "message authentication failed"}
	// ErrFrameTooShort (frame_too_short): a transport frame shorter than the
	// 16-byte Poly1305 tag.
	ErrFrameTooShort = &Error{reason: "frame_too_short", msg: "transport frame shorter than the tag"}
	// ErrKeyType (key_type): an identity key of a type we do not verify.
	ErrKeyType = &Error{reason: "key_type", msg: "unsupported identity key type"}
	// ErrBadKey (bad_key): an identity key of a known type that does not parse.
	ErrBadKey = &Error{reason: "bad_key", msg: "malformed identity key"}
	// ErrRSATooLarge (rsa_too_large): an RSA identity key above MaxRSAKeyBits.
	ErrRSATooLarge = &Error{reason: "rsa_too_large", msg: "RSA identity key too large"}
	// ErrRSATooSmall (rsa_too_small): an RSA identity key below 2048 bits.
	ErrRSATooSmall = &Error{reason: "rsa_too_small", msg: "RSA identity key too small"}
	// ErrBadSignature (bad_signature): identity_sig does not verify over the
	// Noise static key.
	ErrBadSignature = &Error{reason: "bad_signature", msg: "identity signature invalid"}
	// ErrPeerIDMismatch (peer_id_mismatch): the remote peer is not the one
	// the caller expected.
	ErrPeerIDMismatch = &Error{reason: "peer_id_mismatch", msg: "remote peer ID mismatch"}
	// ErrIDKeyMismatch (id_key_mismatch): a /plaintext/2.0.0 peer claims a
	// peer ID that its public key does not hash to.
	ErrIDKeyMismatch = &Error{reason: "id_key_mismatch", msg: "claimed peer ID does not match key"}
	// ErrNonceExhausted (nonce_exhausted): 2^64-1 frames in one direction;
	// the Noise spec reserves the last nonce, the connection must close.
	ErrNonceExhausted = &Error{reason: "nonce_exhausted", msg: "nonce space exhausted"}
	// ErrState (state): a method called out of order (a caller bug).
	ErrState = &Error{reason: "state", msg: "handshake method called out of order"}
)
