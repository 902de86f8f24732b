package tls13

// Differential tests against crypto/tls: a real crypto/tls handshake over
// loopback TCP, secrets taken by KeyLog, then this package on one side and
// crypto/tls on the other, for every suite, both roles, record sizes 0 to
// 2^14 and beyond, KeyUpdate both ways in the middle, and the alerts.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
	_ "unsafe" // go:linkname, to choose crypto/tls's TLS 1.3 suite

	"github.com/swarmgate/swarmgate/internal/wire"
)

// crypto/tls has no setting for the TLS 1.3 cipher suite
// (Config.CipherSuites applies to TLS 1.2 only, and no GODEBUG selects
// one): a Go client offers AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305
// (ChaCha20 first without AES hardware), and a Go server takes AES-128-GCM
// unless the client put ChaCha20 first. AES-256-GCM is never negotiated
// between two Go peers. crypto/tls exports both preference lists through
// go:linkname (for quic-go, which forces suites in its tests the same way);
// the test narrows both to one suite while it runs.
//
//go:linkname defaultCipherSuitesTLS13 crypto/tls.defaultCipherSuitesTLS13
var defaultCipherSuitesTLS13 []uint16

//go:linkname defaultCipherSuitesTLS13NoAES crypto/tls.defaultCipherSuitesTLS13NoAES
var defaultCipherSuitesTLS13NoAES []uint16

// forceSuite makes crypto/tls negotiate id until the test ends. Tests that
// call it must not run in parallel.
func forceSuite(t *testing.T, id uint16) {
	a, b := defaultCipherSuitesTLS13, defaultCipherSuitesTLS13NoAES
	defaultCipherSuitesTLS13 = []uint16{id}
	defaultCipherSuitesTLS13NoAES = []uint16{id}
	t.Cleanup(func() { defaultCipherSuitesTLS13, defaultCipherSuitesTLS13NoAES = a, b })
}

var (
	certOnce sync.Once
	cert     tls.Certificate
	roots    *x509.CertPool
)

func testConfigs(t testing.TB) (server, client *tls.Config) {
	certOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tls13 test"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			DNSNames: []string{"localhost"}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		leaf, _ := x509.ParseCertificate(der)
		cert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
		roots = x509.NewCertPool()
		roots.AddCert(leaf)
	})
	return &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}},
		&tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"http/1.1"}}
}

// recordConn is the engine's pipe in miniature: crypto/tls reads through it
// and gets at most one record per Read (engine/tls.go recordEnd), so it never
// buffers a byte past the record it is working on; what arrived behind the
// handshake stays in buf for this package.
type recordConn struct {
	net.Conn
	buf  []byte
	left int // rest of the record being handed
}

func (r *recordConn) Read(p []byte) (int, error) {
	for r.left == 0 {
		if len(r.buf) >= HeaderLen {
			if l := HeaderLen + int(binary.BigEndian.Uint16(r.buf[3:])); len(r.buf) >= l {
				r.left = l
				break
			}
		}
		var tmp [32 << 10]byte
		n, err := r.Conn.Read(tmp[:])
		r.buf = append(r.buf, tmp[:n]...)
		if err != nil {
			return 0, err
		}
	}
	n := copy(p, r.buf[:r.left])
	r.buf = r.buf[n:]
	r.left -= n
	return n, nil
}

// end is this package's side of a connection: the Conn, the raw pipe, and
// a goroutine reading the pipe.
type end struct {
	t    *testing.T
	c    *Conn
	raw  net.Conn
	in   []byte
	recv chan []byte
	send chan []byte
	// results is what Open returned, in order.
	results []Result
	// maxRecord is the largest application data record opened.
	maxRecord int
}

