// Package multistream implements multistream-select 1.0.0 (https://github.com/multiformats/multistream-select),
// sans-IO: the parser works on byte slices, the listener and dialer machines
// consume bytes handed to them and append the bytes to send to a caller's
// buffer. Nothing here blocks, reads a clock or starts a goroutine; the
// negotiation timeouts (go-libp2p: 15 s for the connection upgrade, 10 s per
// stream) belong to the caller.
//
// Wire format of one message:
//
//	uvarint(len(text)+1) || text || '\n'
package multistream

import (
	"strings"

	"github.com/swarmgate/swarmgate/internal/wire"
)

// ErrNeedMore is wire.ErrNeedMore: b ends inside a message that may still
// become valid.
var ErrNeedMore = wire.ErrNeedMore

const (
	// ProtocolID is the header both sides send first.
	ProtocolID = "/multistream/1.0.0"

	// NA is the listener's answer to a protocol it does not serve.
	NA = "na"

	// LS is the dialer's request for the listener's protocol list.
	LS = "ls"

	// MaxMessage is the largest accepted message length, counting
	// the trailing newline: go-multistream rejects a length > 1024
	// (ErrTooLarge) and js-libp2p uses the same cap.
	MaxMessage = 1024

	// maxLenBytes bounds the length prefix: 1024 needs 2 bytes and
	// js-libp2p's listener reads at most 2.
	maxLenBytes = 2

	// MaxProposals caps the proposals (and ls requests) a listener
	// answers before it gives up, so a peer cannot keep a negotiation alive
	// forever by proposing unknown protocols. A default go-libp2p dialer
	// needs 2 (/tls/1.0.0, then /noise).
	MaxProposals = 16
)

// Error is a multistream-select failure. Reason returns a stable
// token for metrics; compare errors with errors.Is against the exported
// sentinels, never by their text.
type Error struct {
	reason string
	msg    string
}

func (e *Error) Error() string { return "multistream: " + e.msg }

// Reason is a stable, low-cardinality token naming the failure.
func (e *Error) Reason() string { return e.reason }

var (
	// ErrTooLarge: the length prefix exceeds MaxMultistreamMessage.
	ErrTooLarge = &Error{"ms_too_large", "message longer than 1024 bytes"}
	// ErrMalformed: zero length, a non-minimal or over-long length
	// prefix, or a message that does not end in '\n'.
	ErrMalformed = &Error{"ms_malformed", "malformed message"}
	// ErrBadHeader: the first message is not /multistream/1.0.0.
	ErrBadHeader = &Error{"ms_bad_header", "first message is not " + ProtocolID}
	// ErrTooManyProposals: MaxMultistreamProposals were refused.
	ErrTooManyProposals = &Error{"ms_too_many_proposals", "too many proposals"}
	// ErrNotSupported: the listener answered na to every protocol
	// the dialer proposed.
	ErrNotSupported = &Error{"ms_not_supported", "protocol not supported by peer"}
	// ErrUnexpected: the listener answered neither the proposal
	// nor na.
	ErrUnexpected = &Error{"ms_unexpected", "unexpected answer"}
	// ErrBadProtocol: a protocol id given to a constructor cannot
	// be sent (empty, contains '\n', too long, or a reserved word).
	ErrBadProtocol = &Error{"ms_bad_protocol", "invalid protocol id"}
)

// ParseMessage parses one message from the front of b.
//
// It returns the text without its trailing newline (aliasing b, valid as long
// as b is) and the number of bytes the message occupies. An incomplete but so
// far valid message returns ErrNeedMore; the size limit is checked from
// the length prefix alone, before waiting for the body.
func ParseMessage(b []byte) (text []byte, n int, err error) {
	// Peek at the length prefix without waiting for a third byte: a value
	// that already exceeds the limit is rejected at once.
	if len(b) == 0 {
		return nil, 0, ErrNeedMore
	}
	if b[0] >= 0x80 {
		if len(b) < 2 {
			return nil, 0, ErrNeedMore
		}
		if b[1] >= 0x80 {
			return nil, 0, ErrTooLarge // ≥ 3 length bytes ≥ 16384
		}
	}
	l, n, err := wire.ParseUvarint(b, maxLenBytes)
	if err != nil {
		// unsigned-varint spec: encodings MUST be minimal.
		return nil, 0, ErrMalformed
	}
	if l > MaxMessage {
		return nil, 0, ErrTooLarge
	}
	if l == 0 {
		return nil, 0, ErrMalformed
	}
	end := n + int(l)
	if len(b) < end {
		return nil, 0, ErrNeedMore
	}
	if b[end-1] != '\n' {
		return nil, 0, ErrMalformed
	}
	return b[n : end-1], end, nil
}

