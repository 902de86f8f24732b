package engine

import (
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/swarmgate/swarmgate/engine/tls13"
	"github.com/swarmgate/swarmgate/internal/bufpool"
	"github.com/swarmgate/swarmgate/simd"
	"github.com/swarmgate/swarmgate/ws"
)

// The write side of a connection: frames are encoded into one pooled
// outbound buffer per pass and written with one write(2) when the pass
// ends (flush), or earlier once MaxOutbound bytes are queued.

// sendClose queues a Close frame and moves to the closing state.
func (c *Conn) sendClose(code ws.CloseCode, reason string) {
	var body [ws.MaxControlPayload]byte
	c.writeFrame(true, ws.OpClose, ws.AppendCloseBody(body[:0], code, reason))
	codeCounter(&c.eng.metrics.codeLabels, c.eng.metrics.closeSent, closeLabel(code)).Inc()
	c.state = stateClosing
	c.count(2)
}

// WriteMessage queues p as one message. The engine flushes when the callback
// returns, or earlier once MaxOutbound bytes are queued.
func (c *Conn) WriteMessage(op ws.Opcode, p []byte) error {
	return c.WriteFrame(true, op, p)
}

// WriteFrame queues one frame of a message (fin false for all but the last
// fragment, op OpContinuation for all but the first).
func (c *Conn) WriteFrame(fin bool, op ws.Opcode, p []byte) error {
	if c.state != stateOpen {
		return ErrConnClosed
	}
	c.writeFrame(fin, op, p)
	if len(c.out) >= c.eng.cfg.MaxOutbound {
		c.flush()
	}
	if c.state == stateClosed {
		return ErrConnClosed
	}
	return nil
}

// writeFrame encodes a frame into the pass's outbound buffer. In the client
// role the payload is masked while it is copied. Over TLS 1.3 a payload
// larger than the open record's room is copied in record-sized pieces, so
// every record is full and nothing moves again when records are sealed.
func (c *Conn) writeFrame(fin bool, op ws.Opcode, p []byte) {
	if c.recordMode() && len(p) > c.recordFree() {
		c.writeFrameRecords(fin, op, p)
		return
	}
	payload, slot := c.ReserveFrame(fin, op, len(p))
	if slot.masked {
		simd.MaskCopy(slot.key, 0, payload, p)
	} else {
		copy(payload, p)
	}
}

// writeFrameRecords is writeFrame over TLS 1.3 for a payload that spans
// records: the header, then the payload in pieces that each fill the open
// record.
func (c *Conn) writeFrameRecords(fin bool, op ws.Opcode, p []byte) {
	h, slot := c.frameHeader(fin, op, len(p))
	ws.AppendHeader(c.appendSpace(ws.HeaderSize(h.Length, h.Masked))[:0], h)
	pos := 0
	for len(p) > 0 && c.state != stateClosed {
		dst := c.appendSpace(min(len(p), c.recordFree()))
		if slot.masked {
			pos = simd.MaskCopy(slot.key, pos, dst, p[:len(dst)])
		} else {
			copy(dst, p)
		}
		p = p[len(dst):]
	}
}

// frameHeader is the header of a data or control frame with n payload
// bytes, masked in the client role, counted in the frame metrics.
func (c *Conn) frameHeader(fin bool, op ws.Opcode, n int) (ws.Header, FrameSlot) {
	h := ws.Header{Fin: fin, Op: op, Length: int64(n)}
	var slot FrameSlot
	if c.role == ws.Client {
		h.Masked = true
		h.Key = ws.NewMaskKey()
		slot.key, slot.masked = h.Key, true
	}
	if !op.IsControl() {
		c.eng.metrics.frames[1].Inc()
		c.eng.metrics.layerBytes[1].Add(float64(n))
	}
	return h, slot
}

// appendSpace extends the pass's outbound buffer by n bytes in one piece
// and returns them. It flushes first rather than grow the buffer past the
// 64 KiB pool class, so outbound bytes never need a fresh large
// allocation. Over TLS 1.3 the piece lies in one record when n fits one
// (recordRoom).
func (c *Conn) appendSpace(n int) []byte {
	if c.recordMode() {
		c.recordRoom(n)
	} else {
		if c.out != nil && len(c.out)+n > cap(c.out) && n <= bufpool.Medium {
			c.hold()
		}
		c.out = growOut(c.out, n)
	}
	start := len(c.out)
	c.out = c.out[:start+n]
	return c.out[start:]
}

// FrameSlot is a frame reserved in the outbound buffer, for CommitFrame.
type FrameSlot struct {
	start  int
	key    [4]byte
	masked bool
}

