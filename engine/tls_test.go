package engine

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/ws"
	"github.com/swarmgate/swarmgate/ws/conformance"
)

// startTLSEcho runs an engine serving the raw echo on /echo at addr.
func startTLSEcho(t testing.TB, cfg Config, addr string) (*Engine, ma.Multiaddr) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testutil.Quiet
	}
	e := New(cfg)
	t.Cleanup(func() { e.Close() })
	l, err := e.Listen(ma.StringCast(addr), Routes{Paths: map[string]StageFunc{"/echo": Echo}})
	if err != nil {
		t.Fatal(err)
	}
	return e, l.Addr()
}

func tcpPort(t testing.TB, a ma.Multiaddr) string {
	t.Helper()
	p, err := a.ValueForProtocol(ma.P_TCP)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func gorillaEcho(t *testing.T, conn *websocket.Conn, sizes ...int) {
	t.Helper()
	for _, n := range sizes {
		msg := make([]byte, n)
		for i := range msg {
			msg[i] = byte(rand.Uint32())
		}
		werr := make(chan error, 1)
		go func() { werr <- conn.WriteMessage(websocket.BinaryMessage, msg) }()
		_, got, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if err := <-werr; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("echo of %d bytes differs (got %d)", n, len(got))
		}
	}
}

func tlsState(c *websocket.Conn) tls.ConnectionState {
	return c.NetConn().(*tls.Conn).ConnectionState()
}

// A gorilla wss:// client runs the raw echo over TLS 1.2 and 1.3, up to
// 16 MiB messages, and the handshake metrics record each.
func TestTLSGorillaEcho(t *testing.T) {
	cert, pool := testutil.SelfSigned(t, SelfSignedCertificate)
	reg := prometheus.NewRegistry()
	_, addr := startTLSEcho(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Registerer: reg}, "/ip4/127.0.0.1/tcp/0/tls/ws")
	if !strings.HasSuffix(addr.String(), "/tls/ws") {
		t.Fatalf("listen address %s", addr)
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: v, MaxVersion: v, NextProtos: []string{"h2", "http/1.1"}}}
			conn, _, err := d.Dial("wss://localhost:"+tcpPort(t, addr)+"/echo", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if st := tlsState(conn); st.Version != v || st.NegotiatedProtocol != "http/1.1" {
				t.Fatalf("TLS state %+v", st)
			}
			gorillaEcho(t, conn, 0, 1, 125, 16<<10, 100<<10, 16<<20)
			if n := testutil.CounterValue(t, reg, "swarmgate_tls_handshakes_total", map[string]string{"result": "ok", "version": tls.VersionName(v)}); n != 1 {
				t.Fatalf("%v ok handshakes counted", n)
			}
		})
	}
	if n := testutil.CounterValue(t, reg, "swarmgate_tls_key_exchanges_total", map[string]string{"curve": "X25519MLKEM768"}); n != 1 {
		t.Fatalf("%v X25519MLKEM768 key exchanges (TLS 1.3 default)", n)
	}
}

// /ws and /tls/ws share one port; the first byte decides. A plain client
// on a TLS-only port is cut and counted.
func TestTLSSharedPort(t *testing.T) {
	cert, pool := testutil.SelfSigned(t, SelfSignedCertificate)
	reg := prometheus.NewRegistry()
	e, plain := startTLSEcho(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Registerer: reg}, "/ip4/127.0.0.1/tcp/0/ws")
	port := tcpPort(t, plain)
	l, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/"+port+"/wss"), Routes{})
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Addr().String(); got != "/ip4/127.0.0.1/tcp/"+port+"/tls/ws" {
		t.Fatalf("shared address %s", got)
	}
	if _, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/"+port+"/tls/ws"), Routes{}); !errors.Is(err, ErrAddrInUse) {
		t.Fatalf("second TLS listen: %v", err)
	}
	c1, _, err := websocket.DefaultDialer.Dial("ws://127.0.0.1:"+port+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}
	c2, _, err := d.Dial("wss://127.0.0.1:"+port+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	gorillaEcho(t, c1, 10, 70000)
	gorillaEcho(t, c2, 10, 70000)

	_, tlsOnly := startTLSEcho(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Registerer: prometheus.NewRegistry()}, "/ip4/127.0.0.1/tcp/0/tls/ws")
	if _, _, err := websocket.DefaultDialer.Dial("ws://127.0.0.1:"+tcpPort(t, tlsOnly)+"/echo", nil); err == nil {
		t.Fatal("plain HTTP accepted on a TLS-only listener")
	}
}

