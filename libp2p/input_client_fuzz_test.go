package libp2p

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/multistream"
	"github.com/swarmgate/swarmgate/mux"
	"github.com/swarmgate/swarmgate/security"
	"github.com/swarmgate/swarmgate/ws"
)

// The client role of the same reassembly: our host dials a raw WebSocket
// server on loopback, which answers the upgrade and then writes the
// server's side of the byte stream in frames of its choosing.

// inputDialer is a client host whose connections are logged (one at a
// time), and the raw server it dials.
type inputDialer struct {
	h     *Host
	reg   *prometheus.Registry
	ln    net.Listener
	addr  ma.Multiaddr
	id    peer.ID
	noise [2]*security.Noise // the server's: inlined muxer, none
	plain []byte             // the server's Exchange message
	mu    sync.Mutex
	log   *connLog // the connection being run
}

func startInputDialer(t testing.TB) *inputDialer {
	t.Helper()
	d := &inputDialer{reg: prometheus.NewRegistry()}
	var err error
	d.h, err = New(Config{Engine: engine.Config{Logger: testutil.Quiet, Registerer: d.reg}, InsecurePlaintext: true, Echo: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.h.Close() })
	d.h.Handle(protoRecord, func(_ *PeerConn, st *mux.Stream) mux.Handler {
		d.mu.Lock()
		l := d.log
		d.mu.Unlock()
		l.event("open %d", st.ID())
		return &recordStream{log: l, id: st.ID()}
	})
	if d.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.ln.Close() })
	tcp, _ := manet.FromNetAddr(d.ln.Addr())
	d.addr = tcp.Encapsulate(ma.StringCast("/ws"))
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	d.id, _ = peer.IDFromPrivateKey(key)
	if d.noise[0], err = security.NewNoise(key, ProtoYamux); err != nil {
		t.Fatal(err)
	}
	if d.noise[1], err = security.NewNoise(key); err != nil {
		t.Fatal(err)
	}
	p, err := security.NewPlaintext(key.GetPublic())
	if err != nil {
		t.Fatal(err)
	}
	d.plain, _ = p.NewHandshake("").Start(nil)
	return d
}

// rawServer is the server end of one connection: it reads the client's
// frames (masked) and writes its own as told.
type rawServer struct {
	conn   net.Conn
	mu     sync.Mutex
	in     []byte
	close  ws.CloseCode
	notify chan struct{}
	done   chan struct{}
}

func acceptRaw(t testing.TB, ln net.Listener) *rawServer {
	t.Helper()
	conn, err := ln.Accept()
	if err != nil {
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
		req, k, err := ws.ParseRequest(buf, 0)
		if err == ws.ErrNeedMore {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(ws.AppendResponse(nil, req.Key))
		buf = buf[k:]
		break
	}
	s := &rawServer{conn: conn, notify: make(chan struct{}, 1), done: make(chan struct{})}
	go s.read(buf)
	return s
}

func (s *rawServer) read(first []byte) {
	defer close(s.done)
	d := ws.NewDecoder(ws.Server, 0)
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
				s.mu.Lock()
				s.in = append(s.in, ev.Payload...)
				s.mu.Unlock()
				signal(s.notify)
			case ws.EventClose:
				s.mu.Lock()
				s.close = ev.Code
				s.mu.Unlock()
			}
		}
		s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := s.conn.Read(buf)
		if err != nil {
			return
		}
		b = buf[:n]
	}
}

// await runs step on the bytes received after off, again as more
// arrives, until it reports how many it consumed and that it is done.
func (s *rawServer) await(t testing.TB, step func(in []byte) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		in := bytes.Clone(s.in)
		s.mu.Unlock()
		if step(in) {
			return
		}
		select {
		case <-s.notify:
		case <-s.done:
			t.Fatal("client closed during the handshake")
		case <-deadline:
			t.Fatal("timed out waiting for the client")
		}
	}
}

// send writes pieces as unmasked server frames (see rawClient.send).
func (s *rawServer) send(pieces [][]byte, fragments bool) {
	var b []byte
	for i, p := range pieces {
		op, fin := ws.OpBinary, true
		if fragments {
			fin = i == len(pieces)-1
			if i > 0 {
				op = ws.OpContinuation
			}
		}
		b = ws.AppendFrame(b, ws.Server, fin, op, p)
	}
	s.conn.Write(b)
}

