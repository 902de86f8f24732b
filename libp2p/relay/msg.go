package relay

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgate/swarmgate/internal/wire"
)

// Protocol ids (circuit-v2 spec).
const (
	ProtoHop  = "/libp2p/circuit/relay/0.2.0/hop"
	ProtoStop = "/libp2p/circuit/relay/0.2.0/stop"
)

// MaxMessageSize bounds one hop or stop message. go-libp2p reads at most
// 4096 bytes per message (maxMessageSize in circuitv2 relay/relay.go and
// client/dial.go), so a larger one can never be valid between
// interoperable peers; the largest we send, a RESERVE reply with a voucher
// and a few addresses, is well under it.
const MaxMessageSize = 4096

// Parse errors. Both are answered with MALFORMED_MESSAGE.
var (
	// ErrTooLarge reports a length prefix above MaxMessageSize, found
	// before the body is waited for.
	ErrTooLarge = fmt.Errorf("relay: message over %d bytes: %w", MaxMessageSize, wire.ErrMessageTooLarge)
	// ErrMalformed reports a frame whose body is not a valid protobuf
	// encoding of the message.
	ErrMalformed = errors.New("relay: malformed message")
)

// frame cuts one uvarint-delimited message from the front of b (the
// framing of both protocols): wire.ErrNeedMore for a prefix, ErrTooLarge
// for a prefix announcing more than MaxMessageSize.
func frame(b []byte) ([]byte, int, error) {
	msg, n, err := wire.ParseDelimited(b, MaxMessageSize)
	switch err {
	case nil:
		return msg, n, nil
	case wire.ErrMessageTooLarge, wire.ErrUvarintTooLong:
		return nil, 0, ErrTooLarge
	case wire.ErrNeedMore:
		return nil, 0, err
	}
	return nil, 0, ErrMalformed // a non-minimal length prefix
}

// ParseHop parses one HopMessage from the front of b and returns it with
// the bytes used; bytes after it (a relayed stream's first data) are not
// touched. A prefix of a valid frame gives wire.ErrNeedMore.
func ParseHop(b []byte) (*pb.HopMessage, int, error) {
	body, n, err := frame(b)
	if err != nil {
		return nil, 0, err
	}
	m := new(pb.HopMessage)
	if err := proto.Unmarshal(body, m); err != nil {
		return nil, 0, ErrMalformed
	}
	return m, n, nil
}

// ParseStop parses one StopMessage from the front of b, like ParseHop.
func ParseStop(b []byte) (*pb.StopMessage, int, error) {
	body, n, err := frame(b)
	if err != nil {
		return nil, 0, err
	}
	m := new(pb.StopMessage)
	if err := proto.Unmarshal(body, m); err != nil {
		return nil, 0, ErrMalformed
	}
	return m, n, nil
}

// appendMsg appends m with its uvarint length prefix.
func appendMsg(dst []byte, m proto.Message) ([]byte, error) {
	size := proto.Size(m)
	if size > MaxMessageSize {
		return dst, ErrTooLarge
	}
	dst = wire.AppendUvarint(dst, uint64(size))
	return proto.MarshalOptions{}.MarshalAppend(dst, m)
}

// AppendHop appends m, length-delimited. The type field must be set: js
// relays and clients answer MALFORMED_MESSAGE to a message without one.
func AppendHop(dst []byte, m *pb.HopMessage) ([]byte, error) {
	if m.Type == nil {
		return dst, errNoType
	}
	return appendMsg(dst, m)
}

// AppendStop appends m, length-delimited; m.Type must be set (AppendHop).
func AppendStop(dst []byte, m *pb.StopMessage) ([]byte, error) {
	if m.Type == nil {
		return dst, errNoType
	}
	return appendMsg(dst, m)
}

var errNoType = errors.New("relay: message without a type")

// hopStatus is a hop STATUS reply without reservation or limit.
func hopStatus(s pb.Status) *pb.HopMessage {
	return &pb.HopMessage{Type: pb.HopMessage_STATUS.Enum(), Status: s.Enum()}
}

// stopStatus is a stop STATUS reply.
func stopStatus(s pb.Status) *pb.StopMessage {
	return &pb.StopMessage{Type: pb.StopMessage_STATUS.Enum(), Status: s.Enum()}
}

// peerOf decodes a message's peer ID; addresses are ignored (active
// relaying is deprecated by the spec, and no implementation uses them).
func peerOf(p *pb.Peer) (peer.ID, error) {
	if p == nil {
		return "", ErrMalformed
	}
	id, err := peer.IDFromBytes(p.Id)
	if err != nil {
		return "", ErrMalformed
	}
	return id, nil
}

// StatusError is a refusal carried on the wire: the relay's (or the
// destination's) status for a request of ours.
type StatusError struct {
	Status pb.Status
}

func (e *StatusError) Error() string { return "relay: refused: " + e.Status.String() }