func newEnd(t *testing.T, c *Conn, raw net.Conn, leftover []byte) *end {
	e := &end{t: t, c: c, raw: raw, in: bytes.Clone(leftover), recv: make(chan []byte, 64), send: make(chan []byte, 64)}
	t.Cleanup(func() { close(e.send) })
	go func() {
		for b := range e.send {
			if _, err := raw.Write(b); err != nil {
				for range e.send {
				}
				return
			}
		}
	}()
	go func() {
		defer close(e.recv)
		for {
			b := make([]byte, 64<<10)
			n, err := raw.Read(b)
			if n > 0 {
				e.recv <- b[:n]
			}
			if err != nil {
				return
			}
		}
	}()
	return e
}

// next returns the next record's outcome, reading the pipe as needed.
func (e *end) next() (data []byte, r Result, err error) {
	e.t.Helper()
	for {
		d, n, r, err := e.c.Open(e.in)
		if err == wire.ErrNeedMore {
			select {
			case b, ok := <-e.recv:
				if !ok {
					return nil, 0, io.ErrUnexpectedEOF
				}
				e.in = append(e.in, b...)
				continue
			case <-time.After(10 * time.Second):
				e.t.Fatal("timed out waiting for a record")
			}
		}
		if err != nil {
			return nil, 0, err
		}
		e.in = e.in[n:]
		e.results = append(e.results, r)
		if r == Data {
			e.maxRecord = max(e.maxRecord, len(d))
		}
		if r == KeyUpdateRequested {
			out, err := e.c.AppendPending(nil)
			if err != nil {
				e.t.Fatal(err)
			}
			e.write(out)
		}
		return bytes.Clone(d), r, nil
	}
}

// readData opens records until n bytes of application data arrived.
func (e *end) readData(n int) []byte {
	e.t.Helper()
	var got []byte
	for len(got) < n {
		d, r, err := e.next()
		if err != nil {
			e.t.Fatalf("after %d of %d bytes: %v", len(got), n, err)
		}
		if r == CloseNotify {
			e.t.Fatalf("close_notify after %d of %d bytes", len(got), n)
		}
		got = append(got, d...)
	}
	return got
}

// write queues b for the writer goroutine, so the test goroutine never
// waits on a peer that waits on it.
func (e *end) write(b []byte) {
	e.send <- bytes.Clone(b)
}

type setup struct {
	ours        Role
	server      func(*tls.Config) // adjusts the server's config
	client      func(*tls.Config)
	keepTickets bool // do not disable session tickets on our server
	wantFailure bool // the handshake is not TLS 1.3: expect ErrNoSecrets
}