// failureReasons lists the connection failures counted since before.
func failureReasons(t testing.TB, reg *prometheus.Registry, before map[string]float64) string {
	var out []string
	for k, v := range testutil.Gather(t, reg) {
		if strings.HasPrefix(k, "swarmgate_connection_failures_total") && v != before[k] {
			out = append(out, fmt.Sprintf("%s+%g", k, v-before[k]))
		}
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

// runInputClient is runInput for the client role: our host dials, and
// the raw server sends its side of the upgrade (cut like the rest), then
// plain sealed as told, then a Close.
func runInputClient(t testing.TB, d *inputDialer, mode int, plain []byte, frames, cuts []int, fragments bool) inputRun {
	t.Helper()
	log := &connLog{closed: make(chan struct{})}
	d.mu.Lock()
	d.log = log
	d.mu.Unlock()
	before := testutil.Gather(t, d.reg)
	dialed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := d.h.Dial(ctx, d.addr, DialOptions{Expect: d.id, Plaintext: mode == modePlaintext})
		dialed <- err
	}()
	s := acceptRaw(t, d.ln)
	defer s.conn.Close()
	ct := &cutter{sizes: cuts}
	hello := multistream.AppendMessage(nil, multistream.ProtocolID)
	switch mode {
	case modePlaintext:
		a := multistream.AppendMessage(hello, ProtoPlaintext)
		a = append(a, d.plain...)
		s.send(ct.cut(append(a, plain...)), fragments)
	default:
		s.send(ct.cut(multistream.AppendMessage(hello, ProtoNoise)), fragments)
		// The client's multistream messages, then msg 1; answer msg 2.
		hs := d.noise[mode].NewResponder("")
		var lst multistream.Listener
		protos, _ := multistream.NewProtocols(ProtoNoise)
		lst.Reset(protos)
		var msg2 []byte
		off := 0
		s.await(t, func(in []byte) bool {
			if !lst.Done() {
				_, n, err := lst.Input(nil, in[off:])
				if err != nil {
					t.Fatal(err)
				}
				off += n
				if !lst.Done() {
					return false
				}
			}
			out, n, err := hs.Input(nil, in[off:])
			if err != nil {
				t.Fatal(err)
			}
			off += n
			msg2 = append(msg2, out...)
			return len(msg2) > 0
		})
		s.send(ct.cut(msg2), fragments)
		s.await(t, func(in []byte) bool {
			_, n, err := hs.Input(nil, in[off:])
			if err != nil {
				t.Fatal(err)
			}
			off += n
			return hs.Done()
		})
		sess := hs.Session()
		var b []byte
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
		s.send(ct.cut(b), fragments)
	}
	s.conn.Write(ws.AppendClose(nil, ws.Server, ws.CloseNormal, ""))
	var dialErr error
	select {
	case dialErr = <-dialed:
	case <-time.After(15 * time.Second):
		t.Fatal("dial did not return")
	}
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("client did not close")
	}
	// The session's end is logged before the connection leaves the peer
	// index.
	testutil.WaitFor(t, 10*time.Second, func() bool { return d.h.NumPeers() == 0 })
	r := inputRun{log: log.b.String(), failed: failureReasons(t, d.reg, before)}
	if dialErr != nil {
		r.ended = dialErr.Error()
	}
	s.mu.Lock()
	r.close = s.close
	s.mu.Unlock()
	return r
}

// FuzzPeerConnInputClient is FuzzPeerConnInput for a client PeerConn: the
// server's byte stream, whole and split, must give the same outcome.
func FuzzPeerConnInputClient(f *testing.F) {
	d := startInputDialer(f)
	for i, y := range inputSeeds(true) {
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
		whole := runInputClient(t, d, m, plain, nil, nil, false)
		split := runInputClient(t, d, m, plain, fs, cs, mode&4 != 0)
		if whole != split {
			t.Fatalf("whole: %v\nsplit: %v", whole, split)
		}
	})
}
