package libp2p

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bytedance/gopkg/util/gopool"

	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/mux"
)

// blockingEcho is an echo written the blocking way.
func blockingEcho(_ *PeerConn, s *BlockingStream) { io.Copy(s, s) }

func randBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b
}

// waitGoroutines waits until the goroutine count is at most n.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, want ≤ %d", runtime.NumGoroutine(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBlockingEcho: io.Copy over RunBlocking serves the echoOver checks,
// and the goroutine ends with the stream.
func TestBlockingEcho(t *testing.T) {
	srv, addr := startHost(t, Config{})
	srv.Handle(ProtoEcho, RunBlocking(blockingEcho))
	pc := dialHost(t, srv, addr, DialOptions{})
	base := runtime.NumGoroutine()
	echoOver(t, pc, randBytes(4<<20))
	echoOver(t, pc, []byte("small"))
	echoOver(t, pc, nil)
	waitGoroutines(t, base)
}

// TestBlockingClient: OpenBlocking against the event-driven echo, with a
// writer and a reader goroutine, several streams at once.
func TestBlockingClient(t *testing.T) {
	srv, addr := startHost(t, Config{})
	pc := dialHost(t, srv, addr, DialOptions{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			data := randBytes(1 << 20)
			s, err := pc.OpenBlocking(ProtoEcho)
			if err != nil {
				t.Error(err)
				return
			}
			go func() {
				if _, err := s.Write(data); err != nil {
					t.Error(err)
				}
				s.Close()
			}()
			got, err := io.ReadAll(s)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("echo: %d of %d bytes, %v", len(got), len(data), err)
			}
		})
	}
	wg.Wait()
	// A refused protocol surfaces on Read.
	s, err := pc.OpenBlocking("/nope/1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	var mse interface{ Reason() string }
	if _, err := s.Read(make([]byte, 1)); !errors.As(err, &mse) {
		t.Fatalf("read on a refused stream: %v", err)
	}
}

