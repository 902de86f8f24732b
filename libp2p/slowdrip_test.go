package libp2p

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/libp2p/go-libp2p/core/crypto"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/adversary"
	"github.com/swarmgate/swarmgate/internal/bufpool"
	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/multistream"
	"github.com/swarmgate/swarmgate/mux"
	"github.com/swarmgate/swarmgate/security"
	"github.com/swarmgate/swarmgate/ws"
)

// Slow drip at every stage. A peer that sends part of what a stage needs
// and then stalls, or sends it a byte at a time, is bounded at each stage
// by a deadline (short ones here, so the test is fast; the named defaults
// are checked by TestSlowDripDefaults) and holds no more than that
// stage's buffer meanwhile, while a good client on another connection
// echoes. After setup a frame that never completes (a yamux body, a Noise
// frame, a WebSocket frame) is TestAttackHeaderBodyNeverComes.
const (
	dripHandshake   = 500 * time.Millisecond // engine.Config.HandshakeTimeout
	dripNegotiation = 500 * time.Millisecond // Config.NegotiationTimeout
	dripKeepAlive   = 300 * time.Millisecond // mux.Config.KeepAliveInterval and PingTimeout
	dripByte        = 50 * time.Millisecond  // between two bytes of a drip
)

// clientHelloRecord is the first record of a crypto/tls ClientHello.
func clientHelloRecord(t *testing.T) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go tls.Client(a, &tls.Config{ServerName: "localhost"}).Handshake()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr, body...)
}

// dripTCP writes b a byte at a time until the peer closes.
func dripTCP(nc net.Conn, b []byte) {
	for _, c := range b {
		if _, err := nc.Write([]byte{c}); err != nil {
			return
		}
		time.Sleep(dripByte)
	}
}

// waitTCPEnd reads nc until the server closes it.
func waitTCPEnd(nc net.Conn) error {
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, nc)
	if err == nil {
		err = io.EOF
	}
	return err
}

// dripWS sends b one byte per WebSocket message until the server closes.
func dripWS(wc *websocket.Conn, b []byte) {
	for _, c := range b {
		if wc.WriteMessage(websocket.BinaryMessage, []byte{c}) != nil {
			return
		}
		time.Sleep(dripByte)
	}
}

// waitWSEnd reads wc until the server closes it and returns the close.
func waitWSEnd(wc *websocket.Conn) error {
	wc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := wc.ReadMessage(); err != nil {
			return err
		}
	}
}

// negotiated dials a WebSocket and completes multistream-select for
// /noise, leaving the Noise handshake to the caller.
func negotiated(t *testing.T, addr ma.Multiaddr) *websocket.Conn {
	t.Helper()
	wc := adversary.DialWS(t, addr)
	d, _ := multistream.NewDialer(ProtoNoise)
	wc.WriteMessage(websocket.BinaryMessage, d.Start(nil))
	var in []byte
	for !d.Done() {
		wc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, b, err := wc.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		in = append(in, b...)
		_, k, err := d.Input(nil, in)
		if err != nil {
			t.Fatal(err)
		}
		in = in[k:]
	}
	return wc
}

