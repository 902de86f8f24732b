package relay

import (
	"bytes"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	circuit "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func newTestService(t *testing.T, cfg Config) (*Service[int], *prometheus.Registry) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	s, err := NewService[int](k, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, reg
}

// hopCount reads swarmgate_relay_hop_requests_total{type, status}.
func hopCount(t *testing.T, reg *prometheus.Registry, typ string, st pb.Status) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "swarmgate_relay_hop_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var gt, gs string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "type":
					gt = l.GetValue()
				case "status":
					gs = l.GetValue()
				}
			}
			if gt == typ && gs == st.String() {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestReserveReply(t *testing.T) {
	var s *Service[int]
	s, reg := newTestService(t, Config{Addrs: func() []ma.Multiaddr {
		return []ma.Multiaddr{
			ma.StringCast("/ip4/1.2.3.4/tcp/443/tls/ws"),
			ma.StringCast("/ip4/1.2.3.4/tcp/443/tls/ws"),                   // a duplicate
			ma.StringCast("/ip4/1.2.3.4/tcp/80/ws/p2p/" + s.ID().String()), // has our /p2p already
			ma.StringCast("/ip4/127.0.0.1/tcp/80/ws"),                      // not public
			ma.StringCast("/ip4/10.0.0.1/tcp/80/ws"),                       // not public
			ma.StringCast("/ip4/5.6.7.8/tcp/80/ws/p2p/" + testPeer(t).String()),
		}
	}})
	p := testPeer(t)
	now := t0.Add(123 * time.Millisecond)
	reply, ok := s.Reserve(p, 1, ip("203.0.113.9"), false, now)
	if !ok || reply.GetType() != pb.HopMessage_STATUS || reply.GetStatus() != pb.Status_OK {
		t.Fatalf("reply %v", reply)
	}
	rsv := reply.GetReservation()
	if rsv.GetExpire() != uint64(t0.Add(time.Hour).Unix()) {
		t.Fatalf("expire %d, want %d (Unix seconds)", rsv.GetExpire(), t0.Add(time.Hour).Unix())
	}
	self := "/p2p/" + s.ID().String()
	want := []string{"/ip4/1.2.3.4/tcp/443/tls/ws" + self, "/ip4/1.2.3.4/tcp/80/ws" + self}
	if len(rsv.Addrs) != len(want) {
		t.Fatalf("%d addrs, want %d", len(rsv.Addrs), len(want))
	}
	for i, b := range rsv.Addrs {
		a, err := ma.NewMultiaddrBytes(b)
		if err != nil || a.String() != want[i] {
			t.Fatalf("addr %d: %v %v, want %s", i, a, err, want[i])
		}
	}
	// The voucher: an envelope go's client accepts.
	env, rec, err := record.ConsumeEnvelope(rsv.GetVoucher(), circuit.RecordDomain)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(env.PayloadType, []byte{0x03, 0x02}) {
		t.Fatalf("payload type % x", env.PayloadType)
	}
	v := rec.(*circuit.ReservationVoucher)
	signer, _ := peer.IDFromPublicKey(env.PublicKey)
	if signer != s.ID() || v.Relay != s.ID() || v.Peer != p || v.Expiration.Unix() != int64(rsv.GetExpire()) {
		t.Fatalf("voucher %+v signed by %s", v, signer)
	}
	if l := reply.GetLimit(); l == nil || l.Duration == nil || l.GetDuration() != 120 || l.Data == nil || l.GetData() != 131072 {
		t.Fatalf("limit %v, want 120 s, 131072 B", l)
	}
	b, err := AppendHop(nil, reply)
	if err != nil || len(b) > MaxMessageSize {
		t.Fatalf("reply is %d bytes: %v", len(b), err)
	}
	if hopCount(t, reg, "reserve", pb.Status_OK) != 1 {
		t.Fatal("OK not counted")
	}
	// A refresh is counted as one.
	s.Reserve(p, 1, ip("203.0.113.9"), false, now.Add(time.Minute))
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "swarmgate_relay_reservations_made_total" {
			for _, m := range mf.GetMetric() {
				if m.GetCounter().GetValue() != 1 {
					t.Fatalf("%v: %v", m.GetLabel(), m.GetCounter().GetValue())
				}
			}
		}
	}
	if got := counterValue(s.m.reserved[1]); got != 1 {
		t.Fatalf("refreshes %v", got)
	}
}

func TestLimitAnnouncement(t *testing.T) {
	for _, tc := range []struct {
		cfg       Config
		dur, data bool
	}{
		{Config{}, true, true},
		{Config{CircuitDuration: -1, CircuitBytes: -1}, false, false},
		{Config{CircuitDuration: -1}, false, true},
		{Config{CircuitBytes: -1, CircuitDuration: 90 * time.Second}, true, false},
	} {
		s, _ := newTestService(t, tc.cfg)
		reply, _ := s.Reserve(testPeer(t), 1, ip("127.0.0.1"), false, t0)
		l := reply.GetLimit()
		if !tc.dur && !tc.data {
			if l != nil {
				t.Fatalf("%+v: unlimited relay announces %v (go marks such connections Limited)", tc.cfg, l)
			}
			continue
		}
		if (l.Duration != nil) != tc.dur || (l.Data != nil) != tc.data {
			t.Fatalf("%+v: limit %v", tc.cfg, l)
		}
	}
}

