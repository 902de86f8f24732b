package libp2p

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/multistream"
	"github.com/swarmgate/swarmgate/mux"
	"github.com/swarmgate/swarmgate/security"
	"github.com/swarmgate/swarmgate/ws"
)

// The input reassembly of a server PeerConn (PeerConn.input, process,
// plainInput) is driven over a loopback connection: PeerConn needs a real
// engine.Conn, which only netpoll makes. A raw client writes the libp2p
// byte stream as WebSocket frames of its choosing; the engine hands each
// frame's payload to the stage as a separate Data call, so frame (and
// fragment) boundaries are exactly where PeerConn's input is split. The
// client seals the yamux bytes in Noise frames of its choosing too, so a
// yamux header is split across Noise frames as well as across reads.

// protoRecord is served by the input fuzz's host: it logs what a stream
// delivers.
const protoRecord = "/fuzz/record/1.0.0"

// connLog is what the server did with one connection: the recorder
// streams' events (consecutive data to one stream joined, so the log does
// not depend on how the input was cut), the first error PeerConn returned
// and how the connection ended.
type connLog struct {
	b      bytes.Buffer
	dataID uint32
	inData bool
	failed string // token of the error Data returned, "" if none
	ended  string // how Closed was called
	closed chan struct{}
}

func (l *connLog) data(id uint32, p []byte) {
	if !l.inData || l.dataID != id {
		fmt.Fprintf(&l.b, "|data %d:", id)
		l.inData, l.dataID = true, id
	}
	l.b.Write(p)
}

func (l *connLog) event(format string, args ...any) {
	l.inData = false
	fmt.Fprintf(&l.b, "|"+format, args...)
}

func errToken(err error) string {
	var pe *ws.ProtocolError
	switch {
	case err == nil:
		return "nil"
	case errors.As(err, &pe):
		return pe.Token
	}
	return "other"
}

// loggedStage is the host's libp2p stage, wrapped to record what PeerConn
// returns and when it ends. It passes the engine's optional hooks on.
type loggedStage struct {
	*PeerConn
	log *connLog
}

func (s *loggedStage) Data(c *engine.Conn, op ws.Opcode, p []byte, end bool) error {
	err := s.PeerConn.Data(c, op, p, end)
	if err != nil && s.log.failed == "" {
		s.log.failed = errToken(err)
	}
	return err
}

func (s *loggedStage) Closed(c *engine.Conn, err error) {
	s.PeerConn.Closed(c, err)
	s.log.ended = errToken(err)
	close(s.log.closed)
}

// recordStream logs a recorder stream's events.
type recordStream struct {
	log *connLog
	id  uint32
}

func (r *recordStream) OnData(_ *mux.Stream, p []byte) int { r.log.data(r.id, p); return len(p) }
func (r *recordStream) OnWritable(*mux.Stream)             {}
func (r *recordStream) OnFIN(*mux.Stream)                  { r.log.event("fin %d", r.id) }
func (r *recordStream) OnReset(_ *mux.Stream, err error)   { r.log.event("reset %d %v", r.id, err) }

// inputServer is a host whose connections are logged, keyed by the
// client's address.
type inputServer struct {
	h    *Host
	addr ma.Multiaddr
	mu   sync.Mutex
	logs map[string]*connLog
	byPC map[*PeerConn]*connLog
}

func startInputServer(t testing.TB) *inputServer {
	t.Helper()
	h, err := New(Config{Engine: engine.Config{Logger: testutil.Quiet, Registerer: prometheus.NewRegistry()}, InsecurePlaintext: true, Echo: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	s := &inputServer{h: h, logs: map[string]*connLog{}, byPC: map[*PeerConn]*connLog{}}
	h.Handle(protoRecord, func(pc *PeerConn, st *mux.Stream) mux.Handler {
		s.mu.Lock()
		l := s.byPC[pc]
		s.mu.Unlock()
		l.event("open %d", st.ID())
		return &recordStream{log: l, id: st.ID()}
	})
	l, err := h.Engine().Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"), engine.Routes{Fallback: func(c *engine.Conn) engine.Stage {
		pc, ok := h.Stage(c).(*PeerConn)
		if !ok {
			t.Error("upgrade refused")
			return nil
		}
		log := &connLog{closed: make(chan struct{})}
		s.mu.Lock()
		s.logs[c.RemoteAddr().String()] = log
		s.byPC[pc] = log
		s.mu.Unlock()
		return &loggedStage{PeerConn: pc, log: log}
	}})
	if err != nil {
		t.Fatal(err)
	}
	s.addr = l.Addr()
	return s
}

