package engine

// TLS for /tls/ws (and /wss) inside the event loop.
//
// crypto/tls runs the handshake over a net.Conn; here that net.Conn is
// tlsConn, an in-memory pipe the engine feeds with the ciphertext netpoll
// read and drains into the socket when it flushes. The handshake is the
// only blocking part of crypto/tls, so it runs on a goroutine borrowed for
// its duration (started when the first complete record arrives, bounded by
// HandshakeTimeout and MaxConcurrentTLSHandshakes).
//
// After a TLS 1.3 handshake, crypto/tls is dropped and the engine's own
// record layer (tlsrecord.go, engine/tls13) opens and seals records on read
// events and flushes: the connection keeps its traffic secrets, sequence
// numbers and, while it moves data, two AEAD states. After a TLS 1.2
// handshake crypto/tls stays: the engine parses the 5-byte record headers
// itself and calls tls.Conn.Read only when a complete record is buffered,
// handing crypto/tls exactly one record at a time, so Read never waits;
// writes encrypt into the pipe's outbound buffer during flush. Either way
// an idle TLS connection owns no goroutine, no timer and no pooled buffer
// (README "Memory" and "TLS", ARCHITECTURE.md).
//
// Lock order: Conn.mu, then tlsConn.mu. The handshake goroutine never holds
// tlsConn.mu while it takes Conn.mu.

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swarmgate/swarmgate/engine/tls13"
	"github.com/swarmgate/swarmgate/internal/bufpool"
	"github.com/swarmgate/swarmgate/ws"
)

const (
	// DefaultMaxConcurrentTLSHandshakes bounds TLS handshakes in progress,
	// each of which holds a goroutine (about 8 KiB of stack) and, for the
	// server, roughly 0.3–1 ms of CPU for the key exchange and signature. A
	// connection whose first record arrives over the cap is closed at once
	// and counted (result "over_cap"): 512 keeps a burst of honest clients
	// flowing while a flood of stalled handshakes costs at most 512
	// goroutines until HandshakeTimeout cuts them.
	DefaultMaxConcurrentTLSHandshakes = 512

	// recordHeaderLen is a TLS record header: type, version, length
	// (RFC 8446 §5.1).
	recordHeaderLen = 5
	// maxCiphertext bounds a record's declared length: "The length MUST NOT
	// exceed 2^14 + 256 bytes" for TLS 1.3 (RFC 8446 §5.2), 2^14 + 2048 for
	// TLS 1.2 (RFC 5246 §6.2.3). A header declaring more is handed to
	// crypto/tls at once, which rejects it with record_overflow, instead of
	// waiting for the body.
	maxCiphertext = 1<<14 + 2048
	// maxHandshakeBuffered bounds the ciphertext buffered while the
	// handshake runs. A client's flights are a ClientHello (one or two
	// records), ChangeCipherSpec and Finished, then at most its upgrade
	// request; 256 KiB is generous for that and stops a peer that streams
	// data at a handshake it never lets finish.
	maxHandshakeBuffered = 256 << 10
	// recordTypeHandshake is the first byte of every ClientHello; on a
	// listener shared by /ws and /tls/ws it tells TLS from HTTP (an HTTP
	// request starts with a method letter).
	recordTypeHandshake = 0x16
)

// alpnHTTP1 is the only ALPN protocol offered: WebSocket over HTTP/2
// (RFC 8441) is not supported, by go-libp2p either (protocol notes §1.9).
var alpnHTTP1 = []string{"http/1.1"}

var (
	// ErrNotTLS reports a connection to a TLS-only listener whose first
	// byte is not a TLS handshake record.
	ErrNotTLS = errors.New("engine: not a TLS connection")
	// ErrTLSHandshakeCap reports a TLS handshake refused because
	// MaxConcurrentTLSHandshakes were already in progress.
	ErrTLSHandshakeCap = errors.New("engine: too many TLS handshakes in progress")
	// ErrNoCertificate reports a TLS listener on a non-loopback address
	// without Config.TLS certificates or GetCertificate.
	ErrNoCertificate = errors.New("engine: TLS listener needs a certificate")
	// ErrTLSHandshakeFlood reports a peer that sent more than
	// maxHandshakeBuffered bytes before its handshake completed.
	ErrTLSHandshakeFlood = errors.New("engine: too much data during the TLS handshake")
	// ErrTLSCloseNotify reports a peer that ended TLS (close_notify) before
	// the WebSocket close handshake.
	ErrTLSCloseNotify = errors.New("engine: TLS close_notify before WebSocket close")
)

