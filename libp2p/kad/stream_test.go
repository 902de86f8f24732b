package kad

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/internal/wire"
	"github.com/swarmgate/swarmgate/libp2p/kad/pb"
	"github.com/swarmgate/swarmgate/mux"
)

var testT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeSched is a Scheduler on a hand-moved clock.
type fakeSched struct {
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Time
	fire    func()
	stopped bool
}

func (f *fakeSched) Now() time.Time { return f.now }

func (f *fakeSched) After(d time.Duration, fire func()) func() {
	t := &fakeTimer{at: f.now.Add(d), fire: fire}
	f.timers = append(f.timers, t)
	return func() { t.stopped = true }
}

// advance moves the clock by d, firing due timers in time order.
func (f *fakeSched) advance(d time.Duration) {
	end := f.now.Add(d)
	for {
		var next *fakeTimer
		for _, t := range f.timers {
			if !t.stopped && !t.at.After(end) && (next == nil || t.at.Before(next.at)) {
				next = t
			}
		}
		if next == nil {
			break
		}
		next.stopped = true
		if next.at.After(f.now) {
			f.now = next.at
		}
		next.fire()
	}
	f.now = end
}

func (f *fakeSched) live() int {
	n := 0
	for _, t := range f.timers {
		if !t.stopped {
			n++
		}
	}
	return n
}

// harness is a client yamux session wired to a server session whose
// inbound streams run our handler, in memory, with a fake clock.
type harness struct {
	t        testing.TB
	srv      *Server
	peer     *Peer
	sched    *fakeSched
	cli, ss  *mux.Session
	toS, toC []byte
	streams  []*clientStream
	reg      *prometheus.Registry
}

// clientStream collects what the server sends on one stream.
type clientStream struct {
	st    *mux.Stream
	got   []byte
	fin   bool
	reset error
}

func (c *clientStream) OnData(_ *mux.Stream, p []byte) int {
	c.got = append(c.got, p...)
	return len(p)
}
func (c *clientStream) OnWritable(*mux.Stream)           {}
func (c *clientStream) OnFIN(*mux.Stream)                { c.fin = true }
func (c *clientStream) OnReset(_ *mux.Stream, err error) { c.reset = err }

var testListen = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/4001/ws"), ma.StringCast("/ip4/198.51.100.1/tcp/443/wss")}

func newHarness(t testing.TB, cfg Config, scfg mux.Config) *harness {
	r := rand.New(rand.NewPCG(11, 12))
	if cfg.Self == "" {
		cfg.Self = randomID(r)
	}
	if cfg.ListenAddrs == nil {
		cfg.ListenAddrs = func() []ma.Multiaddr { return testListen }
	}
	h := &harness{t: t, sched: &fakeSched{now: testT0}, reg: prometheus.NewRegistry()}
	cfg.Registerer = h.reg
	h.srv = NewServer(cfg)
	h.peer = NewPeer(randomID(r))
	scfg.OnStream = func(st *mux.Stream) { st.Accept(h.srv.NewStream(h.peer, h.sched, st)) }
	scfg.KeepAliveInterval = -1
	h.ss = mux.NewServer(scfg, testT0)
	h.cli = mux.NewClient(mux.Config{KeepAliveInterval: -1}, testT0)
	return h
}

func (h *harness) open() *clientStream {
	c := &clientStream{}
	st, err := h.cli.Open(c)
	if err != nil {
		h.t.Fatal(err)
	}
	c.st = st
	h.streams = append(h.streams, c)
	return c
}

