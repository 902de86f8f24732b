package relay

import (
	"bytes"
	"net/netip"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	circuit "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Service is the hop server's policy and state, free of I/O: it answers
// RESERVE and decides CONNECT from decoded requests and the time passed
// in, over a Store whose reservations point at connections of type C. The
// libp2p binding (Relay) carries the bytes, opens the stop stream and
// splices; tests drive a Service[int] directly.
type Service[C comparable] struct {
	cfg   Config
	id    peer.ID
	key   crypto.PrivKey
	store *Store[C]
	m     *metrics
	limit *pb.Limit // announced and enforced; nil for an unlimited relay
	p2p   ma.Multiaddr
}

// NewService returns a relay service signing vouchers with key (the
// relay's identity). cfg.Addrs must be set.
func NewService[C comparable](key crypto.PrivKey, cfg Config) (*Service[C], error) {
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, err
	}
	p2p, err := ma.NewMultiaddr("/p2p/" + id.String())
	if err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Service[C]{cfg: cfg, id: id, key: key, store: NewStore[C](cfg), p2p: p2p}
	s.limit = limitMsg(cfg)
	s.m = newMetrics(cfg.Registerer,
		func() float64 { return float64(s.store.Len()) },
		func() float64 { return float64(s.store.Circuits()) })
	return s, nil
}

// limitMsg is the Limit a relay with cfg announces: only the limits it
// enforces, and none at all when it enforces none, because the mere
// presence of a Limit makes go-libp2p mark the connection Limited (no
// streams on it unless the application opts in).
func limitMsg(cfg Config) *pb.Limit {
	if cfg.CircuitDuration <= 0 && cfg.CircuitBytes <= 0 {
		return nil
	}
	l := &pb.Limit{}
	if cfg.CircuitDuration > 0 {
		d := uint32(min(cfg.CircuitDuration/time.Second, 1<<32-1)) // seconds (not js's ms)
		l.Duration = &d
	}
	if cfg.CircuitBytes > 0 {
		b := uint64(cfg.CircuitBytes)
		l.Data = &b
	}
	return l
}

// Store is the service's reservation store.
func (s *Service[C]) Store() *Store[C] { return s.store }

// Limit is the limit announced and enforced per circuit (nil: none).
func (s *Service[C]) Limit() *pb.Limit { return s.limit }

// ID is the relay's peer ID.
func (s *Service[C]) ID() peer.ID { return s.id }

// Reserve answers a RESERVE from peer p on connection conn, whose remote
// address is addr; relayed reports a connection that is itself a circuit.
// ok reports a granted reservation (the reply is then STATUS OK with the
// reservation and the limit).
func (s *Service[C]) Reserve(p peer.ID, conn C, addr netip.Addr, relayed bool, now time.Time) (reply *pb.HopMessage, ok bool) {
	// SPEC §2.9 (go and js alike): a reservation over a relayed
	// connection is refused with PERMISSION_DENIED.
	if relayed {
		s.m.refused[ReasonPermission].Inc()
		return s.refuse(reqReserve, pb.Status_PERMISSION_DENIED), false
	}
	expire, refresh, reason := s.store.Reserve(p, conn, addr, now)
	if reason != "" {
		s.m.refused[reason].Inc()
		return s.refuse(reqReserve, pb.Status_RESERVATION_REFUSED), false
	}
	rsv := &pb.Reservation{Addrs: s.addrs()}
	exp := uint64(expire.Unix()) // wall clock: Unix seconds on the wire; go rejects 0 or the past
	rsv.Expire = &exp
	if v, err := s.voucher(p, expire); err == nil {
		rsv.Voucher = v
	} // the voucher is optional to both clients: a sealing failure only drops it
	if refresh {
		s.m.reserved[1].Inc()
	} else {
		s.m.reserved[0].Inc()
	}
	s.m.answered(reqReserve, pb.Status_OK)
	return &pb.HopMessage{
		Type:        pb.HopMessage_STATUS.Enum(),
		Status:      pb.Status_OK.Enum(),
		Reservation: rsv,
		Limit:       s.limit,
	}, true
}

// voucher seals a ReservationVoucher for p under the relay's key: an
// Envelope in domain "libp2p-relay-rsvp", payload type 0x0302. go-libp2p's
// client checks that its signer is the voucher's relay and that its peer
// is the client itself, and fails the whole reservation otherwise.
func (s *Service[C]) voucher(p peer.ID, expire time.Time) ([]byte, error) {
	env, err := record.Seal(&circuit.ReservationVoucher{Relay: s.id, Peer: p, Expiration: expire}, s.key)
	if err != nil {
		return nil, err
	}
	return env.Marshal()
}