// A GetCertificate that changes: new connections see the new certificate,
// a connection made before keeps working.
func TestTLSCertificateReload(t *testing.T) {
	c1, _ := testutil.SelfSigned(t, SelfSignedCertificate)
	c2, _ := testutil.SelfSigned(t, SelfSignedCertificate)
	var cur atomic.Pointer[tls.Certificate]
	cur.Store(&c1)
	get := func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cur.Load(), nil }
	_, addr := startTLSEcho(t, Config{TLS: &tls.Config{GetCertificate: get}}, "/ip4/127.0.0.1/tcp/0/tls/ws")
	url := "wss://127.0.0.1:" + tcpPort(t, addr) + "/echo"
	d := websocket.Dialer{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	old, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if !tlsState(old).PeerCertificates[0].Equal(c1.Leaf) {
		t.Fatal("first connection did not get the first certificate")
	}
	cur.Store(&c2)
	fresh, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if !tlsState(fresh).PeerCertificates[0].Equal(c2.Leaf) {
		t.Fatal("new connection did not get the new certificate")
	}
	gorillaEcho(t, old, 100, 40000)
	gorillaEcho(t, fresh, 100)
}

// 1,000 clients stalled in the TLS handshake (half connect and send
// nothing, half send part of a ClientHello) do not delay others and are cut
// at HandshakeTimeout; the silent ones never got a goroutine.
func TestTLSStalledHandshakes(t *testing.T) {
	cert, pool := testutil.SelfSigned(t, SelfSignedCertificate)
	reg := prometheus.NewRegistry()
	const timeout = 1500 * time.Millisecond
	e, addr := startTLSEcho(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Registerer: reg, HandshakeTimeout: timeout}, "/ip4/127.0.0.1/tcp/0/tls/ws")
	hostPort := "127.0.0.1:" + tcpPort(t, addr)
	// A real ClientHello's first 100 bytes: a header declaring more.
	hello := clientHello(t)[:100]
	const n = 1000
	g0 := runtime.NumGoroutine()
	conns := make([]net.Conn, 0, n)
	for i := range n {
		c, err := net.Dial("tcp", hostPort)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			c.Write(hello)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	testutil.WaitFor(t, 5*time.Second, func() bool { return e.OpenConns() == n })
	// Stalled handshakes hold no goroutine: only complete records start one.
	if g := runtime.NumGoroutine() - g0; g > 50 {
		t.Fatalf("%d goroutines for %d stalled handshakes", g, n)
	}
	start := time.Now()
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}
	good, _, err := d.Dial("wss://127.0.0.1:"+tcpPort(t, addr)+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	gorillaEcho(t, good, 1000)
	if d := time.Since(start); d > timeout/2 {
		t.Fatalf("a good client took %v among stalled ones", d)
	}
	testutil.WaitFor(t, timeout+3*time.Second, func() bool { return e.OpenConns() == 1 })
	if v := testutil.CounterValue(t, reg, "swarmgate_connection_failures_total", map[string]string{"reason": "handshake_timeout"}); v != n {
		t.Fatalf("%v handshake timeouts counted", v)
	}
	gorillaEcho(t, good, 10)
	good.Close()
}

// clientHello is the first record of a crypto/tls ClientHello: a whole
// ClientHello with Go's default key shares.
func clientHello(t *testing.T) []byte {
	t.Helper()
	a, b := net.Pipe()
	go tls.Client(a, &tls.Config{ServerName: "localhost"}).Handshake()
	hdr := make([]byte, recordHeaderLen)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatal(err)
	}
	a.Close()
	b.Close()
	return append(hdr, body...)
}

