package relay

import (
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	circuit "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/internal/wire"
	"github.com/swarmgate/swarmgate/libp2p"
	"github.com/swarmgate/swarmgate/mux"
)

// The client role, event-driven like the server: reserve a slot on a
// relay, open a circuit through one (CONNECT), and accept circuits (stop).
// Circuits carry raw bytes here: our host runs no security or muxer over
// a circuit, so these are for tests and loadgen (N light clients holding
// reservations, echo traffic through the relay), not for libp2p
// connections over circuits.

// ClientTimeout bounds a RESERVE or CONNECT exchange from the stream's
// opening to the reply (go-libp2p's client: 1 min for both), and the wait
// for a STOP request on an inbound stop stream (go's StreamTimeout).
const ClientTimeout = time.Minute

// Client errors. A refusal is a *StatusError.
var (
	ErrTimeout   = errors.New("relay: no reply in time")
	ErrClosed    = errors.New("relay: stream ended before the reply")
	ErrNotStatus = errors.New("relay: reply is not a STATUS")
	ErrNoReserve = errors.New("relay: OK without a reservation")
	ErrExpired   = errors.New("relay: reservation expires in the past")
	ErrVoucher   = errors.New("relay: bad reservation voucher")
)

// Client is our client role on an libp2p.Host.
type Client struct {
	host *libp2p.Host
	now  func() time.Time
}

// NewClient returns the client role for h; now is the clock for checking
// a reservation's expiry (nil: time.Now).
func NewClient(h *libp2p.Host, now func() time.Time) *Client {
	if now == nil {
		now = time.Now
	}
	return &Client{host: h, now: now}
}

// Reservation is a relay's grant, as Reserve checked it.
type Reservation struct {
	Relay  peer.ID
	Expire time.Time
	// Addrs are the relay's addresses as it announced them (with
	// /p2p/<relay>); ones that do not parse are skipped, as go does.
	Addrs []ma.Multiaddr
	// Voucher is the signed voucher, nil when the relay sent none.
	Voucher *circuit.ReservationVoucher
	// Limit is the per-circuit limit announced, nil when none.
	Limit *pb.Limit
}

// Reserve asks the relay at the other end of pc for a reservation (or
// renews ours). done runs once, with pc's lock held (it must not block):
// with the reservation, or a *StatusError for a refusal, or another error.
// The checks are go-libp2p's: a STATUS with OK and a reservation, an
// expiry not in the past, and a voucher (when present) signed by the
// relay it names, which must be pc's peer, for our own peer ID. Call it
// from a callback, a posted function or PeerConn.Do.
func (c *Client) Reserve(pc *libp2p.PeerConn, done func(*Reservation, error)) {
	req := &pb.HopMessage{Type: pb.HopMessage_RESERVE.Enum()}
	c.exchange(pc, req, func(st *mux.Stream, m *pb.HopMessage, err error) {
		if err == nil {
			var r *Reservation
			r, err = c.checkReservation(pc, m)
			if err == nil {
				st.CloseWrite()
				done(r, nil)
				return
			}
		}
		if st != nil {
			st.Reset()
		}
		done(nil, err)
	})
}

func (c *Client) checkReservation(pc *libp2p.PeerConn, m *pb.HopMessage) (*Reservation, error) {
	rsv := m.GetReservation()
	if rsv == nil {
		return nil, ErrNoReserve
	}
	r := &Reservation{Relay: pc.RemotePeer(), Expire: time.Unix(int64(rsv.GetExpire()), 0), Limit: m.GetLimit()} // wall clock: the wire's Unix seconds
	if rsv.GetExpire() == 0 || r.Expire.Before(c.now()) {
		return nil, ErrExpired
	}
	for _, b := range rsv.GetAddrs() {
		if a, err := ma.NewMultiaddrBytes(b); err == nil {
			r.Addrs = append(r.Addrs, a)
		}
	}
	if v := rsv.GetVoucher(); v != nil {
		env, rec, err := record.ConsumeEnvelope(v, circuit.RecordDomain)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrVoucher, err)
		}
		vr, ok := rec.(*circuit.ReservationVoucher)
		if !ok {
			return nil, ErrVoucher
		}
		signer, err := peer.IDFromPublicKey(env.PublicKey)
		if err != nil || signer != vr.Relay || vr.Relay != pc.RemotePeer() || vr.Peer != c.host.ID() {
			return nil, ErrVoucher
		}
		r.Voucher = vr
	}
	return r, nil
}

// Connect opens a circuit through the relay at the other end of pc to
// dst. done runs once with pc's lock held: on success with the stream and
// the limit the relay announced (nil: none), and returns the handler for
// the circuit's bytes (bytes the destination sent behind the relay's OK
// are presented to it at once; nil resets the stream). On failure st is
// nil, err a *StatusError or another error, and the result is ignored.
func (c *Client) Connect(pc *libp2p.PeerConn, dst peer.ID, done func(st *mux.Stream, limit *pb.Limit, err error) mux.Handler) {
	req := &pb.HopMessage{Type: pb.HopMessage_CONNECT.Enum(), Peer: &pb.Peer{Id: []byte(dst)}}
	c.exchange(pc, req, func(st *mux.Stream, m *pb.HopMessage, err error) {
		if err != nil {
			if st != nil {
				st.Reset()
			}
			done(nil, nil, err)
			return
		}
		if h := done(st, m.GetLimit(), nil); h != nil {
			st.SetHandler(h)
		} else {
			st.Reset()
		}
	})
}

