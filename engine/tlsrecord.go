package engine

// The TLS 1.3 record layer after the handover (ARCHITECTURE.md "TLS 1.3
// after the handshake"): once crypto/tls has finished a TLS 1.3 handshake,
// the connection keeps a tls13.Conn (traffic secrets, sequence numbers, AEAD
// states) and drops crypto/tls. Records are opened in place where netpoll
// read them, and sealed in place in the connection's outbound buffer, where
// the writers (ReserveFrame, WriteFrame, the HTTP lines) leave a record
// header's room in front of their bytes.
//
// Everything here runs with Conn.mu held; tlsConn.mu is not taken, because
// after the handover no other goroutine touches the TLS layer.

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"

	"github.com/swarmgate/swarmgate/engine/tls13"
	"github.com/swarmgate/swarmgate/internal/bufpool"
	"github.com/swarmgate/swarmgate/internal/wire"
	"github.com/swarmgate/swarmgate/ws"
)

const (
	// tlsQuiet is how long a connection sees no record before its AEAD
	// states are dropped (tls13.Conn.Release): the next record rebuilds
	// one per direction (about 2 µs and, for AES-GCM, 1.2 KiB of
	// allocation). A second keeps them for any connection that is moving
	// data, and frees them between keepalives (30 s apart), so an idle
	// connection holds its secrets and sequence numbers only.
	tlsQuiet = 1e9 // nanoseconds
	// maxPendingRecord is the most of one record kept between reads: a
	// header and the largest ciphertext tls13.Conn.Open accepts (a longer
	// header is refused before its body is buffered).
	maxPendingRecord = tls13.HeaderLen + tls13.MaxCiphertext
	// minRecordRoom is the least room left in the open record that
	// FrameRoom offers a writer: below it, a frame of its own record
	// costs less than one more small frame (its header and, for Noise, its
	// tag and AEAD call).
	minRecordRoom = 512
)

// errTLSHandover reports a handover whose precondition failed: crypto/tls
// held part of a record when its handshake returned. The engine's pipe
// makes that impossible; if a crypto/tls change ever breaks it, the
// connection is failed rather than started at a guessed sequence number.
var errTLSHandover = errors.New("engine: TLS 1.3 handover with a partial record inside crypto/tls")

// handoverResults label swarmgate_tls_handovers_total.
var handoverResults = []string{"record_layer", "tls12", "fallback", "failed"}

// handshakeConfig is the tls.Config of one server handshake: a clone of the
// listener's whose KeyLogWriter captures this connection's traffic secrets
// and which issues no session tickets (a ticket is written under the
// application key at sequence number 0, which the record layer could then
// not start at: engine/tls13/doc.go).
func (t *tlsConn) handshakeConfig(base *tls.Config) *tls.Config {
	t.kl = new(tls13.KeyLog)
	cfg := base.Clone()
	bindKeyLog(cfg, t.kl)
	if get := base.GetConfigForClient; get != nil {
		// A config returned here replaces cfg for the rest of the
		// handshake, its key log writer included: bind the KeyLog to it
		// too, or every such connection would stay on crypto/tls.
		kl := t.kl
		cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := get(h)
			if c == nil || err != nil {
				return c, err
			}
			c = c.Clone()
			bindKeyLog(c, kl)
			return c, nil
		}
	}
	return cfg
}

// bindKeyLog makes kl cfg's key log writer (beside the one the operator set,
// for debugging with SSLKEYLOGFILE-style files) and turns session tickets
// off.
func bindKeyLog(cfg *tls.Config, kl *tls13.KeyLog) {
	if cfg.KeyLogWriter != nil {
		cfg.KeyLogWriter = io.MultiWriter(kl, cfg.KeyLogWriter)
	} else {
		cfg.KeyLogWriter = kl
	}
	cfg.SessionTicketsDisabled = true
}

// tlsHandover moves a connection whose TLS 1.3 handshake just returned
// from crypto/tls to the record layer. Called on the handshake goroutine
// with c.mu held. It reports whether the connection now runs on the
// record layer; false leaves it on crypto/tls (or failed).
func (c *Conn) tlsHandover(suite uint16) bool {
	t := c.tls
	role := tls13.Server
	if c.role == ws.Client {
		role = tls13.Client
	}
	kl := t.kl
	t.kl = nil
	rec, err := kl.Conn(role, suite) // wipes the capture either way
	if err != nil {
		c.eng.tls.handovers[2].Inc()
		return false
	}
	// crypto/tls read exactly up to the end of the peer's Finished: the
	// pipe hands it at most the rest of one complete record (recordEnd),
	// and it reads only while it needs bytes for the record it is on. So
	// nothing of a record is inside it, and both sequence numbers are 0.
	if t.recLeft != 0 {
		rec.Close()
		c.eng.tls.handovers[3].Inc()
		c.fail(errTLSHandover, "tls_handover")
		return false
	}
	c.eng.tls.handovers[0].Inc()
	// crypto/tls's last flight (a client's Finished) precedes every record
	// sealed here.
	if t.out != nil {
		c.writeRaw(t.out)
		bufpool.Put(t.out)
		t.out = nil
	}
	t.mu.Lock()
	t.rec = rec
	t.tc = nil // crypto/tls's connection, buffers, secrets and the config clone go
	t.phase = tlsRecord
	buf, off := t.in, t.inOff
	t.in, t.inOff = nil, 0
	t.mu.Unlock()
	if t.early != nil { // client: the upgrade request, queued during the handshake
		c.writeRaw(t.early)
		t.early = nil
	}
	if buf != nil {
		// Records that arrived behind the handshake: the client's upgrade
		// request, or the server's answer.
		c.tlsRecords(buf[off:])
		c.scope.Release(cap(buf))
		bufpool.Put(buf)
	}
	return true
}

