package engine

import (
	"context"
	"crypto/tls"
	"time"

	"github.com/cloudwego/netpoll"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/engine/tls13"
	"github.com/swarmgate/swarmgate/ws"
)

// DefaultDialTimeout bounds the TCP connect of Dial.
const DefaultDialTimeout = 10 * time.Second

// Dial opens a client connection to a /ws or /tls/ws multiaddr and requests
// path. It returns once TCP is connected and the handshake request is
// queued; stage runs when the server accepts the handshake. No goroutine is
// kept for the connection. A connection that ends before its handshake
// completes is not reported: use DialWith to hear about it.
func (e *Engine) Dial(addr ma.Multiaddr, path string, stage StageFunc) (*Conn, error) {
	return e.DialWith(addr, path, stage, nil)
}

// DialWith is Dial with onFail, which runs once, with the connection's lock
// held, if the connection ends before its handshake completes (TLS failure,
// refused handshake, handshake timeout, TCP reset).
func (e *Engine) DialWith(addr ma.Multiaddr, path string, stage StageFunc, onFail func(error)) (*Conn, error) {
	a, err := parseWSAddr(addr)
	if err != nil {
		return nil, err
	}
	nc, err := netpoll.DialConnection(a.network, a.hostPort(), DefaultDialTimeout)
	if err != nil {
		return nil, err
	}
	c := &Conn{nc: nc, eng: e, role: ws.Client, fd: connFD(nc), hs: &handshake{stage: stage, onFail: onFail, key: ws.NewKey(), start: e.cfg.Now()}}
	if a.tls {
		c.tls = newTLSConn(c)
		cfg := e.clientTLSConfig(a)
		c.tls.kl = new(tls13.KeyLog)
		bindKeyLog(cfg, c.tls.kl)
		c.tls.tc = tls.Client(c.tls, cfg)
	}
	if !e.track(c) {
		nc.Close()
		return nil, ErrClosed
	}
	e.metrics.dialed.Inc()
	nc.AddCloseCallback(c.onClose)
	dropReadBuffer(nc)
	c.mu.Lock()
	c.setDeadline(e.cfg.HandshakeTimeout)
	c.count(0)
	var req [512]byte
	out := ws.AppendRequest(req[:0], a.hostHeader(), path, c.hs.key[:])
	c.writeRaw(out)
	c.flush() // with TLS: queued until the handshake is done
	c.unlock()
	// Registering the read callback last: the response cannot be handled
	// before the connection's state is complete.
	nc.SetOnRequest(func(_ context.Context, _ netpoll.Connection) error { return c.onRequest() })
	if c.tls != nil {
		c.lock()
		if c.state != stateClosed {
			c.startTLSHandshake() // the client speaks first: ClientHello
		}
		c.unlock()
	}
	return c, nil
}
