package engine

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	gobwas "github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/gorilla/websocket"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/ws"
	"github.com/swarmgate/swarmgate/ws/conformance"
)

// startEcho runs an engine with the echo handler on /echo and returns the
// engine and the listener's host:port.
func startEcho(t testing.TB, cfg Config) (*Engine, *Listener, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testutil.Quiet
	}
	e := New(cfg)
	t.Cleanup(func() { e.Close() })
	l, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"), Routes{Paths: map[string]StageFunc{"/echo": Echo}})
	if err != nil {
		t.Fatal(err)
	}
	return e, l, hostPort(t, l.Addr())
}

func hostPort(t testing.TB, m ma.Multiaddr) string {
	a, err := parseWSAddr(m)
	if err != nil {
		t.Fatal(err)
	}
	return a.hostPort()
}

func TestConformance(t *testing.T) {
	_, _, addr := startEcho(t, Config{MaxMessageSize: 1 << 20})
	conformance.Run(t, conformance.Target{Addr: addr, Path: "/echo", MaxMessage: 1 << 20})
}

func TestListenAddrs(t *testing.T) {
	e := New(Config{Logger: testutil.Quiet})
	defer e.Close()
	for _, s := range []string{"/ip4/127.0.0.1/tcp/0/ws", "/ip6/::1/tcp/0/ws"} {
		l, err := e.Listen(ma.StringCast(s), Routes{Fallback: Echo})
		if err != nil {
			if strings.HasPrefix(s, "/ip6") {
				t.Logf("no IPv6 loopback here: %v", err)
				continue
			}
			t.Fatal(err)
		}
		if strings.Contains(l.Addr().String(), "/tcp/0/") || !strings.HasSuffix(l.Addr().String(), "/ws") {
			t.Fatalf("listen address %s has no real port", l.Addr())
		}
	}
	for _, s := range []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0/http"} {
		if _, err := e.Listen(ma.StringCast(s), Routes{}); err == nil {
			t.Fatalf("%s accepted", s)
		}
	}
}

var echoSizes = []int{0, 125, 126, 127, 65535, 65536, 16 << 20}

func TestGorillaClient(t *testing.T) {
	_, _, addr := startEcho(t, Config{})
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, n := range echoSizes {
		for _, op := range []int{websocket.BinaryMessage, websocket.TextMessage} {
			msg := bytes.Repeat([]byte("a"), n)
			if err := c.WriteMessage(op, msg); err != nil {
				t.Fatal(err)
			}
			gotOp, got, err := c.ReadMessage()
			if err != nil || gotOp != op || !bytes.Equal(got, msg) {
				t.Fatalf("echo %d bytes op %d: op %d len %d err %v", n, op, gotOp, len(got), err)
			}
		}
	}
	// A message gorilla writes in fragments.
	w, _ := c.NextWriter(websocket.BinaryMessage)
	for i := 0; i < 10; i++ {
		w.Write(bytes.Repeat([]byte{byte(i)}, 5000))
		if f, ok := w.(interface{ Flush() error }); ok {
			f.Flush()
		}
	}
	w.Close()
	if _, got, err := c.ReadMessage(); err != nil || len(got) != 50000 || got[49999] != 9 {
		t.Fatalf("fragmented echo: %d bytes, %v", len(got), err)
	}
	// Ping: gorilla hands our pong to its handler.
	pong := make(chan string, 1)
	c.SetPongHandler(func(s string) error { pong <- s; return nil })
	c.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second))
	c.WriteMessage(websocket.TextMessage, []byte("x"))
	c.ReadMessage()
	select {
	case s := <-pong:
		if s != "are you there" {
			t.Fatalf("pong %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong")
	}
	// Close: our echo of 4001 reaches gorilla as a CloseError.
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "done"))
	_, _, err = c.ReadMessage()
	if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != 4001 {
		t.Fatalf("close: %v", err)
	}
}

