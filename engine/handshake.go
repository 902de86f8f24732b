package engine

import (
	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/ws"
)

// The WebSocket opening handshake (RFC 6455 §4): the server parses the
// upgrade request and answers 101 or a refusal; the client checks the
// server's 101. In this package "handshake" always means this one; the
// libp2p layer above calls its own security and muxer negotiation the
// upgrade.

// handshake consumes opening-handshake bytes. It returns the bytes that
// follow the handshake (the first frames) and true once the connection is
// open. A request or response that arrives in pieces is kept in c.pending,
// which is dropped as soon as the handshake ends.
func (c *Conn) handshake(b []byte) ([]byte, bool) {
	hs := c.hs
	buf := b
	if hs.pending != nil {
		hs.pending = append(hs.pending, b...)
		buf = hs.pending
	}
	var n int
	var err error
	if c.role == ws.Server {
		n, err = c.serverUpgrade(buf)
	} else {
		n, err = c.clientUpgrade(buf)
	}
	if err == ws.ErrNeedMore {
		if hs.pending == nil {
			hs.pending = append([]byte(nil), b...)
		}
		return nil, false
	}
	hs.pending = nil
	if err != nil {
		return nil, false
	}
	return buf[n:], true
}

// serverUpgrade validates the request and answers it: 101 and the route's
// stage, or the refusal's status and then close.
func (c *Conn) serverUpgrade(buf []byte) (int, error) {
	cfg := &c.eng.cfg
	req, n, err := ws.ParseRequest(buf, cfg.MaxRequestSize)
	if err == ws.ErrNeedMore {
		return 0, err
	}
	if err == nil && c.eng.cfg.TrustedProxies != nil {
		err = c.chargeClient(&req)
	}
	if err == nil && cfg.CheckOrigin != nil && req.Origin != nil && !cfg.CheckOrigin(req.Origin, req.Host) {
		err = ws.ErrForbiddenOrigin
	}
	var h StageFunc
	if err == nil {
		if h = c.hs.routes.route(req.Path); h == nil {
			err = ws.ErrNotFound
		}
	}
	if err != nil {
		c.refuse(err)
		return 0, err
	}
	var resp [160]byte
	out := ws.AppendResponse(resp[:0], req.Key)
	c.writeRaw(out)
	c.hs.path = string(req.Path)
	c.open(ws.Server)
	c.stage = h(c)
	c.hs = nil
	return n, nil
}

// chargeClient charges a trusted proxy's connection to the client address
// its headers give; a limit refusal becomes a 503.
func (c *Conn) chargeClient(req *ws.Request) error {
	peer := remoteAddr(c.nc)
	if !c.eng.cfg.TrustedProxies.Trusted(peer) {
		return nil // charged at accept
	}
	client, _ := c.eng.cfg.TrustedProxies.ClientAddr(peer, req.XForwardedFor, req.XRealIP, req.Forwarded)
	if client != peer {
		c.hs.client = client // the libp2p stage reports it as the observed address
	}
	if err := c.eng.adm.AdmitSource(&c.scope, client, c.eng.cfg.Now()); err != nil {
		if le, ok := err.(*admission.LimitError); ok {
			return limitRefusal(le)
		}
		return err
	}
	return nil
}

func (c *Conn) refuse(err error) {
	he, ok := err.(*ws.HandshakeError)
	if !ok {
		he = &ws.HandshakeError{Status: 400, Token: "bad_request"}
	}
	c.eng.metrics.upgrades.WithLabelValues(he.Token).Inc()
	var resp [256]byte
	out := ws.AppendReject(resp[:0], he)
	c.writeRaw(out)
	c.end(err)
}

// clientUpgrade checks the server's response to our request.
func (c *Conn) clientUpgrade(buf []byte) (int, error) {
	n, err := ws.ParseResponse(buf, c.hs.key[:], c.eng.cfg.MaxRequestSize)
	if err == ws.ErrNeedMore {
		return 0, err
	}
	if err != nil {
		token := "bad_response"
		if he, ok := err.(*ws.HandshakeError); ok {
			token = he.Token
		}
		c.eng.metrics.upgrades.WithLabelValues(token).Inc()
		c.end(err)
		return 0, err
	}
	h := c.hs.stage
	c.open(ws.Client)
	c.stage = h(c)
	c.hs = nil
	return n, nil
}

func (c *Conn) open(role ws.Role) {
	c.state = stateOpen
	c.count(1)
	c.dec = ws.NewDecoder(role, c.eng.cfg.MaxMessageSize)
	c.setDeadline(0)
	c.eng.metrics.upgrades.WithLabelValues("ok").Inc()
}

// limitRefusals are the 503 answers to admission refusals found once the
// request is read (a client behind a trusted proxy), one per reason, with
// the token "limit_<reason>" counted in swarmgate_ws_upgrades_total.
var limitRefusals = func() map[string]*ws.HandshakeError {
	m := map[string]*ws.HandshakeError{}
	for _, r := range admission.Reasons() {
		m[r] = &ws.HandshakeError{Status: 503, Token: "limit_" + r}
	}
	return m
}()

func limitRefusal(le *admission.LimitError) *ws.HandshakeError {
	if he := limitRefusals[le.Reason]; he != nil {
		return he
	}
	return &ws.HandshakeError{Status: 503, Token: "limit"}
}
