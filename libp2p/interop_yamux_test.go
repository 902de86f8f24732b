package libp2p

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"
	gonoise "github.com/libp2p/go-libp2p/p2p/security/noise"
	yamux4 "github.com/libp2p/go-yamux/v4"
	yamux5 "github.com/libp2p/go-yamux/v5"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/multiformats/go-multistream"

	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/mux"
)

// interopMiB is the bytes per stream of the volume tests: 1 MiB by default
// (CI), SWARMGATE_INTEROP_MIB=16 for the full 100 × 16 MiB.
func interopMiB() int {
	if n, err := strconv.Atoi(os.Getenv("SWARMGATE_INTEROP_MIB")); err == nil && n > 0 {
		return n
	}
	return 1
}

// pattern is a stream's deterministic content, generated and checked in
// pieces so 100 streams of 16 MiB need no 1.6 GB of buffers.
type pattern struct{ r *rand.ChaCha8 }

func newPattern(stream int) pattern {
	var seed [32]byte
	seed[0], seed[1] = byte(stream), byte(stream>>8)
	return pattern{rand.NewChaCha8(seed)}
}

func (p pattern) fill(b []byte) { p.r.Read(b) }

// verifier checks bytes against a stream's pattern as they arrive.
type verifier struct {
	want pattern
	buf  []byte
	n    int
}

func (v *verifier) check(b []byte) error {
	if cap(v.buf) < len(b) {
		v.buf = make([]byte, len(b))
	}
	w := v.buf[:len(b)]
	v.want.fill(w)
	for i := range b {
		if b[i] != w[i] {
			return fmt.Errorf("byte %d differs", v.n+i)
		}
	}
	v.n += len(b)
	return nil
}

type yamuxStream interface {
	io.ReadWriteCloser
	CloseWrite() error
	Reset() error
}