func TestGobwasClient(t *testing.T) {
	_, _, addr := startEcho(t, Config{})
	conn, _, _, err := gobwas.Dial(context.Background(), "ws://"+addr+"/echo")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, n := range echoSizes {
		msg := bytes.Repeat([]byte{0x5a}, n)
		if err := wsutil.WriteClientMessage(conn, gobwas.OpBinary, msg); err != nil {
			t.Fatal(err)
		}
		got, op, err := wsutil.ReadServerData(conn)
		if err != nil || op != gobwas.OpBinary || !bytes.Equal(got, msg) {
			t.Fatalf("echo %d: op %v len %d err %v", n, op, len(got), err)
		}
	}
	// Fragments with a ping in between, written frame by frame.
	frames := []gobwas.Frame{
		gobwas.NewFrame(gobwas.OpText, false, []byte("frag")),
		gobwas.NewPingFrame([]byte("mid")),
		gobwas.NewFrame(gobwas.OpContinuation, true, []byte("ment")),
	}
	for _, f := range frames {
		if err := gobwas.WriteFrame(conn, gobwas.MaskFrame(f)); err != nil {
			t.Fatal(err)
		}
	}
	// The echo streams the message as it arrives: its first fragment, the
	// pong, then the rest.
	for _, want := range []struct {
		op      gobwas.OpCode
		fin     bool
		payload string
	}{{gobwas.OpText, false, "frag"}, {gobwas.OpPong, true, "mid"}, {gobwas.OpContinuation, true, "ment"}} {
		f, err := gobwas.ReadFrame(conn)
		if err != nil || f.Header.OpCode != want.op || f.Header.Fin != want.fin || string(f.Payload) != want.payload {
			t.Fatalf("want %v fin=%v %q, got %+v %q %v", want.op, want.fin, want.payload, f.Header, f.Payload, err)
		}
	}
	gobwas.WriteFrame(conn, gobwas.MaskFrame(gobwas.NewCloseFrame(gobwas.NewCloseFrameBody(gobwas.StatusNormalClosure, "bye"))))
	f, err := gobwas.ReadFrame(conn)
	if err != nil || f.Header.OpCode != gobwas.OpClose {
		t.Fatalf("close echo: %+v %v", f.Header, err)
	}
	if code, _ := gobwas.ParseCloseFrameData(f.Payload); code != gobwas.StatusNormalClosure {
		t.Fatalf("close code %d", code)
	}
}

// recorder is a client stage that collects messages.
type recorder struct {
	mu     sync.Mutex
	msgs   chan []byte
	cur    []byte
	closed chan error
}

func newRecorder() *recorder {
	return &recorder{msgs: make(chan []byte, 16), closed: make(chan error, 1)}
}

func (r *recorder) Data(c *Conn, op ws.Opcode, p []byte, end bool) error {
	r.cur = append(r.cur, p...)
	if end {
		r.msgs <- r.cur
		r.cur = nil
	}
	return nil
}

func (r *recorder) Closed(c *Conn, err error) { r.closed <- err }

// Our client role against a gorilla server.
func TestClientAgainstGorillaServer(t *testing.T) {
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			op, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			c.WriteMessage(op, msg)
		}
	}))
	defer srv.Close()
	a := srv.Listener.Addr().(*net.TCPAddr)
	e := New(Config{Logger: testutil.Quiet})
	defer e.Close()
	rec := newRecorder()
	opened := make(chan *Conn, 1)
	conn, err := e.Dial(ma.StringCast("/ip4/127.0.0.1/tcp/"+itoa(a.Port)+"/ws"), "/", func(c *Conn) Stage {
		opened <- c
		return rec
	})
	if err != nil {
		t.Fatal(err)
	}
	<-opened
	for _, n := range echoSizes {
		msg := bytes.Repeat([]byte{0xa5}, n)
		conn.Do(func(c *Conn) { c.WriteMessage(ws.OpBinary, msg) })
		select {
		case got := <-rec.msgs:
			if !bytes.Equal(got, msg) {
				t.Fatalf("echo of %d bytes: got %d", n, len(got))
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no echo of %d bytes", n)
		}
	}
	conn.CloseWith(ws.CloseNormal, "bye")
	select {
	case err := <-rec.closed:
		if err != nil {
			t.Fatalf("close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not closed")
	}
}

func itoa(n int) string { return strings.TrimSpace(strings.Repeat(" ", 0) + fmtInt(n)) }

func fmtInt(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

// openIdle dials n connections with the engine's client role, each echoing
// one message, and waits until all are open.
func openIdle(t testing.TB, e *Engine, addr ma.Multiaddr, n int) []*Conn {
	t.Helper()
	done := make(chan error, n)
	conns := make([]*Conn, 0, n)
	for i := 0; i < n; i++ {
		c, err := e.Dial(addr, "/echo", func(c *Conn) Stage {
			c.WriteMessage(ws.OpBinary, []byte("hello"))
			return &oneEcho{done: done}
		})
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	timeout := time.After(60 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-timeout:
			t.Fatalf("%d of %d connections not echoed", n-i, n)
		}
	}
	return conns
}

type oneEcho struct{ done chan<- error }

func (o *oneEcho) Data(c *Conn, op ws.Opcode, p []byte, end bool) error {
	if end && o.done != nil {
		o.done <- nil
		o.done = nil
	}
	return nil
}

func (o *oneEcho) Closed(c *Conn, err error) {
	if o.done != nil {
		o.done <- err
	}
}

// 5,000 idle connections: no goroutine per connection on either end.
func TestScaleIdleGoroutinesFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 10,000 sockets")
	}
	srv, l, _ := startEcho(t, Config{})
	cli := New(Config{Logger: testutil.Quiet})
	defer cli.Close()
	openIdle(t, cli, l.Addr(), 10) // warm the pools
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	conns := openIdle(t, cli, l.Addr(), 5000)
	time.Sleep(300 * time.Millisecond)
	after := runtime.NumGoroutine()
	if after-before >= 50 {
		t.Fatalf("goroutines grew by %d for 5000 idle connections", after-before)
	}
	if got := srv.OpenConns(); got != 5010 {
		t.Fatalf("server has %d open connections, want 5010", got)
	}
	t.Logf("5000 idle connections: goroutines %d -> %d", before, after)
	runtime.KeepAlive(conns)
}