// rawClient is a WebSocket client on a plain TCP connection that writes
// frames exactly as told and collects what the server sends.
type rawClient struct {
	conn   net.Conn
	mu     sync.Mutex
	in     []byte // data payload received while keep is set
	keep   bool
	close  ws.CloseCode
	notify chan struct{} // something arrived
	pong   chan struct{}
	done   chan struct{} // the server closed TCP
}

func dialRaw(t testing.TB, addr ma.Multiaddr) *rawClient {
	t.Helper()
	conn, err := net.Dial("tcp", testutil.HostPort(t, addr))
	if err != nil {
		t.Fatal(err)
	}
	key := ws.NewKey()
	if _, err := conn.Write(ws.AppendRequest(nil, testutil.HostPort(t, addr), "/", key[:])); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var buf []byte
	for {
		chunk := make([]byte, 4096)
		n, err := conn.Read(chunk)
		if err != nil {
			t.Fatal(err)
		}
		buf = append(buf, chunk[:n]...)
		k, err := ws.ParseResponse(buf, key[:], 0)
		if err == ws.ErrNeedMore {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		buf = buf[k:]
		break
	}
	c := &rawClient{conn: conn, keep: true, notify: make(chan struct{}, 1), pong: make(chan struct{}, 1), done: make(chan struct{})}
	go c.read(buf)
	return c
}

func (c *rawClient) read(first []byte) {
	defer close(c.done)
	d := ws.NewDecoder(ws.Client, 0)
	buf := make([]byte, 64<<10)
	b := first
	for {
		for len(b) > 0 {
			ev, n, err := d.Next(b)
			b = b[n:]
			if err != nil {
				return
			}
			switch ev.Kind {
			case ws.EventData:
				c.mu.Lock()
				if c.keep {
					c.in = append(c.in, ev.Payload...)
				}
				c.mu.Unlock()
				signal(c.notify)
			case ws.EventPong:
				signal(c.pong)
			case ws.EventClose:
				c.mu.Lock()
				c.close = ev.Code
				c.mu.Unlock()
			}
		}
		c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.conn.Read(buf)
		if err != nil {
			return
		}
		b = buf[:n]
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// await runs step on everything received so far, again whenever more
// arrives, until it reports done.
func (c *rawClient) await(t testing.TB, step func(in []byte) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		in := bytes.Clone(c.in)
		c.mu.Unlock()
		if step(in) {
			return
		}
		select {
		case <-c.notify:
		case <-c.done:
			t.Fatal("connection closed while waiting for the server")
		case <-deadline:
			t.Fatal("timed out waiting for the server")
		}
	}
}

// answerMsg2 reads the server's multistream answer and Noise msg 2 and
// returns our msg 3. What the server sends after that is sealed and not
// needed: the outcome is the server's log.
func (c *rawClient) answerMsg2(t testing.TB, hs *security.Handshake) []byte {
	t.Helper()
	d, _ := multistream.NewDialer(ProtoNoise)
	d.Start(nil)
	var msg3 []byte
	off := 0
	c.await(t, func(in []byte) bool {
		if !d.Done() {
			_, n, err := d.Input(nil, in[off:])
			if err != nil {
				t.Fatal(err)
			}
			off += n
			if !d.Done() {
				return false
			}
		}
		out, n, err := hs.Input(nil, in[off:])
		if err != nil {
			t.Fatal(err)
		}
		off += n
		msg3 = append(msg3, out...)
		return hs.Done()
	})
	c.mu.Lock()
	c.keep, c.in = false, nil
	c.mu.Unlock()
	return msg3
}

// send writes pieces as WebSocket frames: one message of fragments, or
// one message per piece. Write errors are ignored: a server that failed
// closes the connection, and that is part of the outcome.
func (c *rawClient) send(pieces [][]byte, fragments bool) {
	var b []byte
	for i, p := range pieces {
		op, fin := ws.OpBinary, true
		if fragments {
			fin = i == len(pieces)-1
			if i > 0 {
				op = ws.OpContinuation
			}
		}
		b = ws.AppendFrame(b, ws.Client, fin, op, p)
	}
	c.conn.Write(b)
}

// barrier waits until the server has processed everything sent so far: a
// Ping is answered in the pass that reaches it.
func (c *rawClient) barrier(t testing.TB) bool {
	t.Helper()
	c.conn.Write(ws.AppendFrame(nil, ws.Client, true, ws.OpPing, nil))
	select {
	case <-c.pong:
		return true
	case <-c.done:
		return false
	case <-time.After(10 * time.Second):
		t.Fatal("no pong")
		return false
	}
}

// Security modes of an input run.
const (
	modeNoiseInlined = iota // Noise with yamux agreed inside the handshake
	modeNoise               // Noise, then multistream-select for the muxer
	modePlaintext           // /plaintext/2.0.0, then multistream-select
	numModes
)

// inputClient holds a client identity for each mode.
type inputClient struct {
	noise [2]*security.Noise // inlined muxer, none
	plain []byte             // our Exchange message
}

func newInputClient(t testing.TB) *inputClient {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &inputClient{}
	if c.noise[0], err = security.NewNoise(key, ProtoYamux); err != nil {
		t.Fatal(err)
	}
	if c.noise[1], err = security.NewNoise(key); err != nil {
		t.Fatal(err)
	}
	p, err := security.NewPlaintext(key.GetPublic())
	if err != nil {
		t.Fatal(err)
	}
	c.plain, _ = p.NewHandshake("").Start(nil)
	return c
}

// cutter splits a byte stream into pieces of the given sizes (cycled;
// none: the whole stream in one piece), carrying its position from one
// segment of the stream to the next.
type cutter struct {
	sizes []int
	i     int
}

func (c *cutter) cut(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		k := len(b)
		if len(c.sizes) > 0 {
			k = min(k, max(c.sizes[c.i%len(c.sizes)], 1))
			c.i++
		}
		out = append(out, b[:k])
		b = b[k:]
	}
	return out
}

// inputRun is one connection's outcome.
type inputRun struct {
	log    string
	failed string
	ended  string
	close  ws.CloseCode
}

func (r inputRun) String() string {
	return fmt.Sprintf("failed %q ended %q close %d log %q", r.failed, r.ended, r.close, r.log)
}

// runInput sends plain (the bytes after the security handshake: muxer
// negotiation unless inlined, then yamux) over a fresh connection: sealed
// in Noise frames of the given plaintext sizes (cycled, 0 an empty frame
// on the first pass; none: one frame), the stream cut into WebSocket
// frames of the given sizes (none: one frame per segment), as fragments
// of one message or as messages. It then closes and reports what the
// server did.
func runInput(t testing.TB, s *inputServer, cl *inputClient, mode int, plain []byte, frames, cuts []int, fragments bool) inputRun {
	t.Helper()
	c := dialRaw(t, s.addr)
	defer c.conn.Close()
	ct := &cutter{sizes: cuts}
	hello := multistream.AppendMessage(nil, multistream.ProtocolID)
	switch mode {
	case modePlaintext:
		a := multistream.AppendMessage(hello, ProtoPlaintext)
		a = append(a, cl.plain...)
		c.send(ct.cut(append(a, plain...)), fragments)
	default:
		hs := cl.noise[mode].NewInitiator(s.h.ID())
		a := multistream.AppendMessage(hello, ProtoNoise)
		a, _ = hs.Start(a)
		c.send(ct.cut(a), fragments)
		msg3 := c.answerMsg2(t, hs)
		sess := hs.Session()
		b := msg3
		rest := plain
		for i := 0; len(rest) > 0; i++ {
			k := len(rest)
			if len(frames) > 0 {
				k = min(k, frames[i%len(frames)])
				if k == 0 && i >= len(frames) {
					k = 1
				}
			}
			k = min(k, security.MaxFramePlaintext)
			b, _ = sess.AppendFrame(b, rest[:k])
			rest = rest[k:]
		}
		c.send(ct.cut(b), fragments)
	}
	c.conn.Write(ws.AppendClose(nil, ws.Client, ws.CloseNormal, ""))
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("server did not close")
	}
	s.mu.Lock()
	log := s.logs[c.conn.LocalAddr().String()]
	s.mu.Unlock()
	if log == nil {
		t.Fatal("no log for the connection")
	}
	select {
	case <-log.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("stage not closed")
	}
	s.mu.Lock()
	delete(s.logs, c.conn.LocalAddr().String())
	for pc, l := range s.byPC {
		if l == log {
			delete(s.byPC, pc)
		}
	}
	s.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	return inputRun{log: log.b.String(), failed: log.failed, ended: log.ended, close: c.close}
}