// pump moves bytes both ways until both sessions are quiet.
func (h *harness) pump() {
	for range 1000 {
		h.toS = h.cli.AppendOutput(h.toS, 0)
		h.toC = h.ss.AppendOutput(h.toC, 0)
		if len(h.toS) == 0 && len(h.toC) == 0 {
			return
		}
		if len(h.toS) > 0 {
			n, err := h.ss.Input(h.toS, h.sched.now)
			if err != nil {
				h.t.Fatalf("server session: %v", err)
			}
			h.toS = h.toS[:copy(h.toS, h.toS[n:])]
		}
		if len(h.toC) > 0 {
			n, err := h.cli.Input(h.toC, h.sched.now)
			if err != nil {
				h.t.Fatalf("client session: %v", err)
			}
			h.toC = h.toC[:copy(h.toC, h.toC[n:])]
		}
	}
	h.t.Fatal("sessions never went quiet")
}

// send writes raw bytes on c and pumps.
func (h *harness) send(c *clientStream, b []byte) {
	h.t.Helper()
	if n, err := c.st.Write(b); err != nil || n != len(b) {
		h.t.Fatalf("client write %d of %d: %v", n, len(b), err)
	}
	h.pump()
}

func request(m *pb.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return wire.AppendDelimited(nil, b)
}

// responses decodes every complete response c has received.
func (h *harness) responses(c *clientStream) []*pb.Message {
	h.t.Helper()
	var out []*pb.Message
	b := c.got
	for len(b) > 0 {
		msg, n, err := wire.ParseDelimited(b, 1<<20)
		if err != nil {
			h.t.Fatalf("response framing: %v", err)
		}
		var m pb.Message
		if err := proto.Unmarshal(msg, &m); err != nil {
			h.t.Fatalf("response: %v", err)
		}
		out = append(out, &m)
		b = b[n:]
	}
	return out
}

func (h *harness) counter(name string, labels ...string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.Metric {
			for i, lp := range m.Label {
				if i >= len(labels)/2 || lp.GetName() != labels[2*i] || lp.GetValue() != labels[2*i+1] {
					continue next
				}
			}
			return testutil.MetricValue(m)
		}
	}
	return 0
}

// fill connects n random DHT servers and returns their IDs.
func (h *harness) fill(n int, seed uint64) []peer.ID {
	r := rand.New(rand.NewPCG(seed, 1))
	ids := make([]peer.ID, n)
	for i := range ids {
		ids[i] = randomID(r)
		p := NewPeer(ids[i])
		h.srv.Identified(p, []string{"/ipfs/id/1.0.0", Protocol}, testAddr(i))
		if !p.InTable() {
			h.t.Fatalf("peer %d not added", i)
		}
	}
	return ids
}

func peerIDs(t testing.TB, ps []*pb.Message_Peer) []peer.ID {
	t.Helper()
	ids := make([]peer.ID, len(ps))
	for i, p := range ps {
		id, err := peer.IDFromBytes(p.Id)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Addrs) == 0 {
			t.Fatalf("entry %d without addresses", i)
		}
		ids[i] = id
	}
	return ids
}

// wantClosest is the brute-force answer over ids.
func wantClosest(ids []peer.ID, target Key, k int, exclude ...peer.ID) []peer.ID {
	var keys []Key
	byKey := map[Key]peer.ID{}
	for _, id := range ids {
		if slices.Contains(exclude, id) {
			continue
		}
		keys = append(keys, PeerKey(id))
		byKey[PeerKey(id)] = id
	}
	var out []peer.ID
	for _, k := range bruteClosest(keys, target, k) {
		out = append(out, byKey[k])
	}
	return out
}

