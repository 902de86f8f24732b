package engine

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/swarmgate/swarmgate/engine/tls13"
	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/ws"
)

// A test client's view of one direction of a TLS 1.3 connection, built
// from the secrets crypto/tls logged, independent of engine/tls13: it seals
// whatever record a test wants (tampered, out of sequence, unpadded) and
// opens the server's.
type rawDir struct {
	aead cipher.AEAD
	iv   []byte
	seq  uint64
}

// expandLabel is HKDF-Expand-Label (RFC 8446 §7.1) with an empty context.
func expandLabel(h func() hash.Hash, secret []byte, label string, n int) []byte {
	info := []byte{byte(n >> 8), byte(n), byte(6 + len(label))}
	info = append(info, "tls13 "+label...)
	info = append(info, 0)
	out, err := hkdf.Expand(h, secret, string(info), n)
	if err != nil {
		panic(err)
	}
	return out
}

func newRawDir(t *testing.T, suite uint16, secret []byte) *rawDir {
	t.Helper()
	var d rawDir
	switch suite {
	case tls.TLS_AES_128_GCM_SHA256, tls.TLS_AES_256_GCM_SHA384:
		h, n := sha256.New, 16
		if suite == tls.TLS_AES_256_GCM_SHA384 {
			h, n = sha512.New384, 32
		}
		b, _ := aes.NewCipher(expandLabel(h, secret, "key", n))
		d.aead, _ = cipher.NewGCM(b)
		d.iv = expandLabel(h, secret, "iv", 12)
	case tls.TLS_CHACHA20_POLY1305_SHA256:
		d.aead, _ = chacha20poly1305.New(expandLabel(sha256.New, secret, "key", 32))
		d.iv = expandLabel(sha256.New, secret, "iv", 12)
	default:
		t.Fatalf("suite %x", suite)
	}
	return &d
}

func (d *rawDir) nonce(seq uint64) []byte {
	n := bytes.Clone(d.iv)
	for i := range 8 {
		n[4+i] ^= byte(seq >> (56 - 8*i))
	}
	return n
}

// seal seals inner (content, content type, padding: the caller's choice)
// at sequence number seq.
func (d *rawDir) seal(seq uint64, inner []byte) []byte {
	l := len(inner) + d.aead.Overhead()
	hdr := []byte{23, 3, 3, byte(l >> 8), byte(l)}
	return d.aead.Seal(hdr, d.nonce(seq), inner, hdr)
}

