package libp2p

import (
	"github.com/swarmgate/swarmgate/internal/bufpool"
	"github.com/swarmgate/swarmgate/security"
	"github.com/swarmgate/swarmgate/ws"
)

// writeRaw sends handshake bytes before security is established.
func (pc *PeerConn) writeRaw(b []byte) {
	if len(b) > 0 {
		pc.c.WriteMessage(ws.OpBinary, b)
	}
}

// maxSealInput is the most plaintext sealed into one Noise frame: the
// sealed frame and its WebSocket header (at most 10 bytes from the server,
// 14 from a client) fill one 64 KiB pooled buffer.
const maxSealInput = bufpool.Medium - ws.MaxHeaderSize - security.FrameHeader - security.TagSize

// writeSecure sends bytes through the security layer, one WebSocket message
// per Noise frame, sealed straight into the connection's outbound buffer.
// Each frame is sized to what the buffer takes without moving it again
// (engine.Conn.FrameRoom): up to 64 KiB, or over TLS 1.3 what fills the
// open TLS record, so the record is sealed where the Noise frame was.
func (pc *PeerConn) writeSecure(pt []byte) {
	if len(pt) == 0 {
		return
	}
	if pc.sec == nil {
		pc.c.WriteMessage(ws.OpBinary, pt)
		return
	}
	c := pc.c
	for len(pt) > 0 && c.IsOpen() {
		k := min(len(pt), maxSealInput, c.FrameRoom()-security.FrameHeader-security.TagSize)
		if !pc.sealFrame(pt[:k]) {
			return
		}
		pt = pt[k:]
	}
}

// sealFrame seals pt as one Noise frame in one WebSocket message, straight
// into the connection's outbound buffer; false when the connection failed.
func (pc *PeerConn) sealFrame(pt []byte) bool {
	c := pc.c
	dst, slot := c.ReserveFrame(true, ws.OpBinary, security.SealedLen(len(pt)))
	if _, err := pc.sec.AppendFrame(dst[:0], pt); err != nil {
		c.Fail(pc.failure(err))
		return false
	}
	pc.h.metrics.frames[1].Inc()
	pc.h.metrics.layerBytes[1].Add(float64(len(pt)))
	c.CommitFrame(slot) // flushes once MaxOutbound bytes are queued
	return true
}

// flush moves the session's queued frames to the WebSocket: each run of
// queued output is sealed from where it lies in the session's queues
// straight into the connection's outbound buffer, one Noise frame per run.
func (pc *PeerConn) flush() {
	if pc.sess == nil {
		return
	}
	c := pc.c
	for pc.sess.HasOutput() && c.IsOpen() {
		if pc.sec == nil { // plaintext (measurement only)
			pt := pc.sess.NextOutput(maxSealInput)
			c.WriteMessage(ws.OpBinary, pt)
			pc.sess.ConsumeOutput(len(pt))
			continue
		}
		pt := pc.sess.NextOutput(min(maxSealInput, c.FrameRoom()-security.FrameHeader-security.TagSize))
		if !pc.sealFrame(pt) {
			return
		}
		pc.sess.ConsumeOutput(len(pt))
	}
}
