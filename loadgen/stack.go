package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/libp2p"
	"github.com/swarmgate/swarmgate/mux"
	"github.com/swarmgate/swarmgate/ws"
)

// A stack is one way of talking to the server: raw WebSocket echo, or
// libp2p (WebSocket + security + yamux) with Noise or plaintext, over /ws
// or /tls/ws.
type stack struct {
	Name      string
	TLS       bool
	LibP2P    bool
	Plaintext bool
}

// allStacks are the stacks the default matrix runs, in report order.
var allStacks = []stack{
	{Name: "ws+noise", LibP2P: true},
	{Name: "ws+plaintext", LibP2P: true, Plaintext: true},
	{Name: "wss+noise", TLS: true, LibP2P: true},
	{Name: "wss+plaintext", TLS: true, LibP2P: true, Plaintext: true},
	{Name: "ws"},
	{Name: "wss", TLS: true},
}

func parseStacks(s string) ([]stack, error) {
	if s == "" || s == "all" {
		return allStacks, nil
	}
	var out []stack
	for _, name := range strings.Split(s, ",") {
		found := false
		for _, st := range allStacks {
			if st.Name == name {
				out = append(out, st)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown stack %q (have ws+noise, ws+plaintext, wss+noise, wss+plaintext, ws, wss)", name)
		}
	}
	return out, nil
}

// client is the generator's side: one engine in the client role and, for
// libp2p stacks, a host.
type client struct {
	eng  *engine.Engine
	host *libp2p.Host
}

// target is where a stack connects: the multiaddr (/ws or /tls/ws) and,
// for raw stacks, the echo path.
type target struct {
	addr     ma.Multiaddr
	echoPath string
}

// conn is one open client connection of any stack.
type conn struct {
	ws  *engine.Conn     // raw stacks
	raw *rawStage        // raw stacks: the connection's stage
	pc  *libp2p.PeerConn // libp2p stacks
}

func (c conn) close() {
	if c.pc != nil {
		c.pc.Conn().Do(func(*engine.Conn) { c.pc.Close() })
	} else if c.ws != nil {
		c.ws.CloseWith(ws.CloseNormal, "")
	}
}

var errClosed = errors.New("loadgen: connection closed")

// dial opens one connection and calls ready when it can carry data, with
// its phase trace for libp2p stacks.
func (cl *client) dial(st stack, tg target, ready func(conn, *libp2p.Trace, error)) {
	if st.LibP2P {
		tr := &libp2p.Trace{}
		cl.host.DialAsync(tg.addr, libp2p.DialOptions{Plaintext: st.Plaintext, Trace: tr}, func(pc *libp2p.PeerConn, err error) {
			ready(conn{pc: pc}, tr, err)
		})
		return
	}
	start := time.Now()
	rs := &rawStage{}
	_, err := cl.eng.DialWith(tg.addr, tg.echoPath, func(c *engine.Conn) engine.Stage {
		tr := &libp2p.Trace{Start: start, TCP: start, Upgrade: time.Now()}
		ready(conn{ws: c, raw: rs}, tr, nil)
		return rs
	}, func(err error) { ready(conn{}, nil, err) })
	if err != nil {
		ready(conn{}, nil, err)
	}
}

// rawStage routes a raw WebSocket connection's messages to whatever the
// scenario installed.
type rawStage struct {
	onMessage func(n int)
	onClose   func(error)
	got       int
}

func (r *rawStage) Data(c *engine.Conn, op ws.Opcode, p []byte, end bool) error {
	r.got += len(p)
	if end {
		if r.onMessage != nil {
			r.onMessage(r.got)
		}
		r.got = 0
	}
	return nil
}

func (r *rawStage) Closed(c *engine.Conn, err error) {
	if r.onClose != nil {
		r.onClose(err)
	}
}

// streamHandler adapts funcs to mux.Handler for scenario streams.
type streamHandler struct {
	data     func(st *mux.Stream, p []byte) int
	writable func(st *mux.Stream)
	fin      func(st *mux.Stream)
	reset    func(st *mux.Stream, err error)
}

func (h *streamHandler) OnData(st *mux.Stream, p []byte) int {
	if h.data == nil {
		return len(p)
	}
	return h.data(st, p)
}
func (h *streamHandler) OnWritable(st *mux.Stream) {
	if h.writable != nil {
		h.writable(st)
	}
}
func (h *streamHandler) OnFIN(st *mux.Stream) {
	if h.fin != nil {
		h.fin(st)
	}
}
func (h *streamHandler) OnReset(st *mux.Stream, err error) {
	if h.reset != nil {
		h.reset(st, err)
	}
}