// goYamuxClient runs the go-yamux client of the given major version.
func goYamuxClient(t *testing.T, version int, conn net.Conn) (func() (yamuxStream, error), func()) {
	t.Helper()
	switch version {
	case 4:
		cfg := yamux4.DefaultConfig()
		cfg.KeepAliveInterval = 200 * time.Millisecond
		s, err := yamux4.Client(conn, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		return func() (yamuxStream, error) { return s.OpenStream(context.Background()) }, func() { s.Close() }
	default:
		cfg := yamux5.DefaultConfig()
		cfg.KeepAliveInterval = 200 * time.Millisecond
		s, err := yamux5.Client(conn, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		return func() (yamuxStream, error) { return s.OpenStream(context.Background()) }, func() { s.Close() }
	}
}

// secureToServer dials our server over WebSocket with go-libp2p's noise
// transport (muxer inlined) and returns the secured connection.
func secureToServer(t *testing.T, srv *Host, addr ma.Multiaddr) net.Conn {
	t.Helper()
	wc, _, err := websocket.DefaultDialer.Dial("ws://"+testutil.HostPort(t, addr)+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	conn := &wsNetConn{Conn: wc}
	t.Cleanup(func() { conn.Close() })
	if err := multistream.SelectProtoOrFail(ProtoNoise, conn); err != nil {
		t.Fatal(err)
	}
	key, _, _ := crypto.GenerateEd25519Key(nil)
	tpt, _ := gonoise.New(gonoise.ID, key, yamuxMuxer)
	sc, err := tpt.SecureOutbound(context.Background(), conn, srv.ID())
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

// go-yamux v4 and v5 clients over our Noise stack: 100 concurrent echo
// streams byte-exact, a reset stream, keepalive pings both ways.
func TestGoYamuxOverOurStack(t *testing.T) {
	size := interopMiB() << 20
	for _, version := range []int{4, 5} {
		t.Run("v"+strconv.Itoa(version), func(t *testing.T) {
			// 100 streams at full windows: 25 MiB in flight, past the
			// default connection share; this test is about the wire.
			cfg := Config{Engine: engine.Config{Limits: admission.Limits{ConnMemory: -1, PeerMemory: -1, SourceMemory: -1, MaxProtocolStreams: -1}}}
			cfg.Mux.KeepAliveInterval = 150 * time.Millisecond // we ping them too
			srv, addr := startHost(t, cfg)
			open, closeSess := goYamuxClient(t, version, secureToServer(t, srv, addr))
			defer closeSess()
			var wg sync.WaitGroup
			errs := make(chan error, 100)
			for i := 0; i < 100; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					errs <- echoPattern(open, i, size)
				}(i)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			// A reset stream ends only that stream.
			s, err := open()
			if err != nil {
				t.Fatal(err)
			}
			multistream.SelectProtoOrFail(ProtoEcho, s)
			s.Write([]byte("about to reset"))
			s.Reset()
			// Keepalive both ways: idle past several intervals, still alive.
			time.Sleep(600 * time.Millisecond)
			if err := echoPattern(open, 1000, 1000); err != nil {
				t.Fatalf("after reset and idle: %v", err)
			}
		})
	}
}

// echoPattern echoes size bytes of stream i's pattern over a new stream.
func echoPattern(open func() (yamuxStream, error), i, size int) error {
	s, err := open()
	if err != nil {
		return err
	}
	defer s.Close()
	if err := multistream.SelectProtoOrFail(ProtoEcho, s); err != nil {
		return err
	}
	werr := make(chan error, 1)
	go func() {
		p := newPattern(i)
		buf := make([]byte, 32<<10)
		for left := size; left > 0; {
			b := buf[:min(left, len(buf))]
			p.fill(b)
			if _, err := s.Write(b); err != nil {
				werr <- err
				return
			}
			left -= len(b)
		}
		werr <- s.CloseWrite()
	}()
	v := verifier{want: newPattern(i)}
	buf := make([]byte, 32<<10)
	for {
		n, err := s.Read(buf)
		if cerr := v.check(buf[:n]); cerr != nil {
			return fmt.Errorf("stream %d: %w", i, cerr)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("stream %d after %d bytes: %w", i, v.n, err)
		}
	}
	if v.n != size {
		return fmt.Errorf("stream %d: %d of %d bytes", i, v.n, size)
	}
	return <-werr
}

// Our client role (mux as client) against go-yamux v4 and v5 servers behind
// go-libp2p's noise transport: 100 concurrent streams byte-exact.
func TestOurMuxClientAgainstGoYamux(t *testing.T) {
	size := interopMiB() << 20
	for _, version := range []int{4, 5} {
		t.Run("v"+strconv.Itoa(version), func(t *testing.T) {
			addr, srvID := goYamuxEchoServer(t, version, true, nil)
			pc := dialHost(t, nil, addr, DialOptions{Expect: srvID})
			if err := clientEchoStreams(pc, 100, size); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// goYamuxEchoServer serves echo streams with go-libp2p noise and go-yamux.
//
// inline offers yamux inside the Noise handshake (else it is negotiated
// with multistream-select afterwards); remote, when set, receives the peer
// ID each client authenticated as.
func goYamuxEchoServer(t *testing.T, version int, inline bool, remote chan<- peer.ID) (ma.Multiaddr, peer.ID) {
	t.Helper()
	key, _, _ := crypto.GenerateEd25519Key(nil)
	id, _ := peer.IDFromPrivateKey(key)
	var muxers []tptu.StreamMuxer
	if inline {
		muxers = yamuxMuxer
	}
	tpt, _ := gonoise.New(gonoise.ID, key, muxers)
	up := websocket.Upgrader{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wc, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		conn := &wsNetConn{Conn: wc}
		defer conn.Close()
		msm := multistream.NewMultistreamMuxer[string]()
		msm.AddHandler(ProtoNoise, nil)
		if _, _, err := msm.Negotiate(conn); err != nil {
			return
		}
		sc, err := tpt.SecureInbound(context.Background(), conn, "")
		if err != nil {
			return
		}
		if remote != nil {
			remote <- sc.RemotePeer()
		}
		if string(sc.ConnState().StreamMultiplexer) != ProtoYamux {
			mm := multistream.NewMultistreamMuxer[string]()
			mm.AddHandler(ProtoYamux, nil)
			if _, _, err := mm.Negotiate(sc); err != nil {
				return
			}
		}
		var accept func() (net.Conn, error)
		switch version {
		case 4:
			s, err := yamux4.Server(sc, yamux4.DefaultConfig(), nil)
			if err != nil {
				return
			}
			defer s.Close()
			accept = func() (net.Conn, error) { return s.AcceptStream() }
		default:
			s, err := yamux5.Server(sc, yamux5.DefaultConfig(), nil)
			if err != nil {
				return
			}
			defer s.Close()
			accept = func() (net.Conn, error) { return s.AcceptStream() }
		}
		for {
			s, err := accept()
			if err != nil {
				return
			}
			go func() {
				defer s.Close()
				sm := multistream.NewMultistreamMuxer[string]()
				sm.AddHandler(ProtoEcho, nil)
				if _, _, err := sm.Negotiate(s); err != nil {
					return
				}
				io.Copy(s, s)
				s.(interface{ CloseWrite() error }).CloseWrite()
			}()
		}
	}))
	t.Cleanup(hs.Close)
	port := hs.Listener.Addr().(*net.TCPAddr).Port
	return ma.StringCast("/ip4/127.0.0.1/tcp/" + strconv.Itoa(port) + "/ws"), id
}

// patternStream writes a pattern on an outbound stream as windows allow and
// verifies the echo as it arrives (all inside engine callbacks).
type patternStream struct {
	pc      *PeerConn
	st      *mux.Stream
	gen     pattern
	pending []byte
	left    int
	v       verifier
	size    int
	done    chan error
}

func (p *patternStream) pump() {
	for p.left > 0 || len(p.pending) > 0 {
		if len(p.pending) == 0 {
			p.pending = make([]byte, min(p.left, 16<<10))
			p.gen.fill(p.pending)
			p.left -= len(p.pending)
		}
		n, err := p.st.Write(p.pending)
		p.pending = p.pending[n:]
		if errors.Is(err, mux.ErrWouldBlock) {
			return // OnWritable resumes
		}
		if err != nil {
			p.finish(err)
			return
		}
	}
	p.st.CloseWrite()
}

func (p *patternStream) OnData(st *mux.Stream, b []byte) int {
	if err := p.v.check(b); err != nil {
		p.finish(err)
	}
	return len(b)
}
func (p *patternStream) OnWritable(*mux.Stream) { p.pump() }
func (p *patternStream) OnFIN(*mux.Stream) {
	if p.v.n != p.size {
		p.finish(fmt.Errorf("%d of %d bytes echoed", p.v.n, p.size))
		return
	}
	p.finish(nil)
}
func (p *patternStream) OnReset(_ *mux.Stream, err error) { p.finish(fmt.Errorf("reset: %w", err)) }
func (p *patternStream) finish(err error) {
	if p.done != nil {
		p.done <- err
		p.done = nil
	}
}

// clientEchoStreams opens n echo streams from our client and checks each.
func clientEchoStreams(pc *PeerConn, n, size int) error {
	done := make(chan error, n)
	var openErr error
	pc.Conn().Do(func(*engine.Conn) {
		// Open every stream first: a proposal needs room in the session's
		// output queue, which the pattern data then fills.
		streams := make([]*patternStream, 0, n)
		for i := 0; i < n && openErr == nil; i++ {
			ps := &patternStream{pc: pc, gen: newPattern(i), left: size, v: verifier{want: newPattern(i)}, size: size, done: done}
			if ps.st, openErr = pc.OpenStream(ProtoEcho, ps); openErr == nil {
				streams = append(streams, ps)
			}
		}
		for _, ps := range streams {
			ps.pump()
		}
		pc.flush()
	})
	if openErr != nil {
		return openErr
	}
	timeout := time.After(120 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case err := <-done:
			if err != nil {
				return err
			}
		case <-timeout:
			return fmt.Errorf("%d of %d streams unfinished", n-i, n)
		}
	}
	return nil
}