// addrs are the relay's addresses for a reservation reply: public ones
// only (unless AllowPrivateAddrs), circuit addresses skipped, each ending
// in /p2p/<relay> exactly once (go-libp2p#3003: js repairs a doubled one),
// no duplicates.
func (s *Service[C]) addrs() [][]byte {
	var out [][]byte
	for _, a := range s.cfg.Addrs() {
		t, id := peer.SplitAddr(a)
		if t == nil || (id != "" && id != s.id) {
			continue
		}
		if !s.cfg.AllowPrivateAddrs && !manet.IsPublicAddr(t) {
			continue
		}
		if _, err := t.ValueForProtocol(ma.P_CIRCUIT); err == nil {
			continue
		}
		b := t.Encapsulate(s.p2p).Bytes()
		dup := false
		for _, o := range out {
			dup = dup || bytes.Equal(o, b)
		}
		if !dup {
			out = append(out, b)
		}
	}
	return out
}

// Connect decides a CONNECT from src: the checks run in go-libp2p's order
// (protocol-notes §2.5):
//
//  1. MaxCircuits open: RESOURCE_LIMIT_EXCEEDED (go: no memory for the
//     circuit's buffers);
//  2. over a relayed connection: PERMISSION_DENIED;
//  3. the peer does not parse: MALFORMED_MESSAGE;
//  4. to the relay itself, or to src itself: PERMISSION_DENIED (go's ACL
//     step; neither go nor js checks these, and a relay never holds a
//     reservation for itself);
//  5. no live reservation for the destination: NO_RESERVATION;
//  6. MaxCircuitsPerPeer reached by src or the destination:
//     RESOURCE_LIMIT_EXCEEDED.
//
// On OK the circuit is counted and conn is the destination's reserving
// connection; CircuitEnded must follow exactly once. A refusal is counted
// here; OK and CONNECTION_FAILED are counted by CircuitSpliced and
// CircuitEnded, when they are known.
func (s *Service[C]) Connect(src peer.ID, relayed bool, req *pb.HopMessage, now time.Time) (dst peer.ID, conn C, status pb.Status) {
	status = s.connect(src, relayed, req, now, &dst, &conn)
	if status != pb.Status_OK {
		s.m.answered(reqConnect, status)
	}
	return dst, conn, status
}

func (s *Service[C]) connect(src peer.ID, relayed bool, req *pb.HopMessage, now time.Time, dst *peer.ID, conn *C) pb.Status {
	if s.store.CircuitsFull() {
		return pb.Status_RESOURCE_LIMIT_EXCEEDED
	}
	if relayed {
		return pb.Status_PERMISSION_DENIED
	}
	d, err := peerOf(req.GetPeer())
	if err != nil {
		return pb.Status_MALFORMED_MESSAGE
	}
	*dst = d
	if d == s.id || d == src {
		return pb.Status_PERMISSION_DENIED
	}
	c, st := s.store.Connect(src, d, now)
	*conn = c
	return st
}

// CircuitSpliced counts a circuit whose stop and hop OK were exchanged.
func (s *Service[C]) CircuitSpliced() {
	s.m.made.Inc()
	s.m.answered(reqConnect, pb.Status_OK)
}

// CircuitEnded releases what Connect counted, with the end's reason
// (End*); EndStopFailed also counts the CONNECTION_FAILED reply.
func (s *Service[C]) CircuitEnded(src, dst peer.ID, reason string) {
	s.store.CircuitEnded(src, dst)
	s.m.ended[reason].Inc()
	if reason == EndStopFailed {
		s.m.answered(reqConnect, pb.Status_CONNECTION_FAILED)
	}
}

// Request classifies a decoded hop request by type: reserve and connect
// go to Reserve and Connect; for anything else it returns the reply:
// UNEXPECTED_MESSAGE for a STATUS (a reply sent as a request: js answers
// the same), MALFORMED_MESSAGE for an unknown type (go answers that for
// both). A missing type reads as RESERVE, its zero value, as go reads it.
func (s *Service[C]) Request(req *pb.HopMessage) (kind int, reply *pb.HopMessage) {
	switch req.GetType() {
	case pb.HopMessage_RESERVE:
		return reqReserve, nil
	case pb.HopMessage_CONNECT:
		return reqConnect, nil
	case pb.HopMessage_STATUS:
		return reqOther, s.refuse(reqOther, pb.Status_UNEXPECTED_MESSAGE)
	}
	return reqOther, s.refuse(reqOther, pb.Status_MALFORMED_MESSAGE)
}

// Malformed is the reply to bytes that are not a hop message.
func (s *Service[C]) Malformed() *pb.HopMessage {
	return s.refuse(reqOther, pb.Status_MALFORMED_MESSAGE)
}

func (s *Service[C]) refuse(req int, st pb.Status) *pb.HopMessage {
	s.m.answered(req, st)
	return hopStatus(st)
}

// CountBytes adds n relayed bytes to the metric.
func (s *Service[C]) countBytes(n int) { s.m.bytes.Add(float64(n)) }