// AppendMessage appends text framed as one message. The caller
// guarantees len(text)+1 <= MaxMultistreamMessage (constructors validate the
// protocol ids they are given).
func AppendMessage(dst []byte, text string) []byte {
	dst = wire.AppendUvarint(dst, uint64(len(text)+1))
	dst = append(dst, text...)
	return append(dst, '\n')
}

// appendLS appends the ls answer used by the spec, js-libp2p and
// rust-libp2p: one message whose body is every protocol framed as a message,
// followed by a final '\n'. (go-multistream v0.6.1 no longer implements ls
// and answers na.)
func appendLS(dst []byte, ids []string) []byte {
	var body []byte
	for _, id := range ids {
		body = AppendMessage(body, id)
	}
	body = append(body, '\n')
	dst = wire.AppendUvarint(dst, uint64(len(body)))
	return append(dst, body...)
}

func validProtocol(id string) bool {
	return id != "" && len(id)+1 <= MaxMessage &&
		id != ProtocolID && id != NA && id != LS &&
		strings.IndexByte(id, '\n') < 0
}

// Protocols is the immutable set of protocol ids a listener
// serves. Build it once and share it between any number of listeners and
// goroutines.
type Protocols struct {
	ids []string
	ls  []byte // complete ls answer, nil if it would exceed the size limit
}

// NewProtocols returns the set serving ids, matched as exact byte
// strings (multistream compares protocol ids exactly).
func NewProtocols(ids ...string) (*Protocols, error) {
	for _, id := range ids {
		if !validProtocol(id) {
			return nil, ErrBadProtocol
		}
	}
	p := &Protocols{ids: append([]string(nil), ids...)}
	if ls := appendLS(nil, p.ids); len(ls) <= MaxMessage+maxLenBytes {
		p.ls = ls
	}
	return p, nil
}

// index returns the position of text in the set, or -1. A linear scan: the
// sets are small (a handful of per-stream protocols) and it does not
// allocate.
func (p *Protocols) index(text []byte) int {
	for i, id := range p.ids {
		if string(text) == id {
			return i
		}
	}
	return -1
}

// multistream machine states.
//
//	listener: msAwaitHeader -> msAwaitProposal -> msDone
//	dialer:   msAwaitHeader -> msAwaitAnswer   -> msDone
//
// Any error moves to msFailed, which is terminal.
const (
	msAwaitHeader uint8 = iota
	msAwaitProposal
	msAwaitAnswer
	msDone
	msFailed
)

// Listener negotiates the protocol of one connection or stream as
// the listener (server). Its zero value is not usable: call Reset. It is
// small (a pointer and a few bytes) so one can be embedded in every yamux
// stream.
//
// Usage:
//
//	l.Reset(protos)
//	out = l.Start(out)                 // optional: header eagerly, like go
//	out, n, err = l.Input(out, in)     // repeat with more bytes until Done
//	in = in[n:]                        // after Done: bytes of the protocol
type Listener struct {
	protos     *Protocols
	err        *Error // set in msFailed
	sel        int32
	state      uint8
	proposals  uint8
	headerSent bool
}

// Reset prepares l for a new negotiation serving protos.
func (l *Listener) Reset(protos *Protocols) {
	*l = Listener{protos: protos, sel: -1}
}

// Start appends the multistream header to out, as go-multistream does before
// reading anything. Calling it is optional: without it the header is sent
// in answer to the dialer's header, as js-libp2p does. Both work with every
// dialer.
func (l *Listener) Start(out []byte) []byte {
	if l.headerSent {
		return out
	}
	l.headerSent = true
	return AppendMessage(out, ProtocolID)
}

// Input consumes the complete messages at the front of in and appends the
// answers to out.
//
// consumed counts only whole messages; a partial message at the end of in
// is left unconsumed, and the caller presents it again with more bytes
// appended (the machine keeps no copy of in). Once a protocol is selected,
// Input stops: in[consumed:] is the first data of the selected protocol (a
// lazy dialer pipelines it behind its proposal) and Input consumes nothing
// more. The returned out holds the answers even when err != nil. An error is
// terminal; the caller closes the connection or resets the stream.
func (l *Listener) Input(out, in []byte) (_ []byte, consumed int, err error) {
	if l.state == msFailed {
		return out, 0, l.err
	}
	consumed, err = eachMessage(in, func(text []byte) *Error {
		switch l.state {
		case msAwaitHeader:
			// Spec: the first message MUST be the multistream header; go
			// closes the connection otherwise.
			if string(text) != ProtocolID {
				return ErrBadHeader
			}
			out = l.Start(out)
			l.state = msAwaitProposal
		case msAwaitProposal:
			if i := l.protos.index(text); i >= 0 {
				l.sel = int32(i)
				l.state = msDone
				// Echo the exact bytes of the proposal.
				out = AppendMessage(out, l.protos.ids[i])
				return nil
			}
			if l.proposals++; l.proposals > MaxProposals {
				return ErrTooManyProposals
			}
			if string(text) == LS && l.protos.ls != nil {
				out = append(out, l.protos.ls...)
			} else {
				out = AppendMessage(out, NA)
			}
		}
		return nil
	}, l.Done)
	if err != nil {
		return out, consumed, l.fail(err.(*Error))
	}
	return out, consumed, nil
}

