package engine

import "github.com/swarmgate/swarmgate/ws"

// Echo is a StageFunc that sends every message back with its opcode. A message
// that arrives in one piece is echoed without a copy; one that arrives in
// pieces is gathered (up to the engine's MaxMessageSize) and the buffer is
// dropped once sent, so an idle echo connection holds nothing.
func Echo(*Conn) Stage { return &echo{} }

type echo struct{ msg []byte }

func (e *echo) Data(c *Conn, op ws.Opcode, p []byte, end bool) error {
	if end && e.msg == nil {
		return c.WriteMessage(op, p)
	}
	e.msg = append(e.msg, p...)
	if !end {
		return nil
	}
	err := c.WriteMessage(op, e.msg)
	e.msg = nil
	return err
}

func (e *echo) Closed(*Conn, error) {}

// GoingAway lets a message being gathered finish (Drainer).
func (e *echo) GoingAway(*Conn) bool { return e.msg == nil }