// 500 clients sending their upgrade one byte at a time hold no goroutine on
// the server and do not delay another client's upgrade.
func TestSlowUpgradersDoNotBlock(t *testing.T) {
	srv, _, addr := startEcho(t, Config{})
	req := ws.AppendRequest(nil, addr, "/echo", []byte("dGhlIHNhbXBsZSBub25jZQ=="))
	const slow = 500
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	before := runtime.NumGoroutine()
	for i := 0; i < slow; i++ {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, b := range req[:len(req)-1] { // never finishes
				select {
				case <-ctx.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
				if _, err := nc.Write([]byte{b}); err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // the slow requests are under way
	start := time.Now()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.WriteMessage(websocket.TextMessage, []byte("fast"))
	if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "fast" {
		t.Fatalf("fast client: %q %v", msg, err)
	}
	took := time.Since(start)
	c.Close()
	// The server side holds no goroutine per slow client: beyond the test's
	// own 500 writers there are only netpoll's pool workers handling the
	// byte that just arrived. Take the least of several samples, since
	// those come and go with every byte.
	extra := 1 << 30
	for i := 0; i < 20; i++ {
		extra = min(extra, runtime.NumGoroutine()-before-slow)
		time.Sleep(5 * time.Millisecond)
	}
	if extra > 50 {
		t.Fatalf("%d goroutines beyond the test's writers", extra)
	}
	if took > 2*time.Second {
		t.Fatalf("fast upgrade took %v behind %d slow ones", took, slow)
	}
	if srv.OpenConns() < slow {
		t.Fatalf("slow clients were dropped: %d open", srv.OpenConns())
	}
	t.Logf("fast upgrade + echo in %v beside %d slow upgraders", took, slow)
}

func TestHandshakeTimeout(t *testing.T) {
	srv, _, addr := startEcho(t, Config{HandshakeTimeout: 300 * time.Millisecond, Tick: 20 * time.Millisecond})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Write([]byte("GET /echo HTTP/1.1\r\n")) // and then nothing
	start := time.Now()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("want EOF at the handshake timeout, got %v", err)
	}
	if took := time.Since(start); took < 250*time.Millisecond || took > 2*time.Second {
		t.Fatalf("closed after %v, want about 300ms", took)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return srv.OpenConns() == 0 })
}

// An open connection is not subject to the handshake timeout.
func TestOpenConnectionOutlivesHandshakeTimeout(t *testing.T) {
	_, _, addr := startEcho(t, Config{HandshakeTimeout: 200 * time.Millisecond, Tick: 20 * time.Millisecond})
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(600 * time.Millisecond)
	c.WriteMessage(websocket.BinaryMessage, []byte("still here"))
	if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "still here" {
		t.Fatalf("%q %v", msg, err)
	}
}

// Our Close waits for the peer's answer at most CloseTimeout, then TCP ends.
func TestCloseTimeout(t *testing.T) {
	e := New(Config{Logger: testutil.Quiet, CloseTimeout: 200 * time.Millisecond, Tick: 20 * time.Millisecond})
	defer e.Close()
	srvConn := make(chan *Conn, 1)
	l, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"), Routes{Paths: map[string]StageFunc{
		"/hold": func(c *Conn) Stage { srvConn <- c; return &oneEcho{} },
	}})
	if err != nil {
		t.Fatal(err)
	}
	nc, _, _, err := gobwas.Dial(context.Background(), "ws://"+hostPort(t, l.Addr())+"/hold")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sc := <-srvConn
	sc.CloseWith(ws.CloseGoingAway, "draining")
	f, err := gobwas.ReadFrame(nc)
	if err != nil || f.Header.OpCode != gobwas.OpClose {
		t.Fatalf("want Close, got %+v %v", f.Header, err)
	}
	if code, reason := gobwas.ParseCloseFrameData(f.Payload); code != 1001 || reason != "draining" {
		t.Fatalf("close %d %q", code, reason)
	}
	// We never answer; the server must end TCP by itself.
	start := time.Now()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("want EOF, got %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("TCP closed after %v", took)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return e.OpenConns() == 0 })
}

