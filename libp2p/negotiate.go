package libp2p

import (
	"time"

	"github.com/swarmgate/swarmgate/multistream"
	"github.com/swarmgate/swarmgate/mux"
)

// onStream accepts an inbound stream into protocol negotiation.
func (pc *PeerConn) onStream(st *mux.Stream) {
	ps := pc.h.protos.Load()
	if ps.set == nil {
		st.Reset() // no protocol registered
		return
	}
	ng := &negotiator{pc: pc, st: st, deadline: pc.c.Now().Add(pc.h.cfg.NegotiationTimeout)}
	ng.lst.Reset(ps.set)
	pc.negotiating = append(pc.negotiating, ng)
	if st.Accept(ng) == nil {
		ng.start(st) // data that came with the SYN may have started it already
	}
}

// OpenStream opens a stream and proposes proto on it. Data written before
// the peer confirms is sent behind the proposal (lazy negotiation); h
// receives the stream's events once the peer has confirmed. When the
// session's output queue cannot take the whole proposal it returns
// mux.ErrWouldBlock without opening anything: retry once output drained
// (after a flush, or in some stream's OnWritable).
func (pc *PeerConn) OpenStream(proto string, h mux.Handler) (*mux.Stream, error) {
	if pc.sess == nil {
		return nil, ErrNotSecured
	}
	d, err := multistream.NewDialer(proto)
	if err != nil {
		return nil, err
	}
	proposal := d.Start(nil)
	if pc.sess.OutputLen()+2*mux.HeaderLen+len(proposal) > pc.maxOutput() {
		return nil, mux.ErrWouldBlock
	}
	st, err := pc.sess.Open(&proposer{d: d, next: h})
	if err != nil {
		return nil, err
	}
	// A fresh stream has the whole initial window, and the queue has room:
	// the proposal goes out whole and ahead of anything the caller writes.
	if n, err := st.Write(proposal); n != len(proposal) {
		st.Reset()
		if err == nil {
			err = mux.ErrWouldBlock
		}
		return nil, err
	}
	return st, nil
}

// negotiator runs multistream-select on an inbound stream and hands the
// stream to the chosen protocol's handler.
type negotiator struct {
	pc       *PeerConn
	st       *mux.Stream
	lst      multistream.Listener
	deadline time.Time
	started  bool
}

// start sends our multistream header, eagerly like go-libp2p.
func (ng *negotiator) start(st *mux.Stream) {
	if !ng.started {
		ng.started = true
		st.Write(ng.lst.Start(nil))
	}
}

func (ng *negotiator) OnData(st *mux.Stream, p []byte) int {
	ng.start(st)
	out, n, err := ng.lst.Input(nil, p)
	if len(out) > 0 {
		st.Write(out)
	}
	if err != nil {
		ng.done()
		st.Reset()
		return len(p)
	}
	if !ng.lst.Done() {
		return n
	}
	ng.done()
	sh := ng.pc.h.handler(ng.lst.Protocol())
	if sh == nil { // unregistered since the set was taken
		st.Reset()
		return len(p)
	}
	st.SetHandler(sh(ng.pc, st))
	return n
}

// done takes the stream out of negotiation: an idle connection keeps no
// negotiator.
func (ng *negotiator) done() {
	if ng.st == nil {
		return
	}
	ng.st = nil
	list := ng.pc.negotiating
	for i, x := range list {
		if x == ng {
			list = append(list[:i], list[i+1:]...)
			list[len(list):cap(list)][0] = nil
			break
		}
	}
	if len(list) == 0 {
		list = nil
	}
	ng.pc.negotiating = list
}

func (ng *negotiator) OnWritable(*mux.Stream) {}

func (ng *negotiator) OnFIN(st *mux.Stream) { ng.done(); st.Reset() }

func (ng *negotiator) OnReset(*mux.Stream, error) { ng.done() }

// proposer runs the dialer side of multistream-select on an outbound stream.
type proposer struct {
	d    *multistream.Dialer
	next mux.Handler
}

func (p *proposer) OnData(st *mux.Stream, b []byte) int {
	_, n, err := p.d.Input(nil, b)
	if err != nil {
		st.Reset()
		p.next.OnReset(st, err)
		return len(b)
	}
	if p.d.Done() {
		st.SetHandler(p.next)
	}
	return n
}

func (p *proposer) OnWritable(st *mux.Stream) { p.next.OnWritable(st) }

func (p *proposer) OnFIN(st *mux.Stream) { p.next.OnReset(st, mux.ErrStreamClosed) }

func (p *proposer) OnReset(st *mux.Stream, err error) { p.next.OnReset(st, err) }
