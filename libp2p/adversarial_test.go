package libp2p

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/flynn/noise"
	"github.com/gorilla/websocket"
	"github.com/libp2p/go-libp2p/core/crypto"
	cryptopb "github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify/pb"
	noisepb "github.com/libp2p/go-libp2p/p2p/security/noise/pb"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/adversary"
	"github.com/swarmgate/swarmgate/internal/bufpool"
	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/internal/wire"
	"github.com/swarmgate/swarmgate/multistream"
	"github.com/swarmgate/swarmgate/mux"
	"github.com/swarmgate/swarmgate/security"
	"github.com/swarmgate/swarmgate/ws"
)

// The adversarial suite: each test attacks a real server on loopback with
// raw frames (rawPeer), asserts the bound on what the attacker made the
// server hold and the attacker's fate (reset, refused or closed, counted
// by reason), and checks that a well-behaved client on another connection
// keeps echoing byte-exact meanwhile.

// shareSlack is what a connection may hold beyond its reserved share:
// buffers charged rather than reserved because the connection cannot do
// without them, each bounded on its own: yamux's data and control output
// queues (MaxOutput 256 KiB and the slack of one 64 KiB segment a frame
// did not fill, MaxControlOutput 64 KiB), the pass's outbound buffer
// while a flush waits for the peer (one 64 KiB class), and the one Noise
// frame split across reads (its ciphertext: one 64 KiB class, refused
// only by the system budget).
const shareSlack = 256<<10 + 64<<10 + 64<<10 + 64<<10 + 64<<10

// goodClient is a well-behaved peer on a connection of its own.
type goodClient struct {
	t   *testing.T
	pc  *PeerConn
	rng *rand.Rand
}

func newGoodClient(t *testing.T, srv *Host, addr ma.Multiaddr) *goodClient {
	t.Helper()
	return &goodClient{t: t, pc: dialHost(t, srv, addr, DialOptions{}), rng: rand.New(rand.NewPCG(1, 2))}
}

// random is n bytes of the client's random stream.
func (g *goodClient) random(n int) []byte {
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(g.rng.Uint32())
	}
	return data
}

// echo sends n random bytes on a new echo stream and checks that the same
// bytes come back.
func (g *goodClient) echo(n int) {
	g.t.Helper()
	if err := echoData(g.pc, g.random(n)); err != nil {
		g.t.Fatal(err)
	}
}

// echoData writes data on a new echo stream as the window allows, from
// outside the engine, and checks that the same bytes come back; unlike
// echoOver it may run on any goroutine.
func echoData(pc *PeerConn, data []byte) error {
	col := &collector{done: make(chan error, 1)}
	var st *mux.Stream
	var err error
	if !pc.Do(func() { st, err = pc.OpenStream(ProtoEcho, col) }) {
		return errors.New("connection closed")
	}
	for err == mux.ErrWouldBlock {
		time.Sleep(time.Millisecond)
		pc.Do(func() { st, err = pc.OpenStream(ProtoEcho, col) })
	}
	if err != nil {
		return err
	}
	rest := data
	deadline := time.Now().Add(20 * time.Second)
	for len(rest) > 0 {
		pc.Do(func() {
			n, _ := st.Write(rest)
			rest = rest[n:]
		})
		if time.Now().After(deadline) {
			return fmt.Errorf("stuck with %d bytes unwritten", len(rest))
		}
		if len(rest) > 0 {
			time.Sleep(time.Millisecond)
		}
	}
	pc.Do(func() { st.CloseWrite() })
	select {
	case err := <-col.done:
		if err != nil {
			return err
		}
	case <-time.After(20 * time.Second):
		return fmt.Errorf("echo incomplete: %d of %d bytes", len(col.got), len(data))
	}
	if !bytes.Equal(col.got, data) {
		return fmt.Errorf("echo differs: %d bytes back of %d", len(col.got), len(data))
	}
	return nil
}

// whileAttack runs attack in the background and echoes with the good
// client until it returns (at least once); it returns the echoes done
// meanwhile.
func (g *goodClient) whileAttack(attack func()) int {
	g.t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); attack() }()
	n := 0
	for {
		g.echo(64 << 10)
		n++
		select {
		case <-done:
			return n
		default:
		}
	}
}

// resets reads swarmgate_stream_resets_total{reason}.
func resetCount(t testing.TB, h *Host, reason string) float64 {
	return testutil.Gather(t, regOf(h))["swarmgate_stream_resets_total{reason="+reason+"}"]
}