// open reads one record from r and opens it at the next sequence number,
// returning its content type and content.
func (d *rawDir) open(t *testing.T, r io.Reader) (byte, []byte) {
	t.Helper()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(r, hdr); err != nil {
		t.Fatalf("reading a record: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatalf("reading a record: %v", err)
	}
	inner, err := d.aead.Open(nil, d.nonce(d.seq), body, hdr)
	if err != nil {
		t.Fatalf("server record %d does not open: %v", d.seq, err)
	}
	d.seq++
	i := len(inner) - 1
	for i >= 0 && inner[i] == 0 {
		i--
	}
	return inner[i], inner[:i]
}

// keyLogLines records crypto/tls's key log for a test client.
type keyLogLines struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (k *keyLogLines) Write(p []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.b.Write(p)
}

func (k *keyLogLines) secret(t *testing.T, label string) []byte {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, l := range strings.Split(k.b.String(), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == label {
			s, err := hex.DecodeString(f[2])
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}
	t.Fatalf("no %s in the key log", label)
	return nil
}

// rawTLSClient completes a TLS 1.3 handshake with crypto/tls over TCP and
// hands back the TCP connection with both directions' keys, so the test
// writes and reads records itself from sequence number 0.
func rawTLSClient(t *testing.T, hostPort string, cfg *tls.Config) (nc net.Conn, w, r *rawDir) {
	t.Helper()
	nc, err := net.Dial("tcp", hostPort)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	kl := &keyLogLines{}
	cfg = cfg.Clone()
	cfg.KeyLogWriter = kl
	cfg.MinVersion = tls.VersionTLS13
	tc := tls.Client(nc, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	suite := tc.ConnectionState().CipherSuite
	w = newRawDir(t, suite, kl.secret(t, "CLIENT_TRAFFIC_SECRET_0"))
	r = newRawDir(t, suite, kl.secret(t, "SERVER_TRAFFIC_SECRET_0"))
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return nc, w, r
}

// upgradeRequest is a client's WebSocket upgrade for /echo.
const upgradeRequest = "GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// Records a real TLS 1.3 client sends after a good exchange, wrong in each
// way RFC 8446 names, end the connection with the alert the RFC requires,
// sealed under the server's key at the next sequence number, and are
// counted by reason.
func TestTLSRecordAlerts(t *testing.T) {
	cert, pool := testutil.SelfSigned(t, SelfSignedCertificate)
	reg := prometheus.NewRegistry()
	e, addr := startTLSEcho(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Registerer: reg}, "/ip4/127.0.0.1/tcp/0/tls/ws")
	hostPort := "127.0.0.1:" + tcpPort(t, addr)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	inner := func(content []byte, typ byte) []byte { return append(bytes.Clone(content), typ) }

	cases := []struct {
		name   string
		record func(w *rawDir) []byte // the bad record, with the upgrade at client seq 0 done
		alert  tls13.Alert
		reason string
	}{
		{"tampered", func(w *rawDir) []byte {
			r := w.seal(1, inner([]byte{0x82, 0x80, 1, 2, 3, 4}, 23))
			r[len(r)-3] ^= 1
			return r
		}, tls13.AlertBadRecordMAC, "bad_record_mac"},
		{"replayed", func(w *rawDir) []byte {
			return w.seal(0, inner([]byte(upgradeRequest), 23)) // sequence number 0 again
		}, tls13.AlertBadRecordMAC, "bad_record_mac"},
		{"skipped_sequence", func(w *rawDir) []byte {
			return w.seal(2, inner([]byte{0x82, 0x80, 1, 2, 3, 4}, 23))
		}, tls13.AlertBadRecordMAC, "bad_record_mac"},
		{"oversized", func(w *rawDir) []byte {
			// A header declaring 2^14+257 bytes: refused before the body.
			l := tls13.MaxCiphertext + 1
			return []byte{23, 3, 3, byte(l >> 8), byte(l)}
		}, tls13.AlertRecordOverflow, "record_overflow"},
		{"inner_overflow", func(w *rawDir) []byte {
			return w.seal(1, inner(make([]byte, tls13.MaxPlaintext+1), 23))
		}, tls13.AlertRecordOverflow, "record_overflow"},
		{"all_zero_padding", func(w *rawDir) []byte {
			return w.seal(1, make([]byte, 40)) // no content type
		}, tls13.AlertUnexpectedMessage, "no_content_type"},
		{"change_cipher_spec", func(w *rawDir) []byte {
			return []byte{20, 3, 3, 0, 1, 1}
		}, tls13.AlertUnexpectedMessage, "change_cipher_spec"},
		{"server_gets_ticket", func(w *rawDir) []byte {
			nst := []byte{4, 0, 0, 13, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 7, 0, 0}
			return w.seal(1, inner(nst, 22))
		}, tls13.AlertUnexpectedMessage, "unexpected_handshake"},
		{"key_update_value", func(w *rawDir) []byte {
			return w.seal(1, inner([]byte{24, 0, 0, 1, 7}, 22))
		}, tls13.AlertIllegalParameter, "key_update_value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.CounterValue(t, reg, "swarmgate_tls_closes_total", map[string]string{"reason": tc.reason})
			nc, w, r := rawTLSClient(t, hostPort, cfg)
			if _, err := nc.Write(w.seal(0, inner([]byte(upgradeRequest), 23))); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(nc)
			typ, content := r.open(t, br)
			if typ != 23 || !bytes.HasPrefix(content, []byte("HTTP/1.1 101")) {
				t.Fatalf("first server record: type %d %q", typ, content)
			}
			if _, err := nc.Write(tc.record(w)); err != nil {
				t.Fatal(err)
			}
			typ, content = r.open(t, br)
			if typ != 21 || len(content) != 2 || content[0] != 2 || tls13.Alert(content[1]) != tc.alert {
				t.Fatalf("got type %d content %v, want a fatal %v alert", typ, content, tc.alert)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("after the alert: %v, want EOF", err)
			}
			testutil.WaitFor(t, 5*time.Second, func() bool {
				return testutil.CounterValue(t, reg, "swarmgate_tls_closes_total", map[string]string{"reason": tc.reason}) == before+1
			})
		})
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return e.OpenConns() == 0 })
}