func TestSlowDripEveryStage(t *testing.T) {
	cert, _ := testutil.SelfSigned(t, engine.SelfSignedCertificate)
	srv, addr := startHost(t, Config{
		Engine:             engine.Config{HandshakeTimeout: dripHandshake, Tick: 20 * time.Millisecond, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}},
		NegotiationTimeout: dripNegotiation,
		Mux:                mux.Config{KeepAliveInterval: dripKeepAlive, PingTimeout: dripKeepAlive},
	})
	tlsAddr, err := srv.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/tls/ws"))
	if err != nil {
		t.Fatal(err)
	}
	hp, tlsHP := testutil.HostPort(t, addr), testutil.HostPort(t, tlsAddr)
	good := newGoodClient(t, srv, addr)
	hello := clientHelloRecord(t)
	key := ws.NewKey()
	upgradeReq := ws.AppendRequest(nil, hp, "/", key[:])
	tcp := func(hp string) net.Conn {
		nc, err := net.Dial("tcp", hp)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		return nc
	}
	cases := []struct {
		name string
		// run attacks and returns how the connection ended.
		run func(t *testing.T) error
		// reason is counted in swarmgate_connection_failures_total when
		// the deadline ends the connection ("": a stream reset instead).
		reason string
		// deadline ends the attack; held is what the stage may hold
		// meanwhile.
		deadline time.Duration
		held     int64
	}{
		{"TCP accept, not a byte", func(t *testing.T) error {
			return waitTCPEnd(tcp(hp))
		}, "handshake_timeout", dripHandshake, 0},
		{"TLS, part of a ClientHello", func(t *testing.T) error {
			nc := tcp(tlsHP)
			nc.Write(hello[:len(hello)/2])
			return waitTCPEnd(nc)
		}, "handshake_timeout", dripHandshake, bufpool.Small},
		{"TLS, a ClientHello a byte at a time", func(t *testing.T) error {
			nc := tcp(tlsHP)
			go dripTCP(nc, hello)
			return waitTCPEnd(nc)
		}, "handshake_timeout", dripHandshake, bufpool.Small},
		{"HTTP upgrade a byte at a time", func(t *testing.T) error {
			nc := tcp(hp)
			go dripTCP(nc, upgradeReq)
			return waitTCPEnd(nc)
		}, "handshake_timeout", dripHandshake, 0},
		{"multistream a byte at a time", func(t *testing.T) error {
			wc := adversary.DialWS(t, addr)
			go dripWS(wc, adversary.Propose(ProtoNoise))
			return waitWSEnd(wc)
		}, "upgrade_timeout", dripHandshake, bufpool.Small},
		{"Noise, part of message 1", func(t *testing.T) error {
			wc := negotiated(t, addr)
			msg1, _ := newTestNoise(t).NewInitiator("").Start(nil)
			wc.WriteMessage(websocket.BinaryMessage, msg1[:10])
			return waitWSEnd(wc)
		}, "upgrade_timeout", dripHandshake, bufpool.Small},
		{"Noise, message 1 a byte at a time", func(t *testing.T) error {
			wc := negotiated(t, addr)
			msg1, _ := newTestNoise(t).NewInitiator("").Start(nil)
			go dripWS(wc, msg1)
			return waitWSEnd(wc)
		}, "upgrade_timeout", dripHandshake, bufpool.Small},
		{"yamux, part of a header after setup", func(t *testing.T) error {
			p := adversary.Dial(t, addr, nil)
			p.StartReader()
			testutil.WaitFor(t, 5*time.Second, func() bool { return p.Pings() > 0 })
			time.Sleep(50 * time.Millisecond) // the pong is in
			p.SetAnswerPings(false)           // its pongs could only complete the header
			p.Send(adversary.Frame(mux.TypeWindowUpdate, mux.FlagSYN, 1, 0, nil)[:5])
			return p.WaitEnd(10 * time.Second)
		}, "yamux_keepalive_timeout", 2 * dripKeepAlive, 0},
		// Review item 2: the deadline holds while stream callbacks run
		// (they used to run the session's Tick, which could end the
		// session under them and cancel the connection's only deadline).
		{"keepalive unanswered while a ping stream is busy", func(t *testing.T) error {
			p := adversary.Dial(t, addr, nil)
			p.SetAnswerPings(false)
			p.StartReader()
			p.Send(adversary.OpenStream(1, ProtoPing, nil))
			go func() {
				for p.Send(adversary.Data(0, 1, make([]byte, PingSize))) == nil {
					time.Sleep(5 * time.Millisecond)
				}
			}()
			return p.WaitEnd(10 * time.Second)
		}, "yamux_keepalive_timeout", dripKeepAlive, bufpool.Small},
		{"a stream's negotiation a byte at a time", func(t *testing.T) error {
			p := adversary.Dial(t, addr, nil)
			p.StartReader()
			p.Send(adversary.Data(mux.FlagSYN, 1, nil))
			go func() {
				for _, c := range adversary.Propose(ProtoEcho) {
					if p.Send(adversary.Data(0, 1, []byte{c})) != nil || p.Stream(1).RST {
						return
					}
					time.Sleep(dripByte)
				}
			}()
			testutil.WaitFor(t, 10*time.Second, func() bool { return p.Stream(1).RST })
			select {
			case <-p.Done():
				t.Fatal("the connection ended with the stream")
			default:
			}
			return nil
		}, "", dripNegotiation, bufpool.Small},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			counted := func() float64 {
				if c.reason == "" {
					return resetCount(t, srv, resetNegotiationTimeout)
				}
				return failureCount(t, srv, c.reason)
			}
			before := counted()
			m := meterPeaks(srv)
			start := time.Now()
			var err error
			echoes := good.whileAttack(func() { err = c.run(t) })
			took := time.Since(start)
			m.finish()
			t.Logf("ended after %v (%v); system peak %d bytes; %d echoes meanwhile", took.Round(time.Millisecond), err, m.system, echoes)
			if took < c.deadline-100*time.Millisecond || took > c.deadline+time.Second {
				t.Errorf("ended after %v, want about %v", took, c.deadline)
			}
			if n := counted() - before; n != 1 {
				t.Errorf("counted %v times", n)
			}
			if m.system > c.held+shareSlack {
				t.Errorf("held %d bytes", m.system)
			}
		})
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return srv.Engine().Memory().Used() == 0 })
	good.echo(1 << 20)
}