// eachMessage runs step on the complete messages at the front of in, one at
// a time, until done reports true, step fails, or in holds only part of a
// message (left unconsumed). It returns the bytes of the messages stepped
// over: after done, in[consumed:] belongs to the selected protocol.
func eachMessage(in []byte, step func(text []byte) *Error, done func() bool) (consumed int, err error) {
	for !done() {
		text, n, perr := ParseMessage(in[consumed:])
		if perr == ErrNeedMore {
			return consumed, nil
		}
		if perr != nil {
			return consumed, perr
		}
		consumed += n
		if e := step(text); e != nil {
			return consumed, e
		}
	}
	return consumed, nil
}

func (l *Listener) fail(e *Error) error {
	l.state, l.err = msFailed, e
	return e
}

// Done reports whether a protocol has been selected.
func (l *Listener) Done() bool { return l.state == msDone }

// Selected returns the index of the selected protocol in the set given to
// Reset (in NewMultistreamProtocols order), or -1 before Done: a cheap key
// for dispatching to the protocol's handler.
func (l *Listener) Selected() int {
	if l.state != msDone {
		return -1
	}
	return int(l.sel)
}

// Protocol returns the selected protocol id, or "" before Done.
func (l *Listener) Protocol() string {
	if l.state != msDone {
		return ""
	}
	return l.protos.ids[l.sel]
}

// Dialer negotiates a protocol as the dialer (client): it
// proposes its protocols in order of preference, the next one after each na.
//
// Pipelining: Start sends the header and the first proposal together, as
// go-multistream does. When the dialer has a single protocol the caller may
// send that protocol's first bytes right behind Start's output without
// waiting for Done (the "lazy" mode of go's NewMSSelect and rust's
// V1Lazy); if the listener then answers na, Input returns
// ErrNotSupported and the connection or stream must be closed.
type Dialer struct {
	protos []string
	err    *Error // set in msFailed
	next   int    // index of the proposal awaiting an answer
	state  uint8
}

// NewDialer returns a dialer proposing protos in order.
func NewDialer(protos ...string) (*Dialer, error) {
	d := new(Dialer)
	return d, d.Reset(protos...)
}

// Reset prepares d for a new negotiation. protos is retained, not copied.
func (d *Dialer) Reset(protos ...string) error {
	*d = Dialer{protos: protos}
	if len(protos) == 0 {
		return d.fail(ErrBadProtocol)
	}
	for _, p := range protos {
		if !validProtocol(p) {
			return d.fail(ErrBadProtocol)
		}
	}
	return nil
}

// Start appends the header and the first proposal to out.
func (d *Dialer) Start(out []byte) []byte {
	out = AppendMessage(out, ProtocolID)
	return AppendMessage(out, d.protos[0])
}

// Input consumes the listener's complete messages at the front of in and
// appends any further proposal to out. Buffer rules as for
// MultistreamListener.Input: consumed counts whole messages only, and after
// Done, in[consumed:] belongs to the selected protocol.
func (d *Dialer) Input(out, in []byte) (_ []byte, consumed int, err error) {
	if d.state == msFailed {
		return out, 0, d.err
	}
	consumed, err = eachMessage(in, func(text []byte) *Error {
		switch d.state {
		case msAwaitHeader:
			if string(text) != ProtocolID {
				return ErrBadHeader
			}
			d.state = msAwaitAnswer
		case msAwaitAnswer:
			switch string(text) {
			case d.protos[d.next]:
				d.state = msDone
			case NA:
				if d.next++; d.next == len(d.protos) {
					return ErrNotSupported
				}
				out = AppendMessage(out, d.protos[d.next])
			default:
				return ErrUnexpected
			}
		}
		return nil
	}, d.Done)
	if err != nil {
		return out, consumed, d.fail(err.(*Error))
	}
	return out, consumed, nil
}

func (d *Dialer) fail(e *Error) error {
	d.state, d.err = msFailed, e
	return e
}

// Done reports whether the listener accepted a proposal.
func (d *Dialer) Done() bool { return d.state == msDone }

// Protocol returns the accepted protocol id, or "" before Done.
func (d *Dialer) Protocol() string {
	if d.state != msDone {
		return ""
	}
	return d.protos[d.next]
}