// tlsRecords opens the records in b, fresh from TCP, in place and runs
// their plaintext through the pipeline. A record that ends past b is kept
// in t.in (charged to the connection) until the reads that complete it.
func (c *Conn) tlsRecords(b []byte) {
	t := c.tls
	for t.in != nil && c.state != stateClosed {
		if n, _ := c.openRecords(t.in); n > 0 {
			c.dropRecord() // t.in held one record, now consumed
			break
		}
		if c.state == stateClosed || len(b) == 0 {
			return
		}
		// Take from b what completes the header, then the record (whose
		// header Open has accepted, so it fits maxPendingRecord).
		want := tls13.HeaderLen
		if len(t.in) >= tls13.HeaderLen {
			want += int(binary.BigEndian.Uint16(t.in[3:tls13.HeaderLen]))
		}
		k := min(want-len(t.in), len(b))
		c.pendingRoom(want)
		t.in = append(t.in, b[:k]...)
		b = b[k:]
	}
	n, more := c.openRecords(b)
	if more && c.state != stateClosed && n < len(b) {
		// The buffer is sized by the record's own length when its header
		// is here (most records split across reads are a few KiB: a
		// pooled 4 KiB buffer, not the 64 KiB a full record needs), by a
		// header's otherwise; pendingRoom grows it once the header is in.
		rest := b[n:]
		want := tls13.HeaderLen
		if len(rest) >= tls13.HeaderLen {
			want += int(binary.BigEndian.Uint16(rest[3:tls13.HeaderLen]))
		}
		t.in = bufpool.Get(min(want, maxPendingRecord))
		c.scope.Charge(cap(t.in))
		t.in = append(t.in, rest...)
	}
}

// pendingRoom makes the pending-record buffer hold want bytes (at most
// maxPendingRecord: Open refused a longer header before its body was
// taken), moving its charge with it.
func (c *Conn) pendingRoom(want int) {
	t := c.tls
	if want <= cap(t.in) {
		return
	}
	old := cap(t.in)
	t.in = bufpool.Grow(t.in, min(want, maxPendingRecord)-len(t.in))
	c.scope.Charge(cap(t.in) - old)
}

// dropRecord returns the pending-record buffer.
func (c *Conn) dropRecord() {
	t := c.tls
	if t.in != nil {
		c.scope.Release(cap(t.in))
		bufpool.Put(t.in)
		t.in = nil
	}
}

// openRecords opens complete records at the front of b, decrypting each in
// place, and returns the bytes consumed and whether it stopped for want of
// a complete record (false: the connection ended).
func (c *Conn) openRecords(b []byte) (int, bool) {
	t := c.tls
	off := 0
	for c.state != stateClosed {
		if off == len(b) {
			return off, true
		}
		data, n, res, err := t.rec.Open(b[off:])
		if err == wire.ErrNeedMore {
			return off, true
		}
		if err != nil {
			c.tlsRecordFailed(err)
			return off, false
		}
		off += n
		switch res {
		case tls13.Data:
			if len(data) > 0 {
				c.input(data) // data aliases b: the pipeline does not keep it
			}
		case tls13.CloseNotify:
			c.tlsCloseNotify()
			return off, false
		}
		// tls13.KeyUpdateRequested: ours is queued; flush writes it.
	}
	return off, false
}

// tlsRecordFailed ends the connection after a record the layer refused, or
// an alert from the peer. Our alert goes out with the last flush.
func (c *Conn) tlsRecordFailed(err error) {
	t := c.tls
	reason := "record"
	var e *tls13.Error
	if errors.As(err, &e) {
		reason = e.Reason
		if e.Remote {
			t.peerAlert = true
		} else {
			t.alert, t.alertSet = e.Alert, true
		}
	}
	c.eng.tls.closes(reason).Inc()
	c.fail(err, "tls_"+reason)
}

// tlsCloseNotify ends the connection after the peer's close_notify: a
// failure when it comes before the WebSocket close handshake.
func (c *Conn) tlsCloseNotify() {
	c.eng.tls.closes("close_notify").Inc()
	if c.state == stateOpen || c.state == stateHandshake {
		c.fail(ErrTLSCloseNotify, "tls_close_notify")
	} else {
		c.end(nil)
	}
}

