package engine

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/netpoll"
	ma "github.com/multiformats/go-multiaddr"
	"golang.org/x/sys/unix"

	"github.com/swarmgate/swarmgate/ws"
)

// Routes maps request paths to the stages that serve them. Fallback, when
// set, serves every other path (libp2p dialers may use any path); without
// it an unknown path is refused with 404.
type Routes struct {
	Paths    map[string]StageFunc
	Fallback StageFunc
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

	// tlsCfg is set on a /tls/ws listener; plain on a /ws one. Both set
	// (one port shared by two Listen calls): the first byte of each
	// connection decides, 0x16 being a TLS handshake record.
	tlsCfg atomic.Pointer[tls.Config]
	plain  atomic.Bool
	// tcp is the bound address, for finding a port to share.
	tcp *net.TCPAddr
	// parent is the listener whose port this one shares, nil for the owner.
	parent *Listener
}

// Addr is the listen multiaddr with the port the kernel chose; /wss is
// written /tls/ws.
func (l *Listener) Addr() ma.Multiaddr { return l.addr }

func (l *Listener) route(path []byte) StageFunc {
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
	tls     bool   // /tls/ws, /tls/sni/H/ws or /wss
	sni     string // /sni/H: TLS server name and Host header
}

// serverName is the TLS server name to dial: the /sni host, else the
// address's host.
func (a wsAddr) serverName() string {
	if a.sni != "" {
		return a.sni
	}
	return a.host
}

// hostHeader is the Host of the upgrade request.
func (a wsAddr) hostHeader() string {
	return net.JoinHostPort(a.serverName(), strconv.Itoa(a.port))
}

// suffix is the address after /tcp/N, in go-libp2p's canonical form.
func (a wsAddr) suffix() string {
	switch {
	case a.sni != "":
		return "/tls/sni/" + a.sni + "/ws"
	case a.tls:
		return "/tls/ws"
	}
	return "/ws"
}

func (a wsAddr) hostPort() string { return net.JoinHostPort(a.host, strconv.Itoa(a.port)) }

// ErrUnsupportedAddr reports a multiaddr the engine cannot listen on or
// dial; its text lists the forms it takes.
var ErrUnsupportedAddr = errors.New("engine: unsupported multiaddr (want /ip4|ip6|dns|dns4|dns6/HOST/tcp/PORT followed by /ws, /wss, /tls/ws or /tls/sni/NAME/ws, optionally ending in /p2p/ID)")

// parseWSAddr accepts /ip4|ip6|dns|dns4|dns6/…/tcp/N followed by /ws,
// /tls/ws, /tls/sni/H/ws or /wss (protocol notes §2), optionally followed
// by /p2p/… (ignored here).
func parseWSAddr(m ma.Multiaddr) (wsAddr, error) {
	var a wsAddr
	bad := fmt.Errorf("%w: %s", ErrUnsupportedAddr, m)
	cs := []ma.Component(m)
	if len(cs) < 3 {
		return a, bad
	}
	switch code := cs[0].Protocol().Code; code {
	case ma.P_IP4, ma.P_DNS4:
		a.network = "tcp4"
	case ma.P_IP6, ma.P_DNS6:
		a.network = "tcp6"
	case ma.P_DNS:
		a.network = "tcp"
	default:
		return a, bad
	}
	a.host = cs[0].Value()
	if cs[1].Protocol().Code != ma.P_TCP {
		return a, bad
	}
	p, err := strconv.Atoi(cs[1].Value())
	if err != nil {
		return a, err
	}
	a.port = p
	rest := cs[2:]
	switch rest[0].Protocol().Code {
	case ma.P_WS:
		rest = rest[1:]
	case ma.P_WSS:
		a.tls = true
		rest = rest[1:]
	case ma.P_TLS:
		a.tls = true
		rest = rest[1:]
		if len(rest) > 0 && rest[0].Protocol().Code == ma.P_SNI {
			a.sni = rest[0].Value()
			rest = rest[1:]
		}
		if len(rest) == 0 || rest[0].Protocol().Code != ma.P_WS {
			return a, bad
		}
		rest = rest[1:]
	default:
		return a, bad
	}
	if len(rest) == 1 && rest[0].Protocol().Code == ma.P_P2P {
		rest = rest[1:]
	}
	if len(rest) != 0 {
		return a, bad
	}
	return a, nil
}

// ErrAddrInUse reports a second Listen on a port already serving the same
// security (plain or TLS).
var ErrAddrInUse = errors.New("engine: address already served")

