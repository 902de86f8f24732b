package libp2p

import (
	"errors"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify/pb"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgate/swarmgate/internal/bufpool"
	"github.com/swarmgate/swarmgate/internal/wire"
	"github.com/swarmgate/swarmgate/mux"
)

// ProtoIdentify is libp2p identify (protocol-notes §7): the peer that
// opens the stream sends nothing; the responder writes its Identify
// message, length-prefixed, and closes its write side.
const ProtoIdentify = "/ipfs/id/1.0.0"

// ProtoIdentifyPush is identify push (protocol-notes-kad-relay §3): the
// peer opens the stream, writes its identify message(s) and closes; there
// is no reply. Served once a Notifiee wants the pushes (Host.Notify).
const ProtoIdentifyPush = "/ipfs/id/push/1.0.0"

// IdentifyProtocolVersion is announced as protocolVersion (js-libp2p's
// default; nobody checks it).
const IdentifyProtocolVersion = "ipfs/0.1.0"

const (
	// MaxIdentifyMessage bounds one received identify message: go-libp2p
	// (signedIDSize) and js-libp2p read at most 8 KiB per message.
	MaxIdentifyMessage = 8 << 10
	// maxIdentifyMessages is how many messages a response may have
	// (go-libp2p and js-libp2p merge at most 10, then fail).
	maxIdentifyMessages = 10
	// MaxIdentifyProtocols bounds the protocols kept from one peer's
	// identify: merging appends repeated fields, so ten 8 KiB messages of
	// short ids would carry some 13,000 (go-libp2p PR #3501; its
	// peerstore keeps 1,024 per peer). The first ones are kept.
	MaxIdentifyProtocols = 1024
	// MaxIdentifyAddrs bounds the listen addresses kept from one peer's
	// identify (go-libp2p's connectedPeerMaxAddrs: 500).
	MaxIdentifyAddrs = 500
	// maxOwnIdentify bounds the message we send: rust-libp2p reads at
	// most 4096 bytes, so go-libp2p keeps its own under 4 KiB; listen
	// addresses (then protocols) are trimmed to fit.
	maxOwnIdentify = 4 << 10
	// identifyLenBytes: 8 KiB needs a 2-byte uvarint; a longer prefix
	// announces a message over the limit.
	identifyLenBytes = 2
	// DefaultIdentifyTimeout bounds PeerConn.Identify, as go-libp2p's
	// identify.DefaultTimeout (5 s).
	DefaultIdentifyTimeout = 5 * time.Second
)

// Identify client errors.
var (
	ErrIdentifyTooLarge    = errors.New("engine: identify message over 8 KiB")
	ErrIdentifyTooMany     = errors.New("engine: more than 10 identify messages")
	ErrIdentifyTruncated   = errors.New("engine: identify stream ended inside a message")
	ErrIdentifyNoKey       = errors.New("engine: identify without a public key")
	ErrIdentifyKeyMismatch = errors.New("engine: identify public key does not match the peer ID")
	ErrIdentifyTimeout     = errors.New("engine: identify timed out")
)

// HandleDefaults registers identify, ping and echo.
func (h *Host) HandleDefaults() error {
	return errors.Join(
		h.Handle(ProtoIdentify, IdentifyStream),
		h.Handle(ProtoPing, PingStream),
		h.Handle(ProtoEcho, EchoStream),
	)
}

// identifyMsg is a host's identify message without observedAddr, which is
// the only field that differs per connection. head holds fields 1–3
// (publicKey, listenAddrs, protocols) and tail fields 5–6 (versions):
// head‖observedAddr‖tail is byte-identical to proto.Marshal of the whole
// message, since Go protobuf emits fields in number order (§9.9), and a
// concatenation of protobuf encodings is their merge anyway.
type identifyMsg struct {
	protos *protoSet       // the host state it was built from
	addrs  *[]ma.Multiaddr // (both are replaced whole on change)
	head   [2][]byte       // [1]: with loopback listen addresses
	tail   []byte
}

// identifyMsg returns the host's marshalled identify message, rebuilt
// when its protocols or listen addresses changed.
func (h *Host) identifyMsg() (*identifyMsg, error) {
	ps, addrs := h.protos.Load(), h.addrs.Load()
	if m := h.idMsg.Load(); m != nil && m.protos == ps && m.addrs == addrs {
		return m, nil
	}
	m, err := h.buildIdentify(ps, addrs)
	if err != nil {
		return nil, err
	}
	h.idMsg.Store(m)
	return m, nil
}

