package kad

// The one file that knows the libp2p host: the role's wiring to it.

import (
	"sync"
	"time"

	idpb "github.com/libp2p/go-libp2p/p2p/protocol/identify/pb"

	"github.com/swarmgate/swarmgate/libp2p"
	"github.com/swarmgate/swarmgate/mux"
)

// Role is the Kademlia server role running on a host.
type Role struct {
	*Server
	host *libp2p.Host
	// conns holds the state of connections that matter to the role: those
	// whose identify listed Protocol, or that opened a kad stream. Client
	// connections that never ask cost nothing here.
	conns sync.Map // *libp2p.PeerConn → *connState
	// waiters are seed connections KeepConnected waits on.
	waiters sync.Map // *libp2p.PeerConn → chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

// connState is one connection's Peer and its Scheduler (the engine's
// per-connection timers).
type connState struct {
	pc   *libp2p.PeerConn
	peer *Peer
}

func (c *connState) Now() time.Time { return c.pc.Now() }

func (c *connState) After(d time.Duration, fire func()) func() {
	t := c.pc.After(d, fire)
	return func() { c.pc.StopTimer(t) }
}

// Attach starts the role on h: it serves Protocol (so our identify lists
// it from now on), identifies every connection once it is muxed (a peer
// enters the table when its identify lists Protocol with a usable
// address), follows identify pushes (a peer that turns server mode on or
// off moves in or out), starts a connection's grace period when it closes,
// and sweeps expired entries in the background (every tenth of the grace
// period, between 1 s and 1 min) until Close. cfg.Self and
// cfg.ListenAddrs default to the host's.
func Attach(h *libp2p.Host, cfg Config) (*Role, error) {
	if cfg.Self == "" {
		cfg.Self = h.ID()
	}
	if cfg.ListenAddrs == nil {
		cfg.ListenAddrs = h.ListenAddrs
	}
	r := &Role{Server: NewServer(cfg), host: h, stop: make(chan struct{}), done: make(chan struct{})}
	if err := h.Notify(libp2p.Notifiee{
		Connected:    r.connected,
		Closed:       r.closed,
		IdentifyPush: r.pushed,
	}); err != nil {
		return nil, err
	}
	if err := h.Handle(Protocol, r.stream); err != nil {
		return nil, err
	}
	go r.sweeper()
	return r, nil
}

// Close withdraws the protocol (our identify no longer lists it for new
// connections) and stops the background sweep.
func (r *Role) Close() {
	select {
	case <-r.stop:
	default:
		r.host.Unhandle(Protocol)
		close(r.stop)
		<-r.done
	}
}

func (r *Role) sweeper() {
	defer close(r.done)
	every := min(max(r.table.GracePeriod()/10, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case now := <-t.C:
			r.Sweep(now)
		}
	}
}

// state returns pc's state, creating it on first use.
func (r *Role) state(pc *libp2p.PeerConn) *connState {
	if v, ok := r.conns.Load(pc); ok {
		return v.(*connState)
	}
	v, _ := r.conns.LoadOrStore(pc, &connState{pc: pc, peer: NewPeer(pc.RemotePeer())})
	return v.(*connState)
}

func (r *Role) stream(pc *libp2p.PeerConn, st *mux.Stream) mux.Handler {
	cs := r.state(pc)
	return r.NewStream(cs.peer, cs, st)
}

func (r *Role) connected(pc *libp2p.PeerConn) {
	pc.Identify(func(m *idpb.Identify, err error) {
		if err != nil {
			return // the peer stays out; a later push can still bring it in
		}
		if _, known := r.conns.Load(pc); !known && !hasProtocol(m.Protocols) {
			return // a client: keep nothing
		}
		r.Identified(r.state(pc).peer, m.Protocols, m.ListenAddrs)
	})
}

func (r *Role) pushed(pc *libp2p.PeerConn, m *idpb.Identify) {
	if _, known := r.conns.Load(pc); !known && !hasProtocol(m.Protocols) {
		return
	}
	r.Pushed(r.state(pc).peer, m.Protocols, m.ListenAddrs)
}

func (r *Role) closed(pc *libp2p.PeerConn) {
	if ch, ok := r.waiters.LoadAndDelete(pc); ok {
		close(ch.(chan struct{}))
	}
	if v, ok := r.conns.LoadAndDelete(pc); ok {
		r.Disconnected(v.(*connState).peer, pc.Now())
	}
}