func TestStreamReuseAndEveryType(t *testing.T) {
	h := newHarness(t, Config{AddrFilter: AddrsAll}, mux.Config{})
	ids := h.fill(200, 1)
	// The requester itself is a DHT server in the table.
	h.srv.Identified(h.peer, []string{Protocol}, testAddr(9999))
	all := append(slices.Clone(ids), h.peer.ID)
	c := h.open()
	key := []byte("some-record-key")
	mh := []byte{0x12, 0x20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}
	reqs := []*pb.Message{
		{Type: pb.Message_FIND_NODE, Key: key, ClusterLevelRaw: 1},
		{Type: pb.Message_GET_VALUE, Key: key},
		{Type: pb.Message_GET_PROVIDERS, Key: mh, ClusterLevelRaw: 5},
		{Type: pb.Message_PING, Key: []byte("x"), ClusterLevelRaw: 3, CloserPeers: []*pb.Message_Peer{{Id: []byte(ids[0])}}},
		{Type: pb.Message_FIND_NODE, Key: []byte(ids[7])},         // a table entry: first
		{Type: pb.Message_FIND_NODE, Key: []byte(h.srv.cfg.Self)}, // ourselves: first
		{Type: pb.Message_FIND_NODE, Key: []byte(h.peer.ID)},      // the requester: first
	}
	for i, req := range reqs {
		h.send(c, request(req))
		resps := h.responses(c)
		if len(resps) != i+1 {
			t.Fatalf("request %d: %d responses", i, len(resps))
		}
		resp := resps[i]
		if resp.Type != req.Type {
			t.Fatalf("request %d: type %v", i, resp.Type)
		}
		if resp.Record != nil || len(resp.ProviderPeers) != 0 {
			t.Fatalf("request %d: a record or providers in %v", i, resp)
		}
		target := KeyOf(req.Key)
		switch req.Type {
		case pb.Message_PING:
			want := proto.Clone(req).(*pb.Message)
			want.CloserPeers = nil
			if !proto.Equal(resp, want) {
				t.Fatalf("ping echo %v, want %v", resp, want)
			}
			continue
		case pb.Message_FIND_NODE:
			if len(resp.Key) != 0 {
				t.Fatalf("FIND_NODE reply echoes the key")
			}
		default:
			if !bytes.Equal(resp.Key, req.Key) {
				t.Fatalf("request %d: key %x not echoed", i, resp.Key)
			}
		}
		if want := max(req.ClusterLevelRaw-1, 0) + 1; resp.ClusterLevelRaw != want {
			t.Fatalf("request %d: clusterLevelRaw %d, want %d", i, resp.ClusterLevelRaw, want)
		}
		got := peerIDs(t, resp.CloserPeers)
		want := wantClosest(all, target, BucketSize, h.peer.ID)
		switch {
		case bytes.Equal(req.Key, []byte(h.srv.cfg.Self)):
			want = append([]peer.ID{h.srv.cfg.Self}, want...)
			if n := len(resp.CloserPeers[0].Addrs); n != len(testListen) || resp.CloserPeers[0].Connection != pb.Message_NOT_CONNECTED {
				t.Fatalf("self entry: %d addresses, %v", n, resp.CloserPeers[0].Connection)
			}
		case bytes.Equal(req.Key, []byte(h.peer.ID)):
			want = append([]peer.ID{h.peer.ID}, want...)
		case bytes.Equal(req.Key, []byte(ids[7])):
			if want[0] != ids[7] {
				t.Fatal("reference lost the target")
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("request %d (%v): closer peers\n got %v\nwant %v", i, req.Type, got, want)
		}
		for _, p := range resp.CloserPeers {
			if peer.ID(p.Id) != h.srv.cfg.Self && p.Connection != pb.Message_CONNECTED {
				t.Fatalf("connected entry sent as %v", p.Connection)
			}
		}
	}
	if c.reset != nil || c.fin {
		t.Fatalf("stream ended: fin %v reset %v", c.fin, c.reset)
	}
	// Our FIN: the server answers nothing more and closes its side.
	c.st.CloseWrite()
	h.pump()
	if !c.fin || c.reset != nil || h.peer.streams != 0 || h.sched.live() != 0 {
		t.Fatalf("after FIN: fin %v reset %v streams %d timers %d", c.fin, c.reset, h.peer.streams, h.sched.live())
	}
	if n := h.counter("swarmgate_kad_requests_total", "result", "ok", "type", "find_node"); n != 4 {
		t.Fatalf("find_node ok counted %v", n)
	}
	if n := h.counter("swarmgate_kad_request_duration_seconds", "type", "ping"); n != 1 {
		t.Fatalf("ping latency observations %v", n)
	}
	if n := h.counter("swarmgate_kad_table_entries"); n != 201 {
		t.Fatalf("table entries gauge %v", n)
	}
}

func TestStreamPipelined(t *testing.T) {
	h := newHarness(t, Config{AddrFilter: AddrsAll}, mux.Config{})
	ids := h.fill(50, 2)
	c := h.open()
	var batch []byte
	var keys [][]byte
	for i := range 8 {
		k := []byte{byte(i), 'k'}
		keys = append(keys, k)
		typ := pb.Message_FIND_NODE
		if i%2 == 1 {
			typ = pb.Message_GET_VALUE
		}
		batch = append(batch, request(&pb.Message{Type: typ, Key: k})...)
	}
	h.send(c, batch) // one write: the requests arrive in one read
	resps := h.responses(c)
	if len(resps) != 8 {
		t.Fatalf("%d responses", len(resps))
	}
	for i, r := range resps {
		if got, want := peerIDs(t, r.CloserPeers), wantClosest(ids, KeyOf(keys[i]), BucketSize); !slices.Equal(got, want) {
			t.Fatalf("response %d out of order or wrong", i)
		}
	}
	// Split at every byte: the same answers.
	c2 := h.open()
	for i := range batch {
		h.send(c2, batch[i:i+1])
	}
	if !bytes.Equal(c2.got, c.got) {
		t.Fatal("byte-at-a-time requests answered differently")
	}
}

func TestStreamShortWrites(t *testing.T) {
	// An output queue smaller than one response: every response goes out
	// in pieces through OnWritable, and requests behind it wait.
	h := newHarness(t, Config{AddrFilter: AddrsAll}, mux.Config{MaxOutput: 300})
	ids := h.fill(100, 3)
	c := h.open()
	var batch []byte
	for i := range 5 {
		batch = append(batch, request(&pb.Message{Type: pb.Message_FIND_NODE, Key: []byte{byte(i)}})...)
	}
	h.send(c, batch)
	resps := h.responses(c)
	if len(resps) != 5 {
		t.Fatalf("%d responses", len(resps))
	}
	for i, r := range resps {
		if got, want := peerIDs(t, r.CloserPeers), wantClosest(ids, KeyOf([]byte{byte(i)}), BucketSize); !slices.Equal(got, want) {
			t.Fatalf("response %d wrong", i)
		}
	}
	if len(c.got) < 5*300 {
		t.Fatalf("responses too small (%d B) to need short writes", len(c.got))
	}
	c.st.CloseWrite()
	h.pump()
	if !c.fin {
		t.Fatal("not closed after the last response")
	}
}

func TestStreamRefusals(t *testing.T) {
	valid := request(&pb.Message{Type: pb.Message_FIND_NODE, Key: []byte("k")})
	long := wire.AppendUvarint(nil, MaxRequestSize+1)
	cases := []struct {
		name   string
		in     []byte
		fin    bool
		reason string
		code   uint32
	}{
		{"put_value", request(&pb.Message{Type: pb.Message_PUT_VALUE, Key: []byte("/pk/x")}), false, "put_value", ResetCodeNone},
		{"no_type", request(&pb.Message{Key: []byte("/ipns/x")}), false, "put_value", ResetCodeNone},
		{"empty_message", []byte{0}, false, "put_value", ResetCodeNone},
		{"add_provider", request(&pb.Message{Type: pb.Message_ADD_PROVIDER, Key: []byte("mh")}), false, "add_provider", ResetCodeNone},
		{"unknown_type", request(&pb.Message{Type: 9, Key: []byte("k")}), false, "unknown_type", ResetCodeNone},
		{"find_node_empty_key", request(&pb.Message{Type: pb.Message_FIND_NODE}), false, "empty_key", ResetCodeProtocolViolation},
		{"get_value_empty_key", request(&pb.Message{Type: pb.Message_GET_VALUE}), false, "empty_key", ResetCodeProtocolViolation},
		{"get_providers_empty_key", request(&pb.Message{Type: pb.Message_GET_PROVIDERS}), false, "empty_key", ResetCodeProtocolViolation},
		{"get_providers_long_key", request(&pb.Message{Type: pb.Message_GET_PROVIDERS, Key: make([]byte, 81)}), false, "key_too_long", ResetCodeProtocolViolation},
		{"malformed", wire.AppendDelimited(nil, []byte{0x0a, 0x05, 1}), false, "malformed", ResetCodeProtocolViolation},
		{"oversize_prefix_only", long, false, "oversize", ResetCodeProtocolViolation},
		{"overlong_prefix", []byte{0x80, 0x80, 0x80, 0x01}, false, "oversize", ResetCodeProtocolViolation},
		{"non_minimal_prefix", []byte{0x85, 0x00}, false, "bad_prefix", ResetCodeProtocolViolation},
		{"truncated", valid[:len(valid)-1], true, "truncated", ResetCodeProtocolViolation},
		{"after_a_good_one", append(slices.Clone(valid), request(&pb.Message{Type: pb.Message_ADD_PROVIDER, Key: []byte("mh")})...), false, "add_provider", ResetCodeNone},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{AddrFilter: AddrsAll}, mux.Config{})
			h.fill(30, 4)
			c := h.open()
			h.send(c, tc.in)
			if tc.fin {
				c.st.CloseWrite()
				h.pump()
			}
			var se *mux.StreamError
			if !errors.As(c.reset, &se) || se.Code != tc.code {
				t.Fatalf("reset %v, want code %#x", c.reset, tc.code)
			}
			if n := h.counter("swarmgate_kad_stream_resets_total", "reason", tc.reason); n != 1 {
				t.Fatalf("resets{%s} = %v", tc.reason, n)
			}
			if tc.name == "after_a_good_one" {
				// Answered, and the answer reaches the peer before the
				// reset (an RST follows the stream's queued data).
				if n := h.counter("swarmgate_kad_requests_total", "result", "ok", "type", "find_node"); n != 1 {
					t.Fatalf("the request before the refused one was not answered: %v", n)
				}
				if len(c.got) == 0 {
					t.Fatal("the answer before the reset was lost")
				}
			} else if len(c.got) != 0 {
				t.Fatalf("a refused request got %d bytes back", len(c.got))
			}
			if h.peer.streams != 0 || h.sched.live() != 0 {
				t.Fatalf("not released: %d streams, %d timers", h.peer.streams, h.sched.live())
			}
		})
	}
}