// TestBlockingSlowReader: a reader slower than the sender holds at most the
// stream's window; yamux stops the sender.
func TestBlockingSlowReader(t *testing.T) {
	const total = 1 << 20
	type stats struct {
		read, maxBuf, window int
		over                 bool
	}
	res := make(chan stats, 1)
	srv, addr := startHost(t, Config{})
	srv.Handle("/slow", RunBlocking(func(pc *PeerConn, s *BlockingStream) {
		var st stats
		buf := make([]byte, 4<<10)
		for {
			n, err := s.Read(buf)
			st.read += n
			pc.Do(func() {
				b, w := s.Stream().Buffered(), int(s.Stream().RecvWindow())
				st.maxBuf, st.window = max(st.maxBuf, b), w
				st.over = st.over || b > w
			})
			if err != nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		res <- st
	}))
	pc := dialHost(t, srv, addr, DialOptions{})
	s, err := pc.OpenBlocking("/slow")
	if err != nil {
		t.Fatal(err)
	}
	var written atomic.Int64
	go func() {
		data := randBytes(total)
		for off := 0; off < total; off += 16 << 10 {
			n, err := s.Write(data[off : off+16<<10])
			written.Add(int64(n))
			if err != nil {
				t.Error(err)
				return
			}
		}
		s.Close()
	}()
	// Mid-way the sender is ahead of the reader by at most the window
	// plus what the session queues and the sockets hold.
	time.Sleep(100 * time.Millisecond)
	if w := written.Load(); w >= total {
		t.Fatalf("sender was not held back: %d bytes written at once", w)
	}
	select {
	case st := <-res:
		if st.read != total || st.over || st.maxBuf > mux.InitialWindow {
			t.Fatalf("read %d, max buffered %d, window %d, over %v", st.read, st.maxBuf, st.window, st.over)
		}
		t.Logf("max buffered %d B, window %d B", st.maxBuf, st.window)
	case <-time.After(15 * time.Second):
		t.Fatal("slow reader did not finish")
	}
}

// TestBlockingSemantics: FIN, resets both ways, deadlines, connection loss,
// and a handler returning early.
func TestBlockingSemantics(t *testing.T) {
	errc := make(chan error, 1)
	srv, addr := startHost(t, Config{})
	srv.Handle("/fin", RunBlocking(func(_ *PeerConn, s *BlockingStream) {
		got, err := io.ReadAll(s) // until the peer's FIN
		if err == nil {
			_, err = s.Write(append([]byte("got "), got...))
		}
		errc <- err
		// returning closes our side
	}))
	srv.Handle("/read", RunBlocking(func(_ *PeerConn, s *BlockingStream) {
		_, err := s.Read(make([]byte, 1))
		errc <- err
	}))
	srv.Handle("/reset", RunBlocking(func(_ *PeerConn, s *BlockingStream) {
		errc <- s.Reset()
	}))
	srv.Handle("/deadline", RunBlocking(func(_ *PeerConn, s *BlockingStream) {
		s.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
		_, err := s.Read(make([]byte, 1))
		errc <- err
	}))
	srv.Handle("/early", RunBlocking(func(*PeerConn, *BlockingStream) { errc <- nil }))
	pc := dialHost(t, srv, addr, DialOptions{})
	wait := func(what string) error {
		t.Helper()
		select {
		case err := <-errc:
			return err
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: handler did not finish", what)
		}
		return nil
	}
	waitCol := func(what string, col *collector) error {
		t.Helper()
		select {
		case err := <-col.done:
			return err
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: stream did not end", what)
		}
		return nil
	}

	// FIN: ReadAll ends at EOF, the reply and our FIN follow.
	st, col, write := openRaw(t, pc, "/fin")
	write([]byte("abc"))
	pc.Do(func() { st.CloseWrite() })
	if err := wait("fin"); err != nil {
		t.Fatal(err)
	}
	if err := waitCol("fin", col); err != nil {
		t.Fatal(err)
	}
	pc.Do(func() {
		if string(col.got) != "got abc" {
			t.Errorf("reply %q", col.got)
		}
	})

	// The peer's reset ends a blocked Read with the reset error.
	st, _, _ = openRaw(t, pc, "/read")
	time.Sleep(20 * time.Millisecond) // Read is waiting
	pc.Do(func() { st.Reset() })
	var se *mux.StreamError
	if err := wait("peer reset"); !errors.As(err, &se) {
		t.Fatalf("read after reset: %v", err)
	}

	// The handler's reset reaches the peer.
	_, col, _ = openRaw(t, pc, "/reset")
	if err := wait("reset"); err != nil {
		t.Fatal(err)
	}
	if err := waitCol("reset", col); !errors.As(err, &se) {
		t.Fatalf("peer saw %v", err)
	}

	// Read deadline.
	st, _, _ = openRaw(t, pc, "/deadline")
	if err := wait("deadline"); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
	pc.Do(func() { st.CloseWrite() })

	// A handler that returns without reading: our FIN goes out, the
	// peer's later bytes are dropped, and the stream ends at its FIN.
	st, col, write = openRaw(t, pc, "/early")
	wait("early")
	if err := waitCol("early", col); err != nil {
		t.Fatal(err)
	}
	// More than a window: it must be consumed for the writes to finish.
	rest := 600 << 10
	for rest > 0 && time.Now().Before(deadlineIn(5*time.Second)) {
		pc.Do(func() {
			n, _ := st.Write(make([]byte, min(rest, 64<<10)))
			rest -= n
		})
		time.Sleep(time.Millisecond)
	}
	if rest > 0 {
		t.Fatalf("%d bytes not taken after the handler returned", rest)
	}
	pc.Do(func() { st.CloseWrite() })
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int
		pc.Do(func() { n = pc.NumStreams() })
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d streams left open", n)
		}
		time.Sleep(5 * time.Millisecond)
	}

	// Losing the connection ends a blocked Read.
	openRaw(t, pc, "/read")
	time.Sleep(20 * time.Millisecond)
	pc.Do(func() { pc.Close() })
	if err := wait("conn closed"); err == nil || err == io.EOF {
		t.Fatalf("read after connection loss: %v", err)
	}
}