// errWouldBlock is what the pipe returns to crypto/tls when it has no
// complete record to give. It is a temporary net.Error, which crypto/tls
// returns to the caller without poisoning the connection.
var errWouldBlock = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "engine: no complete TLS record buffered" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// tlsPhase is a TLS connection's lifecycle:
//
//	waiting ──first record──▶ handshaking ──TLS 1.3──▶ record (engine/tls13)
//	   │                          └────────TLS 1.2──▶ open (crypto/tls)
//	   └──────────────┴──────────────────────┴─────────┴──▶ closed
type tlsPhase uint8

const (
	tlsWaiting tlsPhase = iota
	tlsHandshaking
	tlsOpen
	tlsRecord
	tlsClosed
)

// tlsConn is one connection's TLS layer and the in-memory net.Conn that
// crypto/tls reads and writes. Buffers are pooled and dropped as soon as
// they are empty.
type tlsConn struct {
	c  *Conn
	tc *tls.Conn // crypto/tls: the handshake, and TLS 1.2 for good
	// base is a server's listener configuration, cloned per handshake.
	base *tls.Config
	// kl captures the traffic secrets during a handshake (tlsrecord.go).
	kl *tls13.KeyLog
	// rec is the record layer after a TLS 1.3 handover; nil before it and
	// for TLS 1.2. The fields below it are the record layer's, touched
	// only with Conn.mu held.
	rec *tls13.Conn
	// recStart is where the open record starts in Conn.out (its header's
	// room) while recOpen.
	recStart int
	recOpen  bool
	// alert is the alert our last flush sends after a refused record
	// (alertSet); peerAlert: the peer sent an error alert, and we send
	// nothing more.
	alertSet  bool
	peerAlert bool
	alert     tls13.Alert
	// quietAt is when the AEAD states are dropped if no record comes or
	// goes before (engine mono nanoseconds; 0: not due).
	quietAt int64

	mu    sync.Mutex
	phase tlsPhase
	in    []byte // ciphertext not yet handed to crypto/tls (pooled)
	inOff int    // bytes of in already handed
	// recLeft is what remains of a record crypto/tls took only part of
	// (its read buffer was smaller).
	recLeft int
	out     []byte        // ciphertext crypto/tls wrote, not yet flushed (pooled)
	early   []byte        // client: plaintext queued before the handshake ended
	wake    chan struct{} // the handshake goroutine's wake-up; nil otherwise
	// notified: our close_notify is queued.
	notified bool
}

// engineTLS is the engine-wide TLS state: metrics and the handshake cap.
type engineTLS struct {
	inflight   atomic.Int64           // server handshakes holding a goroutine
	handshakes *prometheus.CounterVec // result, version
	curves     *prometheus.CounterVec // curve
	seconds    prometheus.Histogram
	inProgress prometheus.GaugeFunc
	records    *prometheus.CounterVec // ends after the handshake, by reason
	// handovers counts TLS handshakes by what carries the connection
	// after them, by handoverResults index.
	handovers  [4]prometheus.Counter
	closeCache sync.Map // reason -> prometheus.Counter
}

// closeReasons are the swarmgate_tls_closes_total reasons: close_notify, a
// refused record or alert of the record layer (tls13.Error reasons), and
// "alert" for anything crypto/tls reports on a TLS 1.2 connection.
var closeReasons = []string{"close_notify", "alert", "remote_alert", "bad_record_mac", "record_overflow",
	"unexpected_record_type", "change_cipher_spec", "no_content_type", "empty_control", "unexpected_handshake",
	"interleaved_handshake", "key_update_alignment", "key_update_value", "decode_error", "too_many_control",
	"sequence_exhausted"}

// closes is the counter of one close reason.
func (t *engineTLS) closes(reason string) prometheus.Counter {
	if c, ok := t.closeCache.Load(reason); ok {
		return c.(prometheus.Counter)
	}
	c := t.records.WithLabelValues(reason)
	t.closeCache.Store(reason, c)
	return c
}