// fillEchoStreams opens streams /echo/1.0.0 streams on p, four at a time,
// each SYN filling the initial window, and then, for rounds rounds, sends
// on every stream all the window the server granted since: a peer that
// obeys flow control to the byte and never grants any window back, so
// every echo stalls and every byte it may send is held.
func fillEchoStreams(p *adversary.Peer, streams, rounds int) {
	chunk := make([]byte, mux.InitialWindow-len(adversary.Propose(ProtoEcho)))
	for i := 0; i < streams; i += 4 {
		var frames [][]byte
		for j := i; j < min(i+4, streams); j++ {
			frames = append(frames, adversary.OpenStream(uint32(2*j+1), ProtoEcho, chunk))
		}
		if p.Send(frames...) != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	sent := map[uint32]uint32{}
	for range rounds {
		time.Sleep(50 * time.Millisecond)
		var frames [][]byte
		for i := range streams {
			id := uint32(2*i + 1)
			if more := p.Stream(id).Window - sent[id]; more > 0 {
				frames = append(frames, adversary.Data(0, id, make([]byte, more)))
				sent[id] += more
			}
		}
		if p.Send(frames...) != nil {
			return
		}
	}
}

// floodNewStreams opens echo streams, each SYN filling its initial window,
// one after another until the server ends the connection or n were sent,
// and returns the bytes sent: every one within the flow control yamux
// allows, and none of it read back.
func floodNewStreams(p *adversary.Peer, n int) int {
	chunk := make([]byte, mux.InitialWindow-len(adversary.Propose(ProtoEcho)))
	sent := 0
	for i := range n {
		if p.Send(adversary.OpenStream(uint32(2*i+1), ProtoEcho, chunk)) != nil {
			break
		}
		sent += mux.InitialWindow
	}
	return sent
}

// The headline attack (issue 13): peers open many /echo/1.0.0 streams,
// write into them and never read the echo. Two attackers read their
// sockets but grant no window; a third reads nothing at all and keeps
// opening streams. Each connection's share bounds what it holds (4 MiB
// plus its output queues) and what netpoll may read ahead for it; streams
// past the share are refused or reset (counted), held data is reset after
// HeldDataTimeout and the readers stay connected; the one that reads
// nothing is cut (inbound_flood, or write_timeout) once it has sent its
// share ahead. A well-behaved client echoes byte-exact throughout.
func TestAttackEchoStreamsNeverRead(t *testing.T) {
	const held = 2 * time.Second
	srv, addr := startHost(t, Config{Engine: engine.Config{Tick: 20 * time.Millisecond, WriteTimeout: 3 * time.Second},
		Mux: mux.Config{HeldDataTimeout: held}})
	good := newGoodClient(t, srv, addr)
	good.echo(256 << 10)
	var peers []*adversary.Peer
	var pcs []*PeerConn
	for i := range 3 {
		p := adversary.Dial(t, addr, nil)
		if i < 2 {
			p.StartReader()
		}
		testutil.WaitFor(t, 5*time.Second, func() bool { return serverConn(srv, p.ID) != nil })
		peers, pcs = append(peers, p), append(pcs, serverConn(srv, p.ID))
	}
	m := meterPeaks(srv, pcs...)
	var flooded int
	echoes := good.whileAttack(func() {
		done := make(chan struct{})
		for _, p := range peers[:2] {
			go func() { defer func() { done <- struct{}{} }(); fillEchoStreams(p, 48, 20) }()
		}
		flooded = floodNewStreams(peers[2], 1000)
		<-done
		<-done
	})
	m.finish()
	for i, used := range m.conn {
		t.Logf("attacker %d: peak share %d KiB, peak read-ahead allowance %d KiB", i, used>>10, m.allowance[i]>>10)
		if used > admission.DefaultConnMemory+shareSlack {
			t.Errorf("attacker %d made its connection hold %d bytes", i, used)
		}
		if m.allowance[i] > admission.DefaultConnMemory+frameAllowance {
			t.Errorf("attacker %d may have %d bytes read ahead", i, m.allowance[i])
		}
	}
	t.Logf("system peak %d KiB for 3 attackers and 1 good client; %d echoes of 64 KiB meanwhile; the non-reader sent %d MiB before the cut",
		m.system>>10, echoes, flooded>>20)
	if m.system > 4*(admission.DefaultConnMemory+shareSlack) {
		t.Errorf("system peak %d", m.system)
	}
	if r := resetCount(t, srv, mux.RefuseMemory) + resetCount(t, srv, mux.ResetMemory); r == 0 {
		t.Error("no stream refused or reset for memory")
	}
	// The non-reader is cut once it has its share and more sent ahead (or
	// a flush has waited WriteTimeout for it, or its streams, refused for
	// memory once its unread answers fill its share, reach the refusals in
	// a row a session allows).
	testutil.WaitFor(t, 10*time.Second, func() bool { return serverConn(srv, peers[2].ID) == nil })
	if n := failureCount(t, srv, "write_timeout") + failureCount(t, srv, "inbound_flood") + failureCount(t, srv, "yamux_stream_open_flood"); n != 1 {
		t.Errorf("%v connections cut, want the non-reader's", n)
	}
	// The readers stay connected; their held streams are reset after
	// HeldDataTimeout and their shares empty.
	testutil.WaitFor(t, held+5*time.Second, func() bool {
		return connUsed(pcs[0]) == 0 && connUsed(pcs[1]) == 0
	})
	if resetCount(t, srv, mux.ResetHeldData) == 0 {
		t.Error("held data not reset")
	}
	for _, p := range peers[:2] {
		select {
		case <-p.Done():
			_, err := p.Ended()
			t.Fatalf("a reader was disconnected: %v", err)
		default:
		}
	}
	good.echo(1 << 20)
}

// attacker dials a raw peer whose reader runs and returns it with the
// server's side of its connection.
func attacker(t *testing.T, srv *Host, addr ma.Multiaddr) (*adversary.Peer, *PeerConn) {
	t.Helper()
	p := adversary.Dial(t, addr, nil)
	p.StartReader()
	testutil.WaitFor(t, 5*time.Second, func() bool { return serverConn(srv, p.ID) != nil })
	return p, serverConn(srv, p.ID)
}

// goawaySent reads swarmgate_yamux_goaway_total{dir=sent,code}.
func goawaySent(t testing.TB, h *Host, code string) float64 {
	return testutil.Gather(t, regOf(h))["swarmgate_yamux_goaway_total{code="+code+",dir=sent}"]
}

// expectProtocolError waits for the server to end p's connection for a
// yamux protocol violation: GoAway(protocol error) to the peer, WebSocket
// close 1008, counted under yamux_<reason> and as a GoAway sent (n times
// so far on this server).
func expectProtocolError(t *testing.T, srv *Host, p *adversary.Peer, reason string, n float64) {
	t.Helper()
	if code := adversary.CloseCode(p.WaitEnd(5 * time.Second)); code != 1008 {
		t.Fatalf("closed with %d, want 1008", code)
	}
	ga := p.GoAway()
	if ga != int(mux.CodeProtocolError) {
		t.Fatalf("GoAway code %d, want protocol error", ga)
	}
	if got := failureCount(t, srv, "yamux_"+reason); got != n {
		t.Fatalf("yamux_%s counted %v times, want %v", reason, got, n)
	}
	if got := goawaySent(t, srv, "protocol_error"); got != n {
		t.Fatalf("GoAway(protocol error) sent %v times, want %v", got, n)
	}
}

// rust-yamux CVE-2026-31814: window updates whose credit overflows the
// 32-bit send window. One update past 2^32-1, or two that add up past
// it, end the session with GoAway(protocol error); credit up to exactly
// 2^32-1 is accepted. Nothing is held, and a good client goes on.
func TestAttackWindowUpdateOverflow(t *testing.T) {
	srv, addr := startHost(t, Config{})
	good := newGoodClient(t, srv, addr)
	// The stream's send window once the server has answered the proposal
	// and echoed "x": the initial window less those bytes.
	left := uint32(mux.InitialWindow - len(adversary.Propose(ProtoEcho)) - 1)
	cases := []struct {
		name    string
		updates []uint32
		exact   bool // the first update brings the window to exactly 2^32-1
	}{
		{"one update past 2^32-1", []uint32{1<<32 - 1}, false},
		{"two updates adding up past it", []uint32{1 << 31, 1 << 31}, false},
		// 2^32-1, then the echo of one byte, then two more: past it.
		{"exactly 2^32-1, then past it", []uint32{1<<32 - 1 - left, 2}, true},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, pc := attacker(t, srv, addr)
			frames := [][]byte{adversary.OpenStream(1, ProtoEcho, []byte("x"))}
			for _, u := range c.updates {
				frames = append(frames, adversary.Frame(mux.TypeWindowUpdate, 0, 1, u, nil))
			}
			if c.exact {
				// Accepted, and the stream still echoes.
				p.Send(frames[:2]...)
				p.Send(adversary.Data(0, 1, []byte("y")))
				testutil.WaitFor(t, 5*time.Second, func() bool { return p.Stream(1).Got == len(adversary.Propose(ProtoEcho))+2 })
				frames = frames[2:]
			}
			p.Send(frames...)
			expectProtocolError(t, srv, p, "window_overflow", float64(i+1))
			if connUsed(pc) != 0 {
				t.Fatalf("%d bytes held after the end", connUsed(pc))
			}
			good.echo(64 << 10)
		})
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return srv.Engine().Memory().Used() == 0 })
}

