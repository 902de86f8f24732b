package mux

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// This file is a test-only embedder: goroutines pump bytes between a
// net.Conn and a Session under one lock, and bstream is a blocking
// io.ReadWriteCloser built on the event API, like the one the engine will
// provide. Nothing here is part of the package.

type netSession struct {
	t    testing.TB
	mu   sync.Mutex
	s    *Session
	nc   net.Conn
	wake chan struct{}
	done chan struct{}
	err  error

	maxBuffered int // largest Stream.Buffered() seen
	overWindow  bool
}

func runSession(t testing.TB, nc net.Conn, client bool, cfg Config) *netSession {
	ns := &netSession{t: t, nc: nc, wake: make(chan struct{}, 1), done: make(chan struct{})}
	if client {
		ns.s = NewClient(cfg, time.Now())
	} else {
		ns.s = NewServer(cfg, time.Now())
	}
	go ns.readLoop()
	go ns.writeLoop()
	go ns.tickLoop()
	ns.kick()
	return ns
}

func (ns *netSession) kick() {
	select {
	case ns.wake <- struct{}{}:
	default:
	}
}

func (ns *netSession) fail(err error) {
	if ns.err == nil {
		ns.err = err
		close(ns.done)
	}
}

func (ns *netSession) readLoop() {
	buf := make([]byte, 64<<10)
	var pending []byte
	for {
		n, err := ns.nc.Read(buf)
		ns.mu.Lock()
		if n > 0 && ns.err == nil {
			pending = append(pending, buf[:n]...)
			k, ierr := ns.s.Input(pending, time.Now())
			pending = pending[:copy(pending, pending[k:])]
			if len(pending) >= HeaderLen && ierr == nil {
				ns.t.Errorf("Input left %d bytes", len(pending))
			}
			if ierr != nil {
				ns.fail(ierr)
			}
		}
		if err != nil {
			ns.fail(err)
			ns.s.Close(CodeNormal)
		}
		ns.mu.Unlock()
		ns.kick()
		if err != nil {
			return
		}
	}
}

func (ns *netSession) writeLoop() {
	var out []byte
	for {
		select {
		case <-ns.wake:
		case <-ns.done:
			// Flush a final GoAway, then stop.
			ns.mu.Lock()
			out = ns.s.AppendOutput(out[:0], 0)
			ns.mu.Unlock()
			ns.nc.SetWriteDeadline(time.Now().Add(time.Second))
			ns.nc.Write(out)
			ns.nc.Close()
			return
		}
		for {
			ns.mu.Lock()
			out = ns.s.AppendOutput(out[:0], 128<<10)
			more := ns.s.HasOutput()
			ns.mu.Unlock()
			if len(out) > 0 {
				if _, err := ns.nc.Write(out); err != nil {
					ns.mu.Lock()
					ns.fail(err)
					ns.mu.Unlock()
					return
				}
			}
			if !more {
				break
			}
		}
	}
}

func (ns *netSession) tickLoop() {
	tk := time.NewTicker(20 * time.Millisecond)
	defer tk.Stop()
	for {
		select {
		case <-ns.done:
			return
		case <-tk.C:
		}
		ns.mu.Lock()
		if _, err := ns.s.Tick(time.Now()); err != nil {
			ns.fail(err)
		}
		ns.mu.Unlock()
		ns.kick()
	}
}

// check records buffer bounds; called under ns.mu from handlers.
func (ns *netSession) check(st *Stream) {
	if b := st.Buffered(); b > ns.maxBuffered {
		ns.maxBuffered = b
	}
	if uint32(st.Buffered()) > st.RecvWindow() {
		ns.overWindow = true
	}
}

// bstream is a blocking adapter over the event API.
type bstream struct {
	ns    *netSession
	st    *Stream
	cond  *sync.Cond
	reset error
}

func newBstream(ns *netSession) *bstream {
	return &bstream{ns: ns, cond: sync.NewCond(&ns.mu)}
}

func (b *bstream) OnData(st *Stream, p []byte) int { b.cond.Broadcast(); return 0 }
func (b *bstream) OnWritable(*Stream)              { b.cond.Broadcast() }
func (b *bstream) OnFIN(*Stream)                   { b.cond.Broadcast() }
func (b *bstream) OnReset(_ *Stream, err error)    { b.reset = err; b.cond.Broadcast() }

func (b *bstream) Read(p []byte) (int, error) {
	b.ns.mu.Lock()
	defer b.ns.mu.Unlock()
	for {
		b.ns.check(b.st)
		n, err := b.st.Read(p)
		if err == ErrWouldBlock {
			b.cond.Wait()
			continue
		}
		b.ns.kick()
		return n, err
	}
}

func (b *bstream) Write(p []byte) (int, error) {
	b.ns.mu.Lock()
	defer b.ns.mu.Unlock()
	total := 0
	for {
		n, err := b.st.Write(p[total:])
		total += n
		if n > 0 {
			b.ns.kick()
		}
		if err == ErrWouldBlock {
			b.cond.Wait()
			continue
		}
		return total, err
	}
}

func (b *bstream) CloseWrite() error {
	b.ns.mu.Lock()
	defer b.ns.mu.Unlock()
	defer b.ns.kick()
	return b.st.CloseWrite()
}

func (b *bstream) Close() error {
	b.ns.mu.Lock()
	defer b.ns.mu.Unlock()
	defer b.ns.kick()
	return b.st.Reset()
}

func (ns *netSession) open() (*bstream, error) {
	b := newBstream(ns)
	ns.mu.Lock()
	defer ns.mu.Unlock()
	for {
		st, err := ns.s.Open(b)
		if err == ErrTooManyStreams {
			// wait for ACKs
			ns.mu.Unlock()
			time.Sleep(time.Millisecond)
			ns.mu.Lock()
			continue
		}
		if err != nil {
			return nil, err
		}
		b.st = st
		ns.kick()
		return b, nil
	}
}

// eventEcho is the event-driven echo server handler (no goroutine per
// stream): consume only what could be written, resume on OnWritable,
// half-close after the peer's FIN once everything is echoed.
type eventEcho struct {
	ns  *netSession
	fin bool
}

func (e *eventEcho) OnData(st *Stream, p []byte) int {
	e.ns.check(st)
	n, _ := st.Write(p)
	return n
}
func (e *eventEcho) OnWritable(st *Stream) {
	e.ns.check(st)
	n, _ := st.Write(st.Peek())
	st.Discard(n)
	e.maybeClose(st)
}
func (e *eventEcho) OnFIN(st *Stream)       { e.fin = true; e.maybeClose(st) }
func (e *eventEcho) OnReset(*Stream, error) {}
func (e *eventEcho) maybeClose(st *Stream) {
	if e.fin && st.Buffered() == 0 && st.State() == StreamRemoteClosed {
		st.CloseWrite()
	}
}

var errTimeout = errors.New("timeout")

func waitFor(d time.Duration, f func() bool) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if f() {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return errTimeout
}

var _ io.ReadWriteCloser = (*bstream)(nil)