func newEngineTLS(reg prometheus.Registerer) *engineTLS {
	t := &engineTLS{
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swarmgate_tls_handshakes_total", Help: "TLS handshakes by result (ok or a failure token) and negotiated version."}, []string{"result", "version"}),
		curves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swarmgate_tls_key_exchanges_total", Help: "Completed TLS handshakes by negotiated key exchange (curve or hybrid group)."}, []string{"curve"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "swarmgate_tls_handshake_seconds", Help: "TLS handshake time from the first record to completion.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swarmgate_tls_closes_total", Help: "TLS connections ended by the peer after the handshake: close_notify, an alert from the peer (remote_alert), or a record refused with our alert (its reason)."}, []string{"reason"}),
	}
	handovers := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "swarmgate_tls_handovers_total", Help: "Completed TLS handshakes by what carries the connection after them: record_layer (TLS 1.3, the engine's record layer), tls12 (crypto/tls), fallback (TLS 1.3 left on crypto/tls: secrets not captured), failed."}, []string{"result"})
	for i, r := range handoverResults {
		t.handovers[i] = handovers.WithLabelValues(r)
	}
	t.inProgress = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "swarmgate_tls_handshakes_in_progress", Help: "Server TLS handshakes holding a goroutine now (capped by MaxConcurrentTLSHandshakes)."},
		func() float64 { return float64(t.inflight.Load()) })
	// Exported at zero from the start, so alerts see them before the
	// first failure.
	for _, v := range []string{"TLS 1.3", "TLS 1.2"} {
		t.handshakes.WithLabelValues("ok", v)
	}
	for _, r := range []string{"over_cap", "not_tls", "timeout", "eof", "closed", "bad_certificate", "remote_alert", "local_alert", "handshake_error"} {
		t.handshakes.WithLabelValues(r, "none")
	}
	for _, r := range closeReasons {
		t.closes(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{t.handshakes, t.curves, t.seconds, t.inProgress, t.records, handovers} {
			reg.MustRegister(c)
		}
	}
	return t
}

func newTLSConn(c *Conn) *tlsConn { return &tlsConn{c: c} }

// receive runs b, fresh from TCP, through TLS if the connection uses it.
// On a server connection of a TLS listener the first byte decides.
func (c *Conn) receive(b []byte) {
	if c.tls == nil && c.hs != nil && c.hs.routes != nil && !c.hs.sniffed && len(b) > 0 {
		c.hs.sniffed = true
		l := c.hs.routes
		if cfg := l.tlsCfg.Load(); cfg != nil {
			switch {
			case b[0] == recordTypeHandshake:
				c.tls = newTLSConn(c)
				c.tls.base = cfg // crypto/tls starts with the first complete record
			case !l.plain.Load():
				c.eng.tls.handshakes.WithLabelValues("not_tls", "none").Inc()
				c.fail(ErrNotTLS, "tls_not_tls")
				return
			}
		}
	}
	if c.tls == nil {
		c.input(b)
		return
	}
	c.tlsReceive(b)
}

// tlsReceive buffers ciphertext and, depending on the phase, starts the
// handshake, wakes it, or decrypts the complete records.
func (c *Conn) tlsReceive(b []byte) {
	t := c.tls
	if t.rec != nil { // set under c.mu, which the caller holds
		c.tlsRecords(b)
		return
	}
	t.mu.Lock()
	if t.phase == tlsClosed {
		t.mu.Unlock()
		return
	}
	// Ciphertext waiting for the rest of its record is held for the peer:
	// charged to the connection (bounded by maxCiphertext once open,
	// maxHandshakeBuffered before).
	had := cap(t.in)
	if t.in == nil {
		t.in = bufpool.Get(len(b))
	} else {
		t.compact()
		t.in = bufpool.Grow(t.in, len(b))
	}
	c.scope.Charge(cap(t.in) - had)
	t.in = append(t.in, b...)
	phase := t.phase
	ready := t.recordReady()
	flood := phase == tlsHandshaking && len(t.in)-t.inOff > maxHandshakeBuffered
	if phase == tlsHandshaking {
		t.signal()
	}
	t.mu.Unlock()
	if flood {
		c.fail(ErrTLSHandshakeFlood, "tls_handshake_flood")
		return
	}
	switch phase {
	case tlsWaiting:
		if ready {
			c.startTLSHandshake()
		}
	case tlsOpen:
		c.tlsDecrypt()
	}
}