// Seeds: yamux byte streams a client sends after the security handshake.

func msMsgs(texts ...string) []byte {
	var b []byte
	for _, s := range texts {
		b = multistream.AppendMessage(b, s)
	}
	return b
}

func yframe(typ mux.FrameType, flags mux.Flags, id uint32, payload []byte) []byte {
	h := mux.Header{Type: typ, Flags: flags, StreamID: id, Length: uint32(len(payload))}
	if typ != mux.TypeData {
		h.Length = 0
	}
	return append(mux.AppendHeader(nil, h), payload...)
}

// muxerNego is the muxer negotiation a client pipelines before yamux when
// the muxer was not agreed inside the handshake.
var muxerNego = msMsgs(multistream.ProtocolID, ProtoYamux)

// inputSeeds are yamux streams from the side that opens streams 1, 2, 3
// (ids odd for a client, even for a server).
func inputSeeds(server bool) [][]byte {
	id := func(n uint32) uint32 {
		if server {
			return 2 * n
		}
		return 2*n - 1
	}
	rec := msMsgs(multistream.ProtocolID, protoRecord)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	return [][]byte{
		// One recorder stream: open, negotiate with data behind, FIN.
		cat(yframe(mux.TypeWindowUpdate, mux.FlagSYN, id(1), nil),
			yframe(mux.TypeData, 0, id(1), append(bytes.Clone(rec), "hello"...)),
			yframe(mux.TypeData, mux.FlagFIN, id(1), []byte("world"))),
		// Two interleaved streams, a ping, an RST, GoAway(normal).
		cat(yframe(mux.TypeData, mux.FlagSYN, id(1), rec[:7]),
			yframe(mux.TypeData, mux.FlagSYN, id(2), rec),
			yframe(mux.TypeData, 0, id(1), rec[7:]),
			yframe(mux.TypePing, mux.FlagSYN, 0, nil),
			yframe(mux.TypeData, 0, id(2), bytes.Repeat([]byte("x"), 300)),
			yframe(mux.TypeData, 0, id(1), []byte("one")),
			yframe(mux.TypeWindowUpdate, mux.FlagRST, id(2), nil),
			yframe(mux.TypeData, mux.FlagFIN, id(1), []byte("two")),
			yframe(mux.TypeGoAway, 0, 0, nil)),
		// A refused protocol, then ping and echo beside a recorder.
		cat(yframe(mux.TypeData, mux.FlagSYN, id(1), msMsgs(multistream.ProtocolID, "/nope/1.0.0", protoRecord)),
			yframe(mux.TypeData, mux.FlagSYN, id(2), append(msMsgs(multistream.ProtocolID, ProtoPing), bytes.Repeat([]byte{9}, PingSize)...)),
			yframe(mux.TypeData, mux.FlagSYN, id(3), append(msMsgs(multistream.ProtocolID, ProtoEcho), "echo"...)),
			yframe(mux.TypeData, mux.FlagFIN, id(1), []byte("after na"))),
		// A protocol violation after good data: the outcome is a failure.
		cat(yframe(mux.TypeData, mux.FlagSYN, id(1), append(bytes.Clone(rec), "kept"...)),
			[]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
			yframe(mux.TypeData, 0, id(1), []byte("dropped"))),
		// A header split over the end of the input.
		cat(yframe(mux.TypeData, mux.FlagSYN, id(1), append(bytes.Clone(rec), "tail"...)), []byte{0, 0, 0}),
	}
}

