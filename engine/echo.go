package engine

import (
	"time"

	"github.com/swarmgate/swarmgate/ws"
)

// EchoMessageTimeout bounds how long the raw echo waits for the rest of a
// message that arrives in pieces: a peer that starts a message and stalls
// must not keep the connection busy for its life.
const EchoMessageTimeout = 30 * time.Second

// echoMessageTimeout is EchoMessageTimeout; tests shorten it.
var echoMessageTimeout = EchoMessageTimeout

var errEchoTimeout = &ws.ProtocolError{Code: ws.ClosePolicyViolation, Token: "echo_message_timeout"}

// Echo is a StageFunc that sends every message back with its opcode. A
// message is echoed as it arrives, piece by piece, as the fragments of one
// outgoing message (RFC 6455 §5.4 lets a message be fragmented anew): the
// echo gathers nothing, so a message of any size (up to MaxMessageSize)
// costs no buffer beyond the pass's output, and an idle echo connection
// holds nothing. A message must complete within EchoMessageTimeout.
func Echo(*Conn) Stage { return &echo{} }

type echo struct {
	pending bool // a message has begun and not ended
}

func (e *echo) Data(c *Conn, op ws.Opcode, p []byte, end bool) error {
	if end && !e.pending {
		return c.WriteMessage(op, p)
	}
	if !e.pending {
		e.pending = true
		c.SetDeadline(c.Now().Add(echoMessageTimeout))
	} else {
		op = ws.OpContinuation
	}
	if end {
		e.pending = false
		c.SetDeadline(time.Time{})
	}
	return c.WriteFrame(end, op, p)
}

// Tick ends a connection whose message did not complete in time (Ticker).
func (e *echo) Tick(c *Conn, now time.Time) {
	if e.pending {
		c.Fail(errEchoTimeout)
	}
}

func (e *echo) Closed(*Conn, error) {}

// GoingAway lets a message being echoed finish (Drainer).
func (e *echo) GoingAway(*Conn) bool { return !e.pending }
