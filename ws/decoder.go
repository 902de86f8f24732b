package ws

import "github.com/swarmgate/swarmgate/simd"

// Role is the side of a connection a Decoder reads for.
type Role uint8

const (
	// Server reads client frames, which must be masked.
	Server Role = iota
	// Client reads server frames, which must not be masked.
	Client
)

// DefaultMaxMessageSize bounds a data message (the sum of its fragments)
// when the caller sets no limit. libp2p peers send messages of at most one
// Noise frame (65,537 bytes); the default leaves room for raw WebSocket
// applications and the 16 MiB interop echo (RFC 6455 §10.4).
const DefaultMaxMessageSize = 16 << 20

// EventKind says what a Decoder found.
type EventKind uint8

const (
	// EventNone: bytes were consumed but nothing is complete yet.
	EventNone EventKind = iota
	// EventData: a piece of a data message's payload, unmasked.
	EventData
	// EventPing: a Ping frame; the payload must be echoed in a Pong.
	EventPing
	// EventPong: a Pong frame.
	EventPong
	// EventClose: a valid Close frame; Code and Payload (the reason) are set.
	EventClose
)

// Event is one step of a frame stream. Payload aliases the input given to
// Next (or the Decoder's own buffer for a control frame that arrived in
// pieces) and is valid until the next call to Next.
type Event struct {
	Kind     EventKind
	Op       Opcode // the message's opcode (OpText or OpBinary) for EventData
	End      bool   // EventData: the message ends with this piece
	FrameEnd bool   // EventData: the frame ends with this piece
	Code     CloseCode
	Payload  []byte
}

// Decoder turns the inbound bytes of a WebSocket connection into events,
// enforcing RFC 6455 §5: masking by role, reserved bits and opcodes, control
// frame rules, fragmentation order, UTF-8 of text messages (fail fast) and a
// message size limit. It never buffers data payload: data is unmasked in
// place and handed out as it arrives, so a connection's memory does not grow
// with message size. Only a split frame header (at most 14 bytes) and a split
// control payload (at most 125 bytes, rare) are kept between calls.
//
// A Decoder is owned by one goroutine at a time. After it returns an error or
// an EventClose it must not be used again.
type Decoder struct {
	maxMessage int64
	frame      Header
	left       int64 // payload bytes of frame not yet seen
	msgLen     int64 // bytes of the data message so far, including frame
	utf8       UTF8Validator
	ctrl       *[MaxControlPayload]byte // a control payload that arrived in pieces
	hdr        [MaxHeaderSize]byte      // a header that arrived in pieces
	hdrN       uint8
	ctrlN      uint8
	pos        uint8  // masking key offset within the frame
	msgOp      Opcode // data message in progress, 0 when none
	inFrame    bool
	role       Role
}

// NewDecoder returns a Decoder for the given role. maxMessage <= 0 selects
// DefaultMaxMessageSize.
func NewDecoder(role Role, maxMessage int64) Decoder {
	if maxMessage <= 0 {
		maxMessage = DefaultMaxMessageSize
	}
	return Decoder{role: role, maxMessage: maxMessage}
}

// Next consumes bytes from the start of b and returns the next event and the
// number of bytes consumed. It consumes all of b unless it returns an event
// that ends before b does, so a caller loops until b is empty. A returned
// error is a *ProtocolError carrying the close code to send.
func (d *Decoder) Next(b []byte) (Event, int, error) {
	n := 0
	if !d.inFrame {
		var err error
		n, err = d.readHeader(b)
		if err != nil || !d.inFrame {
			return Event{}, n, err
		}
		b = b[n:]
	}
	if d.frame.Op.IsControl() {
		ev, k, err := d.control(b)
		return ev, n + k, err
	}
	ev, k, err := d.data(b)
	return ev, n + k, err
}

// readHeader consumes a frame header (possibly its last pieces) and starts
// the frame. It returns with d.inFrame false if b ends inside the header.
func (d *Decoder) readHeader(b []byte) (int, error) {
	var h Header
	var n int
	var err error
	if d.hdrN == 0 {
		h, n, err = ParseHeader(b)
		if err == ErrNeedMore {
			d.hdrN = uint8(copy(d.hdr[:], b))
			return len(b), nil
		}
	} else {
		have := int(d.hdrN)
		k := copy(d.hdr[have:], b)
		h, n, err = ParseHeader(d.hdr[:have+k])
		if err == ErrNeedMore {
			d.hdrN += uint8(k)
			return k, nil
		}
		d.hdrN = 0
		if err != nil {
			return k, err
		}
		n -= have
	}
	if err != nil {
		return n, err
	}
	if err := d.begin(h); err != nil {
		return n, err
	}
	return n, nil
}