// rust-yamux CVE-2026-32314: a SYN whose Data frame carries more than the
// initial window, declared or sent. The session ends from the header
// alone (GoAway(protocol error), before any payload is read, so nothing
// is buffered), while a SYN carrying exactly the window is served; so
// does a later frame past what is left of a window.
func TestAttackSYNPastInitialWindow(t *testing.T) {
	srv, addr := startHost(t, Config{})
	good := newGoodClient(t, srv, addr)
	fill := make([]byte, mux.InitialWindow-len(adversary.Propose(ProtoEcho)))
	cases := []struct {
		name   string
		attack func(p *adversary.Peer)
	}{
		{"one byte past", func(p *adversary.Peer) {
			p.Send(adversary.Data(mux.FlagSYN, 1, make([]byte, mux.InitialWindow+1)))
		}},
		{"4 GiB declared, 100 bytes sent", func(p *adversary.Peer) {
			p.Send(adversary.Frame(mux.TypeData, mux.FlagSYN, 1, 1<<32-1, make([]byte, 100)))
		}},
		{"window used up, then one more byte", func(p *adversary.Peer) {
			// The echo takes the first window and grants it again;
			// we grant nothing back, so it holds the second; the
			// byte after that is past every credit.
			p.Send(adversary.OpenStream(1, ProtoEcho, fill))
			testutil.WaitFor(t, 5*time.Second, func() bool { return p.Stream(1).Window > 0 })
			time.Sleep(50 * time.Millisecond) // every update in
			p.Send(adversary.Data(0, 1, make([]byte, p.Stream(1).Window)))
			p.Send(adversary.Data(0, 1, []byte{1}))
		}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, pc := attacker(t, srv, addr)
			c.attack(p)
			expectProtocolError(t, srv, p, "data_exceeds_window", float64(i+1))
			if connUsed(pc) != 0 {
				t.Fatalf("%d bytes held after the end", connUsed(pc))
			}
			good.echo(64 << 10)
		})
	}
	// Exactly the window on a SYN: served whole.
	p, _ := attacker(t, srv, addr)
	if err := p.Send(adversary.OpenStream(1, ProtoEcho, fill)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return p.Stream(1).Got == mux.InitialWindow })
	testutil.WaitFor(t, 5*time.Second, func() bool { return srv.Engine().Memory().Used() == 0 })
}