// A client that sends echo requests and never reads: the engine stops
// processing its input once the socket will take no more, never queues
// without bound, and cuts the connection at WriteTimeout.
func TestBackpressurePeerNeverReads(t *testing.T) {
	srv, _, addr := startEcho(t, Config{WriteTimeout: 500 * time.Millisecond, MaxInboundBuffered: 4 << 20})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.(*net.TCPConn).SetReadBuffer(4 << 10) // and we never read
	key := ws.NewKey()
	nc.Write(ws.AppendRequest(nil, addr, "/echo", key[:]))
	msg := ws.AppendFrame(nil, ws.Client, true, ws.OpBinary, make([]byte, 32<<10))
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	sent := 0
	nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for sent < 256<<20 {
		n, err := nc.Write(msg)
		sent += n
		if err != nil {
			break // the server cut us, or stopped reading and our window filled
		}
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 64<<20 {
		t.Fatalf("heap grew by %d MiB while a peer did not read", grew>>20)
	}
	// Under heavy load (the race detector on two shared cores) the cut can
	// reach the client late; the bound above is what matters.
	for deadline := time.Now().Add(20 * time.Second); srv.OpenConns() != 0; {
		if time.Now().After(deadline) {
			t.Fatal("the server never cut a peer that does not read")
		}
		time.Sleep(25 * time.Millisecond)
	}
	if sent >= 256<<20 {
		t.Fatalf("the server took all %d MiB from a peer that never reads", sent>>20)
	}
	t.Logf("server took %d MiB before cutting the peer", sent>>20)
}

// A peer that reads, only slower than it writes, is slowed down, not cut:
// every echo arrives. (Its unread volume stays under MaxInboundBuffered;
// past that a peer is cut, because netpoll keeps reading while we wait.)
func TestBackpressureSlowReader(t *testing.T) {
	_, _, addr := startEcho(t, Config{})
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n, size = 96, 256 << 10 // 24 MiB each way
	go func() {
		msg := make([]byte, size)
		for i := 0; i < n; i++ {
			msg[0] = byte(i)
			if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				return
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	for i := 0; i < n; i++ {
		_, got, err := c.ReadMessage()
		if err != nil || len(got) != size || got[0] != byte(i) {
			t.Fatalf("echo %d: %d bytes, %v", i, len(got), err)
		}
		if i%16 == 0 {
			time.Sleep(20 * time.Millisecond) // a slow reader
		}
	}
}

// The Origin hook refuses a browser origin with 403; other origins and
// clients without Origin get through.
func TestCheckOrigin(t *testing.T) {
	_, _, addr := startEcho(t, Config{CheckOrigin: func(origin, host []byte) bool {
		return string(origin) == "https://good.example"
	}})
	for _, tc := range []struct {
		origin string
		status int
	}{{"https://good.example", 101}, {"https://evil.example", 403}, {"", 101}} {
		h := http.Header{}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		c, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/echo", h)
		if c != nil {
			c.Close()
		}
		got := 0
		if resp != nil {
			got = resp.StatusCode
		}
		if got != tc.status {
			t.Fatalf("origin %q: status %d (%v), want %d", tc.origin, got, err, tc.status)
		}
	}
}