// Every refusal status the hop server sends, each counted.
func TestRefusals(t *testing.T) {
	s, reg := newTestService(t, Config{MaxReservations: 1, MaxCircuits: 2, MaxCircuitsPerPeer: 1})
	src, dst, other := testPeer(t), testPeer(t), testPeer(t)
	connect := func(to []byte) *pb.HopMessage {
		return &pb.HopMessage{Type: pb.HopMessage_CONNECT.Enum(), Peer: &pb.Peer{Id: to}}
	}
	check := func(typ string, want pb.Status, got pb.Status, count float64) {
		t.Helper()
		if got != want {
			t.Fatalf("%s: %v, want %v", typ, got, want)
		}
		if c := hopCount(t, reg, typ, want); c != count {
			t.Fatalf("%s %v counted %v times, want %v", typ, want, c, count)
		}
	}
	// RESERVE.
	r, _ := s.Reserve(src, 1, ip("127.0.0.1"), true, t0)
	check("reserve", pb.Status_PERMISSION_DENIED, r.GetStatus(), 1)
	s.Reserve(dst, 2, ip("127.0.0.1"), false, t0)
	r, _ = s.Reserve(other, 3, ip("127.0.0.1"), false, t0)
	check("reserve", pb.Status_RESERVATION_REFUSED, r.GetStatus(), 1)
	// CONNECT, in go's order.
	_, _, st := s.Connect(src, true, connect([]byte(dst)), t0)
	check("connect", pb.Status_PERMISSION_DENIED, st, 1) // over a relayed connection
	_, _, st = s.Connect(src, false, connect([]byte("not a peer id")), t0)
	check("connect", pb.Status_MALFORMED_MESSAGE, st, 1)
	_, _, st = s.Connect(src, false, &pb.HopMessage{Type: pb.HopMessage_CONNECT.Enum()}, t0)
	check("connect", pb.Status_MALFORMED_MESSAGE, st, 2) // no peer at all
	_, _, st = s.Connect(src, false, connect([]byte(s.ID())), t0)
	check("connect", pb.Status_PERMISSION_DENIED, st, 2) // to the relay itself
	_, _, st = s.Connect(dst, false, connect([]byte(dst)), t0)
	check("connect", pb.Status_PERMISSION_DENIED, st, 3) // to oneself
	_, _, st = s.Connect(src, false, connect([]byte(other)), t0)
	check("connect", pb.Status_NO_RESERVATION, st, 1)
	_, _, st = s.Connect(src, false, connect([]byte(dst)), t0.Add(2*time.Hour))
	check("connect", pb.Status_NO_RESERVATION, st, 2) // expired
	s.Reserve(dst, 2, ip("127.0.0.1"), false, t0)
	d, conn, st := s.Connect(src, false, connect([]byte(dst)), t0)
	if st != pb.Status_OK || d != dst || conn != 2 {
		t.Fatalf("connect: %v %v %v", d, conn, st)
	}
	_, _, st = s.Connect(other, false, connect([]byte(dst)), t0)
	check("connect", pb.Status_RESOURCE_LIMIT_EXCEEDED, st, 1) // per peer
	s.svcFill(t)
	_, _, st = s.Connect(src, false, connect([]byte("garbage")), t0)
	check("connect", pb.Status_RESOURCE_LIMIT_EXCEEDED, st, 2) // full: first check
	// Types that are not requests.
	_, reply := s.Request(&pb.HopMessage{Type: pb.HopMessage_STATUS.Enum()})
	check("other", pb.Status_UNEXPECTED_MESSAGE, reply.GetStatus(), 1)
	_, reply = s.Request(&pb.HopMessage{Type: pb.HopMessage_Type(9).Enum()})
	check("other", pb.Status_MALFORMED_MESSAGE, reply.GetStatus(), 1)
	if k, _ := s.Request(&pb.HopMessage{}); k != reqReserve {
		t.Fatal("a missing type is not read as RESERVE")
	}
	// The circuit ends: counted, and CONNECTION_FAILED when the stop failed.
	s.CircuitEnded(src, dst, EndStopFailed)
	check("connect", pb.Status_CONNECTION_FAILED, pb.Status_CONNECTION_FAILED, 1)
}

// svcFill opens circuits between fresh peers until MaxCircuits is reached.
func (s *Service[C]) svcFill(t *testing.T) {
	t.Helper()
	for !s.store.CircuitsFull() {
		a, b := testPeer(t), testPeer(t)
		s.store.mu.Lock()
		var zero C
		s.store.rsv[b] = entry[C]{conn: zero, expire: t0.Add(time.Hour).UnixNano()}
		s.store.mu.Unlock()
		if _, st := s.store.Connect(a, b, t0); st != pb.Status_OK {
			t.Fatal(st)
		}
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}