// GHSA-hmjq-g7pp-rw3x: an oversized multistream-select length prefix
// before authentication. The length is checked from the prefix alone
// (1024 at most, two varint bytes), so the connection is closed at once
// (1008, counted ms_too_large) without waiting for, or buffering, a body;
// inside a stream after authentication the same prefix resets only that
// stream.
func TestAttackOversizedMultistreamVarint(t *testing.T) {
	srv, addr := startHost(t, Config{})
	good := newGoodClient(t, srv, addr)
	for i, prefix := range [][]byte{
		{0xff, 0xff, 0xff, 0xff, 0x0f}, // 4 GiB
		{0x81, 0x08},                   // 1025: one past the limit
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, // 2^64-1, ten varint bytes
	} {
		wc := adversary.DialWS(t, addr)
		start := time.Now()
		wc.WriteMessage(2, prefix)
		wc.SetReadDeadline(time.Now().Add(5 * time.Second))
		var err error
		for err == nil {
			_, _, err = wc.ReadMessage() // our multistream header comes first
		}
		if adversary.CloseCode(err) != 1008 || time.Since(start) > time.Second {
			t.Fatalf("prefix % x: %v after %v", prefix, err, time.Since(start))
		}
		if n := testutil.Gather(t, regOf(srv))["swarmgate_libp2p_upgrades_total{result=ms_too_large}"]; n != float64(i+1) {
			t.Fatalf("ms_too_large counted %v times", n)
		}
	}
	p, pc := attacker(t, srv, addr)
	p.Send(adversary.Data(mux.FlagSYN, 1, []byte{0xff, 0xff, 0xff, 0xff, 0x0f}))
	testutil.WaitFor(t, 5*time.Second, func() bool { return p.Stream(1).RST })
	if n := resetCount(t, srv, resetNegotiationFailed); n != 1 {
		t.Fatalf("negotiation_failed counted %v times", n)
	}
	p.Send(adversary.OpenStream(3, ProtoEcho, []byte("still here")))
	testutil.WaitFor(t, 5*time.Second, func() bool { return p.Stream(3).Got == len(adversary.Propose(ProtoEcho))+10 })
	if connUsed(pc) != 0 {
		t.Fatalf("%d bytes held", connUsed(pc))
	}
	good.echo(64 << 10)
}