// newTestNoise is a Noise configuration with a fresh identity.
func newTestNoise(t *testing.T) *security.Noise {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := security.NewNoise(k, ProtoYamux)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The named defaults behind TestSlowDripEveryStage's short deadlines, as
// documented, and in force on a host made with a zero Config: the
// handshake deadline (TCP accept to yamux), a stream's negotiation
// deadline, the keepalive ping and its timeout, and held data's reset.
func TestSlowDripDefaults(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want time.Duration
	}{
		{"engine.DefaultHandshakeTimeout", engine.DefaultHandshakeTimeout, 15 * time.Second},
		{"engine.DefaultWriteTimeout", engine.DefaultWriteTimeout, 10 * time.Second},
		{"engine.EchoMessageTimeout", engine.EchoMessageTimeout, 30 * time.Second},
		{"DefaultNegotiationTimeout", DefaultNegotiationTimeout, 10 * time.Second},
		{"mux.DefaultKeepAliveInterval", mux.DefaultKeepAliveInterval, 30 * time.Second},
		{"mux.DefaultPingTimeout", mux.DefaultPingTimeout, 10 * time.Second},
		{"mux.DefaultHeldDataTimeout", mux.DefaultHeldDataTimeout, 30 * time.Second},
	} {
		if c.got != c.want {
			t.Errorf("%s is %v, documented %v", c.name, c.got, c.want)
		}
	}
	handshake := make(chan time.Duration, 1)
	srv, addr := startHost(t, Config{Paths: map[string]engine.StageFunc{"/probe": func(c *engine.Conn) engine.Stage {
		handshake <- c.HandshakeDeadline().Sub(c.Now())
		return engine.Echo(c)
	}}})
	near := func(name string, d, want time.Duration) {
		t.Helper()
		if d > want || d < want-2*time.Second {
			t.Errorf("%s in %v, want %v", name, d, want)
		}
	}
	wc, _, err := websocket.DefaultDialer.Dial("ws://"+testutil.HostPort(t, addr)+"/probe", nil)
	if err != nil {
		t.Fatal(err)
	}
	wc.Close()
	near("handshake deadline", <-handshake, engine.DefaultHandshakeTimeout)

	// The first keepalive ping (sent at start for the RTT) unanswered.
	p := adversary.Dial(t, addr, nil)
	p.SetAnswerPings(false)
	testutil.WaitFor(t, 5*time.Second, func() bool { return serverConn(srv, p.ID) != nil })
	pc := serverConn(srv, p.ID)
	var next time.Duration
	pc.Do(func() { next = pc.sess.NextDeadline().Sub(pc.c.Now()) })
	near("ping timeout", next, mux.DefaultPingTimeout)

	// Pings answered; a stream negotiating, its partial proposal held.
	q, qc := attacker(t, srv, addr)
	q.Send(adversary.Data(mux.FlagSYN, 1, adversary.Propose(ProtoEcho)[:5]))
	testutil.WaitFor(t, 5*time.Second, func() bool {
		n, pong := 0, false
		qc.Do(func() {
			n = len(qc.negotiating)
			pong = qc.sess.RTT() > 0 // the first ping answered
		})
		return n == 1 && pong
	})
	var keepalive, negotiation time.Duration
	var held int
	qc.Do(func() {
		now := qc.c.Now()
		keepalive = qc.sess.NextDeadline().Sub(now)
		negotiation = qc.negotiating[0].deadline.Sub(now)
		held = qc.negotiating[0].st.Buffered()
	})
	near("negotiation deadline", negotiation, DefaultNegotiationTimeout)
	if held != 5 {
		t.Fatalf("%d bytes held", held)
	}
	// The keepalive and the held data's reset are both 30 s away.
	near("keepalive and held data", keepalive, mux.DefaultHeldDataTimeout)
}
