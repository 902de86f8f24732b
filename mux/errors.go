package mux

import (
	"errors"
	"fmt"

	"github.com/swarmgate/swarmgate/internal/wire"
)

// Code is a yamux GoAway error code (the Length field of a GoAway frame).
// go-libp2p also sends its own connection codes (0x1000-0x1008); any value is
// accepted from a peer.
type Code uint32

// GoAway codes (spec.md "Go Away").
const (
	CodeNormal        Code = 0 // normal termination
	CodeProtocolError Code = 1 // the peer broke the protocol
	CodeInternalError Code = 2 // local failure
)

func (c Code) String() string {
	switch c {
	case CodeNormal:
		return "normal"
	case CodeProtocolError:
		return "protocol error"
	case CodeInternalError:
		return "internal error"
	}
	return fmt.Sprintf("code 0x%x", uint32(c))
}

// Error is a session-ending error. Code is the GoAway code we queued
// (Remote false) or the one the peer sent (Remote true). Reason is a stable
// token naming the failure path, usable as a metrics label
// ("data_exceeds_window", "window_overflow", ...).
//
// Errors returned by Session.Input and Session.Tick for protocol violations
// are *Error with Code CodeProtocolError; the GoAway frame carrying that code
// is already queued in the session output.
type Error struct {
	Code   Code
	Remote bool
	Reason string
}

func (e *Error) Error() string {
	if e.Remote {
		return fmt.Sprintf("mux: peer sent go away (%v)", e.Code)
	}
	return fmt.Sprintf("mux: %s: sent go away (%v)", e.Reason, e.Code)
}

// Is makes every *Error match ErrSessionClosed, and *Error values with equal
// fields match each other.
func (e *Error) Is(target error) bool {
	if target == ErrSessionClosed {
		return true
	}
	t, ok := target.(*Error)
	return ok && *t == *e
}

// StreamError reports a reset stream. Code is the error code carried in the
// Length of an RST window update (go-yamux v5, libp2p stream codes
// 0x1001-0x1009); v4 and js peers send 0, and an RST on a Data frame has no
// code (0).
type StreamError struct {
	Code   uint32
	Remote bool
}

func (e *StreamError) Error() string {
	if e.Remote {
		return fmt.Sprintf("mux: stream reset by peer (code 0x%x)", e.Code)
	}
	return fmt.Sprintf("mux: stream reset (code 0x%x)", e.Code)
}

// Is makes every *StreamError match ErrStreamReset.
func (e *StreamError) Is(target error) bool {
	if target == ErrStreamReset {
		return true
	}
	t, ok := target.(*StreamError)
	return ok && *t == *e
}

// Sentinel errors.
var (
	// ErrStreamMemory is the OnReset error of a stream reset because data
	// the peer sent within its window did not fit Config.Memory.
	ErrStreamMemory = errors.New("mux: stream reset: its data does not fit the connection's memory share")
	// ErrHeldData is the OnReset error of a stream reset because its
	// handler held unconsumed data past Config.HeldDataTimeout.
	ErrHeldData = errors.New("mux: stream reset: received data left unconsumed past HeldDataTimeout")
	// ErrNeedMore (wire.ErrNeedMore) is returned by ParseHeader when fewer
	// than HeaderLen bytes are available: not an error, wait for more bytes.
	ErrNeedMore = wire.ErrNeedMore
	// ErrWouldBlock is returned by Stream.Write with a short count when the
	// peer's window or the session's output queue is full; Handler.OnWritable
	// is called when writing can resume.
	ErrWouldBlock = errors.New("mux: write would block")
	// ErrStreamClosed is returned by writes after CloseWrite.
	ErrStreamClosed = errors.New("mux: stream closed for writing")
	// ErrStreamReset matches every *StreamError.
	ErrStreamReset = errors.New("mux: stream reset")
	// ErrSessionClosed is returned once the session has ended; every *Error
	// matches it.
	ErrSessionClosed = errors.New("mux: session closed")
	// ErrKeepAliveTimeout ends the session when a keepalive ping is not
	// answered within Config.PingTimeout (no GoAway is sent, as go-yamux).
	ErrKeepAliveTimeout = errors.New("mux: keepalive timeout")
	// ErrTooManyStreams is returned by Open when MaxStreams outbound streams
	// are live or AcceptBacklog of them are not yet acknowledged.
	ErrTooManyStreams = errors.New("mux: too many streams")
	// ErrStreamsExhausted is returned by Open when the stream ID space is used up.
	ErrStreamsExhausted = errors.New("mux: stream IDs exhausted")
	// ErrRemoteGoAway is returned by Open after the peer sent GoAway(0).
	ErrRemoteGoAway = errors.New("mux: peer is going away")
	// ErrNotAcceptable is returned by Stream.Accept on a stream that is not
	// waiting in the accept backlog.
	ErrNotAcceptable = errors.New("mux: stream not in accept backlog")
)

// Protocol errors, one per failure path; Reason is the metrics token.
var (
	errBadVersion     = protoErr("bad_version")
	errBadType        = protoErr("bad_type")
	errSYNParity      = protoErr("syn_wrong_id")
	errDuplicateSYN   = protoErr("syn_duplicate")
	errStreamFlood    = protoErr("stream_open_flood")
	errRecvWindow     = protoErr("data_exceeds_window")
	errWindowOverflow = protoErr("window_overflow")
	errStreamZero     = protoErr("stream_frame_on_id_0")
	errSessionNonZero = protoErr("session_frame_on_stream_id")
	errCtlOverflow    = &Error{Code: CodeInternalError, Reason: "control_queue_overflow"}
)

func protoErr(reason string) *Error {
	return &Error{Code: CodeProtocolError, Reason: reason}
}