// Over MaxConcurrentTLSHandshakes, a new handshake is refused at once and
// counted; finished or cut handshakes free their slots.
func TestTLSHandshakeCap(t *testing.T) {
	cert, pool := testutil.SelfSigned(t, SelfSignedCertificate)
	reg := prometheus.NewRegistry()
	e, addr := startTLSEcho(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Registerer: reg, MaxConcurrentTLSHandshakes: 2}, "/ip4/127.0.0.1/tcp/0/tls/ws")
	hostPort := "127.0.0.1:" + tcpPort(t, addr)
	hello := clientHello(t)
	// Two clients send a whole ClientHello and never finish: each holds a
	// handshake slot (the server waits for their Finished).
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", hostPort)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(hello)
		held = append(held, c)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return e.tls.inflight.Load() == 2 })
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}
	url := "wss://127.0.0.1:" + tcpPort(t, addr) + "/echo"
	if _, _, err := d.Dial(url, nil); err == nil {
		t.Fatal("handshake over the cap accepted")
	}
	if v := testutil.CounterValue(t, reg, "swarmgate_tls_handshakes_total", map[string]string{"result": "over_cap"}); v != 1 {
		t.Fatalf("%v over-cap handshakes counted", v)
	}
	for _, c := range held {
		c.Close()
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return e.tls.inflight.Load() == 0 })
	c, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	gorillaEcho(t, c, 10)
	c.Close()
	if v := testutil.CounterValue(t, reg, "swarmgate_tls_handshakes_total", map[string]string{"result": "closed"}); v != 2 {
		t.Fatalf("%v handshakes ended by the connection's end counted", v)
	}
}