// share adds the other security to a listener already bound to a's port:
// /ws and /tls/ws on one port, told apart by each connection's first byte.
// The returned listener shares the owner's socket and routes.
func (e *Engine) share(a wsAddr) (*Listener, error) {
	if a.port == 0 {
		return nil, nil
	}
	e.mu.Lock()
	var owner *Listener
	for _, l := range e.listeners {
		if l.tcp.Port == a.port && l.tcp.IP.String() == a.host {
			owner = l
		}
	}
	e.mu.Unlock()
	if owner == nil {
		return nil, nil
	}
	addr, err := listenMultiaddr(owner.tcp, a)
	if err != nil {
		return nil, err
	}
	if a.tls {
		cfg, err := e.serverTLSConfig(a, owner.tcp.IP)
		if err != nil {
			return nil, err
		}
		if !owner.tlsCfg.CompareAndSwap(nil, cfg) {
			return nil, fmt.Errorf("%w: %s", ErrAddrInUse, addr)
		}
	} else if owner.plain.Swap(true) {
		return nil, fmt.Errorf("%w: %s", ErrAddrInUse, addr)
	}
	return &Listener{eng: e, addr: addr, ln: owner.ln, loop: owner.loop, routes: owner.routes, done: owner.done, tcp: owner.tcp, parent: owner}, nil
}

func listenMultiaddr(tcp *net.TCPAddr, a wsAddr) (ma.Multiaddr, error) {
	ipProto := "ip4"
	if tcp.IP.To4() == nil {
		ipProto = "ip6"
	}
	return ma.NewMultiaddr(fmt.Sprintf("/%s/%s/tcp/%d%s", ipProto, tcp.IP, tcp.Port, a.suffix()))
}

// Listen starts accepting on addr (port 0 picks a free port) and serves the
// connections with routes. The returned listener's Addr has the real port.
func (e *Engine) Listen(addr ma.Multiaddr, routes Routes) (*Listener, error) {
	a, err := parseWSAddr(addr)
	if err != nil {
		return nil, err
	}
	if a.tls && a.sni == "" && net.ParseIP(a.host) == nil {
		// /dns…/tls/ws: the address printed with the bound IP keeps the
		// name as /sni, as go-libp2p does when it resolves such an address.
		a.sni = a.host
	}
	if l, err := e.share(a); l != nil || err != nil {
		return l, err
	}
	ln, err := netpoll.CreateListener(a.network, a.hostPort())
	if err != nil {
		return nil, err
	}
	l := &Listener{eng: e, ln: ln, routes: routes, done: make(chan struct{})}
	l.tcp = ln.Addr().(*net.TCPAddr)
	l.addr, err = listenMultiaddr(l.tcp, a)
	if err != nil {
		ln.Close()
		return nil, err
	}
	if a.tls {
		cfg, err := e.serverTLSConfig(a, l.tcp.IP)
		if err != nil {
			ln.Close()
			return nil, err
		}
		l.tlsCfg.Store(cfg)
	} else {
		l.plain.Store(true)
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
	c := &Conn{nc: nc, eng: e, role: ws.Server, fd: connFD(nc), hs: &handshake{routes: l, start: e.cfg.Now()}}
	e.metrics.accepted.Inc()
	// Admission before any byte is read. A trusted proxy is admitted
	// without a source (total and memory only) and its client charged in
	// serverUpgrade; a refused peer's TCP is closed at once.
	peer := remoteAddr(nc)
	src := peer
	if e.cfg.TrustedProxies.Trusted(peer) {
		src = netip.Addr{}
	}
	if err := e.adm.Admit(&c.scope, src, e.cfg.Now()); err != nil {
		refuseTCP(nc)
		return context.Background()
	}
	if !e.track(c) {
		c.scope.Close()
		nc.Close()
		return context.Background()
	}
	nc.AddCloseCallback(c.onClose)
	dropReadBuffer(nc)
	c.mu.Lock()
	c.setDeadline(e.cfg.HandshakeTimeout)
	c.count(0)
	c.mu.Unlock()
	// A read callback bound to c costs one small closure; a context value
	// carrying c would cost more per connection.
	nc.SetOnRequest(func(context.Context, netpoll.Connection) error { return c.onRequest() })
	return context.Background()
}

// Close stops accepting new connections on this listener; connections
// already accepted stay open.
func (l *Listener) Close() error {
	if l.parent != nil {
		return l.parent.Close() // one socket: closing either address closes both
	}
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

// refuseTCP turns a connection away from inside prepare. Closing it there,
// before netpoll registers it, works but makes netpoll log a failed detach
// per refusal; instead the connection closes itself in its OnConnect,
// which netpoll runs once it is registered. SO_LINGER 0 makes the close an
// RST: no TIME_WAIT on our side for a flood of refusals.
func refuseTCP(nc netpoll.Connection) {
	unix.SetsockoptLinger(connFD(nc), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	if oc, ok := nc.(interface{ SetOnConnect(netpoll.OnConnect) error }); ok {
		oc.SetOnConnect(func(ctx context.Context, nc netpoll.Connection) context.Context {
			nc.Close()
			return ctx
		})
		return
	}
	nc.Close()
}

// remoteAddr is a connection's peer IP (the zero Addr if unknown).
func remoteAddr(nc netpoll.Connection) netip.Addr {
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// connFD is the socket of a netpoll connection, for direct writes.
func connFD(nc netpoll.Connection) int {
	return nc.(interface{ Fd() int }).Fd()
}