// A peer's KeyUpdate with update_requested, mid-stream: the server moves
// its read key, answers with its own KeyUpdate (update_not_requested)
// before its next data, and the echo continues under the new keys both
// ways. The client here is crypto/tls for the handshake and the test's own
// record sealing after it.
func TestTLSKeyUpdateFromPeer(t *testing.T) {
	cert, pool := testutil.SelfSigned(t, SelfSignedCertificate)
	_, addr := startTLSEcho(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}, "/ip4/127.0.0.1/tcp/0/tls/ws")
	kl := &keyLogLines{}
	nc, err := net.Dial("tcp", "127.0.0.1:"+tcpPort(t, addr))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	tc := tls.Client(nc, &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13, KeyLogWriter: kl})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	suite := tc.ConnectionState().CipherSuite
	cs, ss := kl.secret(t, "CLIENT_TRAFFIC_SECRET_0"), kl.secret(t, "SERVER_TRAFFIC_SECRET_0")
	h := sha256.New
	hl := 32
	if suite == tls.TLS_AES_256_GCM_SHA384 {
		h, hl = sha512.New384, 48
	}
	next := func(s []byte) []byte { return expandLabel(h, s, "traffic upd", hl) }
	w, r := newRawDir(t, suite, cs), newRawDir(t, suite, ss)
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	send := func(inner []byte) {
		t.Helper()
		if _, err := nc.Write(w.seal(w.seq, inner)); err != nil {
			t.Fatal(err)
		}
		w.seq++
	}
	frame := func(msg string) []byte {
		var b []byte
		b = ws.AppendHeader(b, ws.Header{Fin: true, Op: ws.OpBinary, Length: int64(len(msg)), Masked: true})
		return append(append(b, msg...), 23) // zero key: the payload is its own mask
	}
	// expect reads server records until an echo of msg, following the
	// server's KeyUpdates, and returns how many it saw.
	expect := func(msg string) (updates int) {
		t.Helper()
		for {
			typ, content := r.open(t, br)
			switch {
			case typ == 22 && len(content) == 5 && content[0] == 24:
				if content[4] != 0 {
					t.Fatalf("server KeyUpdate asks for one back (%d)", content[4])
				}
				updates++
				ss = next(ss)
				r = newRawDir(t, suite, ss)
			case typ == 23:
				if !bytes.HasSuffix(content, []byte(msg)) {
					t.Fatalf("echo %q, want %q", content, msg)
				}
				return updates
			default:
				t.Fatalf("server record type %d %v", typ, content)
			}
		}
	}
	send(append([]byte(upgradeRequest), 23))
	if typ, content := r.open(t, br); typ != 23 || !bytes.HasPrefix(content, []byte("HTTP/1.1 101")) {
		t.Fatalf("upgrade answer: %d %q", typ, content)
	}
	send(frame("before"))
	if n := expect("before"); n != 0 {
		t.Fatalf("%d KeyUpdates before any was asked for", n)
	}
	for round := range 3 {
		// KeyUpdate(update_requested) under the old key, then data under
		// the new one, in one write.
		ku := w.seal(w.seq, []byte{24, 0, 0, 1, 1, 22})
		cs = next(cs)
		w = newRawDir(t, suite, cs)
		data := w.seal(0, frame("after"))
		w.seq = 1
		if _, err := nc.Write(append(ku, data...)); err != nil {
			t.Fatal(err)
		}
		if n := expect("after"); n != 1 {
			t.Fatalf("round %d: %d server KeyUpdates, want 1", round, n)
		}
	}
}

// TLS 1.3 connections run on the record layer, TLS 1.2 ones on crypto/tls,
// each counted; and a TLS 1.3 connection that has been quiet drops its
// AEAD states, rebuilt by the next record.
func TestTLSHandoverAndQuietRelease(t *testing.T) {
	cert, pool := testutil.SelfSigned(t, SelfSignedCertificate)
	reg := prometheus.NewRegistry()
	e, addr := startTLSEcho(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Registerer: reg, Tick: 20 * time.Millisecond}, "/ip4/127.0.0.1/tcp/0/tls/ws")
	url := "wss://localhost:" + tcpPort(t, addr) + "/echo"
	handovers := func(r string) float64 {
		return testutil.CounterValue(t, reg, "swarmgate_tls_handovers_total", map[string]string{"result": r})
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: v, MaxVersion: v}}
		conn, _, err := d.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		gorillaEcho(t, conn, 10, 20000)
	}
	if handovers("record_layer") != 1 || handovers("tls12") != 1 || handovers("fallback") != 0 {
		t.Fatalf("handovers: record_layer %v tls12 %v fallback %v", handovers("record_layer"), handovers("tls12"), handovers("fallback"))
	}
	holding := func() (n int) {
		e.each(func(c *Conn) {
			c.mu.Lock()
			if c.tls != nil && c.tls.rec != nil && c.tls.rec.Holding() {
				n++
			}
			c.mu.Unlock()
		})
		return n
	}
	testutil.WaitFor(t, 3*time.Second, func() bool { return holding() == 0 })
}