func TestStreamIdle(t *testing.T) {
	h := newHarness(t, Config{AddrFilter: AddrsAll}, mux.Config{})
	h.fill(5, 5)
	c := h.open()
	h.pump()
	h.sched.advance(59 * time.Second)
	h.pump()
	if c.reset != nil {
		t.Fatal("reset before the idle timeout")
	}
	h.send(c, request(&pb.Message{Type: pb.Message_PING}))
	h.sched.advance(59 * time.Second) // 118 s since open, 59 s since the request
	h.pump()
	if c.reset != nil {
		t.Fatal("a request did not restart the idle timeout")
	}
	// A partial request does not count as one.
	h.send(c, request(&pb.Message{Type: pb.Message_PING})[:1])
	h.sched.advance(time.Second)
	h.pump()
	if c.reset == nil {
		t.Fatal("not reset after 60 s without a request")
	}
	if n := h.counter("swarmgate_kad_stream_resets_total", "reason", "idle"); n != 1 {
		t.Fatalf("idle resets %v", n)
	}
	if h.peer.streams != 0 || h.sched.live() != 0 {
		t.Fatal("idle stream not released")
	}
}

func TestStreamRateLimit(t *testing.T) {
	h := newHarness(t, Config{AddrFilter: AddrsAll, RequestRate: 2, RequestBurst: 3}, mux.Config{})
	h.fill(5, 6)
	c := h.open()
	var batch []byte
	for range 6 {
		batch = append(batch, request(&pb.Message{Type: pb.Message_PING})...)
	}
	h.send(c, batch)
	if n := len(h.responses(c)); n != 3 {
		t.Fatalf("%d answered at once, want the burst of 3", n)
	}
	h.sched.advance(499 * time.Millisecond)
	h.pump()
	if n := len(h.responses(c)); n != 3 {
		t.Fatalf("%d answered before a token accrued", n)
	}
	h.sched.advance(2 * time.Millisecond)
	h.pump()
	if n := len(h.responses(c)); n != 4 {
		t.Fatalf("%d answered after 500 ms at 2/s", n)
	}
	// FIN while requests wait: they are still answered, then the close.
	c.st.CloseWrite()
	h.pump()
	if c.fin || c.reset != nil {
		t.Fatal("closed with requests waiting")
	}
	h.sched.advance(time.Second)
	h.pump()
	if n := len(h.responses(c)); n != 6 || !c.fin || c.reset != nil {
		t.Fatalf("%d answered, fin %v, reset %v", n, c.fin, c.reset)
	}
	if n := h.counter("swarmgate_kad_requests_delayed_total"); n != 3 {
		t.Fatalf("delayed %v", n)
	}
	// A waiting stream is not idle: our delay, not the peer's silence.
	h2 := newHarness(t, Config{RequestRate: 1.0 / 120, RequestBurst: 1}, mux.Config{})
	c2 := h2.open()
	h2.send(c2, append(request(&pb.Message{Type: pb.Message_PING}), request(&pb.Message{Type: pb.Message_PING})...))
	h2.sched.advance(119 * time.Second)
	h2.pump()
	if c2.reset != nil || len(h2.responses(c2)) != 1 {
		t.Fatalf("waiting stream reset as idle: %v", c2.reset)
	}
	h2.sched.advance(2 * time.Second)
	h2.pump()
	if len(h2.responses(c2)) != 2 {
		t.Fatal("second request not answered after its token")
	}
}