// go-libp2p CVE-2022-23492: stream floods. A peer opens and resets
// streams as fast as it can (20,000), then opens streams it abandons
// mid-negotiation, then opens more than its limits allow. Opened-and-reset
// streams leave nothing behind and the connection stays; abandoned ones
// are counted against MaxPeerStreams (512) and reset at the negotiation
// deadline; past the limit each SYN is refused (RST, peer_streams), and
// MaxRefusedStreams (256) refusals in a row end the session with
// GoAway(protocol error).
func TestAttackStreamFlood(t *testing.T) {
	const negotiation = 500 * time.Millisecond
	srv, addr := startHost(t, Config{NegotiationTimeout: negotiation, Engine: engine.Config{Tick: 20 * time.Millisecond}})
	good := newGoodClient(t, srv, addr)
	adm := func() (streams float64, used int64) {
		return testutil.Gather(t, regOf(srv))["swarmgate_streams_inbound"], srv.Engine().Memory().Used()
	}
	p, pc := attacker(t, srv, addr)
	id := uint32(1)
	var peakStreams float64
	var peakUsed int64
	start := time.Now()
	echoes := good.whileAttack(func() {
		for range 20 {
			var frames [][]byte
			for range 1000 {
				frames = append(frames, adversary.OpenStream(id, ProtoEcho, []byte("hello")), adversary.Frame(mux.TypeWindowUpdate, mux.FlagRST, id, 0, nil))
				id += 2
			}
			if err := p.Send(frames...); err != nil {
				t.Errorf("connection ended during the open-reset flood: %v", err)
				return
			}
			s, u := adm()
			peakStreams, peakUsed = max(peakStreams, s), max(peakUsed, u)
		}
	})
	// Every stream is gone once the server caught up.
	testutil.WaitFor(t, 10*time.Second, func() bool {
		n := 0
		pc.Do(func() { n = pc.NumStreams() })
		s, u := adm()
		return s == 0 && u == 0 && n == 0
	})
	t.Logf("20,000 streams opened and reset in %v: peak %v streams counted, %d KiB held; %d echoes meanwhile",
		time.Since(start).Round(time.Millisecond), peakStreams, peakUsed>>10, echoes)
	if peakStreams > admission.DefaultMaxPeerStreams || peakUsed > admission.DefaultConnMemory+shareSlack+4<<20 {
		t.Fatalf("peak %v streams, %d bytes", peakStreams, peakUsed)
	}
	select {
	case <-p.Done():
		_, err := p.Ended()
		t.Fatalf("disconnected: %v", err)
	default:
	}

	// Abandoned mid-negotiation: counted, then reset at the deadline.
	var frames [][]byte
	for range admission.DefaultMaxPeerStreams + 10 {
		frames = append(frames, adversary.Data(mux.FlagSYN, id, []byte{0x13, '/'})) // half a multistream header
		id += 2
	}
	p.Send(frames...)
	testutil.WaitFor(t, 5*time.Second, func() bool { return resetCount(t, srv, "peer_streams") == 10 })
	if s, _ := adm(); s != admission.DefaultMaxPeerStreams {
		t.Fatalf("%v streams counted, want the peer's limit", s)
	}
	testutil.WaitFor(t, negotiation+5*time.Second, func() bool { s, _ := adm(); return s == 0 })
	if n := resetCount(t, srv, resetNegotiationTimeout); n != admission.DefaultMaxPeerStreams {
		t.Fatalf("%v negotiation timeouts", n)
	}
	good.echo(64 << 10)

	// Past the limit, SYN after SYN: refused, then the session ends.
	frames = frames[:0]
	for range admission.DefaultMaxPeerStreams {
		frames = append(frames, adversary.Frame(mux.TypeWindowUpdate, mux.FlagSYN, id, 0, nil))
		id += 2
	}
	p.Send(frames...)
	testutil.WaitFor(t, 5*time.Second, func() bool { s, _ := adm(); return s == admission.DefaultMaxPeerStreams })
	frames = frames[:0]
	for range mux.DefaultMaxRefusedStreams + 1 {
		frames = append(frames, adversary.Frame(mux.TypeWindowUpdate, mux.FlagSYN, id, 0, nil))
		id += 2
	}
	p.Send(frames...)
	expectProtocolError(t, srv, p, "stream_open_flood", 1)
	testutil.WaitFor(t, 5*time.Second, func() bool { s, u := adm(); return s == 0 && u == 0 })
	good.echo(64 << 10)
}