// writeCertFiles writes cert's chain and key as PEM files.
func writeCertFiles(t *testing.T, dir string, cert tls.Certificate) (string, string) {
	t.Helper()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	// Written beside and renamed into place, as certificate managers do.
	for _, f := range []struct {
		name, typ string
		der       []byte
	}{{certFile, "CERTIFICATE", cert.Certificate[0]}, {keyFile, "PRIVATE KEY", der}} {
		tmp := f.name + ".tmp"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.name); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// CertReloader: the files are replaced; Watch notices, new connections get
// the new certificate, the connection made before keeps working.
func TestTLSCertReloaderFiles(t *testing.T) {
	dir := t.TempDir()
	c1, _ := testutil.SelfSigned(t, SelfSignedCertificate)
	c2, _ := testutil.SelfSigned(t, SelfSignedCertificate)
	certFile, keyFile := writeCertFiles(t, dir, c1)
	r, err := NewCertReloader(certFile, keyFile, testutil.Quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Watch(ctx, 20*time.Millisecond)
	_, addr := startTLSEcho(t, Config{TLS: &tls.Config{GetCertificate: r.GetCertificate}}, "/ip4/127.0.0.1/tcp/0/tls/ws")
	url := "wss://127.0.0.1:" + tcpPort(t, addr) + "/echo"
	d := websocket.Dialer{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	old, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if !tlsState(old).PeerCertificates[0].Equal(c1.Leaf) {
		t.Fatal("first connection did not get the first certificate")
	}
	writeCertFiles(t, dir, c2)
	// Make sure the modification time moves even on coarse clocks.
	later := time.Now().Add(time.Second)
	os.Chtimes(certFile, later, later)
	os.Chtimes(keyFile, later, later)
	testutil.WaitFor(t, 5*time.Second, func() bool { return r.Certificate().Leaf.Equal(c2.Leaf) })
	fresh, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if !tlsState(fresh).PeerCertificates[0].Equal(c2.Leaf) {
		t.Fatal("new connection did not get the reloaded certificate")
	}
	gorillaEcho(t, old, 100, 40000)
	gorillaEcho(t, fresh, 100)
	// A broken pair keeps the previous certificate.
	os.WriteFile(keyFile, []byte("garbage"), 0o600)
	if err := r.Reload(); err == nil {
		t.Fatal("reload of a broken key succeeded")
	}
	if !r.Certificate().Leaf.Equal(c2.Leaf) {
		t.Fatal("a failed reload replaced the certificate")
	}
}

// parseWSAddr: the forms of protocol notes §2.
func TestParseWSAddrTLS(t *testing.T) {
	for _, tc := range []struct {
		in, suffix, sni string
		tls             bool
	}{
		{"/ip4/127.0.0.1/tcp/1/ws", "/ws", "", false},
		{"/ip4/127.0.0.1/tcp/1/tls/ws", "/tls/ws", "", true},
		{"/ip4/127.0.0.1/tcp/1/wss", "/tls/ws", "", true},
		{"/ip4/1.2.3.4/tcp/443/tls/sni/example.com/ws", "/tls/sni/example.com/ws", "example.com", true},
		{"/dns/example.com/tcp/443/tls/sni/example.com/ws/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN", "/tls/sni/example.com/ws", "example.com", true},
		{"/ip6/::1/tcp/1/wss/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN", "/tls/ws", "", true},
	} {
		a, err := parseWSAddr(ma.StringCast(tc.in))
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if a.tls != tc.tls || a.sni != tc.sni || a.suffix() != tc.suffix {
			t.Fatalf("%s: %+v", tc.in, a)
		}
	}
	for _, bad := range []string{
		"/ip4/127.0.0.1/tcp/1/tls",
		"/ip4/127.0.0.1/tcp/1/tls/sni/x.com",
		"/ip4/127.0.0.1/tcp/1/tls/http",
		"/ip4/127.0.0.1/tcp/1/ws/tls",
		"/ip4/127.0.0.1/tcp/1/wss/ws",
		"/ip4/127.0.0.1/udp/1/ws",
	} {
		if _, err := parseWSAddr(ma.StringCast(bad)); !errors.Is(err, ErrUnsupportedAddr) {
			t.Fatalf("%s: %v", bad, err)
		}
	}
}

// A /tls/sni/H/ws listener on loopback without a certificate generates one
// for H; our client dials by IP with H as the server name and Host, and
// close_notify ends the connection cleanly both ways.
func TestTLSSelfSignedSNI(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := New(Config{Logger: testutil.Quiet, Registerer: reg})
	t.Cleanup(func() { e.Close() })
	l, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/tls/sni/node.example/ws"), Routes{Paths: map[string]StageFunc{"/echo": Echo}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(l.Addr().String(), "/tls/sni/node.example/ws") {
		t.Fatalf("address %s", l.Addr())
	}
	cert := l.tlsCfg.Load().Certificates[0]
	if err := cert.Leaf.VerifyHostname("node.example"); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	ce := New(Config{Logger: testutil.Quiet, TLSClient: &tls.Config{RootCAs: pool}})
	t.Cleanup(func() { ce.Close() })
	got := make(chan []byte, 1)
	closed := make(chan error, 1)
	c, err := ce.Dial(l.Addr(), "/echo", func(c *Conn) Stage {
		c.WriteMessage(2, []byte("over tls"))
		return &funcStage{data: func(p []byte) { got <- append([]byte(nil), p...) }, closed: func(err error) { closed <- err }}
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if string(b) != "over tls" {
			t.Fatalf("echo %q", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no echo")
	}
	c.CloseWith(1000, "")
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not closed")
	}
	// Non-loopback without a certificate is refused.
	if _, err := New(Config{Logger: testutil.Quiet}).Listen(ma.StringCast("/ip4/0.0.0.0/tcp/0/tls/ws"), Routes{}); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("wildcard listener without a certificate: %v", err)
	}
}

type funcStage struct {
	data   func([]byte)
	closed func(error)
}

func (s *funcStage) Data(c *Conn, op ws.Opcode, p []byte, end bool) error {
	s.data(p)
	return nil
}
func (s *funcStage) Closed(c *Conn, err error) { s.closed(err) }

// The RFC 6455 conformance suite over TLS (TLS 1.3; 1.2 for a second pass
// would double the time for no new record-layer path).
func TestConformanceTLS(t *testing.T) {
	cert, pool := testutil.SelfSigned(t, SelfSignedCertificate)
	_, addr := startTLSEcho(t, Config{MaxMessageSize: 1 << 20, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}, "/ip4/127.0.0.1/tcp/0/tls/ws")
	conformance.Run(t, conformance.Target{Addr: "127.0.0.1:" + tcpPort(t, addr), Path: "/echo", MaxMessage: 1 << 20,
		TLS: &tls.Config{RootCAs: pool, ServerName: "localhost"}})
}

// Failures and ends are counted by reason: a client that rejects our
// certificate (its bad_certificate alert: remote_alert), a plain HTTP
// client on a TLS-only port (not_tls), and a close_notify after the
// upgrade (the connection ends, counted).
func TestTLSFailuresCounted(t *testing.T) {
	cert, pool := testutil.SelfSigned(t, SelfSignedCertificate)
	reg := prometheus.NewRegistry()
	e, addr := startTLSEcho(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Registerer: reg}, "/ip4/127.0.0.1/tcp/0/tls/ws")
	hostPort := "127.0.0.1:" + tcpPort(t, addr)
	count := func(name, label, value string) float64 {
		return testutil.CounterValue(t, reg, name, map[string]string{label: value})
	}

	// Untrusting client: no RootCAs for our self-signed certificate.
	if _, _, err := (&websocket.Dialer{TLSClientConfig: &tls.Config{}}).Dial("wss://"+hostPort+"/echo", nil); err == nil {
		t.Fatal("untrusted certificate accepted")
	}
	testutil.WaitFor(t, 5*time.Second, func() bool {
		return count("swarmgate_tls_handshakes_total", "result", "remote_alert") == 1
	})

	// Plain HTTP on a TLS-only port.
	nc, err := net.Dial("tcp", hostPort)
	if err != nil {
		t.Fatal(err)
	}
	nc.Write([]byte("GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"))
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(nc); err != nil {
		t.Fatalf("not closed: %v", err)
	}
	nc.Close()
	if v := count("swarmgate_connection_failures_total", "reason", "tls_not_tls"); v != 1 {
		t.Fatalf("%v not-TLS connections counted", v)
	}

	// close_notify after the upgrade, before any WebSocket Close.
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}
	ws, _, err := d.Dial("wss://"+hostPort+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	gorillaEcho(t, ws, 10)
	if err := ws.NetConn().(*tls.Conn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return e.OpenConns() == 0 })
	if v := count("swarmgate_tls_closes_total", "reason", "close_notify"); v != 1 {
		t.Fatalf("%v close_notify counted", v)
	}
	if v := count("swarmgate_connection_failures_total", "reason", "tls_close_notify"); v != 1 {
		t.Fatalf("%v close_notify failures counted", v)
	}
	ws.Close()
}

// A /dns4 TLS listen address keeps its name as /sni in the printed address
// (and the self-signed certificate), and our client dials it by name.
func TestTLSListenDNS(t *testing.T) {
	e := New(Config{Logger: testutil.Quiet})
	t.Cleanup(func() { e.Close() })
	l, err := e.Listen(ma.StringCast("/dns4/localhost/tcp/0/tls/ws"), Routes{Paths: map[string]StageFunc{"/echo": Echo}})
	if err != nil {
		t.Fatal(err)
	}
	if s := l.Addr().String(); !strings.HasPrefix(s, "/ip4/127.0.0.1/tcp/") || !strings.HasSuffix(s, "/tls/sni/localhost/ws") {
		t.Fatalf("address %s", s)
	}
	pool := x509.NewCertPool()
	pool.AddCert(l.tlsCfg.Load().Certificates[0].Leaf)
	ce := New(Config{Logger: testutil.Quiet, TLSClient: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12}})
	t.Cleanup(func() { ce.Close() })
	got := make(chan []byte, 1)
	if _, err := ce.Dial(ma.StringCast("/dns4/localhost/tcp/"+tcpPort(t, l.Addr())+"/tls/ws"), "/echo", func(c *Conn) Stage {
		c.WriteMessage(ws.OpBinary, []byte("by name, TLS 1.2"))
		return &funcStage{data: func(p []byte) { got <- append([]byte(nil), p...) }, closed: func(error) {}}
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if string(b) != "by name, TLS 1.2" {
			t.Fatalf("echo %q", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no echo")
	}
}

// A peer that streams records at a handshake it never finishes is cut at
// once, not when HandshakeTimeout expires: by the buffer bound when the
// handshake goroutine lags behind, else by crypto/tls rejecting the first
// record it cannot decrypt (which of the two depends on scheduling).
func TestTLSHandshakeFlood(t *testing.T) {
	cert, _ := testutil.SelfSigned(t, SelfSignedCertificate)
	reg := prometheus.NewRegistry()
	e, addr := startTLSEcho(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Registerer: reg, HandshakeTimeout: time.Minute}, "/ip4/127.0.0.1/tcp/0/tls/ws")
	nc, err := net.Dial("tcp", "127.0.0.1:"+tcpPort(t, addr))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Write(clientHello(t))
	// Application-data records the server cannot decrypt yet (it waits for
	// the client's Finished first).
	rec := make([]byte, recordHeaderLen+16<<10)
	rec[0], rec[1], rec[2], rec[3], rec[4] = 0x17, 3, 3, byte((16<<10)>>8), 0
	nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	for range 2 * maxHandshakeBuffered / len(rec) {
		if _, err := nc.Write(rec); err != nil {
			break
		}
	}
	cut := func() float64 {
		return testutil.CounterValue(t, reg, "swarmgate_connection_failures_total", map[string]string{"reason": "tls_handshake_flood"}) +
			testutil.CounterValue(t, reg, "swarmgate_connection_failures_total", map[string]string{"reason": "tls_local_alert"})
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return cut() == 1 && e.OpenConns() == 0 })
}
