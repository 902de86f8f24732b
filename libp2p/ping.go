package libp2p

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/swarmgate/swarmgate/mux"
)

// ProtoPing is libp2p ping (protocol-notes §8): the dialer writes 32
// bytes, the listener echoes them; the dialer may repeat on the same
// stream (go-libp2p does), and the listener loops until EOF.
const ProtoPing = "/ipfs/ping/1.0.0"

// PingSize is the size of one ping (the spec's 32 bytes).
const PingSize = 32

const (
	// PingIdleTimeout resets an inbound ping stream that has not completed
	// a ping for this long (go-libp2p's handler waits 10 s between pings).
	PingIdleTimeout = 10 * time.Second
	// MaxInboundPings is how many ping streams one connection may have
	// open towards us; more are reset (spec: "SHOULD accept at most two";
	// js-libp2p's maxInboundStreams is 2).
	MaxInboundPings = 2
	// DefaultPingTimeout bounds PeerConn.Ping (js-libp2p: 10 s per ping).
	DefaultPingTimeout = 10 * time.Second
)

// Ping client errors.
var (
	ErrPingMismatch = errors.New("engine: ping echo differs from what was sent")
	ErrPingTimeout  = errors.New("engine: ping timed out")
)

// pingIdle is PingIdleTimeout; tests shorten it.
var pingIdle = PingIdleTimeout

// acquirePing admits an inbound ping stream; every admitted stream ends in
// releasePing (FIN answered, reset either way, or session end). Both run
// under the connection's lock.
func acquirePing(pc *PeerConn) bool {
	if pc.inboundPings >= MaxInboundPings {
		return false
	}
	pc.inboundPings++
	return true
}

func releasePing(pc *PeerConn) {
	if pc.inboundPings > 0 {
		pc.inboundPings--
	}
}

// PingStream serves ProtoPing. It echoes complete 32-byte chunks only, and
// only as fast as the stream takes them: bytes not yet echoed stay in the
// stream's receive buffer (never copied here), so a peer that floods pings
// without reading is stopped by the window. After the peer's FIN it
// finishes echoing, drops a trailing partial chunk and closes.
func PingStream(pc *PeerConn, st *mux.Stream) mux.Handler {
	if !acquirePing(pc) {
		st.Reset()
		return &pingServer{released: true}
	}
	s := &pingServer{pc: pc, st: st}
	s.timer = pc.After(pingIdle, s.idle)
	return s
}

type pingServer struct {
	pc    *PeerConn
	st    *mux.Stream
	timer *Timer
	// mid is how many bytes of the chunk at the head of the receive
	// buffer have been echoed (0..31). A chunk is started only once it
	// has arrived whole, so its remaining bytes are always buffered.
	mid      int
	released bool
}

// echoable is how much of p (the unread bytes) may be echoed now: the rest
// of a started chunk plus the complete chunks behind it.
func (s *pingServer) echoable(p []byte) int {
	first := (PingSize - s.mid) % PingSize
	if len(p) < first {
		return 0 // cannot happen: a started chunk is buffered whole
	}
	return first + (len(p)-first)/PingSize*PingSize
}

// echo writes what may be echoed of p and returns how much was taken.
func (s *pingServer) echo(st *mux.Stream, p []byte) int {
	n, _ := st.Write(p[:s.echoable(p)])
	if done := (s.mid + n) / PingSize; done > 0 {
		s.pc.ResetTimer(s.timer, pingIdle) // a ping was answered
	}
	s.mid = (s.mid + n) % PingSize
	return n
}

func (s *pingServer) OnData(st *mux.Stream, p []byte) int {
	if s.released {
		return len(p)
	}
	return s.echo(st, p)
}

func (s *pingServer) OnWritable(st *mux.Stream) {
	if s.released {
		return
	}
	st.Discard(s.echo(st, st.Peek()))
	s.maybeClose(st)
}

func (s *pingServer) OnFIN(st *mux.Stream) { s.maybeClose(st) }

// maybeClose closes after the peer's FIN once every complete chunk is
// echoed; a partial chunk is dropped, not echoed.
func (s *pingServer) maybeClose(st *mux.Stream) {
	if s.released || st.State() != mux.StreamRemoteClosed {
		return
	}
	if s.mid != 0 || s.echoable(st.Peek()) > 0 {
		return // OnWritable continues
	}
	st.Discard(st.Buffered())
	st.CloseWrite()
	s.release()
}

func (s *pingServer) OnReset(*mux.Stream, error) { s.release() }

// idle runs when no ping arrived for pingIdle (from the connection's Tick).
func (s *pingServer) idle() {
	if !s.released {
		s.st.Reset()
		s.release()
	}
}

func (s *pingServer) release() {
	if s.released {
		return
	}
	s.released = true
	s.pc.StopTimer(s.timer)
	releasePing(s.pc)
}

// Ping sends one ping on a new stream and calls done with the round-trip
// time: from queueing the 32 random bytes to receiving their echo, on the
// engine's clock. done runs once, from a callback with the connection's
// lock held (it must not block), or before Ping returns if the stream
// cannot be opened. The stream is closed after the echo. Call Ping from a
// callback or inside PeerConn.Do.
func (pc *PeerConn) Ping(done func(rtt time.Duration, err error)) {
	c := &pingClient{request: request[time.Duration]{pc: pc, done: done}}
	for i := 0; i < PingSize; i += 8 {
		binary.LittleEndian.PutUint64(c.sent[i:], rand.Uint64())
	}
	st, err := pc.OpenStream(ProtoPing, c)
	if err != nil {
		c.finish(0, err)
		return
	}
	c.start = pc.c.Now()
	c.write(st)
	if c.pending() { // the write did not fail
		c.expire(st, DefaultPingTimeout, ErrPingTimeout)
	}
}

type pingClient struct {
	request[time.Duration]
	sent  [PingSize]byte
	nsent int // bytes of sent written so far
	got   int // bytes of the echo checked so far
	start time.Time
}

func (c *pingClient) write(st *mux.Stream) {
	n, err := st.Write(c.sent[c.nsent:])
	c.nsent += n
	if err != nil && err != mux.ErrWouldBlock {
		c.fail(st, err)
	}
}

func (c *pingClient) OnData(st *mux.Stream, p []byte) int {
	if !c.pending() {
		return len(p)
	}
	k := min(len(p), PingSize-c.got)
	if !bytes.Equal(p[:k], c.sent[c.got:c.got+k]) {
		c.fail(st, ErrPingMismatch)
		return len(p)
	}
	c.got += k
	if c.got == PingSize {
		rtt := c.pc.c.Now().Sub(c.start)
		st.CloseWrite()
		c.finish(rtt, nil)
	}
	return len(p)
}

func (c *pingClient) OnWritable(st *mux.Stream) {
	if c.pending() && c.nsent < PingSize {
		c.write(st)
	}
}

func (c *pingClient) OnFIN(st *mux.Stream) {
	if c.pending() {
		c.fail(st, mux.ErrStreamClosed) // closed before the echo
	}
}

func (c *pingClient) OnReset(_ *mux.Stream, err error) { c.finish(0, err) }