// ReserveFrame writes a frame header for n payload bytes into the pass's
// outbound buffer and returns the payload space, so a layer above can
// produce its bytes in place (Noise seals straight into it) instead of
// copying them in; CommitFrame finishes the frame once it is filled. The
// buffer is flushed first rather than grown past the 64 KiB pool class, so
// outbound bytes never need a fresh large allocation. Call it only while
// IsOpen, from a callback.
//
// Over TLS 1.3 the frame is placed in one record when it fits one (it
// starts a new record if the open one has no room for it), so a payload of
// at most FrameRoom bytes is sealed where the caller wrote it; a larger one
// is copied out and back when it is split into records (twice moved).
func (c *Conn) ReserveFrame(fin bool, op ws.Opcode, n int) ([]byte, FrameSlot) {
	h, slot := c.frameHeader(fin, op, n)
	hl := ws.HeaderSize(h.Length, h.Masked)
	b := c.appendSpace(hl + n)
	ws.AppendHeader(b[:0], h)
	slot.start = len(c.out) - n
	return b[hl:], slot
}

// FrameRoom is the largest payload a frame reserved now can carry without
// being split or moved later: over TLS 1.3 what fills the open TLS record
// (a whole record's worth when it has little room left), otherwise what
// fills one 64 KiB pool buffer. A writer that produces its bytes in place
// (Noise) sizes its frames by it; larger frames work, at the cost of a
// copy.
func (c *Conn) FrameRoom() int {
	hdr := 4 // the header of a payload of 126 to 65,535 bytes
	if c.role == ws.Client {
		hdr += 4
	}
	if !c.recordMode() {
		return bufpool.Medium - ws.MaxHeaderSize
	}
	free := c.recordFree()
	if free < minRecordRoom {
		free = tls13.MaxPlaintext
	}
	return free - hdr
}

// CommitFrame finishes a frame whose payload ReserveFrame returned and the
// caller filled: in the client role it masks the payload. Once
// MaxOutbound bytes are queued it flushes, which may wait for a slow
// reader (see flush).
func (c *Conn) CommitFrame(slot FrameSlot) {
	if slot.masked && c.out != nil {
		simd.Mask(slot.key, 0, c.out[slot.start:])
	}
	if len(c.out) >= c.eng.cfg.MaxOutbound {
		c.flush()
	}
}

// writeRaw queues bytes that are not a frame (HTTP handshake lines).
func (c *Conn) writeRaw(p []byte) {
	for len(p) > 0 {
		k := len(p)
		if c.recordMode() {
			k = min(k, c.recordFree())
		}
		copy(c.appendSpace(k), p)
		p = p[k:]
	}
}

// heldOut is a pass's filled outbound buffers, kept until the pass flushes
// so that a pass that writes more than one buffer still costs one writev(2)
// (each write on a TCP socket costs a fixed part, the receiver's wakeup
// included, besides its bytes). At most maxHeld buffers, and MaxOutbound
// bytes, are held: past that the pass flushes as before.
type heldOut struct {
	bufs  [maxHeld + 1][]byte // the last slot for the pass's current buffer
	n     int
	bytes int
}

const maxHeld = 4

var heldPool = sync.Pool{New: func() any { return new(heldOut) }}

// hold puts the filled outbound buffer aside for the pass's writev, or
// flushes when enough is held. Only for bytes that are final on the wire
// (plain, or sealed TLS 1.3 records); crypto/tls seals at flush.
func (c *Conn) hold() {
	if c.tls != nil && c.tls.rec == nil {
		c.flush()
		return
	}
	if c.recordMode() {
		c.sealOpen()
	}
	h := c.held
	if h == nil {
		h = heldPool.Get().(*heldOut)
		c.held = h
	}
	if h.n == maxHeld || h.bytes+len(c.out) >= c.eng.cfg.MaxOutbound {
		c.flush()
		return
	}
	h.bufs[h.n] = c.out
	h.n++
	h.bytes += len(c.out)
	c.out = nil
}

// flush hands the pass's outbound bytes to the kernel with one write(2).
// The engine never uses netpoll's output queue, so writing straight to the
// socket keeps order. When the kernel takes only part, the connection waits
// for the peer to read (waitWritable): its input is not processed
// meanwhile, which is the backpressure.
func (c *Conn) flush() {
	if c.recordMode() {
		c.finishRecords() // seal the open record, then the control records
	}
	out := c.out
	c.out = nil
	if c.tls != nil && c.tls.rec == nil {
		out = c.tls.seal(out) // crypto/tls: encrypt on flush (or hold until the handshake ends)
	}
	var err error
	if h := c.held; h != nil {
		c.held = nil
		err = c.writeHeld(h, out)
	} else {
		if out == nil {
			return
		}
		err = c.writeOne(out)
	}
	if err != nil && c.state != stateClosed {
		reason := "write"
		switch err {
		case errWriteStalled:
			reason = "write_timeout"
		case errInboundFlood:
			reason = "inbound_flood"
		}
		c.fail(err, reason)
	}
}

