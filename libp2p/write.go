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
		dst, slot := c.ReserveFrame(true, ws.OpBinary, security.SealedLen(k))
		if _, err := pc.sec.AppendFrame(dst[:0], pt[:k]); err != nil {
			c.Fail(pc.failure(err))
			return
		}
		pc.h.metrics.frames[1].Inc()
		pc.h.metrics.layerBytes[1].Add(float64(k))
		c.CommitFrame(slot) // flushes once MaxOutbound bytes are queued
		pt = pt[k:]
	}
}

// flush moves the session's queued frames to the WebSocket.
func (pc *PeerConn) flush() {
	if pc.sess == nil {
		return
	}
	for pc.sess.HasOutput() && pc.c.IsOpen() {
		buf := bufpool.Get(maxSealInput)
		pt := pc.sess.AppendOutput(buf, maxSealInput)
		pc.writeSecure(pt)
		bufpool.Put(pt)
	}
}