// noiseWithPayload runs the Noise XX handshake as initiator with flynn/noise
// directly, so that message 3 carries payload(ourStaticKey) of the test's
// making (an identity no honest peer would send), and returns the
// WebSocket to read the server's verdict from.
func noiseWithPayload(t *testing.T, addr ma.Multiaddr, payload func(static []byte) []byte) *websocket.Conn {
	t.Helper()
	wc := adversary.DialWS(t, addr)
	d, _ := multistream.NewDialer(ProtoNoise)
	wc.WriteMessage(websocket.BinaryMessage, d.Start(nil))
	var in []byte
	read := func() {
		wc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, b, err := wc.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		in = append(in, b...)
	}
	for !d.Done() {
		read()
		_, k, err := d.Input(nil, in)
		if err != nil {
			t.Fatal(err)
		}
		in = in[k:]
	}
	kp, _ := noise.DH25519.GenerateKeypair(nil)
	hs, err := noise.NewHandshakeState(noise.Config{CipherSuite: noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashSHA256),
		Pattern: noise.HandshakeXX, Initiator: true, StaticKeypair: kp})
	if err != nil {
		t.Fatal(err)
	}
	send := func(msg []byte) {
		wc.WriteMessage(websocket.BinaryMessage, append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...))
	}
	msg1, _, _, _ := hs.WriteMessage(nil, nil)
	send(msg1)
	for len(in) < 2 || len(in) < 2+int(binary.BigEndian.Uint16(in)) {
		read()
	}
	if _, _, _, err := hs.ReadMessage(nil, in[2:2+int(binary.BigEndian.Uint16(in))]); err != nil {
		t.Fatal(err)
	}
	msg3, _, _, err := hs.WriteMessage(nil, payload(kp.Public))
	if err != nil {
		t.Fatal(err)
	}
	send(msg3)
	return wc
}

// rsaIdentity is a NoiseHandshakePayload whose identity key is an RSA
// public key with a bits-bit modulus (not a product of two primes: a
// public key need not be, and generating a real 16,384-bit key would take
// minutes) and a junk signature.
func rsaIdentity(t *testing.T, bits int) []byte {
	t.Helper()
	n := new(big.Int).Lsh(big.NewInt(1), uint(bits-1))
	n.Or(n, new(big.Int).SetBytes(bytes.Repeat([]byte{0x5a}, bits/8-1)))
	n.SetBit(n, 0, 1)
	der, err := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: n, E: 65537})
	if err != nil {
		t.Fatal(err)
	}
	key, err := proto.Marshal(&cryptopb.PublicKey{Type: cryptopb.KeyType_RSA.Enum(), Data: der})
	if err != nil {
		t.Fatal(err)
	}
	p, err := proto.Marshal(&noisepb.NoiseHandshakePayload{IdentityKey: key, IdentitySig: make([]byte, 64)})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// go-libp2p CVE-2023-39533: huge RSA identity keys in the Noise payload,
// which cost quadratic time to verify. A key over MaxRSAKeyBits is refused
// before any signature check, from its encoded size alone when that is
// over the bound, else by core/crypto's bit check: the connection closes
// at once (1008, noise_rsa_too_large) and a good client goes on.
func TestAttackHugeRSAKey(t *testing.T) {
	srv, addr := startHost(t, Config{})
	good := newGoodClient(t, srv, addr)
	for i, bits := range []int{security.MaxRSAKeyBits + 8, 16384, 480000} {
		payload := rsaIdentity(t, bits)
		wc := noiseWithPayload(t, addr, func([]byte) []byte { return payload })
		start := time.Now()
		var err error
		for err == nil {
			_, _, err = wc.ReadMessage()
		}
		took := time.Since(start)
		t.Logf("RSA-%d identity (%d-byte payload): closed %v after message 3 (%v)", bits, len(payload), took.Round(time.Microsecond), err)
		if adversary.CloseCode(err) != 1008 || took > time.Second {
			t.Fatalf("RSA-%d: %v after %v", bits, err, took)
		}
		if n := failureCount(t, srv, "noise_rsa_too_large"); n != float64(i+1) {
			t.Fatalf("noise_rsa_too_large counted %v times", n)
		}
		good.echo(64 << 10)
	}
}

