package mux

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	yamux4 "github.com/libp2p/go-yamux/v4"
	yamux5 "github.com/libp2p/go-yamux/v5"
)

// goStream is what the tests need from a go-yamux stream (v4 or v5).
type goStream interface {
	io.ReadWriteCloser
	CloseWrite() error
	Reset() error
}

// goPeer wraps a go-yamux session of either major version.
type goPeer struct {
	open   func() (goStream, error)
	accept func() (goStream, error)
	ping   func() (time.Duration, error)
	closed func() <-chan struct{}
	close  func() error
	v5     *yamux5.Session
}

func newGoPeer(t testing.TB, version int, nc net.Conn, client bool, keepalive time.Duration) *goPeer {
	t.Helper()
	switch version {
	case 4:
		cfg := yamux4.DefaultConfig()
		cfg.LogOutput = io.Discard
		if keepalive > 0 {
			cfg.KeepAliveInterval = keepalive
		}
		f := yamux4.Server
		if client {
			f = yamux4.Client
		}
		s, err := f(nc, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		return &goPeer{
			open:   func() (goStream, error) { return s.OpenStream(context.Background()) },
			accept: func() (goStream, error) { return s.AcceptStream() },
			ping:   s.Ping,
			closed: s.CloseChan,
			close:  s.Close,
		}
	case 5:
		cfg := yamux5.DefaultConfig()
		cfg.LogOutput = io.Discard
		if keepalive > 0 {
			cfg.KeepAliveInterval = keepalive
		}
		f := yamux5.Server
		if client {
			f = yamux5.Client
		}
		s, err := f(nc, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		return &goPeer{
			open:   func() (goStream, error) { return s.OpenStream(context.Background()) },
			accept: func() (goStream, error) { return s.AcceptStream() },
			ping:   s.Ping,
			closed: s.CloseChan,
			close:  s.Close,
			v5:     s,
		}
	}
	panic("version")
}

// connPair returns a connected pair: net.Pipe (synchronous, in-memory).
func connPair(t testing.TB) (net.Conn, net.Conn) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// interopSize is the bytes echoed per stream: 4 MiB by default so the whole
// package stays well under a minute on 2 cores; MUX_INTEROP_MIB=16 runs the
// full 16 MiB.
func interopSize() int {
	if v, err := strconv.Atoi(os.Getenv("MUX_INTEROP_MIB")); err == nil && v > 0 {
		return v << 20
	}
	if testing.Short() {
		return 256 << 10
	}
	return 4 << 20
}

const interopStreams = 100

// pattern yields stream i's deterministic content without storing it.
type pattern struct {
	block []byte
	pos   int
}

func newPattern(i int) *pattern {
	r := rand.New(rand.NewPCG(uint64(i), 99))
	b := make([]byte, 65521) // prime: frames never align with it
	for j := range b {
		b[j] = byte(r.Uint32())
	}
	return &pattern{block: b}
}

func (p *pattern) fill(dst []byte) {
	for k := range dst {
		dst[k] = p.block[p.pos]
		p.pos++
		if p.pos == len(p.block) {
			p.pos = 0
		}
	}
}

// writeAndVerify writes size bytes of stream i's pattern, half-closes, and
// checks that the same bytes come back followed by EOF.
func writeAndVerify(rw interface {
	io.ReadWriter
	CloseWrite() error
}, i, size int) error {
	errc := make(chan error, 1)
	go func() {
		p := newPattern(i)
		rng := rand.New(rand.NewPCG(uint64(i), 7))
		buf := make([]byte, 100<<10)
		for sent := 0; sent < size; {
			n := min(size-sent, 1+rng.IntN(len(buf)))
			p.fill(buf[:n])
			if _, err := rw.Write(buf[:n]); err != nil {
				errc <- fmt.Errorf("write: %w", err)
				return
			}
			sent += n
		}
		errc <- rw.CloseWrite()
	}()
	p := newPattern(i)
	buf := make([]byte, 64<<10)
	want := make([]byte, 64<<10)
	got := 0
	for {
		n, err := rw.Read(buf)
		if n > 0 {
			p.fill(want[:n])
			if !bytes.Equal(buf[:n], want[:n]) {
				return fmt.Errorf("stream %d: mismatch at %d", i, got)
			}
			got += n
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("stream %d read after %d: %w", i, got, err)
		}
	}
	if got != size {
		return fmt.Errorf("stream %d: got %d of %d", i, got, size)
	}
	return <-errc
}

// goEchoServer echoes every accepted stream with io.Copy, then half-closes.
func goEchoServer(p *goPeer) {
	for {
		st, err := p.accept()
		if err != nil {
			return
		}
		go func() {
			io.Copy(st, st)
			st.CloseWrite()
		}()
	}
}

func TestInteropGoClientOurServer(t *testing.T) {
	for _, v := range []int{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			a, b := connPair(t)
			var ns *netSession
			ns = runSession(t, b, false, Config{OnStream: func(st *Stream) {
				st.Accept(&eventEcho{ns: ns})
			}})
			gp := newGoPeer(t, v, a, true, 0)
			size := interopSize()
			start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, interopStreams)
			for i := range interopStreams {
				wg.Add(1)
				go func() {
					defer wg.Done()
					st, err := gp.open()
					if err != nil {
						errs <- err
						return
					}
					if err := writeAndVerify(st, i, size); err != nil {
						errs <- err
					}
					st.Close()
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			t.Logf("%d streams × %d MiB echoed in %v", interopStreams, size>>20, time.Since(start))
			// Keepalive from the go side is answered by us.
			if rtt, err := gp.ping(); err != nil || rtt <= 0 {
				t.Fatal(rtt, err)
			}
			ns.mu.Lock()
			defer ns.mu.Unlock()
			if ns.overWindow || ns.maxBuffered > InitialWindow*16 {
				t.Fatalf("buffered %d beyond window", ns.maxBuffered)
			}
			if ns.err != nil {
				t.Fatal(ns.err)
			}
			if n := ns.s.NumStreams(); n != 0 {
				t.Fatalf("%d streams left", n)
			}
		})
	}
}

func TestInteropOurClientGoServer(t *testing.T) {
	for _, v := range []int{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			a, b := connPair(t)
			gp := newGoPeer(t, v, a, false, 0)
			go goEchoServer(gp)
			ns := runSession(t, b, true, Config{})
			size := interopSize()
			start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, interopStreams)
			for i := range interopStreams {
				wg.Add(1)
				go func() {
					defer wg.Done()
					st, err := ns.open()
					if err != nil {
						errs <- err
						return
					}
					if err := writeAndVerify(st, i, size); err != nil {
						errs <- err
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			t.Logf("%d streams × %d MiB echoed in %v", interopStreams, size>>20, time.Since(start))
			ns.mu.Lock()
			defer ns.mu.Unlock()
			if ns.overWindow {
				t.Fatalf("buffered beyond window")
			}
			if ns.err != nil {
				t.Fatal(ns.err)
			}
			if ns.s.rtt <= 0 {
				t.Fatal("our initial ping was not answered")
			}
		})
	}
}

// A slow reader: our server handler consumes nothing for a while; the go
// client must stall at the window and never make us buffer more.
func TestInteropSlowReader(t *testing.T) {
	for _, v := range []int{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			a, b := connPair(t)
			var ns *netSession
			var srv *Stream
			got := 0
			ns = runSession(t, b, false, Config{OnStream: func(st *Stream) {
				srv = st
				st.Accept(&Funcs{Data: func(st *Stream, p []byte) int {
					ns.check(st)
					return 0 // slow: consume later with Discard
				}})
			}})
			gp := newGoPeer(t, v, a, true, 0)
			st, err := gp.open()
			if err != nil {
				t.Fatal(err)
			}
			const total = 4 << 20
			done := make(chan error, 1)
			go func() {
				_, err := st.Write(make([]byte, total))
				done <- err
			}()
			if err := waitFor(5*time.Second, func() bool {
				ns.mu.Lock()
				defer ns.mu.Unlock()
				return srv != nil && srv.Buffered() == InitialWindow
			}); err != nil {
				t.Fatal("window not filled")
			}
			time.Sleep(100 * time.Millisecond) // the writer is stuck at the window
			ns.mu.Lock()
			if srv.Buffered() != InitialWindow || ns.overWindow {
				t.Fatalf("buffered %d", srv.Buffered())
			}
			ns.mu.Unlock()
			// Now read slowly, in small pieces.
			for got < total {
				ns.mu.Lock()
				n := min(srv.Buffered(), 7000)
				srv.Discard(n)
				got += n
				if uint32(srv.Buffered()) > srv.RecvWindow() {
					t.Fatalf("buffered %d > window %d", srv.Buffered(), srv.RecvWindow())
				}
				ns.mu.Unlock()
				ns.kick()
				if n == 0 {
					time.Sleep(100 * time.Microsecond)
				}
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestInteropResetAndFIN(t *testing.T) {
	for _, v := range []int{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			a, b := connPair(t)
			var ns *netSession
			events := make(chan string, 10)
			var srv []*Stream
			ns = runSession(t, b, false, Config{OnStream: func(st *Stream) {
				srv = append(srv, st)
				st.Accept(&Funcs{
					Data:  func(st *Stream, p []byte) int { return len(p) },
					FIN:   func(*Stream) { events <- "fin" },
					Reset: func(_ *Stream, err error) { events <- err.Error() },
				})
			}})
			gp := newGoPeer(t, v, a, true, 0)
			// Peer FIN reaches OnFIN; our FIN gives the peer EOF.
			st, _ := gp.open()
			st.Write([]byte("hello"))
			st.CloseWrite()
			if e := <-events; e != "fin" {
				t.Fatal(e)
			}
			ns.mu.Lock()
			srv[0].Write([]byte("bye"))
			srv[0].CloseWrite()
			ns.mu.Unlock()
			ns.kick()
			if b, err := io.ReadAll(st); string(b) != "bye" || err != nil {
				t.Fatalf("%q %v", b, err)
			}
			// Peer RST (v5 with a code).
			st2, _ := gp.open()
			st2.Write([]byte("x"))
			if v == 5 {
				st2.(*yamux5.Stream).ResetWithError(0x1001)
			} else {
				st2.Reset()
			}
			want := (&StreamError{Remote: true}).Error()
			if v == 5 {
				want = (&StreamError{Code: 0x1001, Remote: true}).Error()
			}
			if e := <-events; e != want {
				t.Fatalf("got %q want %q", e, want)
			}
			// Our RST with a code reaches the peer.
			st3, _ := gp.open()
			st3.Write([]byte("y"))
			if err := waitFor(5*time.Second, func() bool { ns.mu.Lock(); defer ns.mu.Unlock(); return len(srv) == 3 }); err != nil {
				t.Fatal(err)
			}
			ns.mu.Lock()
			srv[2].ResetWithCode(0x1002)
			ns.mu.Unlock()
			ns.kick()
			_, err := st3.Read(make([]byte, 1))
			if v == 5 {
				var se *yamux5.StreamError
				if !errors.As(err, &se) || se.ErrorCode != 0x1002 || !se.Remote {
					t.Fatal(err)
				}
			} else if !errors.Is(err, yamux4.ErrStreamReset) {
				t.Fatal(err)
			}
		})
	}
}

func TestInteropKeepAlive(t *testing.T) {
	for _, v := range []int{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			a, b := connPair(t)
			// go pings us every 30 ms; we ping go every 30 ms of silence.
			gp := newGoPeer(t, v, a, true, 30*time.Millisecond)
			ns := runSession(t, b, false, Config{KeepAliveInterval: 30 * time.Millisecond, PingTimeout: 2 * time.Second})
			time.Sleep(300 * time.Millisecond)
			select {
			case <-gp.closed():
				t.Fatal("go session closed: our pongs missing")
			default:
			}
			ns.mu.Lock()
			defer ns.mu.Unlock()
			if ns.err != nil || ns.s.RTT() <= 0 {
				t.Fatal(ns.err, ns.s.RTT())
			}
		})
	}
}