func TestStreamLimitPerPeer(t *testing.T) {
	h := newHarness(t, Config{MaxStreamsPerPeer: 3}, mux.Config{})
	var cs []*clientStream
	for range 4 {
		cs = append(cs, h.open())
		h.pump()
	}
	for i, c := range cs[:3] {
		if c.reset != nil {
			t.Fatalf("stream %d reset", i)
		}
	}
	var se *mux.StreamError
	if !errors.As(cs[3].reset, &se) || se.Code != ResetCodeResourceLimit {
		t.Fatalf("fourth stream: %v", cs[3].reset)
	}
	// One ends (the peer resets it): a new one is admitted.
	cs[0].st.Reset()
	h.pump()
	c := h.open()
	h.send(c, request(&pb.Message{Type: pb.Message_PING}))
	if c.reset != nil || len(h.responses(c)) != 1 {
		t.Fatal("stream refused after one ended")
	}
	if h.peer.streams != 3 {
		t.Fatalf("%d streams counted", h.peer.streams)
	}
}

func TestParseRequestPrefixes(t *testing.T) {
	msgs := [][]byte{
		request(&pb.Message{Type: pb.Message_FIND_NODE, Key: make([]byte, 38)}),
		request(&pb.Message{Type: pb.Message_GET_PROVIDERS, Key: make([]byte, 300), ClusterLevelRaw: 1}),
		request(&pb.Message{}),
		wire.AppendDelimited(nil, make([]byte, MaxRequestSize)),
	}
	for _, b := range msgs {
		msg, n, err := parseRequest(b)
		if err != nil || n != len(b) || !bytes.Equal(wire.AppendDelimited(nil, msg), b) {
			t.Fatalf("parse %d bytes: %d %v", len(b), n, err)
		}
		for i := range len(b) {
			if _, _, err := parseRequest(b[:i]); err != wire.ErrNeedMore {
				t.Fatalf("prefix %d of %d: %v, want need-more", i, len(b), err)
			}
		}
	}
}