// rust-yamux CVE-2024-32984: a peer stops reading, then makes the server
// answer (yamux pings, identify responses, ping-protocol echoes) until its
// memory runs out. Pongs beyond PingBacklog are dropped, identify and
// ping streams are capped per protocol, the connection's share bounds its
// queues, and once the socket stops taking our answers the connection is
// cut: at WriteTimeout, or sooner once its share is read ahead
// (inbound_flood), or when its unread control frames pass
// MaxControlOutput, or (a slow attacker) when it has not answered the
// keepalive ping it cannot read. A good client echoes throughout.
func TestAttackStopReadingProvokeReplies(t *testing.T) {
	const writeTimeout = 2 * time.Second
	srv, addr := startHost(t, Config{Engine: engine.Config{Tick: 20 * time.Millisecond, WriteTimeout: writeTimeout}})
	good := newGoodClient(t, srv, addr)
	p := adversary.Dial(t, addr, nil) // and never reads
	testutil.WaitFor(t, 5*time.Second, func() bool { return serverConn(srv, p.ID) != nil })
	pc := serverConn(srv, p.ID)
	m := meterPeaks(srv, pc)
	var sent, pings, streams int
	start := time.Now()
	echoes := good.whileAttack(func() {
		id := uint32(1)
		for time.Since(start) < 3*writeTimeout {
			var frames [][]byte
			for range 500 {
				frames = append(frames, adversary.Frame(mux.TypePing, mux.FlagSYN, 0, uint32(pings), nil))
				pings++
			}
			for range 8 {
				frames = append(frames, adversary.OpenStream(id, ProtoIdentify, nil))
				id += 2
			}
			frames = append(frames, adversary.OpenStream(id, ProtoPing, make([]byte, 100*PingSize)))
			id += 2
			streams += 9
			if p.Send(frames...) != nil {
				return
			}
			for _, f := range frames {
				sent += len(f)
			}
		}
	})
	m.finish()
	testutil.WaitFor(t, 5*time.Second, func() bool { return serverConn(srv, p.ID) == nil })
	took := time.Since(start)
	var cut float64
	var reason string
	for _, r := range []string{"write_timeout", "inbound_flood", "yamux_control_queue_overflow", "yamux_keepalive_timeout"} {
		if n := failureCount(t, srv, r); n > 0 {
			cut, reason = cut+n, r
		}
	}
	t.Logf("%d pings and %d streams (%d KiB) sent; cut after %v (%s); peak share %d KiB, system %d KiB; %d echoes meanwhile",
		pings, streams, sent>>10, took.Round(time.Millisecond), reason, m.conn[0]>>10, m.system>>10, echoes)
	if cut != 1 {
		t.Fatalf("%v cuts counted", cut)
	}
	if m.conn[0] > admission.DefaultConnMemory+shareSlack {
		t.Fatalf("the connection held %d bytes", m.conn[0])
	}
	if took > max(3*writeTimeout, mux.DefaultPingTimeout)+5*time.Second {
		t.Fatalf("cut only after %v", took)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return srv.Engine().Memory().Used() == 0 })
	good.echo(1 << 20)
}

// py-libp2p CVE-2026-73568: a header declaring a body that never comes
// (yamux Data length, Noise frame length, WebSocket frame length) after
// setup. Nothing waits on it (a sequential reader would stall every
// stream behind it; our layers take bytes as they come), at most a
// partial Noise frame is buffered (charged, ≤ its 256 KiB class), and the
// connection ends when the peer cannot answer keepalive in time
// (KeepAliveInterval + PingTimeout, counted yamux_keepalive_timeout): its
// pongs, if any, only feed the body that never ends. A header declaring
// more than the limits is refused at once. A good client on another
// connection echoes meanwhile.
func TestAttackHeaderBodyNeverComes(t *testing.T) {
	const keepalive, pingTimeout = 300 * time.Millisecond, 300 * time.Millisecond
	srv, addr := startHost(t, Config{Engine: engine.Config{Tick: 20 * time.Millisecond},
		Mux: mux.Config{KeepAliveInterval: keepalive, PingTimeout: pingTimeout}})
	good := newGoodClient(t, srv, addr)
	wsHeader := func(length int64) []byte {
		h := ws.Header{Fin: true, Op: ws.OpBinary, Length: length, Masked: true, Key: ws.NewMaskKey()}
		return ws.AppendHeader(nil, h)
	}
	cases := []struct {
		name    string
		pongs   bool // the attacker answers our pings (its pongs feed the body)
		attack  func(p *adversary.Peer) error
		maxHeld int64
		code    int
		reason  string
	}{
		{"yamux Data length", true, func(p *adversary.Peer) error {
			return p.Send(adversary.Frame(mux.TypeData, mux.FlagSYN, 1, mux.InitialWindow, append(adversary.Propose(ProtoEcho), "0123456789"...)))
		}, 0, 1008, "yamux_keepalive_timeout"},
		{"Noise frame length", true, func(p *adversary.Peer) error {
			return p.WriteRaw(append([]byte{0xff, 0xff}, make([]byte, 100)...))
		}, bufpool.Medium, 1008, "yamux_keepalive_timeout"},
		{"WebSocket frame length", false, func(p *adversary.Peer) error {
			_, err := p.WS.UnderlyingConn().Write(wsHeader(ws.DefaultMaxMessageSize))
			return err
		}, 0, 1008, "yamux_keepalive_timeout"},
		{"WebSocket frame length past MaxMessageSize", false, func(p *adversary.Peer) error {
			_, err := p.WS.UnderlyingConn().Write(wsHeader(1 << 62))
			return err
		}, 0, 1009, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := adversary.Dial(t, addr, nil)
			p.SetAnswerPings(c.pongs)
			p.StartReader()
			testutil.WaitFor(t, 5*time.Second, func() bool { return serverConn(srv, p.ID) != nil })
			pc := serverConn(srv, p.ID)
			before := 0.0
			if c.reason != "" {
				before = failureCount(t, srv, c.reason)
			}
			m := meterPeaks(srv, pc)
			start := time.Now()
			if err := c.attack(p); err != nil {
				t.Fatal(err)
			}
			var err error
			good.whileAttack(func() { err = p.WaitEnd(10 * time.Second) })
			took := time.Since(start)
			m.finish()
			t.Logf("closed after %v (%v); peak share %d bytes", took.Round(time.Millisecond), err, m.conn[0])
			if adversary.CloseCode(err) != c.code {
				t.Fatalf("closed with %v, want %d", err, c.code)
			}
			if c.reason != "" {
				if n := failureCount(t, srv, c.reason); n != before+1 {
					t.Fatalf("%s counted %v times", c.reason, n-before)
				}
				if took > 2*(keepalive+pingTimeout)+time.Second {
					t.Fatalf("closed only after %v", took)
				}
			}
			if m.conn[0] > c.maxHeld+shareSlack {
				t.Fatalf("held %d bytes", m.conn[0])
			}
		})
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return srv.Engine().Memory().Used() == 0 })
}

