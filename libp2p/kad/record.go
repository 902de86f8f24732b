package kad

import (
	"errors"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgate/swarmgate/internal/wire"
	"github.com/swarmgate/swarmgate/libp2p/kad/pb"
)

// MaxPeerRecordSize bounds one encoded closerPeers entry (peer ID,
// addresses, connection type), as go-libp2p-kad-dht does on its send path
// (pb.MaxPeerRecordSize, 8 KiB: identify's budget for a peer's whole signed
// self-description). Addresses past it are dropped, last first; the ID is
// always kept.
const MaxPeerRecordSize = 8 << 10

// errNoAddrs refuses a table entry without a usable address: FIND_NODE drops
// such entries anyway (go handleFindPeer), so they would only cost memory.
var errNoAddrs = errors.New("kad: peer has no usable address")

// A record is one peer as it goes on the wire in closerPeers: the
// marshalled pb.Message{CloserPeers: [{Id, Addrs, Connection}]}, built once
// when the table learns the peer and immutable from then on (a string), so a
// response copies it without building a pb.Message_Peer per entry.
//
// A response is proto.Marshal(head) ‖ record ‖ … ‖ proto.Marshal(tail).
// The protobuf encoding defines a concatenation of encoded messages as their
// merge, and a repeated field merges by appending, so the bytes decode as
// one Message whose closerPeers are the records in order. Go's Marshal
// writes fields in number order, which head (type 1, key 2), the records
// (closerPeers 8) and tail (clusterLevelRaw 10) keep, so the result is
// byte-identical to proto.Marshal of the whole message.
type record = string

// encodeRecord builds the record of id with addrs (binary multiaddrs, already
// filtered), trimmed to MaxPeerRecordSize.
func encodeRecord(id []byte, addrs [][]byte, conn pb.Message_ConnectionType) (record, error) {
	p := &pb.Message_Peer{Id: id, Addrs: addrs, Connection: conn}
	for len(p.Addrs) > 0 && proto.Size(p) > MaxPeerRecordSize {
		p.Addrs = p.Addrs[:len(p.Addrs)-1]
	}
	if len(p.Addrs) == 0 {
		return "", errNoAddrs
	}
	b, err := proto.Marshal(&pb.Message{CloserPeers: []*pb.Message_Peer{p}})
	if err != nil {
		return "", err
	}
	return record(b), nil
}

// decodeRecord is the peer a record holds.
func decodeRecord(r record) (*pb.Message_Peer, error) {
	var m pb.Message
	if err := proto.Unmarshal([]byte(r), &m); err != nil {
		return nil, err
	}
	if len(m.CloserPeers) != 1 {
		return nil, errors.New("kad: record without exactly one peer")
	}
	return m.CloserPeers[0], nil
}

// withConnection re-encodes r with another connection type.
func withConnection(r record, conn pb.Message_ConnectionType) (record, error) {
	p, err := decodeRecord(r)
	if err != nil {
		return "", err
	}
	return encodeRecord(p.Id, p.Addrs, conn)
}

// appendResponse appends the length-delimited encoding of head with recs
// appended to its closerPeers and tail merged in (see record). head and
// tail must not hold closerPeers themselves.
func appendResponse(dst []byte, head, tail *pb.Message, recs []record) ([]byte, error) {
	opt := proto.MarshalOptions{}
	n := opt.Size(head) + opt.Size(tail)
	for _, r := range recs {
		n += len(r)
	}
	dst = slices.Grow(dst, wire.UvarintLen(uint64(n))+n)
	dst = wire.AppendUvarint(dst, uint64(n))
	start := len(dst)
	dst, err := opt.MarshalAppend(dst, head)
	if err != nil {
		return dst, err
	}
	for _, r := range recs {
		dst = append(dst, r...)
	}
	dst, err = opt.MarshalAppend(dst, tail)
	if err != nil {
		return dst, err
	}
	if len(dst)-start != n {
		return dst, errors.New("kad: response size changed while encoding")
	}
	return dst, nil
}

// recordPeer is the peer ID a record holds, for the embedding API and tests.
func recordPeer(r record) (peer.ID, [][]byte, pb.Message_ConnectionType, error) {
	p, err := decodeRecord(r)
	if err != nil {
		return "", nil, 0, err
	}
	id, err := peer.IDFromBytes(p.Id)
	return id, p.Addrs, p.Connection, err
}
