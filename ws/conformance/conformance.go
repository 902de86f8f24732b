// Package conformance is an RFC 6455 server conformance suite in the style
// of the Autobahn test suite: framing, pings, reserved bits and opcodes,
// fragmentation, UTF-8 (including fail-fast), close codes, limits and bad
// opening handshakes. It drives raw TCP connections with hand-built frames
// against a WebSocket echo endpoint and checks every byte the server sends
// back, so it can test any server: the tests run it against an in-process
// engine and against a `loadgen serve` process.
package conformance

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/swarmgate/swarmgate/ws"
)

// Target is the server under test: a TCP address and an echo path that
// answers every message with the same opcode and payload.
type Target struct {
	Addr string // host:port
	Path string
	// MaxMessage is the server's message limit; a message one byte over it
	// must be refused with 1009. Zero skips the limit case.
	MaxMessage int64
	// LibP2PFallback says other paths serve libp2p (which accepts any
	// path), so an unknown path is upgraded instead of refused with 404.
	LibP2PFallback bool
	// TLS, when set, runs every case over TLS with this client
	// configuration (a /tls/ws target): 1-byte writes become 1-byte
	// records, so the server's record reassembly is exercised too.
	TLS *tls.Config
}

// Run runs every case as a parallel subtest and returns when all are done.
func Run(t *testing.T, tg Target) {
	t.Run("rfc6455", func(t *testing.T) {
		for _, c := range cases(tg) {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				c.run(t, tg)
			})
		}
	})
}

type testCase struct {
	name string
	run  func(t *testing.T, tg Target)
}

// conn is a raw client connection.
type conn struct {
	t   *testing.T
	nc  net.Conn
	br  *bufio.Reader
	dec ws.Decoder
	buf []byte
	// partial is a data message gathered from fragments so far.
	partial []byte
}

const ioTimeout = 10 * time.Second

func dialRaw(t *testing.T, tg Target) *conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", tg.Addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(ioTimeout))
	if tg.TLS != nil {
		tc := tls.Client(nc, tg.TLS)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		nc = tc
	}
	return &conn{t: t, nc: nc, br: bufio.NewReader(nc), dec: ws.NewDecoder(ws.Client, 1<<30)}
}

// open dials and completes a valid opening handshake.
func open(t *testing.T, tg Target) *conn {
	t.Helper()
	c := dialRaw(t, tg)
	key := ws.NewKey()
	c.write(ws.AppendRequest(nil, tg.Addr, tg.Path, key[:]))
	status, head := c.readResponse()
	if status != 101 {
		t.Fatalf("upgrade refused: %d\n%s", status, head)
	}
	if _, err := ws.ParseResponse([]byte(head), key[:], 0); err != nil {
		t.Fatalf("bad 101 response: %v\n%s", err, head)
	}
	return c
}

func (c *conn) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// writeChopped writes b in pieces of n bytes, pausing between them so the
// server sees separate reads.
func (c *conn) writeChopped(b []byte, n int) {
	c.t.Helper()
	for len(b) > 0 {
		k := min(n, len(b))
		c.write(b[:k])
		b = b[k:]
		time.Sleep(time.Millisecond)
	}
}

// readResponse reads an HTTP response head and returns its status.
func (c *conn) readResponse() (int, string) {
	c.t.Helper()
	var sb strings.Builder
	for {
		line, err := c.br.ReadString('\n')
		sb.WriteString(line)
		if err != nil {
			c.t.Fatalf("reading response: %v (got %q)", err, sb.String())
		}
		if line == "\r\n" {
			break
		}
	}
	head := sb.String()
	var status int
	fmt.Sscanf(head, "HTTP/1.1 %d", &status)
	return status, head
}

// frame is one message or control frame the server sent.
type frame struct {
	op      ws.Opcode
	payload []byte
	code    ws.CloseCode
}