// Our protocol-error GoAway is seen by go-yamux: it closes the session
// (v5 surfaces the code).
func TestInteropGoAwayObserved(t *testing.T) {
	for _, v := range []int{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			a, b := connPair(t)
			gp := newGoPeer(t, v, a, true, 0)
			ns := runSession(t, b, false, Config{OnStream: func(st *Stream) { st.Accept(&Funcs{}) }})
			st, _ := gp.open()
			st.Write([]byte("x"))
			time.Sleep(20 * time.Millisecond)
			// Inject a data frame larger than the window as if it came from
			// the peer; our session answers GoAway(1) on the wire.
			ns.mu.Lock()
			_, err := ns.s.Input(frame(TypeData, 0, 1, InitialWindow+1), time.Now())
			ns.fail(err)
			ns.mu.Unlock()
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeProtocolError {
				t.Fatal(err)
			}
			select {
			case <-gp.closed():
			case <-time.After(5 * time.Second):
				t.Fatal("go session still open after our GoAway")
			}
			if v == 5 {
				_, err := gp.v5.AcceptStream()
				var ge *yamux5.GoAwayError
				if !errors.As(err, &ge) || ge.ErrorCode != 1 || !ge.Remote {
					t.Fatalf("v5 saw %v", err)
				}
			}
		})
	}
}