// FuzzStream feeds arbitrary bytes, in arbitrary pieces, to the stream
// handler: it must never panic, answer only with well-formed responses,
// and release the stream however it ends.
func FuzzStream(f *testing.F) {
	f.Add(request(&pb.Message{Type: pb.Message_FIND_NODE, Key: []byte("key")}), uint8(3), true)
	f.Add(append(request(&pb.Message{Type: pb.Message_GET_VALUE, Key: []byte("/pk/x")}), request(&pb.Message{Type: pb.Message_PING})...), uint8(1), false)
	f.Add(request(&pb.Message{Type: pb.Message_GET_PROVIDERS, Key: []byte{0x12, 0x20, 1}}), uint8(200), true)
	f.Add(request(&pb.Message{Type: pb.Message_ADD_PROVIDER, Key: []byte("mh"), ProviderPeers: []*pb.Message_Peer{{Id: []byte("p")}}}), uint8(5), false)
	f.Add([]byte{0x85, 0x00}, uint8(1), true)
	f.Add(wire.AppendUvarint(nil, MaxRequestSize+1), uint8(2), false)
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8, fin bool) {
		h := newHarness(t, Config{AddrFilter: AddrsAll}, mux.Config{MaxOutput: 512})
		h.fill(25, 7)
		c := h.open()
		h.pump()
		step := int(chunk)%64 + 1
		for off := 0; off < len(in) && c.reset == nil; off += step {
			end := min(off+step, len(in))
			c.st.Write(in[off:end])
			h.pump()
		}
		if fin && c.reset == nil {
			c.st.CloseWrite()
			h.pump()
		}
		h.sched.advance(time.Hour) // idle timeout ends what is left
		h.pump()
		// Responses are whole messages (a reset may cut the last one).
		b := c.got
		for len(b) > 0 {
			msg, n, err := wire.ParseDelimited(b, 1<<20)
			if err == wire.ErrNeedMore && c.reset != nil {
				break
			}
			if err != nil {
				t.Fatalf("response framing: %v", err)
			}
			var m pb.Message
			if err := proto.Unmarshal(msg, &m); err != nil {
				t.Fatalf("response does not decode: %v", err)
			}
			b = b[n:]
		}
		if h.peer.streams != 0 || h.sched.live() != 0 {
			t.Fatalf("stream not released: %d streams, %d timers", h.peer.streams, h.sched.live())
		}
	})
}

// FuzzParseRequest: a parsed request re-serializes to the bytes it came
// from, and every truncated prefix of it is need-more, never an error.
func FuzzParseRequest(f *testing.F) {
	f.Add(request(&pb.Message{Type: pb.Message_FIND_NODE, Key: []byte("key")}))
	f.Add(request(&pb.Message{}))
	f.Add(wire.AppendUvarint(nil, MaxRequestSize))
	f.Add([]byte{0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		msg, n, err := parseRequest(b)
		if err != nil {
			if err != wire.ErrNeedMore {
				if _, ok := err.(*RefusedError); !ok {
					t.Fatalf("untyped error %v", err)
				}
			}
			return
		}
		if !bytes.Equal(wire.AppendDelimited(nil, msg), b[:n]) {
			t.Fatal("re-serialized request differs")
		}
		for i := range n {
			if _, _, err := parseRequest(b[:i]); err != wire.ErrNeedMore {
				t.Fatalf("prefix %d of %d: %v", i, n, err)
			}
		}
	})
}