// next reads the server's next complete message or control frame.
func (c *conn) next() (frame, error) {
	for {
		for len(c.buf) > 0 {
			ev, n, err := c.dec.Next(c.buf)
			payload := append([]byte(nil), ev.Payload...)
			c.buf = c.buf[n:]
			if err != nil {
				return frame{}, fmt.Errorf("server sent an invalid frame: %w", err)
			}
			switch ev.Kind {
			case ws.EventData:
				// A message's fragments may have control frames between
				// them (§5.4): what was gathered waits for the rest.
				c.partial = append(c.partial, payload...)
				if ev.End {
					msg := c.partial
					c.partial = nil
					return frame{op: ev.Op, payload: msg}, nil
				}
			case ws.EventPing:
				return frame{op: ws.OpPing, payload: payload}, nil
			case ws.EventPong:
				return frame{op: ws.OpPong, payload: payload}, nil
			case ws.EventClose:
				return frame{op: ws.OpClose, code: ev.Code, payload: payload}, nil
			}
		}
		var b [32 << 10]byte
		n, err := c.br.Read(b[:])
		c.buf = append(c.buf, b[:n]...)
		if err != nil && n == 0 {
			return frame{}, err
		}
	}
}

func (c *conn) expectMessage(op ws.Opcode, payload []byte) {
	c.t.Helper()
	f, err := c.next()
	if err != nil {
		c.t.Fatalf("want %v message of %d bytes: %v", op, len(payload), err)
	}
	if f.op != op || !bytes.Equal(f.payload, payload) {
		c.t.Fatalf("want op %v with %d bytes, got op %v with %d bytes (close code %d)", op, len(payload), f.op, len(f.payload), f.code)
	}
}

func (c *conn) expectPong(payload []byte) {
	c.t.Helper()
	c.expectMessage(ws.OpPong, payload)
}

// expectClose checks that the server sends Close with code (CloseNoStatus:
// an empty Close) and then closes TCP.
func (c *conn) expectClose(code ws.CloseCode) {
	c.t.Helper()
	f, err := c.next()
	if err != nil {
		c.t.Fatalf("want Close %d: %v", code, err)
	}
	if f.op != ws.OpClose || f.code != code {
		c.t.Fatalf("want Close %d, got op %v code %d (%d bytes)", code, f.op, f.code, len(f.payload))
	}
	c.expectTCPClose()
}

// expectFail checks that the server fails the connection with code: a
// Close carrying it, or (also allowed by RFC 6455 §7.1.7) just TCP closing.
func (c *conn) expectFail(code ws.CloseCode) {
	c.t.Helper()
	f, err := c.next()
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "reset") {
			return
		}
		c.t.Fatalf("want failure %d: %v", code, err)
	}
	if f.op != ws.OpClose || f.code != code {
		c.t.Fatalf("want Close %d, got op %v code %d", code, f.op, f.code)
	}
	c.expectTCPClose()
}

// expectTCPClose checks that the server closes TCP and sends no frame
// before it does.
func (c *conn) expectTCPClose() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [64]byte
	for {
		n, err := c.br.Read(b[:])
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.t.Fatalf("server did not close TCP")
			}
			return
		}
		if n > 0 && len(c.buf)+n > 0 {
			c.t.Fatalf("server sent %d bytes after its Close", n)
		}
	}
}

// Frame builders (client role: masked).
func fr(fin bool, op ws.Opcode, p []byte) []byte {
	return ws.AppendFrame(nil, ws.Client, fin, op, p)
}
func text(s string) []byte { return fr(true, ws.OpText, []byte(s)) }
func bin(p []byte) []byte  { return fr(true, ws.OpBinary, p) }
func closeFrame(code uint16, reason string) []byte {
	body := []byte{byte(code >> 8), byte(code)}
	return fr(true, ws.OpClose, append(body, reason...))
}

// withBits returns a masked frame with raw first-byte bits.
func withBits(b0 byte, p []byte) []byte {
	f := fr(true, ws.OpBinary, p)
	f[0] = b0
	return f
}

func payload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + i>>8)
	}
	return p
}

// expectEOF reads (and ignores) the rest of an HTTP refusal's body and
// checks that the server then closes TCP.
func (c *conn) expectEOF() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, c.br); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatalf("server did not close TCP after refusing")
		}
	}
}