// writeOne writes one outbound buffer and returns it to its pool.
func (c *Conn) writeOne(out []byte) error {
	defer bufpool.Put(out)
	c.eng.metrics.bytesOut.Add(float64(len(out)))
	n, err := writeFD(c.fd, out)
	if err == nil && n < len(out) {
		// The peer makes us hold this buffer while it does not read:
		// charge it for as long as that lasts.
		c.scope.Charge(cap(out))
		err = c.waitWritable(out[n:])
		c.scope.Release(cap(out))
	}
	return err
}

// writeHeld writes the held buffers and out (which may be nil) with one
// writev, then what the kernel did not take as the peer makes room, and
// returns every buffer to its pool.
func (c *Conn) writeHeld(h *heldOut, out []byte) error {
	bufs := h.bufs[:h.n]
	if out != nil {
		bufs = append(bufs, out) // within the array (its last slot is for out)
	}
	total := 0
	for _, b := range bufs {
		total += len(b)
	}
	c.eng.metrics.bytesOut.Add(float64(total))
	n, err := writevFD(c.fd, bufs)
	for _, b := range bufs {
		if err == nil && n < len(b) {
			c.scope.Charge(cap(b))
			err = c.waitWritable(b[n:])
			c.scope.Release(cap(b))
			n = len(b)
		}
		n -= len(b)
		bufpool.Put(b)
	}
	*h = heldOut{}
	heldPool.Put(h)
	return err
}

// inboundLimit is how much netpoll may have read ahead of the engine for
// this connection, checked at the start of every pass and while a flush
// waits for the peer: the stage's allowance when its protocol bounds what
// a compliant peer has in flight (a libp2p connection's memory share),
// else MaxInboundBuffered. A peer that does not read and goes on sending
// must not make the server hold MaxInboundBuffered (32 MiB) for
// WriteTimeout when its protocol never lets it have that much in flight.
func (c *Conn) inboundLimit() int {
	if a, ok := c.stage.(InboundLimiter); ok {
		return a.InboundAllowance()
	}
	return c.eng.cfg.MaxInboundBuffered
}

// waitSlice is how long waitWritable sleeps in poll(2) between checks.
const waitSlice = 10 * time.Millisecond

// waitWritable writes rest as the peer makes room, for at most
// WriteTimeout. netpoll keeps reading the socket meanwhile (it cannot pause
// reads, cloudwego/netpoll#422), so between waits it checks how much netpoll
// has read ahead and cuts a peer that floods while not reading.
//
// It waits in poll(2) on the goroutine running the callback (netpoll's
// pooled task goroutine, or a Do caller), holding the connection's lock:
// see ARCHITECTURE.md "Who may block" for why this is the backpressure
// rather than a queue.
func (c *Conn) waitWritable(rest []byte) error {
	deadline := time.Now().Add(c.eng.cfg.WriteTimeout)
	fds := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLOUT}}
	limit := c.inboundLimit()
	for len(rest) > 0 {
		if c.nc.Reader().Len() > limit {
			return errInboundFlood
		}
		if time.Now().After(deadline) {
			return errWriteStalled
		}
		if _, err := unix.Poll(fds, int(waitSlice/time.Millisecond)); err != nil && err != unix.EINTR {
			return err
		}
		n, err := writeFD(c.fd, rest)
		if err != nil {
			return err
		}
		rest = rest[n:]
	}
	return nil
}

// writeFD writes what the socket takes without blocking; EAGAIN is not an
// error, just a short count.
func writeFD(fd int, b []byte) (int, error) {
	for {
		n, err := syscall.Write(fd, b)
		switch err {
		case nil:
			return n, nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, nil
		}
		return 0, err
	}
}

// writevFD writes bufs in one writev(2), as far as the socket takes them
// without blocking; EAGAIN is a short count.
func writevFD(fd int, bufs [][]byte) (int, error) {
	for {
		n, err := unix.Writev(fd, bufs)
		switch err {
		case nil:
			return n, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, nil
		}
		return 0, err
	}
}

// Do runs f with the connection's lock held, as if from a callback, then
// flushes. Goroutines outside the engine use it to write.
func (c *Conn) Do(f func(c *Conn)) {
	c.lock()
	defer c.unlock()
	if c.state == stateClosed {
		return
	}
	f(c)
	c.flush()
}

// CloseWith starts the close handshake with code and reason; TCP closes
// when the peer answers or after CloseTimeout. Safe from any goroutine.
func (c *Conn) CloseWith(code ws.CloseCode, reason string) {
	c.Do(func(c *Conn) { c.Close(code, reason) })
}

// Close starts the close handshake from inside a callback.
func (c *Conn) Close(code ws.CloseCode, reason string) {
	switch c.state {
	case stateOpen:
		c.sendClose(code, reason)
		c.setDeadline(c.eng.cfg.CloseTimeout)
	case stateHandshake:
		c.end(nil)
	}
}