// recordMode reports whether the outbound buffer is built of TLS records.
func (c *Conn) recordMode() bool { return c.tls != nil && c.tls.rec != nil }

// recordRoom prepares c.out for n more bytes in the open record: it seals
// the open record first when n would not fit in it, flushes rather than
// grow the buffer past the 64 KiB class, and opens a record (its header's
// room) when none is. n above one record's worth makes an oversize record
// that sealOpen splits.
func (c *Conn) recordRoom(n int) {
	t := c.tls
	if t.recOpen {
		if used := len(c.out) - t.recStart - tls13.HeaderLen; used > 0 && used+n > tls13.MaxPlaintext {
			c.sealOpen()
		}
	}
	need := n + tls13.MaxSealGrowth
	if !t.recOpen {
		need += tls13.HeaderLen
	}
	if n > tls13.MaxPlaintext { // oversize: room for every record it becomes
		need = tls13.SealedLen(n) + tls13.MaxSealGrowth
	}
	if c.out != nil && len(c.out)+need > cap(c.out) && need <= bufpool.Medium {
		c.hold()
	}
	c.out = growOut(c.out, need)
	if !t.recOpen {
		t.recStart, t.recOpen = len(c.out), true
		c.out = c.out[:len(c.out)+tls13.HeaderLen]
	}
}

// recordFree is the room left in the open record (a whole record's when
// none is open or the open one is full).
func (c *Conn) recordFree() int {
	t := c.tls
	if !t.recOpen {
		return tls13.MaxPlaintext
	}
	free := tls13.MaxPlaintext - (len(c.out) - t.recStart - tls13.HeaderLen)
	if free <= 0 {
		return tls13.MaxPlaintext
	}
	return free
}

// sealOpen seals the open record in place. An oversize record (a frame
// larger than a record reserved in one piece) is split: its bytes are
// taken out and sealed back as full records. Once the write side is closed
// (our alert sent, or the peer's received), the record's bytes are
// dropped: "MUST NOT allow any further data to be sent" (RFC 8446 §6).
func (c *Conn) sealOpen() {
	t := c.tls
	if !t.recOpen {
		return
	}
	t.recOpen = false
	start := t.recStart
	plain := len(c.out) - start - tls13.HeaderLen
	if plain == 0 {
		c.out = c.out[:start]
		return
	}
	var err error
	if plain <= tls13.MaxPlaintext {
		c.out = growOut(c.out, tls13.MaxSealGrowth)
		c.out, err = t.rec.SealInPlace(c.out, start)
	} else {
		tmp := append(bufpool.Get(plain), c.out[start+tls13.HeaderLen:]...)
		c.out = growOut(c.out[:start], t.rec.SealedLen(plain))
		c.out, err = t.rec.AppendSeal(c.out, tmp)
		bufpool.Put(tmp)
	}
	if err != nil {
		c.out = c.out[:start]
	}
}

// finishRecords ends a flush's records: the open one sealed, a KeyUpdate
// the peer asked for, and once the connection is closed our last alert
// (close_notify, or the one a refused record calls for). It also notes the
// activity for the quiet-period release.
func (c *Conn) finishRecords() {
	t := c.tls
	c.sealOpen()
	if t.rec.Pending() {
		c.out = growOut(c.out, tls13.MaxControlLen)
		c.out, _ = t.rec.AppendPending(c.out)
	}
	if c.state == stateClosed && !t.notified {
		t.notified = true
		a := tls13.AlertCloseNotify
		if t.alertSet {
			a = t.alert
		}
		// After the peer's error alert nothing more is sent (RFC 8446 §6:
		// "MUST NOT allow any further data to be sent"); AppendAlert itself
		// writes at most one alert.
		if !t.peerAlert {
			c.out = growOut(c.out, tls13.MaxControlLen)
			c.out = t.rec.AppendAlert(c.out, a)
		}
		return
	}
	if t.rec.Holding() {
		at := c.eng.monoNow() + tlsQuiet
		t.quietAt = at
		if c.filed == 0 || at < c.filed {
			c.filed = at
			c.eng.wheel.schedule(c, at)
		}
	}
}

// tlsQuietCheck drops the AEAD states of a connection that has seen no
// record for tlsQuiet; it returns when it wants to be called again (0:
// never). Called from onDeadline with c.mu held.
func (c *Conn) tlsQuietCheck(now int64) int64 {
	t := c.tls
	if t == nil || t.quietAt == 0 {
		return 0
	}
	if now < t.quietAt {
		return t.quietAt
	}
	t.quietAt = 0
	if t.rec != nil {
		t.rec.Release()
	}
	return 0
}

// growOut makes room for n more bytes in an outbound buffer.
func growOut(b []byte, n int) []byte {
	if b == nil {
		return bufpool.Get(n)
	}
	return bufpool.Grow(b, n)
}