func (h *Host) buildIdentify(ps *protoSet, addrs *[]ma.Multiaddr) (*identifyMsg, error) {
	kb, err := crypto.MarshalPublicKey(h.key.GetPublic())
	if err != nil {
		return nil, err
	}
	pv, av := IdentifyProtocolVersion, h.cfg.AgentVersion
	m := &identifyMsg{protos: ps, addrs: addrs}
	if m.tail, err = proto.Marshal(&pb.Identify{ProtocolVersion: &pv, AgentVersion: &av}); err != nil {
		return nil, err
	}
	var all, public [][]byte
	for _, a := range *addrs {
		t, _ := peer.SplitAddr(a) // announced without /p2p
		if t == nil {
			continue
		}
		all = append(all, t.Bytes())
		// Like go-libp2p, loopback addresses are announced only over
		// loopback connections.
		if !manet.IsIPLoopback(t) {
			public = append(public, t.Bytes())
		}
	}
	for i, la := range [2][][]byte{public, all} {
		protos := ps.ids
		for {
			head, err := proto.Marshal(&pb.Identify{PublicKey: kb, ListenAddrs: la, Protocols: protos})
			if err != nil {
				return nil, err
			}
			// Room for observedAddr (a /ip6/…/tcp/…/ws address is < 40 B).
			if len(head)+len(m.tail)+64 <= maxOwnIdentify || len(la)+len(protos) == 0 {
				m.head[i] = head
				break
			}
			if len(la) > 0 {
				la = la[:len(la)-1]
			} else {
				protos = protos[:len(protos)-1]
			}
		}
	}
	return m, nil
}

// appendIdentify appends the length-prefixed identify message for pc.
func (pc *PeerConn) appendIdentify(dst []byte) ([]byte, error) {
	m, err := pc.h.identifyMsg()
	if err != nil {
		return dst, err
	}
	return m.append(dst, pc.RemoteMultiaddr())
}

// append appends the length-prefixed message with observed as observedAddr
// (nil: none); loopback listen addresses go only to a loopback peer.
func (m *identifyMsg) append(dst []byte, observed ma.Multiaddr) ([]byte, error) {
	var obs []byte
	loop := 0
	if observed != nil {
		var err error
		if obs, err = proto.Marshal(&pb.Identify{ObservedAddr: observed.Bytes()}); err != nil {
			return dst, err
		}
		if manet.IsIPLoopback(observed) {
			loop = 1
		}
	}
	head := m.head[loop]
	dst = wire.AppendUvarint(dst, uint64(len(head)+len(obs)+len(m.tail)))
	dst = append(dst, head...)
	dst = append(dst, obs...)
	return append(dst, m.tail...), nil
}

// IdentifyStream serves ProtoIdentify: it writes the host's message and
// its FIN at once (no request is awaited), then reads and drops what the
// peer sends, up to MaxIdentifyMessage (the requester sends nothing; a
// peer that streams more is reset).
func IdentifyStream(pc *PeerConn, st *mux.Stream) mux.Handler {
	msg, err := pc.appendIdentify(bufpool.Get(bufpool.Small))
	if err != nil {
		bufpool.Put(msg)
		st.Reset()
		return &identifyServer{}
	}
	s := &identifyServer{}
	s.send(st, msg)
	return s
}

type identifyServer struct {
	rest []byte // unsent part of the message (pooled); nil when sent
	got  int    // bytes received from the peer
}

// send writes msg (pooled) and the FIN; what does not fit waits for
// OnWritable.
func (s *identifyServer) send(st *mux.Stream, msg []byte) {
	n, err := st.Write(msg)
	if err == mux.ErrWouldBlock {
		s.rest = msg[:copy(msg, msg[n:])]
		return
	}
	bufpool.Put(msg)
	s.rest = nil
	if err == nil {
		st.CloseWrite()
	}
}

func (s *identifyServer) OnData(st *mux.Stream, p []byte) int {
	s.got += len(p)
	if s.got > MaxIdentifyMessage {
		s.OnReset(st, nil)
		st.Reset()
	}
	return len(p)
}

func (s *identifyServer) OnWritable(st *mux.Stream) {
	if s.rest != nil {
		s.send(st, s.rest)
	}
}

func (s *identifyServer) OnFIN(*mux.Stream) {}

func (s *identifyServer) OnReset(*mux.Stream, error) {
	if s.rest != nil {
		bufpool.Put(s.rest)
		s.rest = nil
	}
}