// exchange opens a hop stream, sends req and reads one reply: reply runs
// once, with the stream still open (nil on a failure to open), and the
// reply when it is a STATUS with OK.
func (c *Client) exchange(pc *libp2p.PeerConn, req *pb.HopMessage, reply func(*mux.Stream, *pb.HopMessage, error)) {
	x := &hopClient{pc: pc, reply: reply}
	b, err := AppendHop(nil, req)
	if err != nil {
		reply(nil, nil, err)
		return
	}
	st, err := pc.OpenStream(ProtoHop, x)
	if err != nil {
		reply(nil, nil, err)
		return
	}
	x.st, x.out = st, b
	x.timer = pc.After(ClientTimeout, func() { x.timer = nil; x.finish(nil, ErrTimeout) })
	x.write()
}

// hopClient is the client side of one hop exchange.
type hopClient struct {
	pc    *libp2p.PeerConn
	st    *mux.Stream
	out   []byte
	timer *libp2p.Timer
	reply func(*mux.Stream, *pb.HopMessage, error) // nil once called
}

func (x *hopClient) write() {
	n, err := x.st.Write(x.out)
	x.out = x.out[n:]
	if len(x.out) == 0 {
		x.out = nil
	} else if err != mux.ErrWouldBlock {
		x.finish(nil, err)
	}
}

func (x *hopClient) finish(m *pb.HopMessage, err error) {
	reply := x.reply
	if reply == nil {
		return
	}
	x.reply = nil
	if x.timer != nil {
		x.pc.StopTimer(x.timer)
		x.timer = nil
	}
	reply(x.st, m, err)
}

func (x *hopClient) OnData(st *mux.Stream, p []byte) int {
	if x.reply == nil {
		return len(p)
	}
	m, n, err := ParseHop(p)
	switch {
	case err == wire.ErrNeedMore:
		return 0
	case err != nil:
		x.finish(nil, err)
		return len(p)
	case m.GetType() != pb.HopMessage_STATUS:
		x.finish(nil, ErrNotStatus)
		return len(p)
	case m.GetStatus() != pb.Status_OK:
		x.finish(nil, &StatusError{Status: m.GetStatus()})
		return len(p)
	}
	x.finish(m, nil)
	return n // the rest belongs to the circuit (Connect) or is dropped
}

func (x *hopClient) OnWritable(*mux.Stream) {
	if x.out != nil && x.reply != nil {
		x.write()
	}
}

func (x *hopClient) OnFIN(*mux.Stream) {
	if x.reply != nil {
		x.finish(nil, ErrClosed)
	}
}

func (x *hopClient) OnReset(_ *mux.Stream, err error) {
	if x.reply != nil {
		x.finish(nil, fmt.Errorf("%w: %v", ErrClosed, err))
	}
}

// AcceptFunc decides an incoming circuit from src (limit: the relay's,
// nil when none): it returns the handler for the circuit's bytes, or nil
// to refuse. It runs with the connection's lock held.
type AcceptFunc func(pc *libp2p.PeerConn, st *mux.Stream, src peer.ID, limit *pb.Limit) mux.Handler

// HandleStop registers the stop protocol on the client's host: circuits a
// relay opens to us are offered to accept. The checks are go-libp2p's: a
// type other than CONNECT gets UNEXPECTED_MESSAGE, a bad peer
// MALFORMED_MESSAGE, a refusal CONNECTION_FAILED; otherwise we answer OK
// and the stream's bytes from then on go to the handler accept returned.
func (c *Client) HandleStop(accept AcceptFunc) error {
	return c.host.Handle(ProtoStop, func(pc *libp2p.PeerConn, st *mux.Stream) mux.Handler {
		s := &stopServer{pc: pc, accept: accept}
		s.timer = pc.After(ClientTimeout, func() { s.timer = nil; s.done = true; st.Reset() })
		return s
	})
}

type stopServer struct {
	pc     *libp2p.PeerConn
	accept AcceptFunc
	timer  *libp2p.Timer
	done   bool
}

func (s *stopServer) OnData(st *mux.Stream, p []byte) int {
	if s.done {
		return len(p)
	}
	m, n, err := ParseStop(p)
	if err == wire.ErrNeedMore {
		return 0
	}
	s.stop()
	var h mux.Handler
	status := pb.Status_OK
	switch {
	case err != nil:
		status = pb.Status_MALFORMED_MESSAGE
	case m.GetType() != pb.StopMessage_CONNECT:
		status = pb.Status_UNEXPECTED_MESSAGE
	default:
		src, perr := peerOf(m.GetPeer())
		if perr != nil {
			status = pb.Status_MALFORMED_MESSAGE
			break
		}
		if h = s.accept(s.pc, st, src, m.GetLimit()); h == nil {
			status = pb.Status_CONNECTION_FAILED
		}
	}
	b, _ := AppendStop(nil, stopStatus(status))
	// A fresh stream's window takes a few bytes; a short write means the
	// output queue is full, and the relay would time out anyway.
	if k, _ := st.Write(b); k != len(b) {
		st.Reset()
		return len(p)
	}
	if status != pb.Status_OK {
		st.CloseWrite()
		return len(p)
	}
	st.SetHandler(h)
	return n
}

func (s *stopServer) stop() {
	s.done = true
	if s.timer != nil {
		s.pc.StopTimer(s.timer)
		s.timer = nil
	}
}

func (s *stopServer) OnWritable(*mux.Stream)     {}
func (s *stopServer) OnFIN(st *mux.Stream)       { s.stop(); st.Reset() }
func (s *stopServer) OnReset(*mux.Stream, error) { s.stop() }
