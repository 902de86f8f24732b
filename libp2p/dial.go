package libp2p

import (
	"context"
	"errors"
	"fmt"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/multistream"
	"github.com/swarmgate/swarmgate/ws"
)

// DialOptions tunes a dial.
type DialOptions struct {
	// Expect aborts the handshake unless the peer has this ID. An address
	// ending in /p2p/ID expects that ID when Expect is empty.
	Expect peer.ID
	// Plaintext selects /plaintext/2.0.0 instead of Noise (the host must
	// have InsecurePlaintext).
	Plaintext bool
	// Path is the WebSocket request path; empty: "/".
	Path string
	// Trace, when set, receives the instant each phase of the connection
	// ended, for latency breakdowns (loadgen's connect scenario).
	Trace *Trace
}

// Trace holds when each phase of an outgoing connection ended.
type Trace struct {
	Start       time.Time // dial called
	TCP         time.Time // TCP connected (TLS, when used, is inside Upgrade)
	Upgrade     time.Time // WebSocket 101 received
	Multistream time.Time // security protocol agreed
	Security    time.Time // Noise or plaintext handshake done
	Muxer       time.Time // yamux running (equal to Security when inlined)
}

// Dial opens a libp2p connection over WebSocket in the client role and
// waits until yamux runs, the connection fails, or ctx ends (the
// connection is then closed). It is for callers outside the event loop;
// from a callback use DialAsync.
func (h *Host) Dial(ctx context.Context, addr ma.Multiaddr, opt DialOptions) (*PeerConn, error) {
	type result struct {
		pc  *PeerConn
		err error
	}
	done := make(chan result, 1)
	c := h.dial(addr, opt, func(pc *PeerConn, err error) { done <- result{pc, err} })
	select {
	case r := <-done:
		return r.pc, r.err
	case <-ctx.Done():
		if c != nil {
			c.CloseWith(ws.CloseGoingAway, "dial cancelled")
		}
		if r := <-done; r.err == nil {
			r.pc.Do(r.pc.Close) // ready won the race: close what was made
		}
		return nil, ctx.Err()
	}
}

// DialAsync opens a libp2p connection over WebSocket in the client role
// without waiting for it: ready runs exactly once, with the connection once
// yamux runs or with the error that ended it (from this goroutine when the
// dial fails at once, else from the connection's callback, with its lock
// held). The TCP connect itself is waited for here; no goroutine is kept
// for the connection.
func (h *Host) DialAsync(addr ma.Multiaddr, opt DialOptions, ready func(*PeerConn, error)) {
	h.dial(addr, opt, ready)
}

// dial is DialAsync returning the WebSocket connection (nil when the dial
// failed at once and ready has run).
func (h *Host) dial(addr ma.Multiaddr, opt DialOptions, ready func(*PeerConn, error)) *engine.Conn {
	if opt.Plaintext && h.plaintext == nil {
		ready(nil, errors.New("libp2p: a plaintext dial needs Config.InsecurePlaintext"))
		return nil
	}
	if opt.Expect == "" {
		if id, err := peer.IDFromP2PAddr(addr); err == nil {
			opt.Expect = id
		}
	}
	proto := ProtoNoise
	if opt.Plaintext {
		proto = ProtoPlaintext
	}
	d, err := multistream.NewDialer(proto)
	if err != nil {
		ready(nil, err)
		return nil
	}
	pc := &PeerConn{h: h, client: true, up: &upgrade{dialer: d, expected: opt.Expect, usePlain: opt.Plaintext, ready: ready, trace: opt.Trace}}
	now := h.eng.Now
	if opt.Trace != nil {
		opt.Trace.Start = now()
	}
	tcp := make(chan time.Time, 1)
	c, err := h.eng.DialWith(addr, opt.Path, func(c *engine.Conn) engine.Stage {
		pc.c = c
		if tr := pc.up.trace; tr != nil {
			tr.Upgrade = now()
			tr.TCP = <-tcp // DialWith has returned (sent right after), or is about to
		}
		pc.up.deadline = c.HandshakeDeadline()
		pc.writeRaw(d.Start(nil))
		pc.schedule()
		return pc
	}, func(err error) {
		ready(nil, fmt.Errorf("libp2p: connection ended before the WebSocket handshake completed: %w", err))
	})
	if opt.Trace != nil {
		tcp <- now()
	}
	if err != nil {
		ready(nil, err)
		return nil
	}
	return c
}