// hostileIdentify answers identify with MaxIdentifyMessage-sized messages
// (as many as a response may have) full of short protocol ids and listen
// addresses: merged, as identify merges them, 6,809 protocols and 4,090
// addresses.
func hostileIdentify(pc *PeerConn, st *mux.Stream) mux.Handler {
	key, _ := crypto.MarshalPublicKey(pc.Host().Key().GetPublic())
	var out []byte
	for i := range maxIdentifyMessages {
		m := &pb.Identify{}
		if i == 0 {
			m.PublicKey = key
		}
		for j := 0; ; j++ {
			if i%2 == 0 {
				m.Protocols = append(m.Protocols, fmt.Sprintf("/%03x", (i*2000+j)%4096))
			} else {
				m.ListenAddrs = append(m.ListenAddrs, ma.StringCast(fmt.Sprintf("/ip4/10.%d.%d.%d/tcp/1", i, j/256, j%256)).Bytes())
			}
			if proto.Size(m) > MaxIdentifyMessage-16 {
				break
			}
		}
		b, _ := proto.Marshal(m)
		out = wire.AppendDelimited(out, b)
	}
	st.Write(out)
	st.CloseWrite()
	return &mux.Funcs{}
}

// go-libp2p PR #3501: identify responses merge, and merging appends the
// repeated fields, so ten 8 KiB messages of short ids would make our
// identify client keep thousands of protocols and addresses from one
// peer. It keeps at most MaxIdentifyProtocols and MaxIdentifyAddrs.
func TestAttackIdentifyListFlood(t *testing.T) {
	srv, addr := startHost(t, Config{})
	srv.Handle(ProtoIdentify, hostileIdentify)
	pc := dialHost(t, srv, addr, DialOptions{})
	m, err := identifyOver(t, pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kept %d protocols and %d listen addresses", len(m.Protocols), len(m.ListenAddrs))
	if len(m.Protocols) != MaxIdentifyProtocols || len(m.ListenAddrs) != MaxIdentifyAddrs {
		t.Fatalf("kept %d protocols and %d addresses", len(m.Protocols), len(m.ListenAddrs))
	}
	if m.Protocols[0] != "/000" || string(m.ListenAddrs[0]) != string(ma.StringCast("/ip4/10.1.0.0/tcp/1").Bytes()) {
		t.Fatalf("not the first ones: %q", m.Protocols[0])
	}
}

// Review item 5: the stream negotiator's answers go out whole and in
// order even when the session's output queue takes a few bytes at a time
// (MaxOutput 24: twelve bytes of payload per frame). Twenty streams
// proposed at once each get the whole multistream answer, then their
// echo, byte-exact; none stalls.
func TestNegotiationAnswerWaitsForOutput(t *testing.T) {
	srv, addr := startHost(t, Config{Mux: mux.Config{MaxOutput: 24}})
	p := adversary.Dial(t, addr, nil)
	p.SetKeepData(true)
	p.StartReader()
	var frames [][]byte
	for i := range 20 {
		frames = append(frames, adversary.OpenStream(uint32(2*i+1), ProtoEcho, []byte(fmt.Sprintf("stream %d", i))))
	}
	if err := p.Send(frames...); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		want := append(adversary.Propose(ProtoEcho), fmt.Sprintf("stream %d", i)...)
		testutil.WaitFor(t, 10*time.Second, func() bool { return p.Stream(uint32(2*i+1)).Got >= len(want) })
		if got := p.Stream(uint32(2*i + 1)).Data; !bytes.Equal(got, want) {
			t.Fatalf("stream %d got %q, want %q", i, got, want)
		}
	}
	newGoodClient(t, srv, addr).echo(4 << 10)
}
