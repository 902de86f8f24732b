package relay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/internal/wire"
	"github.com/swarmgate/swarmgate/libp2p"
	"github.com/swarmgate/swarmgate/mux"
)

// End-to-end over real sockets: a relay on an engine.Host, and peers that
// are our own client role on engines of their own.

// fakeClock is an engine clock the test moves (timers on the wheel fire
// once it passes them; the wheel itself ticks in real time).
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

type testRelay struct {
	t     testing.TB
	host  *libp2p.Host
	relay *Relay
	addr  ma.Multiaddr
	reg   *prometheus.Registry
	now   func() time.Time
}

// startRelay runs a relay host on a loopback /ws listener. now nil: real
// time.
func startRelay(t testing.TB, cfg Config, now func() time.Time) *testRelay {
	t.Helper()
	return startRelayOn(t, "/ip4/127.0.0.1/tcp/0/ws", cfg, now)
}

// startRelayOn listens on listen (/tls/ws gets a self-signed certificate).
func startRelayOn(t testing.TB, listen string, cfg Config, now func() time.Time) *testRelay {
	t.Helper()
	return startRelayWith(t, listen, libp2p.Config{}, cfg, now)
}

// startRelayWith also takes the host's configuration (of its engine's,
// Logger, Now and Tick are the test's).
func startRelayWith(t testing.TB, listen string, hcfg libp2p.Config, cfg Config, now func() time.Time) *testRelay {
	t.Helper()
	hcfg.Engine.Logger, hcfg.Engine.Now, hcfg.Engine.Tick = testutil.Quiet, now, 10*time.Millisecond
	if now != nil {
		// Clock jumps would time out yamux keepalive pings in flight.
		hcfg.Mux.KeepAliveInterval = -1
	}
	h, err := libp2p.New(hcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	addr, err := h.Listen(ma.StringCast(listen))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	cfg.Now = now
	cfg.AllowPrivateAddrs = true // loopback addresses in replies, to check them
	r, err := New(h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if now == nil {
		now = time.Now
	}
	return &testRelay{t: t, host: h, relay: r, addr: addr, reg: reg, now: now}
}

// client is a peer connected to the relay with our client role.
type client struct {
	t    testing.TB
	host *libp2p.Host
	cli  *Client
	pc   *libp2p.PeerConn
}

func (tr *testRelay) dial() *client {
	tr.t.Helper()
	e := engine.New(engine.Config{Logger: testutil.Quiet})
	tr.t.Cleanup(func() { e.Close() })
	return tr.dialOn(e)
}

// dialOn connects a new host on engine e.
func (tr *testRelay) dialOn(e *engine.Engine) *client {
	t := tr.t
	t.Helper()
	h, err := libp2p.NewOn(e, libp2p.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pc, err := h.Dial(ctx, tr.addr, libp2p.DialOptions{Expect: tr.host.ID()})
	if err != nil {
		t.Fatal(err)
	}
	return &client{t: t, host: h, cli: NewClient(h, tr.now), pc: pc}
}

func (c *client) id() peer.ID { return c.host.ID() }

func (c *client) reserve() (*Reservation, error) {
	type res struct {
		r   *Reservation
		err error
	}
	ch := make(chan res, 1)
	c.pc.Do(func() { c.cli.Reserve(c.pc, func(r *Reservation, err error) { ch <- res{r, err} }) })
	select {
	case r := <-ch:
		return r.r, r.err
	case <-time.After(10 * time.Second):
		c.t.Fatal("reserve timed out")
	}
	return nil, nil
}

// held runs a blocking stream until the test ends: its goroutine hands
// the stream over and waits (a RunBlocking function that returned would
// close it).
func held(t testing.TB, pc *libp2p.PeerConn, st *mux.Stream, got chan<- *libp2p.BlockingStream) mux.Handler {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	return libp2p.RunBlocking(func(_ *libp2p.PeerConn, s *libp2p.BlockingStream) {
		got <- s
		<-release
	})(pc, st)
}

// connect opens a circuit to dst; the stream comes back blocking.
func (c *client) connect(dst peer.ID) (*libp2p.BlockingStream, *pb.Limit, error) {
	type res struct {
		limit *pb.Limit
		err   error
	}
	ch := make(chan res, 1)
	streams := make(chan *libp2p.BlockingStream, 1)
	c.pc.Do(func() {
		c.cli.Connect(c.pc, dst, func(st *mux.Stream, limit *pb.Limit, err error) mux.Handler {
			ch <- res{limit, err}
			if err != nil {
				return nil
			}
			return held(c.t, c.pc, st, streams)
		})
	})
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, nil, r.err
		}
		return <-streams, r.limit, nil
	case <-time.After(20 * time.Second):
		c.t.Fatal("connect timed out")
	}
	return nil, nil, nil
}

// serveEcho accepts circuits and echoes them.
func (c *client) serveEcho() {
	c.cli.HandleStop(func(pc *libp2p.PeerConn, st *mux.Stream, src peer.ID, limit *pb.Limit) mux.Handler {
		return libp2p.RunBlocking(func(_ *libp2p.PeerConn, s *libp2p.BlockingStream) {
			io.Copy(s, s)
			s.Close()
		})(pc, st)
	})
}

// serveHeld accepts circuits and hands their streams to the test.
func (c *client) serveHeld() <-chan *libp2p.BlockingStream {
	ch := make(chan *libp2p.BlockingStream, 4)
	c.cli.HandleStop(func(pc *libp2p.PeerConn, st *mux.Stream, src peer.ID, limit *pb.Limit) mux.Handler {
		return held(c.t, pc, st, ch)
	})
	return ch
}

func statusOf(err error) pb.Status {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return pb.Status_UNUSED
}

// echoThrough writes data on s, half-closes, and checks the echo.
func echoThrough(t *testing.T, s *libp2p.BlockingStream, data []byte) {
	t.Helper()
	s.SetDeadline(time.Now().Add(30 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := s.Write(data)
		if err == nil {
			err = s.Close()
		}
		werr <- err
	}()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("read after %d bytes: %v", len(got), err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echo differs: %d bytes of %d", len(got), len(data))
	}
}

func TestReserveAndConnect(t *testing.T) {
	tr := startRelay(t, Config{}, nil)
	dst, src := tr.dial(), tr.dial()
	dst.serveEcho()
	r, err := dst.reserve()
	if err != nil {
		t.Fatal(err)
	}
	if r.Voucher == nil || r.Voucher.Relay != tr.host.ID() || r.Voucher.Peer != dst.id() {
		t.Fatalf("voucher %+v", r.Voucher)
	}
	if d := time.Until(r.Expire); d < 59*time.Minute || d > time.Hour {
		t.Fatalf("expires in %v", d)
	}
	want := tr.addr.Encapsulate(ma.StringCast("/p2p/" + tr.host.ID().String()))
	if len(r.Addrs) != 1 || !r.Addrs[0].Equal(want) {
		t.Fatalf("addrs %v, want %v", r.Addrs, want)
	}
	if r.Limit.GetDuration() != 120 || r.Limit.GetData() != DefaultCircuitBytes {
		t.Fatalf("limit %v", r.Limit)
	}
	s, limit, err := src.connect(dst.id())
	if err != nil {
		t.Fatal(err)
	}
	if limit.GetDuration() != 120 || limit.GetData() != DefaultCircuitBytes {
		t.Fatalf("connect limit %v", limit)
	}
	echoThrough(t, s, randomBytes(100_000))
	waitFor(t, "circuit count back to 0", func() bool { return tr.relay.svc.store.Circuits() == 0 })
	if n := counterValue(tr.relay.svc.m.ended[EndClosed]); n != 1 {
		t.Fatalf("ended closed: %v", n)
	}
	if n := counterValue(tr.relay.svc.m.bytes); n != 200_000 {
		t.Fatalf("relayed bytes %v", n)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Unlimited relay, a megabyte each way at once.
func TestUnlimitedBulk(t *testing.T) {
	tr := startRelay(t, Config{CircuitDuration: -1, CircuitBytes: -1}, nil)
	dst, src := tr.dial(), tr.dial()
	dst.serveEcho()
	r, err := dst.reserve()
	if err != nil || r.Limit != nil {
		t.Fatalf("reserve: %v, limit %v", err, r.Limit)
	}
	s, limit, err := src.connect(dst.id())
	if err != nil || limit != nil {
		t.Fatalf("connect: %v, limit %v", err, limit)
	}
	echoThrough(t, s, randomBytes(4<<20))
}

// A reservation ends with its connection; a refresh extends it.
func TestReservationLifetime(t *testing.T) {
	clock := newFakeClock()
	tr := startRelay(t, Config{}, clock.Now)
	dst, src := tr.dial(), tr.dial()
	dst.serveEcho()
	r1, err := dst.reserve()
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(40 * time.Minute)
	r2, err := dst.reserve()
	if err != nil {
		t.Fatal(err)
	}
	if d := r2.Expire.Sub(r1.Expire); d != 40*time.Minute {
		t.Fatalf("refresh moved expiry by %v", d)
	}
	// Past the first expiry, within the refreshed one: still reachable.
	clock.Advance(30 * time.Minute)
	s, _, err := src.connect(dst.id())
	if err != nil {
		t.Fatalf("after the first expiry: %v", err)
	}
	echoThrough(t, s, []byte("still here"))
	// Past the refreshed expiry: gone.
	clock.Advance(31 * time.Minute)
	if _, _, err := src.connect(dst.id()); statusOf(err) != pb.Status_NO_RESERVATION {
		t.Fatalf("after expiry: %v", err)
	}
	// Reserve again, then close the connection: the reservation goes with it.
	clock.Advance(time.Minute)
	if _, err := dst.reserve(); err != nil {
		t.Fatal(err)
	}
	if tr.relay.svc.store.Len() != 1 {
		t.Fatal("no reservation")
	}
	dst.pc.Conn().CloseWith(1000, "")
	waitFor(t, "the reservation to end with its connection", func() bool { return tr.relay.svc.store.Len() == 0 })
	if _, _, err := src.connect(dst.id()); statusOf(err) != pb.Status_NO_RESERVATION {
		t.Fatalf("after close: %v", err)
	}
}

// Every refusal status over the wire.
func TestRefusalsOverTheWire(t *testing.T) {
	tr := startRelay(t, Config{MaxReservations: 2, MaxCircuitsPerPeer: 1}, nil)
	a, b, c := tr.dial(), tr.dial(), tr.dial()
	heldStreams := a.serveHeld()
	if _, err := a.reserve(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.reserve(); err != nil { // c reserves but serves no stop
		t.Fatal(err)
	}
	if _, err := b.reserve(); statusOf(err) != pb.Status_RESERVATION_REFUSED {
		t.Fatalf("over the total: %v", err)
	}
	if _, _, err := b.connect(b.id()); statusOf(err) != pb.Status_PERMISSION_DENIED {
		t.Fatalf("to oneself: %v", err)
	}
	if _, _, err := b.connect(tr.host.ID()); statusOf(err) != pb.Status_PERMISSION_DENIED {
		t.Fatalf("to the relay: %v", err)
	}
	if _, _, err := a.connect(b.id()); statusOf(err) != pb.Status_NO_RESERVATION {
		t.Fatalf("no reservation: %v", err)
	}
	if _, _, err := b.connect(c.id()); statusOf(err) != pb.Status_CONNECTION_FAILED {
		t.Fatalf("destination without stop: %v", err)
	}
	s, _, err := b.connect(a.id())
	if err != nil {
		t.Fatal(err)
	}
	<-heldStreams
	if _, _, err := c.connect(a.id()); statusOf(err) != pb.Status_RESOURCE_LIMIT_EXCEEDED {
		t.Fatalf("second circuit to a: %v", err)
	}
	s.Reset()
	// Raw requests: garbage, a STATUS, and an oversized frame.
	for _, tc := range []struct {
		req  []byte
		want pb.Status
	}{
		{[]byte{3, 0xff, 0xff, 0xff}, pb.Status_MALFORMED_MESSAGE},
		{mustHop(&pb.HopMessage{Type: pb.HopMessage_STATUS.Enum(), Status: pb.Status_OK.Enum()}), pb.Status_UNEXPECTED_MESSAGE},
		{wire.AppendUvarint(nil, MaxMessageSize+1), pb.Status_MALFORMED_MESSAGE},
		{mustHop(&pb.HopMessage{Type: pb.HopMessage_CONNECT.Enum(), Peer: &pb.Peer{Id: []byte("x")}}), pb.Status_MALFORMED_MESSAGE},
	} {
		if got := rawHop(t, b, tc.req); got.GetStatus() != tc.want || got.GetType() != pb.HopMessage_STATUS {
			t.Fatalf("% x: %v, want %v", tc.req, got, tc.want)
		}
	}
	for _, st := range []pb.Status{pb.Status_RESERVATION_REFUSED, pb.Status_PERMISSION_DENIED, pb.Status_NO_RESERVATION,
		pb.Status_CONNECTION_FAILED, pb.Status_RESOURCE_LIMIT_EXCEEDED, pb.Status_MALFORMED_MESSAGE, pb.Status_UNEXPECTED_MESSAGE} {
		total := 0.0
		for _, typ := range hopTypes {
			total += hopCount(t, tr.reg, typ, st)
		}
		if total == 0 {
			t.Errorf("%v not counted", st)
		}
	}
}

func mustHop(m *pb.HopMessage) []byte {
	b, err := AppendHop(nil, m)
	if err != nil {
		panic(err)
	}
	return b
}

// rawHop opens a hop stream, writes req as is, and reads the reply.
func rawHop(t *testing.T, c *client, req []byte) *pb.HopMessage {
	t.Helper()
	s, err := c.pc.OpenBlocking(ProtoHop)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Write(req); err != nil {
		t.Fatal(err)
	}
	var buf []byte
	tmp := make([]byte, 512)
	for {
		n, err := s.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if m, _, perr := ParseHop(buf); perr == nil {
			return m
		} else if perr != wire.ErrNeedMore {
			t.Fatalf("reply: %v", perr)
		}
		if err != nil {
			t.Fatalf("read: %v after % x", err, buf)
		}
	}
}

// rawStop is a destination's stop handler written against the wire: it
// answers OK with its first relayed bytes in the same write, so they reach
// the relay in the same read as the STATUS.
type rawStop struct {
	early []byte
	mu    chan struct{} // 1-slot lock for got
	got   []byte
	req   *pb.StopMessage
}

func (r *rawStop) OnData(st *mux.Stream, p []byte) int {
	r.mu <- struct{}{}
	defer func() { <-r.mu }()
	if r.req == nil {
		m, n, err := ParseStop(p)
		if err != nil {
			return 0
		}
		r.req = m
		b, _ := AppendStop(nil, stopStatus(pb.Status_OK))
		st.Write(append(b, r.early...))
		r.got = append(r.got, p[n:]...)
		return len(p)
	}
	r.got = append(r.got, p...)
	return len(p)
}
func (r *rawStop) OnWritable(*mux.Stream)     {}
func (r *rawStop) OnFIN(*mux.Stream)          {}
func (r *rawStop) OnReset(*mux.Stream, error) {}

func (r *rawStop) received() []byte {
	r.mu <- struct{}{}
	defer func() { <-r.mu }()
	return append([]byte(nil), r.got...)
}

// Bytes behind the CONNECT (source) and behind the STOP reply
// (destination), in the same read as the message, are kept and relayed
// only after both OKs, in order.
func TestEarlyBytesBothWays(t *testing.T) {
	tr := startRelay(t, Config{}, nil)
	dst, src := tr.dial(), tr.dial()
	rs := &rawStop{early: []byte("dst speaks first"), mu: make(chan struct{}, 1)}
	dst.host.Handle(ProtoStop, func(*libp2p.PeerConn, *mux.Stream) mux.Handler { return rs })
	if _, err := dst.reserve(); err != nil {
		t.Fatal(err)
	}
	s, err := src.pc.OpenBlocking(ProtoHop)
	if err != nil {
		t.Fatal(err)
	}
	s.SetDeadline(time.Now().Add(10 * time.Second))
	req := mustHop(&pb.HopMessage{Type: pb.HopMessage_CONNECT.Enum(), Peer: &pb.Peer{Id: []byte(dst.id())}})
	if _, err := s.Write(append(req, "src speaks first"...)); err != nil {
		t.Fatal(err)
	}
	var buf []byte
	tmp := make([]byte, 256)
	want := "dst speaks first"
	for {
		n, err := s.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if m, k, perr := ParseHop(buf); perr == nil {
			if m.GetStatus() != pb.Status_OK {
				t.Fatalf("CONNECT: %v", m)
			}
			if len(buf)-k >= len(want) {
				if got := string(buf[k:]); got != want {
					t.Fatalf("after the OK: %q, want %q", got, want)
				}
				break
			}
		}
		if err != nil {
			t.Fatalf("read: %v after %q", err, buf)
		}
	}
	waitFor(t, "the source's early bytes at the destination", func() bool { return string(rs.received()) == "src speaks first" })
	if rs.req.GetType() != pb.StopMessage_CONNECT || peer.ID(rs.req.GetPeer().GetId()) != src.id() || rs.req.GetLimit().GetDuration() != 120 {
		t.Fatalf("STOP request %v", rs.req)
	}
}

// The duration limit, on the engine's clock: alive a second before it,
// both sides reset once it passes.
func TestDurationLimit(t *testing.T) {
	clock := newFakeClock()
	tr := startRelay(t, Config{}, clock.Now)
	dst, src := tr.dial(), tr.dial()
	dstStreams := dst.serveHeld()
	if _, err := dst.reserve(); err != nil {
		t.Fatal(err)
	}
	s, _, err := src.connect(dst.id())
	if err != nil {
		t.Fatal(err)
	}
	d := <-dstStreams
	ping := func() error {
		s.SetDeadline(time.Now().Add(2 * time.Second))
		d.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := s.Write([]byte("x")); err != nil {
			return err
		}
		b := make([]byte, 1)
		_, err := io.ReadFull(d, b)
		return err
	}
	clock.Advance(DefaultCircuitDuration - time.Second)
	time.Sleep(100 * time.Millisecond) // ten wheel ticks
	if err := ping(); err != nil {
		t.Fatalf("a second before the limit: %v", err)
	}
	// The wheel files a deadline under the first tick at or after it: the
	// frozen clock must reach that tick (10 ms here).
	clock.Advance(time.Second + 10*time.Millisecond)
	waitFor(t, "the circuit to end by duration", func() bool { return counterValue(tr.relay.svc.m.ended[EndDuration]) == 1 })
	var se *mux.StreamError
	d.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(d); !errors.As(err, &se) {
		t.Fatalf("destination after the limit: %v, want a reset", err)
	}
	s.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(s); !errors.As(err, &se) {
		t.Fatalf("source after the limit: %v, want a reset", err)
	}
	if tr.relay.svc.store.Circuits() != 0 {
		t.Fatal("circuit still counted")
	}
}

// The data limit end to end: exactly Limit.Data bytes pass with the FIN;
// one more resets both sides.
func TestDataLimitOverTheWire(t *testing.T) {
	const limit = 64 << 10
	tr := startRelay(t, Config{CircuitBytes: limit}, nil)
	dst, src := tr.dial(), tr.dial()
	dstStreams := dst.serveHeld()
	if _, err := dst.reserve(); err != nil {
		t.Fatal(err)
	}
	for _, extra := range []int{0, 1} {
		s, l, err := src.connect(dst.id())
		if err != nil || l.GetData() != limit {
			t.Fatalf("connect: %v, limit %v", err, l)
		}
		d := <-dstStreams
		data := randomBytes(limit + extra)
		s.SetDeadline(time.Now().Add(10 * time.Second))
		d.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			s.Write(data)
			s.Close()
		}()
		got, err := io.ReadAll(d)
		if extra == 0 {
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("exactly the limit: %d bytes, %v", len(got), err)
			}
			d.Close()
			continue
		}
		var se *mux.StreamError
		if !errors.As(err, &se) || len(got) > limit || !bytes.Equal(got, data[:len(got)]) {
			t.Fatalf("one past the limit: %d bytes, %v", len(got), err)
		}
		if _, err := io.ReadAll(s); !errors.As(err, &se) {
			t.Fatalf("source: %v, want a reset", err)
		}
	}
	waitFor(t, "data_limit counted", func() bool { return counterValue(tr.relay.svc.m.ended[EndDataLimit]) == 1 })
}

// The destination's connection ends mid-circuit: the source is reset.
func TestDestinationGoesAway(t *testing.T) {
	tr := startRelay(t, Config{}, nil)
	dst, src := tr.dial(), tr.dial()
	dstStreams := dst.serveHeld()
	if _, err := dst.reserve(); err != nil {
		t.Fatal(err)
	}
	s, _, err := src.connect(dst.id())
	if err != nil {
		t.Fatal(err)
	}
	<-dstStreams
	dst.pc.Conn().CloseWith(1000, "")
	s.SetDeadline(time.Now().Add(5 * time.Second))
	var se *mux.StreamError
	if _, err := io.ReadAll(s); !errors.As(err, &se) {
		t.Fatalf("source: %v, want a reset", err)
	}
	waitFor(t, "the reservation and circuit to go", func() bool {
		return tr.relay.svc.store.Circuits() == 0 && tr.relay.svc.store.Len() == 0
	})
}

// A destination that refuses, or never answers the STOP: CONNECTION_FAILED.
func TestStopFailures(t *testing.T) {
	clock := newFakeClock()
	tr := startRelay(t, Config{}, clock.Now)
	refuser, silent, src := tr.dial(), tr.dial(), tr.dial()
	refuser.cli.HandleStop(func(*libp2p.PeerConn, *mux.Stream, peer.ID, *pb.Limit) mux.Handler { return nil })
	silent.host.Handle(ProtoStop, func(*libp2p.PeerConn, *mux.Stream) mux.Handler {
		return &mux.Funcs{Data: func(*mux.Stream, []byte) int { return 0 }}
	})
	for _, c := range []*client{refuser, silent} {
		if _, err := c.reserve(); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := src.connect(refuser.id()); statusOf(err) != pb.Status_CONNECTION_FAILED {
		t.Fatalf("refused: %v", err)
	}
	res := make(chan error, 1)
	go func() {
		_, _, err := src.connect(silent.id())
		res <- err
	}()
	waitFor(t, "the stop stream", func() bool { return tr.relay.svc.store.Circuits() == 1 })
	time.Sleep(50 * time.Millisecond)
	clock.Advance(StopTimeout + 10*time.Millisecond) // to the wheel tick at or after the deadline
	select {
	case err := <-res:
		if statusOf(err) != pb.Status_CONNECTION_FAILED {
			t.Fatalf("silent destination: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer after StopTimeout")
	}
	if tr.relay.svc.store.Circuits() != 0 {
		t.Fatal("failed circuit still counted")
	}
}

// A destination that does not read stops the source: the source gets out
// no more than the windows and queues allow, and memory stays flat, while
// it tries to push 32 MiB. Once the reader reads, every byte arrives.
func TestSlowReaderBoundsSender(t *testing.T) {
	tr := startRelay(t, Config{CircuitDuration: -1, CircuitBytes: -1}, nil)
	dst, src := tr.dial(), tr.dial()
	dstStreams := dst.serveHeld()
	if _, err := dst.reserve(); err != nil {
		t.Fatal(err)
	}
	s, _, err := src.connect(dst.id())
	if err != nil {
		t.Fatal(err)
	}
	d := <-dstStreams
	data := randomBytes(32 << 20)
	base := heapAfterGC()
	var written atomic.Int64
	go func() {
		for off := 0; off < len(data); {
			n, err := s.Write(data[off:min(off+64<<10, len(data))])
			written.Add(int64(n))
			off += n
			if err != nil {
				return
			}
		}
		s.Close()
	}()
	// Wait for the writer to stall.
	last, still := int64(-1), 0
	for still < 5 {
		time.Sleep(50 * time.Millisecond)
		if w := written.Load(); w == last {
			still++
		} else {
			last, still = w, 0
		}
	}
	held := int64(heapAfterGC()) - int64(base)
	// Windows (auto-tuned at most to DefaultMaxWindow) on both legs, one
	// chunk, and the relay's and the source's output queues.
	bound := int64(2*mux.DefaultMaxWindow + ChunkSize + 2*mux.DefaultMaxOutput)
	t.Logf("stalled reader: the source got %d KiB out of %d MiB, heap grew %d KiB, %d chunks out",
		last>>10, len(data)>>20, held>>10, chunksOut.Load())
	if last > bound {
		t.Fatalf("source got %d bytes past a stalled reader, bound %d", last, bound)
	}
	if held > 16<<20 {
		t.Fatalf("heap grew %d bytes while the reader stalled", held)
	}
	if n := chunksOut.Load(); n > 1 {
		t.Fatalf("%d chunks held for one stalled direction", n)
	}
	// What the stalled circuit holds is charged to the source's
	// connection: the chunk in flight and the bytes its stream buffers.
	srcUsed := tr.used(src.id())
	if srcUsed < ChunkSize {
		t.Fatalf("the source's connection is charged %d bytes with a chunk in flight", srcUsed)
	}
	t.Logf("charged to the source's connection while stalled: %d KiB", srcUsed>>10)
	d.SetDeadline(time.Now().Add(60 * time.Second))
	got, err := io.ReadAll(d)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after resuming: %d of %d bytes, %v", len(got), len(data), err)
	}
	// Once the circuit has ended (the destination closes its side too),
	// neither connection holds anything.
	d.Close()
	waitFor(t, "the circuit's end", func() bool { return tr.relay.svc.store.Circuits() == 0 })
	waitFor(t, "every charge returned", func() bool { return tr.used(src.id()) == 0 && tr.used(dst.id()) == 0 })
}

// used is what the relay's connections to peer p are charged.
func (tr *testRelay) used(p peer.ID) int64 {
	var n int64
	for _, pc := range tr.host.ConnsToPeer(p) {
		pc.Do(func() { n += pc.Conn().Memory().Used() })
	}
	return n
}

// With the host's IdleTimeout, a connection that holds a reservation stays
// open without streams; one that does not is closed.
func TestReservationKeepsIdleConnection(t *testing.T) {
	// Long enough for the reservation to be made within it under -race.
	const idleTimeout = 2 * time.Second
	tr := startRelayWith(t, "/ip4/127.0.0.1/tcp/0/ws", libp2p.Config{IdleTimeout: idleTimeout}, Config{}, nil)
	reserving := tr.dial()
	if _, err := reserving.reserve(); err != nil {
		t.Fatal(err)
	}
	idle := tr.dial()
	waitFor(t, "the idle connection closed", func() bool { return tr.host.Engine().OpenConns() == 1 })
	time.Sleep(idleTimeout) // another idle period for the reserving one
	if !reserving.pc.Do(func() {}) || tr.host.Engine().OpenConns() != 1 {
		t.Fatal("the reserving connection was closed")
	}
	if idle.pc.Do(func() {}) {
		t.Fatal("the idle connection is open")
	}
}
