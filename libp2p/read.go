package libp2p

import (
	"encoding/binary"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/bufpool"
	"github.com/swarmgate/swarmgate/mux"
	"github.com/swarmgate/swarmgate/security"
	"github.com/swarmgate/swarmgate/ws"
)

// Data receives the WebSocket byte stream; message boundaries mean nothing.
// What the layers answer is sent once the read pass ends (EndPass): a peer
// whose WebSocket frames are small (go-libp2p's client sends 4 KiB frames)
// gets one Noise frame per pass, not one per WebSocket frame.
func (pc *PeerConn) Data(c *engine.Conn, _ ws.Opcode, p []byte, _ bool) error {
	if err := pc.input(p); err != nil {
		pc.flush()
		return pc.failure(err)
	}
	return nil
}

// EndPass sends what the pass's input made the session queue and moves the
// connection's deadline (engine.PassEnder).
func (pc *PeerConn) EndPass(c *engine.Conn) {
	pc.flush()
	pc.schedule()
}

// input runs p through the layers, keeping what no layer could use yet.
func (pc *PeerConn) input(p []byte) error {
	if pc.sec != nil && pc.phase >= phaseMuxNego {
		return pc.frames(p)
	}
	// During the upgrade, what a peer leaves pending (a partial handshake
	// message) is held between passes: it is charged to the memory budget,
	// and refused when the budget is spent. Noise frames after the
	// handshake are frames' to hold (process hands them on).
	budget := pc.c.Memory()
	buf := p
	held := pc.in
	if held != nil {
		var ok bool
		if held, ok = bufpool.TryGrow(budget, held, len(p)); !ok {
			return errMemoryBudget
		}
		held = append(held, p...)
		buf = held
		pc.in = nil
	}
	n, err := pc.process(buf)
	rest := buf[n:]
	switch {
	case held != nil && len(rest) == 0:
		bufpool.Release(budget, held)
	case held != nil:
		pc.in = held[:copy(held, rest)]
	case len(rest) > 0 && err == nil:
		nb, ok := bufpool.TryGet(budget, len(rest))
		if !ok {
			return errMemoryBudget
		}
		pc.in = append(nb, rest...)
	}
	return err
}

// errMemoryBudget ends a connection whose pending input the memory budget
// cannot hold: close 1013 (try again later).
var errMemoryBudget = &ws.ProtocolError{Code: ws.CloseTryAgainLater, Token: "memory_budget"}

// process consumes what it can of b and returns how much: the upgrade's
// messages, then what follows them in b (the plaintext stream, or Noise
// frames through frames).
func (pc *PeerConn) process(b []byte) (int, error) {
	off := 0
	for pc.phase < phaseMuxNego {
		n, done, err := pc.handshakeStep(b[off:])
		off += n
		if err != nil || !done {
			return off, err
		}
	}
	if pc.sec == nil { // plaintext: the stream is the plaintext
		return len(b), pc.plainInput(b[off:])
	}
	return len(b), pc.frames(b[off:])
}

// inHalf marks inLen as holding the first byte of a frame's length.
const inHalf = 1 << 16

// frames runs Noise transport frames through the session: each whole
// frame is opened where it lies in p; the one frame split across inputs
// keeps only its ciphertext so far in pc.in (at most MaxFrame bytes: one
// Medium buffer), completed from the front of the next input, so the rest
// of that input is not copied. The partial frame is charged with
// admission.Scope.ReserveInFlight: a compliant peer cannot avoid it, so
// only the system budget refuses it.
func (pc *PeerConn) frames(p []byte) error {
	budget := pc.c.Memory()
	for len(p) > 0 {
		if pc.inLen&inHalf != 0 { // the length's second byte
			l := int(pc.inLen&0xff)<<8 | int(p[0])
			pc.inLen = 0
			p = p[1:]
			if err := pc.startFrame(l, nil); err != nil {
				return err
			}
			continue
		}
		if pc.in != nil { // the rest of a split frame
			take := min(int(pc.inLen)-len(pc.in), len(p))
			pc.in = append(pc.in, p[:take]...)
			p = p[take:]
			if len(pc.in) < int(pc.inLen) {
				return nil
			}
			ct := pc.in
			err := pc.openFrame(ct)
			bufpool.Release(budget, ct)
			pc.in, pc.inLen = nil, 0
			if err != nil {
				return err
			}
			continue
		}
		ct, n, err := security.ParseFrame(p)
		if err == security.ErrNeedMore {
			if len(p) < security.FrameHeader {
				pc.inLen = inHalf | uint32(p[0])
				return nil
			}
			return pc.startFrame(int(binary.BigEndian.Uint16(p)), p[security.FrameHeader:])
		}
		if err != nil {
			return err
		}
		if err := pc.openFrame(ct); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// startFrame begins holding a frame of l ciphertext bytes, of which part
// has come.
func (pc *PeerConn) startFrame(l int, part []byte) error {
	if l < security.TagSize {
		return security.ErrFrameTooShort
	}
	budget := pc.c.Memory()
	if !budget.ReserveInFlight(bufpool.Class(l)) {
		return errMemoryBudget
	}
	pc.in = append(bufpool.Get(l), part...)
	pc.inLen = uint32(l)
	return nil
}

// openFrame decrypts one whole frame's ciphertext in place and hands the
// plaintext on.
func (pc *PeerConn) openFrame(ct []byte) error {
	pt, err := pc.sec.Open(ct)
	if err != nil {
		return err
	}
	m := pc.h.metrics
	m.frames[0].Inc()
	m.layerBytes[0].Add(float64(len(pt)))
	return pc.plainInput(pt)
}

// plainInput feeds decrypted bytes to the muxer negotiation or the session.
func (pc *PeerConn) plainInput(pt []byte) error {
	if pc.phase == phaseMuxNego {
		up := pc.up
		buf := pt
		if up.pt != nil {
			up.pt = append(up.pt, pt...)
			buf = up.pt
		}
		var out []byte
		var n int
		var err error
		if pc.client {
			out, n, err = up.dialer.Input(nil, buf)
		} else {
			out, n, err = up.lst.Input(nil, buf)
		}
		pc.writeSecure(out)
		if err != nil {
			return err
		}
		if !pc.negotiated() {
			up.pt = append(up.pt[:0], buf[n:]...)
			return nil
		}
		rest := buf[n:]
		pc.startMux()
		pt = rest
	}
	now := pc.c.Now()
	for len(pt) > 0 {
		if pc.hdrN > 0 {
			// Complete the header that ended the previous frame.
			have := int(pc.hdrN)
			k := copy(pc.hdr[have:], pt)
			n, err := pc.sess.Input(pc.hdr[:have+k], now)
			if err != nil {
				return err
			}
			if n == 0 {
				pc.hdrN += uint8(k)
				return nil
			}
			pt = pt[n-have:]
			pc.hdrN = 0
			continue
		}
		n, err := pc.sess.Input(pt, now)
		if err != nil {
			return err
		}
		pc.hdrN = uint8(copy(pc.hdr[:], pt[n:]))
		if pc.sess.RemoteGoAway() {
			pc.countGoAway(true, mux.CodeNormal)
		}
		return nil
	}
	return nil
}