// The server's TLS 1.3 record layer against our own client role's: large
// messages both ways, a peer that ends with close_notify, and records
// filled to 2^14 bytes when there is data to send.
func TestTLSRecordLayerBothRoles(t *testing.T) {
	cert, pool := testutil.SelfSigned(t, SelfSignedCertificate)
	reg := prometheus.NewRegistry()
	_, addr := startTLSEcho(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Registerer: reg}, "/ip4/127.0.0.1/tcp/0/tls/ws")
	creg := prometheus.NewRegistry()
	ce := New(Config{Logger: testutil.Quiet, Registerer: creg, TLSClient: &tls.Config{RootCAs: pool, ServerName: "localhost"}})
	t.Cleanup(func() { ce.Close() })
	sizes := []int{0, 1, 125, 16 << 10, 16<<10 + 1, 100 << 10, 4 << 20}
	var mu sync.Mutex
	var got [][]byte
	done := make(chan struct{}, len(sizes))
	msgs := make([][]byte, len(sizes))
	for i, n := range sizes {
		msgs[i] = bytes.Repeat([]byte{byte(i + 1)}, n)
	}
	var buf []byte
	_, err := ce.Dial(addr, "/echo", func(c *Conn) Stage {
		for _, m := range msgs {
			c.WriteMessage(ws.OpBinary, m)
		}
		return &funcStageEnd{data: func(p []byte, end bool) {
			buf = append(buf, p...)
			if end {
				mu.Lock()
				got = append(got, buf)
				mu.Unlock()
				buf = nil
				done <- struct{}{}
			}
		}}
	})
	if err != nil {
		t.Fatal(err)
	}
	for range sizes {
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("echo timed out")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range msgs {
		if !bytes.Equal(got[i], msgs[i]) {
			t.Fatalf("message %d: %d bytes back, want %d", i, len(got[i]), len(msgs[i]))
		}
	}
	for _, r := range []*prometheus.Registry{reg, creg} {
		if v := testutil.CounterValue(t, r, "swarmgate_tls_handovers_total", map[string]string{"result": "record_layer"}); v != 1 {
			t.Fatalf("%v record-layer handovers", v)
		}
	}
}

// funcStageEnd is a stage that reports message ends.
type funcStageEnd struct {
	data func(p []byte, end bool)
}

func (s *funcStageEnd) Data(c *Conn, op ws.Opcode, p []byte, end bool) error {
	s.data(p, end)
	return nil
}
func (s *funcStageEnd) Closed(*Conn, error) {}

// recordSizes wraps a net.Conn and records the TLS record lengths the
// server sends, for TestTLSFullRecords.
type recordSizes struct {
	net.Conn
	mu    sync.Mutex
	buf   []byte
	sizes []int
}

func (r *recordSizes) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.mu.Lock()
	r.buf = append(r.buf, p[:n]...)
	for len(r.buf) >= 5 {
		l := 5 + int(binary.BigEndian.Uint16(r.buf[3:5]))
		if len(r.buf) < l {
			break
		}
		r.sizes = append(r.sizes, l-5)
		r.buf = r.buf[l:]
	}
	r.mu.Unlock()
	return n, err
}