// inputCase is one seed with its framing, for the fuzz target and the
// tests.
func inputCase(mode int, y []byte) []byte {
	if mode == modeNoiseInlined {
		return y
	}
	return append(bytes.Clone(muxerNego), y...)
}

// FuzzPeerConnInput feeds a server connection the same libp2p byte stream
// twice, over two connections: once whole (one WebSocket message per
// segment, one Noise frame) and once split as the fuzzer chooses (Noise
// frame sizes, WebSocket frame sizes, fragments or messages). mode picks
// Noise with the muxer inlined, Noise with muxer negotiation, or
// plaintext (bit 2: fragments). Both connections must end the same way:
// the same recorder streams opened, the same bytes delivered to them, the
// same FINs and resets, the same failure and close code.
func FuzzPeerConnInput(f *testing.F) {
	srv := startInputServer(f)
	cl := newInputClient(f)
	for i, y := range inputSeeds(false) {
		for mode := range numModes {
			f.Add(uint8(mode|i%2<<2), inputCase(mode, y), []byte{11, 0, 5, 30}, []byte{0, 2, 16, 40})
		}
	}
	f.Fuzz(func(t *testing.T, mode uint8, plain, frames, cuts []byte) {
		if len(plain) > 8<<10 || len(frames) > 64 || len(cuts) > 256 {
			return
		}
		m := int(mode&3) % numModes
		fs := make([]int, len(frames))
		for i, b := range frames {
			fs[i] = int(b)
		}
		cs := make([]int, len(cuts))
		for i, b := range cuts {
			cs[i] = int(b) + 1
		}
		whole := runInput(t, srv, cl, m, plain, nil, nil, false)
		split := runInput(t, srv, cl, m, plain, fs, cs, mode&4 != 0)
		if whole != split {
			t.Fatalf("whole: %v\nsplit: %v", whole, split)
		}
	})
}