// A go-yamux client that keeps opening streams past our limit gets RSTs,
// then, after DefaultMaxRefusedStreams refusals in a row, GoAway(protocol
// error).
func TestInteropStreamFlood(t *testing.T) {
	for _, v := range []int{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			a, b := connPair(t)
			gp := newGoPeer(t, v, a, true, 0)
			ns := runSession(t, b, false, Config{MaxStreams: 10, OnStream: func(st *Stream) { st.Accept(&Funcs{}) }})
			var refused int
			for i := range 10 + DefaultMaxRefusedStreams + 5 {
				st, err := gp.open()
				if err != nil {
					break // session closed by our GoAway
				}
				st.Write([]byte("x"))
				if i >= 10 {
					if _, err := st.Read(make([]byte, 1)); err != nil {
						refused++
					}
				}
			}
			select {
			case <-gp.closed():
			case <-time.After(5 * time.Second):
				t.Fatal("go session not closed")
			}
			ns.mu.Lock()
			defer ns.mu.Unlock()
			var e *Error
			if !errors.As(ns.err, &e) || e.Reason != "stream_open_flood" {
				t.Fatal(ns.err)
			}
			if refused < DefaultMaxRefusedStreams {
				t.Fatalf("only %d streams saw the RST", refused)
			}
		})
	}
}

// The same echo over a loopback TCP pair, where reads split frames at
// arbitrary points: go-yamux v5 client, our server, 1 MiB per stream.
func TestInteropTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skip(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	t.Cleanup(func() { a.Close(); b.Close() })
	var ns *netSession
	ns = runSession(t, b, false, Config{OnStream: func(st *Stream) { st.Accept(&eventEcho{ns: ns}) }})
	gp := newGoPeer(t, 5, a, true, 0)
	var wg sync.WaitGroup
	errs := make(chan error, interopStreams)
	for i := range interopStreams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := gp.open()
			if err == nil {
				err = writeAndVerify(st, i, 1<<20)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.err != nil || ns.overWindow {
		t.Fatal(ns.err, ns.overWindow)
	}
}
