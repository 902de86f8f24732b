package libp2p

import (
	"time"

	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/multistream"
	"github.com/swarmgate/swarmgate/mux"
)

// Stream tags (mux.Stream.SetTag) of inbound streams: whether the stream
// is counted in the resource model, and the index of the protocol it was
// counted under (Host.protoIndex; 0: none yet).
const (
	tagCounted   = 1 << 15
	tagProtoMask = tagCounted - 1
)

// onStream accepts an inbound stream into protocol negotiation, once the
// resource model counts it against the peer's and the system's limits.
func (pc *PeerConn) onStream(st *mux.Stream) {
	ps := pc.h.protos.Load()
	if ps.set == nil {
		pc.refuse(st, resetNoProtocol) // no protocol registered
		return
	}
	if err := pc.c.Memory().OpenStream(); err != nil {
		pc.refuse(st, admission.StreamRefusal(err))
		return
	}
	st.SetTag(tagCounted)
	ng := &negotiator{pc: pc, st: st, deadline: pc.c.Now().Add(pc.h.cfg.NegotiationTimeout)}
	ng.lst.Reset(ps.set)
	pc.negotiating = append(pc.negotiating, ng)
	if st.Accept(ng) == nil {
		ng.start(st) // data that came with the SYN may have started it already
	}
}

// refuse resets an inbound stream and counts why.
func (pc *PeerConn) refuse(st *mux.Stream, reason string) {
	st.Reset()
	pc.h.metrics.countReset(reason)
}

// streamEnded returns what an inbound stream was counted for
// (mux.Config.OnStreamEnd).
func (pc *PeerConn) streamEnded(st *mux.Stream) {
	tag := st.Tag()
	if tag&tagCounted == 0 {
		return
	}
	scope := pc.c.Memory()
	scope.CloseStream()
	if i := tag & tagProtoMask; i != 0 {
		scope.CloseProtocolStream(pc.h.protoName(i))
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
// stream to the chosen protocol's handler. Its answers go out whole and in
// order: what the stream's output cannot take now waits in pending, and no
// more input is read, nor the protocol started, until it is written.
type negotiator struct {
	pc       *PeerConn
	st       *mux.Stream
	lst      multistream.Listener
	deadline time.Time
	pending  []byte // answer bytes the stream did not take yet
	started  bool
}

// start sends our multistream header, eagerly like go-libp2p.
func (ng *negotiator) start(st *mux.Stream) {
	if !ng.started {
		ng.started = true
		ng.write(st, ng.lst.Start(nil))
	}
}

// write sends out, keeping what the stream does not take for OnWritable.
func (ng *negotiator) write(st *mux.Stream, out []byte) {
	if len(ng.pending) > 0 {
		ng.pending = append(ng.pending, out...)
		return
	}
	n, _ := st.Write(out)
	if n < len(out) {
		ng.pending = append(ng.pending[:0], out[n:]...)
	}
}

func (ng *negotiator) OnData(st *mux.Stream, p []byte) int {
	n, ready := ng.consume(st, p)
	if ready {
		// Inside the delivery: the rest of p goes to the new handler.
		ng.select_(st)
	}
	return n
}

// consume runs p through multistream-select and returns how much of it the
// negotiation took and whether the protocol is chosen and answered.
func (ng *negotiator) consume(st *mux.Stream, p []byte) (int, bool) {
	ng.start(st)
	if len(ng.pending) > 0 {
		return 0, false // answer the next message once the last answer is out
	}
	out, n, err := ng.lst.Input(nil, p)
	if len(out) > 0 {
		ng.write(st, out)
	}
	if err != nil {
		ng.done()
		ng.pc.refuse(st, resetNegotiationFailed)
		return len(p), false
	}
	return n, ng.lst.Done() && len(ng.pending) == 0
}

// select_ hands the stream to the chosen protocol, once the resource model
// admits one more of its streams for this peer.
func (ng *negotiator) select_(st *mux.Stream) {
	ng.done()
	proto := ng.lst.Protocol()
	sh := ng.pc.h.handler(proto)
	if sh == nil { // unregistered since the set was taken
		ng.pc.refuse(st, resetNoProtocol)
		return
	}
	if err := ng.pc.c.Memory().OpenProtocolStream(proto); err != nil {
		ng.pc.refuse(st, admission.StreamRefusal(err))
		return
	}
	st.SetTag(st.Tag() | ng.pc.h.protoIndex(proto))
	st.SetHandler(sh(ng.pc, st))
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

// OnWritable writes the rest of an answer, then goes on with the input that
// waited for it.
func (ng *negotiator) OnWritable(st *mux.Stream) {
	if len(ng.pending) == 0 || ng.st == nil {
		return
	}
	n, _ := st.Write(ng.pending)
	ng.pending = ng.pending[n:]
	if len(ng.pending) > 0 {
		return
	}
	ng.pending = nil
	if ng.lst.Done() {
		ng.select_(st) // buffered protocol bytes go to its handler
		return
	}
	if b := st.Peek(); len(b) > 0 {
		// Outside a delivery, the negotiation's bytes leave the buffer
		// before the chosen protocol's handler is installed: SetHandler
		// presents everything still buffered to it.
		n, ready := ng.consume(st, b)
		if st.State() == mux.StreamReset {
			return
		}
		st.Discard(n)
		if ready {
			ng.select_(st)
			return
		}
	}
	if len(ng.pending) == 0 && st.State() == mux.StreamRemoteClosed {
		ng.OnFIN(st) // the peer ended before choosing a protocol
	}
}

// OnFIN ends a negotiation the peer abandoned. One whose answer is still
// waiting for room, with the peer's next bytes buffered behind it, goes on
// (OnWritable): the FIN reaches the chosen protocol's handler after them.
func (ng *negotiator) OnFIN(st *mux.Stream) {
	if len(ng.pending) > 0 {
		return
	}
	ng.done()
	st.Reset()
}

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
