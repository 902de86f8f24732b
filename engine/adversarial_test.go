package engine

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/ws"
)

// limitedEcho is the raw echo with a protocol that bounds what a compliant
// peer may have in flight (as yamux windows do for libp2p).
type limitedEcho struct {
	Stage
	allowance int
}

func (l limitedEcho) InboundAllowance() int { return l.allowance }

func (l limitedEcho) Tick(c *Conn, now time.Time) { l.Stage.(Ticker).Tick(c, now) }

// A peer that sends and never reads, on a connection whose protocol
// allows 1 MiB in flight: netpoll's read-ahead is cut at the allowance,
// not at MaxInboundBuffered (32 MiB), so each such peer cannot make the
// server hold 32 MiB for WriteTimeout. netpoll reads on between the
// engine's checks (every pass, and every 10 ms while a flush waits), so
// what the peer sends meanwhile comes on top: on loopback a few MiB, the
// test's bound is half of MaxInboundBuffered. The server socket's receive
// buffer is pinned at 128 KiB (the kernel doubles it) rather than left to
// loopback autotuning.
func TestWaitReadAheadBoundedByAllowance(t *testing.T) {
	const allowance = 1 << 20
	reg := prometheus.NewRegistry()
	e := New(Config{Logger: testutil.Quiet, Registerer: reg, WriteTimeout: 5 * time.Second})
	t.Cleanup(func() { e.Close() })
	conns := make(chan *Conn, 1)
	l, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"), Routes{Paths: map[string]StageFunc{
		"/echo": func(c *Conn) Stage {
			unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 128<<10)
			conns <- c
			return limitedEcho{Echo(c), allowance}
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	addr := hostPort(t, l.Addr())
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.(*net.TCPConn).SetReadBuffer(4 << 10) // and we never read
	key := ws.NewKey()
	nc.Write(ws.AppendRequest(nil, addr, "/echo", key[:]))
	c := <-conns
	stop := make(chan struct{})
	peak := make(chan int)
	go func() {
		p := 0
		for {
			p = max(p, c.nc.Reader().Len())
			select {
			case <-stop:
				peak <- p
				return
			case <-time.After(100 * time.Microsecond):
			}
		}
	}()
	msg := ws.AppendFrame(nil, ws.Client, true, ws.OpBinary, make([]byte, 32<<10))
	sent := 0
	nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for sent < 64<<20 {
		n, err := nc.Write(msg)
		sent += n
		if err != nil {
			break
		}
	}
	testutil.WaitFor(t, 10*time.Second, func() bool { return e.OpenConns() == 0 })
	close(stop)
	p := <-peak
	t.Logf("sent %d MiB; netpoll's read-ahead peaked at %d KiB (allowance %d KiB)", sent>>20, p>>10, allowance>>10)
	if got := testutil.CounterValue(t, reg, "swarmgate_connection_failures_total", map[string]string{"reason": "inbound_flood"}); got != 1 {
		t.Fatalf("inbound_flood counted %v times", got)
	}
	if p > DefaultMaxInboundBuffered/2 {
		t.Fatalf("read-ahead reached %d KiB with an allowance of %d KiB", p>>10, allowance>>10)
	}
}

// holdConn passes a client's first pass writes through, then holds the
// rest until release sends them in one write: records pipelined behind
// the handshake.
type holdConn struct {
	net.Conn
	pass int
	buf  []byte
}

func (h *holdConn) Write(p []byte) (int, error) {
	if h.pass > 0 {
		h.pass--
		return h.Conn.Write(p)
	}
	h.buf = append(h.buf, p...)
	return len(p), nil
}

func (h *holdConn) release() error {
	_, err := h.Conn.Write(h.buf)
	h.buf = nil
	return err
}

// Review item 4: records that arrive behind the TLS handshake (here the
// client's Finished, its upgrade request and a WebSocket message, all in
// one TCP segment) are run through the pipeline on the handshake's
// goroutine, guarded (a panic there ends the connection, not the process:
// TestGuardedPanicEndsConnectionOnly), and served: the upgrade succeeds
// and the message is echoed. TLS 1.3 only: a TLS 1.2 client waits for the
// server's Finished before it may send data.
func TestTLSRecordsPipelinedBehindHandshake(t *testing.T) {
	cert, pool := testutil.SelfSigned(t, SelfSignedCertificate)
	_, addr := startTLSEcho(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}, "/ip4/127.0.0.1/tcp/0/tls/ws")
	hp := "127.0.0.1:" + tcpPort(t, addr)
	nc, err := net.Dial("tcp", hp)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	hc := &holdConn{Conn: nc, pass: 1} // the ClientHello passes, the Finished waits
	tc := tls.Client(hc, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13})
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	key := ws.NewKey()
	tc.Write(ws.AppendRequest(nil, hp, "/echo", key[:]))
	tc.Write(ws.AppendFrame(nil, ws.Client, true, ws.OpBinary, []byte("pipelined")))
	if err := hc.release(); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.HasSuffix(got, []byte("pipelined")) {
		n, err := tc.Read(buf)
		if err != nil {
			t.Fatalf("%v after %q", err, got)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 101")) {
		t.Fatalf("%q", got)
	}
}

// Review item 8: the raw echo gathers nothing (a message's fragments are
// echoed as they arrive, so 4 MiB of an unfinished message come back
// before it ends, and nothing is charged) and a message must end within
// EchoMessageTimeout of its start: a peer that starts one and stalls is
// closed (1008, echo_message_timeout).
func TestRawEchoStreamsAndTimesOut(t *testing.T) {
	defer func(d time.Duration) { echoMessageTimeout = d }(echoMessageTimeout)
	echoMessageTimeout = 3 * time.Second
	reg := prometheus.NewRegistry()
	e, _, addr := startEcho(t, Config{Registerer: reg, Tick: 20 * time.Millisecond})
	wc, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	const size = 4 << 20
	echoed := make(chan error, 1)
	go func() {
		_, r, err := wc.NextReader()
		if err == nil {
			// All but the tail still in gorilla's write buffer.
			_, err = io.ReadFull(r, make([]byte, size-64<<10))
		}
		echoed <- err
	}()
	w, err := wc.NextWriter(websocket.BinaryMessage)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	chunk := make([]byte, 64<<10)
	for range size / len(chunk) {
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	// The message is not finished (no Close of w): its fragments come back.
	if err := <-echoed; err != nil {
		t.Fatalf("the unfinished message's bytes were not echoed: %v", err)
	}
	if used := e.Memory().Used(); used != 0 {
		t.Fatalf("%d bytes held for an unfinished message", used)
	}
	var werr error
	for werr == nil && time.Since(start) < 10*time.Second {
		_, _, werr = wc.NextReader()
	}
	if took := time.Since(start); !websocket.IsCloseError(werr, 1008) || took < echoMessageTimeout || took > echoMessageTimeout+2*time.Second {
		t.Fatalf("after %v: %v", time.Since(start), werr)
	}
	if n := testutil.CounterValue(t, reg, "swarmgate_connection_failures_total", map[string]string{"reason": "echo_message_timeout"}); n != 1 {
		t.Fatalf("echo_message_timeout counted %v times", n)
	}
}