// compact moves unhanded bytes to the front of in.
func (t *tlsConn) compact() {
	if t.inOff > 0 {
		n := copy(t.in, t.in[t.inOff:])
		t.in = t.in[:n]
		t.inOff = 0
	}
}

// recordReady reports whether a complete record (or a header crypto/tls
// will reject) is buffered.
func (t *tlsConn) recordReady() bool {
	return t.recordEnd() > 0
}

// recordEnd is how many buffered bytes may be handed to crypto/tls now:
// the rest of the record being handed, else a whole record, never part of
// the next one, so crypto/tls's input buffer holds at most one record and
// every record it starts is complete.
func (t *tlsConn) recordEnd() int {
	b := t.in[t.inOff:]
	if t.recLeft > 0 {
		return t.recLeft // the record was complete when handing began
	}
	if len(b) < recordHeaderLen {
		return 0
	}
	n := int(binary.BigEndian.Uint16(b[3:5]))
	if n > maxCiphertext {
		return len(b) // let crypto/tls see and reject the header
	}
	if end := recordHeaderLen + n; end <= len(b) {
		return end
	}
	return 0
}

func (t *tlsConn) signal() {
	if t.wake != nil {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

// dropIn returns in to its pool once everything was handed over, so an
// idle connection keeps no input buffer.
func (t *tlsConn) dropIn() {
	if t.in != nil && t.inOff == len(t.in) {
		t.c.scope.Release(cap(t.in))
		bufpool.Put(t.in)
		t.in, t.inOff = nil, 0
	}
}

// startTLSHandshake borrows a goroutine for the handshake, or closes the
// connection when too many are in progress. Called with c.mu held.
func (c *Conn) startTLSHandshake() {
	et := c.eng.tls
	// The cap protects the server from remote peers; our own dials are
	// bounded by their caller and do not take the server's slots.
	if c.role == ws.Server && et.inflight.Add(1) > int64(c.eng.cfg.MaxConcurrentTLSHandshakes) {
		et.inflight.Add(-1)
		et.handshakes.WithLabelValues("over_cap", "none").Inc()
		c.fail(ErrTLSHandshakeCap, "tls_handshake_cap")
		return
	}
	t := c.tls
	if t.tc == nil { // server: one configuration clone per handshake
		t.tc = tls.Server(t, t.handshakeConfig(t.base))
		t.base = nil
	}
	t.mu.Lock()
	t.phase = tlsHandshaking
	t.wake = make(chan struct{}, 1)
	t.mu.Unlock()
	go t.handshake(c.eng.cfg.Now())
}

// handshake runs crypto/tls's handshake on the borrowed goroutine, then
// hands the connection back to the event loop.
func (t *tlsConn) handshake(start time.Time) {
	err := t.tc.Handshake()
	c := t.c
	et := c.eng.tls
	if c.role == ws.Server {
		et.inflight.Add(-1)
	}
	c.lock()
	t.mu.Lock()
	t.wake = nil
	if err == nil && t.phase == tlsHandshaking {
		t.phase = tlsOpen
	}
	open := t.phase == tlsOpen
	if t.phase == tlsClosed {
		t.release() // close left them to this goroutine
	}
	t.mu.Unlock()
	if err != nil || !open {
		t.kl = nil
		token := tlsFailureToken(err, c.err)
		et.handshakes.WithLabelValues(token, "none").Inc()
		if c.state != stateClosed {
			c.fail(err, "tls_"+token) // flushes the alert crypto/tls queued
		}
		c.unlock()
		return
	}
	st := t.tc.ConnectionState()
	et.handshakes.WithLabelValues("ok", tls.VersionName(st.Version)).Inc()
	et.curves.WithLabelValues(curveName(st.CurveID)).Inc()
	et.seconds.Observe(c.eng.cfg.Now().Sub(start).Seconds())
	handed := false
	if st.Version == tls.VersionTLS13 {
		c.guarded(func() { handed = c.tlsHandover(st.CipherSuite) })
	} else {
		t.kl = nil
		et.handovers[1].Inc()
	}
	if !handed && c.state != stateClosed {
		if t.early != nil {
			c.writeRaw(t.early) // client: the upgrade request
			t.early = nil
		}
		c.guarded(c.tlsDecrypt) // records that came behind the handshake
	}
	c.guarded(c.endPass)
	c.flush()
	c.unlock()
}

// guarded runs f, which drives the connection's pipeline, on a goroutine
// of our own (the TLS handshake's), where netpoll's task pool does not
// stand between a bug and the process: a panic is logged with its stack,
// counted (reason "panic") and ends this connection only. Called with c.mu
// held, which it still holds when it returns.
func (c *Conn) guarded(f func()) {
	defer func() {
		if r := recover(); r != nil {
			c.eng.log.Error("panic while handling a connection's input; the connection is closed", "panic", r, "stack", string(debug.Stack()))
			c.fail(fmt.Errorf("engine: panic: %v", r), "panic")
		}
	}()
	f()
}

// curveName labels a negotiated key exchange; 0 is TLS 1.2 with RSA key
// transport or a resumption without one.
func curveName(id tls.CurveID) string {
	if id == 0 {
		return "none"
	}
	return id.String()
}

// tlsFailureToken classifies a failed handshake by error type for metrics.
// connErr is the connection's error, set when the engine ended it (the
// handshake deadline).
func tlsFailureToken(err, connErr error) string {
	var rh tls.RecordHeaderError
	var cv *tls.CertificateVerificationError
	var op *net.OpError
	switch {
	case errors.Is(connErr, errHandshakeTimeout):
		return "timeout"
	case err == nil || errors.Is(err, net.ErrClosed):
		return "closed"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.As(err, &rh):
		return "not_tls"
	case errors.As(err, &cv):
		return "bad_certificate"
	case errors.As(err, &op) && op.Op == "remote error":
		// crypto/tls reports a received alert as a net.OpError whose Op
		// is "remote error" and whose Err is its unexported alert type.
		return "remote_alert"
	case errors.As(err, &op) && op.Op == "local error":
		return "local_alert"
	}
	return "handshake_error"
}

// tlsDecrypt hands crypto/tls one complete record at a time and runs the
// plaintext through the pipeline. Called with c.mu held, after the
// handshake.
func (c *Conn) tlsDecrypt() {
	t := c.tls
	var buf []byte
	for c.state != stateClosed {
		t.mu.Lock()
		ready := t.recordReady()
		t.mu.Unlock()
		if !ready {
			break
		}
		if buf == nil {
			buf = bufpool.Get(bufpool.Medium)
		}
		n, err := t.tc.Read(buf[:cap(buf)])
		if n > 0 {
			c.input(buf[:n])
		}
		if err == nil {
			continue
		}
		if errors.Is(err, errWouldBlock) {
			continue // a record without application data (a ticket, KeyUpdate)
		}
		if errors.Is(err, io.EOF) {
			c.tlsCloseNotify()
			break
		}
		c.eng.tls.closes("alert").Inc()
		c.fail(err, "tls_record")
		break
	}
	if buf != nil {
		bufpool.Put(buf)
	}
	t.mu.Lock()
	t.dropIn()
	t.mu.Unlock()
}

// seal takes the pass's plaintext (owned, pooled) and returns the
// ciphertext to write, nil when none. Before the handshake ends the
// plaintext waits in early; once the connection is closed it is followed by
// our close_notify. Called from flush with c.mu held.
func (t *tlsConn) seal(plain []byte) []byte {
	c := t.c
	open := t.phase == tlsOpen // phase moves to open only under c.mu
	if plain != nil {
		if open {
			t.mu.Lock()
			t.reserve(len(plain) + (len(plain)/minRecord+1)*recordOverhead)
			t.mu.Unlock()
			t.tc.Write(plain) // an error is sticky in crypto/tls; the bytes are then dropped with the connection
		} else if t.phase != tlsClosed {
			t.early = append(t.early, plain...)
		}
		bufpool.Put(plain)
	}
	if open && c.state == stateClosed && !t.notified {
		t.notified = true
		t.tc.CloseWrite()
	}
	t.mu.Lock()
	out := t.out
	t.out = nil
	t.mu.Unlock()
	return out
}

// close ends the TLS layer when the connection is gone: a handshake
// goroutine wakes, reads the records that arrived before the end (an alert
// that explains it) and returns, and buffers go back to their pools (the
// goroutine's, once it is done with them).
func (t *tlsConn) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.phase = tlsClosed
	if t.wake != nil {
		t.signal()
		return
	}
	t.release()
}

// release returns the buffers to their pools.
func (t *tlsConn) release() {
	if t.in != nil {
		t.c.scope.Release(cap(t.in))
		bufpool.Put(t.in)
		t.in, t.inOff, t.recLeft = nil, 0, 0
	}
	if t.out != nil {
		bufpool.Put(t.out)
		t.out = nil
	}
	t.early = nil
	if t.rec != nil {
		// "Servers and clients MUST forget the secret values and keys
		// established in failed connections" (RFC 8446 §6); closed ones
		// too, here.
		t.rec.Close()
	}
}

// Read gives crypto/tls buffered ciphertext, whole records only (a record
// is handed once it is complete, in as many reads as crypto/tls needs).
// During the handshake it waits (on the borrowed
// goroutine), first flushing what the handshake wrote; afterwards it never
// waits and reports errWouldBlock instead.
func (t *tlsConn) Read(p []byte) (int, error) {
	for {
		t.mu.Lock()
		if n := t.recordEnd(); n > 0 {
			m := copy(p, t.in[t.inOff:t.inOff+n])
			t.inOff += m
			t.recLeft = n - m
			t.mu.Unlock()
			return m, nil
		}
		if t.phase == tlsClosed {
			t.mu.Unlock()
			return 0, net.ErrClosed
		}
		if t.phase != tlsHandshaking {
			t.mu.Unlock()
			return 0, errWouldBlock
		}
		pending := len(t.out) > 0
		wake := t.wake
		t.mu.Unlock()
		if pending {
			c := t.c
			c.lock()
			if c.state != stateClosed {
				c.flush()
			} else { // nobody will write it: drop it rather than spin
				t.mu.Lock()
				if t.out != nil {
					bufpool.Put(t.out)
					t.out = nil
				}
				t.mu.Unlock()
			}
			c.unlock()
			continue
		}
		<-wake
	}
}

// Write queues ciphertext for the next flush.
func (t *tlsConn) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.phase == tlsClosed {
		return 0, net.ErrClosed
	}
	t.reserve(len(p))
	t.out = append(t.out, p...)
	return len(p), nil
}