// begin validates a frame header against the stream's state.
func (d *Decoder) begin(h Header) error {
	// "MUST be 0 unless an extension is negotiated that defines meanings
	// for non-zero values" (RFC 6455 §5.2); we negotiate none.
	if h.Rsv != 0 {
		return ErrReservedBits
	}
	// "If an unknown opcode is received, the receiving endpoint MUST _Fail
	// the WebSocket Connection_" (RFC 6455 §5.2).
	if h.Op.reserved() {
		return ErrReservedOpcode
	}
	// "The server MUST close the connection upon receiving a frame that is
	// not masked"; "A client MUST close a connection if it detects a masked
	// frame" (RFC 6455 §5.1).
	if d.role == Server && !h.Masked {
		return ErrUnmaskedFrame
	}
	if d.role == Client && h.Masked {
		return ErrMaskedFrame
	}
	if h.Op.IsControl() {
		// "All control frames MUST have a payload length of 125 bytes or
		// less and MUST NOT be fragmented" (RFC 6455 §5.5).
		if !h.Fin {
			return ErrControlFragmented
		}
		if h.Length > MaxControlPayload {
			return ErrControlTooLong
		}
	} else {
		// Fragments: a start frame, then continuations (RFC 6455 §5.4).
		if h.Op == OpContinuation && d.msgOp == 0 {
			return ErrUnexpectedCont
		}
		if h.Op != OpContinuation && d.msgOp != 0 {
			return ErrExpectedCont
		}
		// The limit is checked before any payload is read (RFC 6455 §10.4).
		if h.Length > d.maxMessage-d.msgLen {
			return ErrMessageTooBig
		}
		if h.Op != OpContinuation {
			d.msgOp = h.Op
		}
		d.msgLen += h.Length
	}
	d.frame = h
	d.left = h.Length
	d.pos = 0
	d.inFrame = true
	return nil
}

func (d *Decoder) unmask(p []byte) {
	if d.frame.Masked {
		d.pos = uint8(simd.Mask(d.frame.Key, int(d.pos), p))
	}
}

// data hands out the next piece of a data frame's payload.
func (d *Decoder) data(b []byte) (Event, int, error) {
	p := b
	if int64(len(p)) > d.left {
		p = p[:d.left]
	}
	d.unmask(p)
	d.left -= int64(len(p))
	ev := Event{Kind: EventData, Op: d.msgOp, Payload: p}
	if d.left == 0 {
		d.inFrame = false
		ev.End = d.frame.Fin
		ev.FrameEnd = true
	}
	if d.msgOp == OpText {
		// "When an endpoint is to interpret a byte stream as UTF-8 but finds
		// that the byte stream is not, in fact, a valid UTF-8 stream, that
		// endpoint MUST _Fail the WebSocket Connection_" (RFC 6455 §8.1).
		if !d.utf8.Write(p) || (ev.End && !d.utf8.Done()) {
			return Event{}, len(p), ErrInvalidUTF8
		}
	}
	if ev.End {
		d.msgOp = 0
		d.msgLen = 0
	}
	if len(p) == 0 && !ev.FrameEnd {
		ev.Kind = EventNone
	}
	return ev, len(p), nil
}

// control collects a control frame's payload, which is acted on whole.
func (d *Decoder) control(b []byte) (Event, int, error) {
	var p []byte
	n := 0
	if d.ctrlN == 0 && int64(len(b)) >= d.left {
		p = b[:d.left] // the common case: the whole payload is here
		n = len(p)
	} else {
		if d.ctrl == nil {
			d.ctrl = new([MaxControlPayload]byte)
		}
		n = copy(d.ctrl[d.ctrlN:d.frame.Length], b)
		d.ctrlN += uint8(n)
		if int64(d.ctrlN) < d.frame.Length {
			return Event{}, n, nil
		}
		p = d.ctrl[:d.ctrlN]
		d.ctrl, d.ctrlN = nil, 0 // p keeps it alive for the caller; the Decoder lets go
	}
	d.left = 0
	d.inFrame = false
	d.unmask(p)
	switch d.frame.Op {
	case OpPing:
		return Event{Kind: EventPing, Payload: p}, n, nil
	case OpPong:
		return Event{Kind: EventPong, Payload: p}, n, nil
	}
	code, reason, err := ParseClose(p)
	if err != nil {
		return Event{}, n, err
	}
	return Event{Kind: EventClose, Code: code, Payload: reason}, n, nil
}

// MessageInProgress reports whether a fragmented data message has started
// and not yet ended.
func (d *Decoder) MessageInProgress() bool { return d.msgOp != 0 }