// loopback returns the two ends of a TCP connection on 127.0.0.1. Not
// net.Pipe: its writes wait for the reader, and with a HelloRetryRequest
// both crypto/tls ends write a change_cipher_spec at once.
func loopback(t *testing.T) (net.Conn, net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// connect runs a crypto/tls handshake over loopback TCP with KeyLog on our
// side and hands our side over to this package.
func connect(t *testing.T, s setup) (*end, *tls.Conn) {
	t.Helper()
	srvCfg, cliCfg := testConfigs(t)
	if s.server != nil {
		s.server(srvCfg)
	}
	if s.client != nil {
		s.client(cliCfg)
	}
	a, b := loopback(t)
	rc := &recordConn{Conn: b}
	kl := new(KeyLog)
	var ours, peer *tls.Conn
	if s.ours == Server {
		cfg := srvCfg.Clone()
		cfg.KeyLogWriter = kl
		cfg.SessionTicketsDisabled = !s.keepTickets
		ours, peer = tls.Server(rc, cfg), tls.Client(a, cliCfg)
	} else {
		cfg := cliCfg.Clone()
		cfg.KeyLogWriter = kl
		ours, peer = tls.Client(rc, cfg), tls.Server(a, srvCfg)
	}
	errc := make(chan error, 1)
	go func() { errc <- peer.Handshake() }()
	if err := ours.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	st := ours.ConnectionState()
	c, err := kl.Conn(s.ours, st.CipherSuite)
	if s.wantFailure {
		if err != ErrNoSecrets || st.Version == tls.VersionTLS13 {
			t.Fatalf("version %x: %v, want ErrNoSecrets", st.Version, err)
		}
		return nil, peer
	}
	if err != nil || st.Version != tls.VersionTLS13 {
		t.Fatalf("version %x: %v", st.Version, err)
	}
	// crypto/tls consumed whole records only: nothing of a record is
	// inside it, whatever followed the handshake is in rc.buf.
	if rc.left != 0 {
		t.Fatalf("crypto/tls stopped inside a record (%d bytes left)", rc.left)
	}
	if kl.haveRandom || kl.clientLen != 0 {
		t.Fatal("KeyLog.Conn did not wipe the secrets")
	}
	return newEnd(t, c, b, rc.buf), peer
}

// sweep is the message sizes: every size to 256, then every 61st, the
// boundaries around 2^14, and multi-record sizes.
func sweep(short bool) []int {
	var s []int
	step := 1
	for n := 0; n < MaxPlaintext-2; n += step {
		s = append(s, n)
		if n == 256 {
			step = 61
			if short {
				step = 997
			}
		}
	}
	return append(s, MaxPlaintext-2, MaxPlaintext-1, MaxPlaintext, MaxPlaintext+1, 3*MaxPlaintext+5, 100_000)
}

func TestInterop(t *testing.T) {
	for _, id := range suiteIDs {
		for _, role := range []Role{Server, Client} {
			t.Run(tls.CipherSuiteName(id)+"/ours="+role.String(), func(t *testing.T) {
				forceSuite(t, id)
				// The peer's dynamic record sizing stays on when it is the
				// client (small records first), off when it is the server,
				// so full 2^14 records arrive too.
				// Our client has a session cache, so it offers psk_dhe_ke
				// (as browsers do) and the server sends a ticket, the
				// first record under its application key.
				e, peer := connect(t, setup{ours: role,
					server: func(c *tls.Config) { c.DynamicRecordSizingDisabled = true },
					client: func(c *tls.Config) { c.ClientSessionCache = tls.NewLRUClientSessionCache(1) },
				})
				if got := peer.ConnectionState().CipherSuite; got != id {
					t.Fatalf("negotiated %s", tls.CipherSuiteName(got))
				}
				exchange(t, e, peer, sweep(testing.Short()))
				if role == Client && e.results[0] != Handshake {
					t.Errorf("first record %v, want the server's NewSessionTicket", e.results[0])
				}
				if role == Client && e.maxRecord != MaxPlaintext {
					t.Errorf("largest record opened: %d bytes", e.maxRecord)
				}
			})
		}
	}
}

// exchange moves every size both ways, with a KeyUpdate in the middle in
// both directions, then closes both ways with close_notify.
func exchange(t *testing.T, e *end, peer *tls.Conn, sizes []int) {
	half := len(sizes) / 2
	for phase, part := range [][]int{sizes[:half], sizes[half:]} {
		// crypto/tls -> us: one Write per message.
		var want []byte
		for i, n := range part {
			want = append(want, payload(n, uint64(10*phase+i))...)
		}
		go func() {
			for i, n := range part {
				if _, err := peer.Write(payload(n, uint64(10*phase+i))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		if got := e.readData(len(want)); !bytes.Equal(got, want) {
			t.Fatalf("phase %d: crypto/tls -> us: data differs", phase)
		}

		// us -> crypto/tls: one record per message up to 2^14 (an empty
		// record for 0), AppendSeal above; a KeyUpdate asking for the
		// peer's in the middle of the first phase, one not asking (the
		// sequence-limit path) in the second.
		readerr := make(chan error, 1)
		go func() {
			got := make([]byte, len(want))
			if _, err := io.ReadFull(peer, got); err != nil {
				readerr <- err
				return
			}
			if !bytes.Equal(got, want) {
				readerr <- errors.New("us -> crypto/tls: data differs")
				return
			}
			readerr <- nil
		}()
		var out []byte
		readKey := e.c.r.secret
		for i, n := range part {
			if i == len(part)/2 {
				var err error
				if out, err = e.c.AppendKeyUpdate(out, phase == 0); err != nil {
					t.Fatal(err)
				}
			}
			p := payload(n, uint64(10*phase+i))
			var err error
			if n <= MaxPlaintext {
				out, err = e.c.AppendRecord(out, p)
			} else {
				out, err = e.c.AppendSeal(out, p)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		e.write(out)
		if err := <-readerr; err != nil {
			t.Fatal(err)
		}
		if phase == 0 {
			// crypto/tls answered update_requested with its own KeyUpdate
			// (update_not_requested); the next phase's data from it opens
			// only under our updated read key.
			if _, r, err := e.next(); err != nil || r != Handshake || e.c.r.secret == readKey || e.c.r.seq != 0 {
				t.Fatalf("crypto/tls's KeyUpdate: %v %v", r, err)
			}
		}
	}
	// Close: ours first, then crypto/tls's.
	e.write(e.c.AppendAlert(nil, AlertCloseNotify))
	if n, err := peer.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("crypto/tls after our close_notify: %d %v", n, err)
	}
	go peer.CloseWrite()
	if _, r, err := e.next(); err != nil || r != CloseNotify {
		t.Fatalf("crypto/tls's close_notify: %v %v", r, err)
	}
}

// remoteAlertOf returns the alert crypto/tls reports receiving in err.
func remoteAlertOf(err error) (string, bool) {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return op.Err.Error(), true
	}
	return "", false
}

// Each failure on our side reaches crypto/tls as the right alert; each
// record of ours that crypto/tls must refuse is refused with the alert we
// would send.
func TestInteropAlerts(t *testing.T) {
	forceSuite(t, tls.TLS_AES_128_GCM_SHA256)
	type tc struct {
		name string
		// corrupt turns a record crypto/tls sent into what we receive.
		corrupt func(rec []byte) []byte
		want    *Error
	}
	for _, c := range []tc{
		{"tampered", func(r []byte) []byte { r[len(r)-3] ^= 4; return r }, ErrBadRecordMAC},
		{"replayed", func(r []byte) []byte { return append(bytes.Clone(r), r...) }, ErrBadRecordMAC},
		{"oversized", func(r []byte) []byte { return []byte{23, 3, 3, 0x41, 0x01} }, ErrRecordOverflow},
		{"change_cipher_spec", func(r []byte) []byte { return append([]byte{20, 3, 3, 0, 1, 1}, r...) }, ErrChangeCipherSpec},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, peer := connect(t, setup{ours: Server})
			go peer.Write([]byte("hello"))
			b := <-e.recv
			e.in = c.corrupt(b)
			var err error
			for err == nil {
				_, _, err = e.next()
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("we got %v, want %v", err, c.want)
			}
			var ee *Error
			errors.As(err, &ee)
			e.write(e.c.AppendAlert(nil, ee.Alert))
			_, perr := peer.Read(make([]byte, 10))
			if got, ok := remoteAlertOf(perr); !ok || got != tls.AlertError(c.want.Alert).Error() {
				t.Fatalf("crypto/tls got %v, want remote %v", perr, c.want.Alert)
			}
		})
	}
	// Records crypto/tls must refuse, and the alert it sends back. (Not a
	// protected change_cipher_spec: crypto/tls 1.26 drops it, where
	// RFC 8446 §5 says to abort with unexpected_message, as Open does.)
	for _, c := range []struct {
		name  string
		inner []byte
		want  Alert
	}{
		{"all-zero inner plaintext", make([]byte, 20), AlertUnexpectedMessage},
		{"data after KeyUpdate", []byte{hsKeyUpdate, 0, 0, 1, 0, hsKeyUpdate, 0, 0, 1, 0, typeHandshake}, AlertUnexpectedMessage},
		{"ticket from a client", append([]byte{hsNewSessionTicket, 0, 0, 13}, append(make([]byte, 13), typeHandshake)...), AlertUnexpectedMessage},
	} {
		t.Run("peer refuses "+c.name, func(t *testing.T) {
			e, peer := connect(t, setup{ours: Client})
			go peer.Read(make([]byte, 10))
			e.write(rawRecord(e.c, c.inner))
			for {
				_, _, err := e.next()
				var ee *Error
				if errors.As(err, &ee) {
					if !ee.Remote || ee.Alert != c.want {
						t.Fatalf("got %v, want remote %v", err, c.want)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// Go 1.26's server sends its NewSessionTicket in the same flight as its
// Finished, under the server application key at sequence number 0 — when
// tickets are enabled and the client offers psk_dhe_ke (browsers always do;
// Go's client only with a ClientSessionCache). So whether the first
// application record a server hands over is number 0 or 1 depends on the
// client's ClientHello; a server that hands over to this package disables
// tickets. This test pins that behaviour, so a crypto/tls change shows here
// first.
func TestServerTicketShiftsSequence(t *testing.T) {
	forceSuite(t, tls.TLS_AES_128_GCM_SHA256)
	withCache := func(c *tls.Config) { c.ClientSessionCache = tls.NewLRUClientSessionCache(1) }
	for _, c := range []struct {
		name    string
		s       setup
		seq     uint64
		refused bool
	}{
		{"tickets, client offers psk_dhe_ke, sequence 0", setup{ours: Server, keepTickets: true, client: withCache}, 0, true},
		{"tickets, client offers psk_dhe_ke, sequence 1", setup{ours: Server, keepTickets: true, client: withCache}, 1, false},
		{"tickets, client without psk modes, sequence 0", setup{ours: Server, keepTickets: true}, 0, false},
		{"tickets disabled, sequence 0", setup{ours: Server, client: withCache}, 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, peer := connect(t, c.s)
			e.c.w.seq = c.seq
			got := make(chan string, 1)
			go func() {
				b := make([]byte, 5)
				io.ReadFull(peer, b)
				got <- string(b)
			}()
			out, _ := e.c.AppendSeal(nil, []byte("hello"))
			e.write(out)
			if c.refused {
				_, _, err := e.next()
				var ee *Error
				if !errors.As(err, &ee) || !ee.Remote || ee.Alert != AlertBadRecordMAC {
					t.Fatalf("got %v, want crypto/tls's bad_record_mac", err)
				}
				return
			}
			if s := <-got; s != "hello" {
				t.Fatalf("crypto/tls read %q", s)
			}
		})
	}
}

// Handshake variants the capture must survive: TLS 1.2 (no secrets: the
// caller keeps crypto/tls), a HelloRetryRequest, each key exchange.
func TestInteropHandshakes(t *testing.T) {
	t.Run("TLS 1.2 server", func(t *testing.T) {
		connect(t, setup{ours: Server, wantFailure: true, client: func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }})
	})
	t.Run("TLS 1.2 client", func(t *testing.T) {
		connect(t, setup{ours: Client, wantFailure: true, server: func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }})
	})
	for _, curve := range []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384} {
		for _, role := range []Role{Server, Client} {
			t.Run(curve.String()+"/ours="+role.String(), func(t *testing.T) {
				// The client's first key share is X25519MLKEM768 (with
				// X25519); a server preferring P-256 or P-384 answers with
				// a HelloRetryRequest.
				e, peer := connect(t, setup{ours: role, server: func(c *tls.Config) { c.CurvePreferences = []tls.CurveID{curve} }})
				if got := peer.ConnectionState().CurveID; got != curve {
					t.Fatalf("negotiated %v", got)
				}
				exchange(t, e, peer, []int{0, 1, 1000, 20000})
			})
		}
	}
}