// recordOverhead bounds what sealing adds per record: header, AEAD tag,
// TLS 1.3 inner content type (crypto/tls adds no padding).
const recordOverhead = recordHeaderLen + 16 + 1

// minRecord is the smallest record crypto/tls's dynamic record sizing
// writes (a TCP segment's worth), for sizing the outbound buffer.
const minRecord = 1024

// reserve makes room for n more ciphertext bytes. Past the largest pool
// class the buffer grows by doubling, so sealing a large message record by
// record copies it O(1) times, not once per record.
func (t *tlsConn) reserve(n int) {
	if cap(t.out)-len(t.out) >= n {
		return
	}
	need := len(t.out) + n
	if need > bufpool.Large {
		need = max(need, 2*cap(t.out)) // an exact allocation: grow geometrically
	}
	t.out = bufpool.Grow(t.out, need-len(t.out))
}

// Close is crypto/tls's view; the engine closes TCP itself.
func (t *tlsConn) Close() error                     { return nil }
func (t *tlsConn) LocalAddr() net.Addr              { return t.c.nc.LocalAddr() }
func (t *tlsConn) RemoteAddr() net.Addr             { return t.c.nc.RemoteAddr() }
func (t *tlsConn) SetDeadline(time.Time) error      { return nil }
func (t *tlsConn) SetReadDeadline(time.Time) error  { return nil }
func (t *tlsConn) SetWriteDeadline(time.Time) error { return nil }
