package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/cloudwego/netpoll"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/codec"
)

// Routes maps request paths to handlers. Fallback, when set, serves every
// other path (libp2p dialers may use any path); without it an unknown path
// is refused with 404.
type Routes struct {
	Paths    map[string]Handler
	Fallback Handler
}

// Listener accepts WebSocket connections on one TCP address.
type Listener struct {
	eng    *Engine
	addr   ma.Multiaddr
	ln     netpoll.Listener
	loop   netpoll.EventLoop
	routes Routes
	done   chan struct{}
	once   sync.Once
}

// Addr is the listen multiaddr with the port the kernel chose.
func (l *Listener) Addr() ma.Multiaddr { return l.addr }

func (l *Listener) route(path []byte) Handler {
	if h, ok := l.routes.Paths[string(path)]; ok {
		return h
	}
	return l.routes.Fallback
}

// wsAddr is a parsed WebSocket listen or dial address.
type wsAddr struct {
	network string // tcp4 or tcp6
	host    string // IP literal or DNS name
	port    int
}

func (a wsAddr) hostPort() string { return net.JoinHostPort(a.host, strconv.Itoa(a.port)) }

// ErrUnsupportedAddr reports a multiaddr the engine cannot listen on or dial.
var ErrUnsupportedAddr = errors.New("engine: unsupported multiaddr")

// parseWSAddr accepts /ip4|ip6|dns|dns4|dns6/…/tcp/N/ws, optionally
// followed by /p2p/… (ignored here).
func parseWSAddr(m ma.Multiaddr) (wsAddr, error) {
	var a wsAddr
	step := 0
	for _, c := range m {
		code := c.Protocol().Code
		switch {
		case step == 0 && (code == ma.P_IP4 || code == ma.P_IP6 || code == ma.P_DNS || code == ma.P_DNS4 || code == ma.P_DNS6):
			a.host = c.Value()
			a.network = "tcp4"
			if code == ma.P_IP6 || code == ma.P_DNS6 {
				a.network = "tcp6"
			}
			if code == ma.P_DNS {
				a.network = "tcp"
			}
		case step == 1 && code == ma.P_TCP:
			p, err := strconv.Atoi(c.Value())
			if err != nil {
				return a, err
			}
			a.port = p
		case step == 2 && code == ma.P_WS:
		case step == 3 && code == ma.P_P2P:
		default:
			return a, fmt.Errorf("%w: %s", ErrUnsupportedAddr, m)
		}
		step++
	}
	if step < 3 {
		return a, fmt.Errorf("%w: %s", ErrUnsupportedAddr, m)
	}
	return a, nil
}

// Listen starts accepting on addr (port 0 picks a free port) and serves the
// connections with routes. The returned listener's Addr has the real port.
func (e *Engine) Listen(addr ma.Multiaddr, routes Routes) (*Listener, error) {
	a, err := parseWSAddr(addr)
	if err != nil {
		return nil, err
	}
	ln, err := netpoll.CreateListener(a.network, a.hostPort())
	if err != nil {
		return nil, err
	}
	l := &Listener{eng: e, ln: ln, routes: routes, done: make(chan struct{})}
	tcp := ln.Addr().(*net.TCPAddr)
	ipProto := "ip4"
	if tcp.IP.To4() == nil {
		ipProto = "ip6"
	}
	l.addr, err = ma.NewMultiaddr(fmt.Sprintf("/%s/%s/tcp/%d/ws", ipProto, tcp.IP, tcp.Port))
	if err != nil {
		ln.Close()
		return nil, err
	}
	l.loop, err = netpoll.NewEventLoop(
		func(context.Context, netpoll.Connection) error { return nil }, // replaced per connection in prepare
		netpoll.WithOnPrepare(l.prepare),
	)
	if err != nil {
		ln.Close()
		return nil, err
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		ln.Close()
		return nil, ErrClosed
	}
	e.listeners = append(e.listeners, l)
	e.mu.Unlock()
	go func() {
		defer close(l.done)
		if err := l.loop.Serve(ln); err != nil {
			e.log.Error("listener stopped", "addr", l.addr, "err", err)
		}
	}()
	return l, nil
}

// prepare runs for each accepted connection before netpoll polls it: it
// creates the connection's state and starts the handshake deadline.
func (l *Listener) prepare(nc netpoll.Connection) context.Context {
	e := l.eng
	c := &Conn{nc: nc, eng: e, role: codec.Server, fd: connFD(nc), hs: &handshake{routes: l, start: e.cfg.Now()}}
	e.metrics.accepted.Inc()
	if !e.track(c) {
		nc.Close()
		return context.Background()
	}
	nc.AddCloseCallback(c.onClose)
	dropReadBuffer(nc)
	c.mu.Lock()
	c.setDeadline(e.cfg.HandshakeTimeout)
	c.mu.Unlock()
	// A read callback bound to c costs one small closure; a context value
	// carrying c would cost more per connection.
	nc.SetOnRequest(func(context.Context, netpoll.Connection) error { return c.onRequest() })
	return context.Background()
}

// Close stops accepting new connections on this listener; connections
// already accepted stay open.
func (l *Listener) Close() error {
	l.once.Do(func() { l.ln.Close() })
	return nil
}

// shutdown ends netpoll's serving loop, which closes the listener's idle
// connections; the engine closes the rest.
func (l *Listener) shutdown() {
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	l.loop.Shutdown(ctx)
	<-l.done
}

// connFD is the socket of a netpoll connection, for direct writes.
func connFD(nc netpoll.Connection) int {
	return nc.(interface{ Fd() int }).Fd()
}