// Every truncated prefix of a valid stream is need-more: fed one byte per
// WebSocket frame, with a barrier after each, the connection neither fails
// nor closes, and in the end it does what the whole stream does.
func TestPeerConnInputBytewise(t *testing.T) {
	srv := startInputServer(t)
	cl := newInputClient(t)
	for _, mode := range []int{modePlaintext, modeNoise} {
		y := inputSeeds(false)[1]
		plain := inputCase(mode, y)
		whole := runInput(t, srv, cl, mode, plain, nil, nil, false)
		if whole.failed != "" || whole.close != ws.CloseNormal || !bytes.Contains([]byte(whole.log), []byte("|fin 1")) {
			t.Fatalf("mode %d whole: %v", mode, whole)
		}
		// Byte by byte, checking after each byte that the server is still
		// waiting for more.
		bytewise := runInputChecked(t, srv, cl, mode, plain)
		if bytewise != whole {
			t.Fatalf("mode %d:\nwhole:    %v\nbytewise: %v", mode, whole, bytewise)
		}
	}
}

// runInputChecked is runInput with one-byte Noise frames (Noise modes)
// and one-byte WebSocket frames, each followed by a barrier and a check
// that the server has neither failed nor closed.
func runInputChecked(t *testing.T, s *inputServer, cl *inputClient, mode int, plain []byte) inputRun {
	t.Helper()
	c := dialRaw(t, s.addr)
	defer c.conn.Close()
	s.mu.Lock()
	log := s.logs[c.conn.LocalAddr().String()]
	s.mu.Unlock()
	sent := 0
	send := func(b []byte) {
		for i := range b {
			c.send([][]byte{b[i : i+1]}, false)
			sent++
			select {
			case <-log.closed:
				t.Fatalf("server closed after %d bytes: %q", sent, log.failed)
			default:
			}
			if !c.barrier(t) {
				t.Fatalf("server closed after %d bytes", sent)
			}
		}
	}
	hello := multistream.AppendMessage(nil, multistream.ProtocolID)
	switch mode {
	case modePlaintext:
		a := multistream.AppendMessage(hello, ProtoPlaintext)
		a = append(a, cl.plain...)
		send(append(a, plain...))
	default:
		hs := cl.noise[mode].NewInitiator(s.h.ID())
		a := multistream.AppendMessage(hello, ProtoNoise)
		a, _ = hs.Start(a)
		send(a)
		msg3 := c.answerMsg2(t, hs)
		b := msg3
		for i := range plain {
			b, _ = hs.Session().AppendFrame(b, plain[i:i+1])
		}
		send(b)
	}
	c.conn.Write(ws.AppendClose(nil, ws.Client, ws.CloseNormal, ""))
	<-c.done
	<-log.closed
	c.mu.Lock()
	defer c.mu.Unlock()
	return inputRun{log: log.b.String(), failed: log.failed, ended: log.ended, close: c.close}
}