// Identify asks the peer for its identify message: it opens ProtoIdentify,
// reads up to 10 length-prefixed messages (each ≤ MaxIdentifyMessage)
// until the peer's FIN, merges them as go-libp2p does, checks that the
// public key is the peer's identity and calls done once with the result
// (from a callback, with the connection's lock held: done must not block;
// it runs before Identify returns if the stream cannot be opened). Call
// Identify from a callback or inside PeerConn.Do.
func (pc *PeerConn) Identify(done func(*pb.Identify, error)) {
	c := &identifyClient{request: request[*pb.Identify]{pc: pc, done: done}, msg: &pb.Identify{}}
	st, err := pc.OpenStream(ProtoIdentify, c)
	if err != nil {
		c.finish(nil, err)
		return
	}
	// The requester sends nothing after its proposal: its FIN goes with it,
	// so the exchange ends with the peer's FIN and costs no write of ours
	// after the answer.
	st.CloseWrite()
	c.expire(st, DefaultIdentifyTimeout, ErrIdentifyTimeout)
}

type identifyClient struct {
	request[*pb.Identify]
	msg *pb.Identify
	n   int // messages merged
	// push: the inbound side of ProtoIdentifyPush, whose messages may
	// leave out the public key (js-libp2p's do).
	push bool
}

// identifyPushStream serves ProtoIdentifyPush with the identify reader: up
// to 10 messages of at most MaxIdentifyMessage each, merged as go does,
// until the peer's FIN, within DefaultIdentifyTimeout; then the result goes
// to the Notifiees. A push whose public key is present and not the peer's
// is dropped (js rejects it whole; go ignores the key).
func (h *Host) identifyPushStream(pc *PeerConn, st *mux.Stream) mux.Handler {
	c := &identifyClient{msg: &pb.Identify{}, push: true}
	c.request = request[*pb.Identify]{pc: pc, done: func(m *pb.Identify, err error) {
		if err != nil {
			return
		}
		for _, n := range h.notifiees() {
			if n.IdentifyPush != nil {
				n.IdentifyPush(pc, m)
			}
		}
	}}
	c.expire(st, DefaultIdentifyTimeout, ErrIdentifyTimeout)
	return c
}

func (c *identifyClient) OnData(st *mux.Stream, p []byte) int {
	if !c.pending() {
		return len(p)
	}
	n, err := c.parse(p)
	if err != nil {
		c.fail(st, err)
		return len(p)
	}
	// Unconsumed: at most one partial message (≤ 8 KiB + prefix).
	return n
}

// parse merges the complete messages at the front of p into c.msg and
// returns how many bytes they took; a partial message is left for later.
func (c *identifyClient) parse(p []byte) (int, error) {
	off := 0
	for off < len(p) {
		body, k, err := wire.ParseDelimited(p[off:], MaxIdentifyMessage)
		if err == wire.ErrNeedMore {
			break // the rest of this message has not arrived
		}
		if err == wire.ErrMessageTooLarge {
			return off, ErrIdentifyTooLarge
		}
		if err != nil {
			return off, err
		}
		if c.n == maxIdentifyMessages {
			return off, ErrIdentifyTooMany
		}
		if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(body, c.msg); err != nil {
			return off, err
		}
		// Trimmed after every merge, so what is kept never grows past
		// the bounds plus one message.
		if m := c.msg; len(m.Protocols) > MaxIdentifyProtocols {
			m.Protocols = slices.Clip(m.Protocols[:MaxIdentifyProtocols])
		}
		if m := c.msg; len(m.ListenAddrs) > MaxIdentifyAddrs {
			m.ListenAddrs = slices.Clip(m.ListenAddrs[:MaxIdentifyAddrs])
		}
		c.n++
		off += k
	}
	return off, nil
}

func (c *identifyClient) OnWritable(*mux.Stream) {}

// OnFIN completes the exchange: the message is checked and our side closed.
func (c *identifyClient) OnFIN(st *mux.Stream) {
	if !c.pending() {
		return
	}
	if st.Buffered() > 0 {
		c.fail(st, ErrIdentifyTruncated)
		return
	}
	if !c.push || len(c.msg.PublicKey) > 0 { // a push need not repeat the key
		if err := checkIdentifyKey(c.msg, c.pc.RemotePeer()); err != nil {
			c.fail(st, err)
			return
		}
	}
	st.CloseWrite() // a push's stream (a request's is closed already)
	c.finish(c.msg, nil)
}

func (c *identifyClient) OnReset(st *mux.Stream, err error) { c.finish(nil, err) }

// checkIdentifyKey verifies that m's public key is the identity of p (js
// fails identify without it; go ignores a mismatching key).
func checkIdentifyKey(m *pb.Identify, p peer.ID) error {
	if len(m.PublicKey) == 0 {
		return ErrIdentifyNoKey
	}
	k, err := crypto.UnmarshalPublicKey(m.PublicKey)
	if err != nil {
		return err
	}
	id, err := peer.IDFromPublicKey(k)
	if err != nil {
		return err
	}
	if id != p {
		return ErrIdentifyKeyMismatch
	}
	return nil
}