// Bulk data from the server goes out in full records (2^14 bytes of
// content, 2^14 + 17 on the wire), not one record per frame or per write:
// a record is cut short only where a 64 KiB outbound buffer ends.
func TestTLSFullRecords(t *testing.T) {
	cert, pool := testutil.SelfSigned(t, SelfSignedCertificate)
	const n = 4 << 20
	e := New(Config{Logger: testutil.Quiet, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	t.Cleanup(func() { e.Close() })
	l, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/tls/ws"), Routes{Paths: map[string]StageFunc{"/big": func(c *Conn) Stage {
		c.WriteMessage(ws.OpBinary, make([]byte, n))
		return &funcStageEnd{data: func([]byte, bool) {}}
	}}})
	if err != nil {
		t.Fatal(err)
	}
	var rs *recordSizes
	d := websocket.Dialer{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13},
		NetDial: func(network, addr string) (net.Conn, error) {
			nc, err := net.Dial(network, addr)
			rs = &recordSizes{Conn: nc}
			return rs, err
		},
	}
	conn, resp, err := d.Dial("wss://localhost:"+tcpPort(t, l.Addr())+"/big", http.Header{})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	defer conn.Close()
	rs.mu.Lock()
	before := len(rs.sizes) // the handshake's and the upgrade's
	rs.mu.Unlock()
	if _, msg, err := conn.ReadMessage(); err != nil || len(msg) != n {
		t.Fatalf("read %d bytes: %v", len(msg), err)
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	records, full := len(rs.sizes)-before, 0
	for _, s := range rs.sizes[before:] {
		if s == tls13.MaxPlaintext+1+tls13.TagLen {
			full++
		}
	}
	// 4 MiB is 256 records' worth; a 64 KiB buffer holds three full
	// records and most of a fourth.
	if records > 256*4/3+2 || full < 256*3/4-2 {
		t.Fatalf("%d records (%d full) for %d bytes: %v", records, full, n, rs.sizes[before:])
	}
}

// each calls f for every open connection, outside the engine's lock.
func (e *Engine) each(f func(c *Conn)) {
	e.mu.Lock()
	var cs []*Conn
	for c := e.conns; c != nil; c = c.next {
		cs = append(cs, c)
	}
	e.mu.Unlock()
	for _, c := range cs {
		f(c)
	}
}

// A record split across reads, at every point of its header and at points
// of its body, is gathered and opened; the pending buffer is sized by the
// record (a pool's small class for a small record) and returned once the
// record is whole.
func TestTLSRecordSplitAcrossReads(t *testing.T) {
	cert, pool := testutil.SelfSigned(t, SelfSignedCertificate)
	e, addr := startTLSEcho(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}, "/ip4/127.0.0.1/tcp/0/tls/ws")
	nc, w, r := rawTLSClient(t, "127.0.0.1:"+tcpPort(t, addr), &tls.Config{RootCAs: pool, ServerName: "localhost"})
	br := bufio.NewReader(nc)
	send := func(rec []byte, at int) {
		t.Helper()
		if _, err := nc.Write(rec[:at]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // a read of its own, most likely
		if at < len(rec) {
			// While the record is partial, the connection holds at most
			// a buffer of the record's size class.
			e.each(func(c *Conn) {
				c.mu.Lock()
				defer c.mu.Unlock()
				if in := c.tls.in; in != nil && len(rec) <= 4<<10 && cap(in) > 4<<10 {
					t.Errorf("a %d-byte record split at %d holds a %d-byte buffer", len(rec), at, cap(in))
				}
			})
			if _, err := nc.Write(rec[at:]); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(w.seal(w.seq, append([]byte(upgradeRequest), 23)), 3)
	w.seq++
	if typ, content := r.open(t, br); typ != 23 || !bytes.HasPrefix(content, []byte("HTTP/1.1 101")) {
		t.Fatalf("upgrade answer: %d %q", typ, content)
	}
	for _, size := range []int{100, 3000, 12000} {
		msg := bytes.Repeat([]byte{'m'}, size)
		f := ws.AppendHeader(nil, ws.Header{Fin: true, Op: ws.OpBinary, Length: int64(size), Masked: true})
		f = append(f, msg...)                  // a zero mask key: the payload is its own mask
		n := tls13.HeaderLen + len(f) + 1 + 16 // the record's length
		hl := 2                                // the echo's frame header
		if size >= 126 {
			hl = 4
		}
		for _, at := range []int{1, 2, 3, 4, 5, 6, n / 2, n - 1} {
			rec := w.seal(w.seq, append(f, 23))
			w.seq++
			send(rec, at)
			var got []byte
			for len(got) < hl+size { // the echo may come in more than one record
				typ, content := r.open(t, br)
				if typ != 23 {
					t.Fatalf("record type %d", typ)
				}
				got = append(got, content...)
			}
			if len(got) != hl+size || !bytes.HasSuffix(got, msg) {
				t.Fatalf("size %d split at %d: echo of %d bytes differs", size, at, len(got))
			}
		}
	}
	e.each(func(c *Conn) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.tls.in != nil {
			t.Error("a pending-record buffer is kept after the record was opened")
		}
	})
}