func deadlineIn(d time.Duration) time.Time {
	return time.Now().Add(d)
}

// memInUse is live heap plus goroutine stacks after full collections
// (twice, so pooled buffers are dropped too).
func memInUse() float64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc + ms.StackInuse)
}

// blockingCost opens n streams served by sh on a fresh pair of hosts and
// returns the memory (heap + stacks, both ends) and goroutines they add.
func blockingCost(t *testing.T, n int, sh func(started *atomic.Int64) StreamFunc) (bytesPer float64, goroutinesPer float64) {
	var started atomic.Int64
	// n streams of one protocol from one peer: measured here, not limited.
	srv, addr := startHost(t, Config{Engine: engine.Config{Limits: admission.Limits{MaxProtocolStreams: -1, MaxPeerStreams: -1}}})
	srv.Handle("/hold", sh(&started))
	pc := dialHost(t, srv, addr, DialOptions{})
	m0 := memInUse()
	g0 := runtime.NumGoroutine()
	deadline := time.Now().Add(10 * time.Second)
	var openErr error
	for opened := 0; started.Load() < int64(n) && openErr == nil; time.Sleep(time.Millisecond) {
		pc.Do(func() {
			for ; opened < n; opened++ {
				_, err := pc.OpenStream("/hold", &mux.Funcs{})
				if err == mux.ErrTooManyStreams {
					return // wait for ACKs
				}
				if err != nil {
					openErr = err
					return
				}
			}
		})
		if openErr != nil {
			t.Fatal(openErr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d handlers started", started.Load(), n)
		}
	}
	time.Sleep(20 * time.Millisecond) // let the last goroutines park
	mem := memInUse() - m0
	g1 := runtime.NumGoroutine()
	pc.Do(func() { pc.Close() }) // ends every stream, and the handlers
	waitGoroutines(t, g0)
	return mem / float64(n), float64(g1-g0) / float64(n)
}

// TestBlockingCost measures what RunBlocking adds per open stream over an
// event-driven handler: one goroutine, and its stack and state.
func TestBlockingCost(t *testing.T) {
	const n = 800
	event, eg := blockingCost(t, n, func(started *atomic.Int64) StreamFunc {
		return func(*PeerConn, *mux.Stream) mux.Handler { started.Add(1); return &mux.Funcs{} }
	})
	blocking, bg := blockingCost(t, n, func(started *atomic.Int64) StreamFunc {
		return RunBlocking(func(_ *PeerConn, s *BlockingStream) {
			started.Add(1)
			var buf [64]byte
			for {
				if _, err := s.Read(buf[:]); err != nil {
					return
				}
			}
		})
	})
	t.Logf("per stream, both ends: event-driven %.0f B and %.2f goroutines; blocking %.0f B and %.2f goroutines; adapter adds %.0f B",
		event, eg, blocking, bg, blocking-event)
	if eg > 0.05 || bg < 0.95 || bg > 1.05 {
		t.Fatalf("goroutines per stream: event %.2f, blocking %.2f", eg, bg)
	}
	if blocking-event > 16<<10 {
		t.Fatalf("adapter costs %.0f B per stream", blocking-event)
	}
}

// BenchmarkSpawn compares starting a short handler goroutine with `go`
// and with gopool (run: flock /tmp/swarmgate-bench.lock go test -bench Spawn).
func BenchmarkSpawn(b *testing.B) {
	work := func(wg *sync.WaitGroup) {
		var buf [512]byte // a handler's small stack use
		buf[rand.IntN(len(buf))] = 1
		wg.Done()
	}
	b.Run("go", func(b *testing.B) {
		var wg sync.WaitGroup
		b.ReportAllocs()
		for b.Loop() {
			wg.Add(1)
			go work(&wg)
		}
		wg.Wait()
	})
	b.Run("gopool", func(b *testing.B) {
		var wg sync.WaitGroup
		b.ReportAllocs()
		for b.Loop() {
			wg.Add(1)
			gopool.Go(func() { work(&wg) })
		}
		wg.Wait()
	})
}
