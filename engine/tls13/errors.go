package tls13

import (
	"errors"
	"strconv"
)

// Alert is a TLS AlertDescription (RFC 8446 §6).
type Alert uint8

// The alerts this package sends or names. Every other value a peer sends is
// still reported (Error.Alert), by number.
const (
	AlertCloseNotify       Alert = 0
	AlertUnexpectedMessage Alert = 10
	AlertBadRecordMAC      Alert = 20
	AlertRecordOverflow    Alert = 22
	AlertIllegalParameter  Alert = 47
	AlertDecodeError       Alert = 50
	AlertInternalError     Alert = 80
	AlertUserCanceled      Alert = 90
)

var alertNames = map[Alert]string{
	0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac",
	22: "record_overflow", 40: "handshake_failure", 42: "bad_certificate",
	43: "unsupported_certificate", 44: "certificate_revoked",
	45: "certificate_expired", 46: "certificate_unknown",
	47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied",
	50: "decode_error", 51: "decrypt_error", 70: "protocol_version",
	71: "insufficient_security", 80: "internal_error",
	86: "inappropriate_fallback", 90: "user_canceled",
	109: "missing_extension", 110: "unsupported_extension",
	112: "unrecognized_name", 113: "bad_certificate_status_response",
	115: "unknown_psk_identity", 116: "certificate_required",
	120: "no_application_protocol",
}

// String is the RFC 8446 name of the alert, or its number.
func (a Alert) String() string {
	if s, ok := alertNames[a]; ok {
		return s
	}
	return "alert(" + strconv.Itoa(int(a)) + ")"
}

// Error is a fatal TLS failure after the handshake. Alert is the alert that
// ends the connection: the one to send (AppendAlert) when the failure is
// ours to report, the one received when Remote is set. Reason is a stable,
// low-cardinality token for metrics ("bad_record_mac", "remote_alert", ...).
//
// Every local failure is one of the sentinel values below, so callers
// compare with errors.Is; a received alert is a fresh *Error with Remote set
// and matches ErrRemoteAlert.
type Error struct {
	Alert  Alert
	Remote bool
	Reason string
}

func (e *Error) Error() string {
	if e.Remote {
		return "tls13: peer sent alert " + e.Alert.String()
	}
	return "tls13: " + e.Reason + " (alert " + e.Alert.String() + ")"
}

// Is makes a received alert match ErrRemoteAlert, and *Error values with
// equal fields match each other.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	if t == ErrRemoteAlert {
		return e.Remote
	}
	return *t == *e
}

// Sentinel errors, one per failure path. Reason tokens are in parentheses;
// the alert sent for each is in the sentinel.
var (
	// ErrBadRecordMAC (bad_record_mac): a record failed AEAD
	// authentication: tampered, replayed, reordered, or under the wrong key.
	ErrBadRecordMAC = &Error{Alert: AlertBadRecordMAC, Reason: "bad_record_mac"}
	// ErrRecordOverflow (record_overflow): a record longer than RFC 8446
	// §5.2 allows (ciphertext), or whose inner plaintext would exceed
	// 2^14+1 bytes (§5.4). Found from the header, before the body arrives.
	ErrRecordOverflow = &Error{Alert: AlertRecordOverflow, Reason: "record_overflow"}
	// ErrRecordType (unexpected_record_type): an outer record type other
	// than application_data, or an inner content type that is not alert,
	// handshake or application_data.
	ErrRecordType = &Error{Alert: AlertUnexpectedMessage, Reason: "unexpected_record_type"}
	// ErrChangeCipherSpec (change_cipher_spec): a change_cipher_spec record
	// after the handshake, protected or not.
	ErrChangeCipherSpec = &Error{Alert: AlertUnexpectedMessage, Reason: "change_cipher_spec"}
	// ErrNoContentType (no_content_type): a record whose decrypted inner
	// plaintext is all zeros, so it has no content type.
	ErrNoContentType = &Error{Alert: AlertUnexpectedMessage, Reason: "no_content_type"}
	// ErrEmptyControl (empty_control): a handshake or alert record with no
	// content.
	ErrEmptyControl = &Error{Alert: AlertUnexpectedMessage, Reason: "empty_control"}
	// ErrHandshakeMessage (unexpected_handshake): a post-handshake message
	// other than KeyUpdate (and, in the client role, NewSessionTicket).
	ErrHandshakeMessage = &Error{Alert: AlertUnexpectedMessage, Reason: "unexpected_handshake"}
	// ErrInterleaved (interleaved_handshake): another record type between
	// the fragments of one handshake message.
	ErrInterleaved = &Error{Alert: AlertUnexpectedMessage, Reason: "interleaved_handshake"}
	// ErrKeyUpdateAlignment (key_update_alignment): data after a KeyUpdate
	// in the same record.
	ErrKeyUpdateAlignment = &Error{Alert: AlertUnexpectedMessage, Reason: "key_update_alignment"}
	// ErrKeyUpdateValue (key_update_value): a KeyUpdate whose
	// request_update is neither 0 nor 1.
	ErrKeyUpdateValue = &Error{Alert: AlertIllegalParameter, Reason: "key_update_value"}
	// ErrDecode (decode_error): a handshake message or alert whose length
	// is wrong for its type.
	ErrDecode = &Error{Alert: AlertDecodeError, Reason: "decode_error"}
	// ErrTooManyControl (too_many_control): more than maxControlRun records
	// in a row that carried no application data.
	ErrTooManyControl = &Error{Alert: AlertUnexpectedMessage, Reason: "too_many_control"}
	// ErrSequenceExhausted (sequence_exhausted): the peer's record sequence
	// number would wrap (2^64 records under one key without a KeyUpdate).
	ErrSequenceExhausted = &Error{Alert: AlertInternalError, Reason: "sequence_exhausted"}
	// ErrRemoteAlert (remote_alert) matches, with errors.Is, every alert
	// the peer sent other than close_notify.
	ErrRemoteAlert = &Error{Alert: AlertInternalError, Remote: true, Reason: "remote_alert"}
)

// Errors that are not protocol failures: misuse by the caller, or setup.
var (
	// ErrUnsupportedSuite reports a cipher suite that is not one of the
	// three TLS 1.3 suites crypto/tls negotiates.
	ErrUnsupportedSuite = errors.New("tls13: unsupported cipher suite")
	// ErrSecretLength reports a traffic secret whose length is not the
	// suite's hash length.
	ErrSecretLength = errors.New("tls13: traffic secret length does not match the suite")
	// ErrNoSecrets reports a KeyLog that did not capture both application
	// traffic secrets (a TLS 1.2 handshake, or one that did not finish).
	ErrNoSecrets = errors.New("tls13: application traffic secrets not captured")
	// ErrWriteClosed reports a seal after close_notify or an error alert
	// was sent, or after the read side failed (an alert from the peer, or
	// a record that fails the checks: then only AppendAlert still writes).
	ErrWriteClosed = errors.New("tls13: write side closed")
	// ErrTooLarge reports a SealInPlace record above MaxPlaintext.
	ErrTooLarge = errors.New("tls13: record plaintext exceeds 2^14 bytes")
)

// remoteAlert is the error for an alert the peer sent.
func remoteAlert(a Alert) *Error {
	return &Error{Alert: a, Remote: true, Reason: "remote_alert"}
}
