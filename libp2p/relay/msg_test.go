package relay

import (
	"bytes"
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgate/swarmgate/internal/wire"
)

func testPeer(t testing.TB) peer.ID {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func u32(v uint32) *uint32 { return &v }
func u64(v uint64) *uint64 { return &v }

// hopSamples are messages of every shape both sides send.
func hopSamples(t testing.TB) []*pb.HopMessage {
	id := testPeer(t)
	return []*pb.HopMessage{
		{Type: pb.HopMessage_RESERVE.Enum()},
		{Type: pb.HopMessage_CONNECT.Enum(), Peer: &pb.Peer{Id: []byte(id)}},
		{Type: pb.HopMessage_STATUS.Enum(), Status: pb.Status_NO_RESERVATION.Enum()},
		{
			Type:   pb.HopMessage_STATUS.Enum(),
			Status: pb.Status_OK.Enum(),
			Reservation: &pb.Reservation{
				Expire:  u64(1_900_000_000),
				Addrs:   [][]byte{{4, 1, 2, 3, 4, 6, 0x10, 0x00}},
				Voucher: bytes.Repeat([]byte{7}, 150),
			},
			Limit: &pb.Limit{Duration: u32(120), Data: u64(131072)},
		},
	}
}

func stopSamples(t testing.TB) []*pb.StopMessage {
	id := testPeer(t)
	return []*pb.StopMessage{
		{Type: pb.StopMessage_CONNECT.Enum(), Peer: &pb.Peer{Id: []byte(id)}, Limit: &pb.Limit{Duration: u32(120)}},
		{Type: pb.StopMessage_CONNECT.Enum(), Peer: &pb.Peer{Id: []byte(id)}},
		{Type: pb.StopMessage_STATUS.Enum(), Status: pb.Status_OK.Enum()},
	}
}

// Every message round-trips, leaves the bytes behind it alone, and every
// truncated prefix is need-more.
func TestHopRoundTripAndPrefixes(t *testing.T) {
	for _, m := range hopSamples(t) {
		b, err := AppendHop(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		tail := []byte("relayed bytes")
		got, n, err := ParseHop(append(b, tail...))
		if err != nil || n != len(b) || !proto.Equal(got, m) {
			t.Fatalf("round trip: n=%d of %d, err %v, %v != %v", n, len(b), err, got, m)
		}
		for i := range len(b) {
			if _, _, err := ParseHop(b[:i]); err != wire.ErrNeedMore {
				t.Fatalf("prefix %d/%d: %v, want need-more", i, len(b), err)
			}
		}
	}
}

func TestStopRoundTripAndPrefixes(t *testing.T) {
	for _, m := range stopSamples(t) {
		b, err := AppendStop(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		got, n, err := ParseStop(append(b, 0xff, 0xff))
		if err != nil || n != len(b) || !proto.Equal(got, m) {
			t.Fatalf("round trip: n=%d of %d, err %v", n, len(b), err)
		}
		for i := range len(b) {
			if _, _, err := ParseStop(b[:i]); err != wire.ErrNeedMore {
				t.Fatalf("prefix %d/%d: %v, want need-more", i, len(b), err)
			}
		}
	}
}

func TestParseLimits(t *testing.T) {
	// A prefix above 4096 is refused from the prefix alone.
	big := wire.AppendUvarint(nil, MaxMessageSize+1)
	if _, _, err := ParseHop(big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over-limit prefix: %v", err)
	}
	// Exactly 4096 is allowed (here: need-more until the body is there).
	if _, _, err := ParseHop(wire.AppendUvarint(nil, MaxMessageSize)); err != wire.ErrNeedMore {
		t.Fatalf("4096 prefix: %v", err)
	}
	// A body that is not a protobuf.
	if _, _, err := ParseStop([]byte{2, 0xff, 0xff}); err != ErrMalformed {
		t.Fatalf("garbage body: %v", err)
	}
	// A non-minimal length prefix.
	if _, _, err := ParseHop([]byte{0x80, 0x00}); err != ErrMalformed {
		t.Fatalf("non-minimal prefix: %v", err)
	}
	// Writing without a type is refused (js answers MALFORMED to it).
	if _, err := AppendHop(nil, &pb.HopMessage{}); err == nil {
		t.Fatal("AppendHop without a type")
	}
	// Writing more than the limit is refused.
	m := &pb.HopMessage{Type: pb.HopMessage_STATUS.Enum(), Reservation: &pb.Reservation{Voucher: make([]byte, MaxMessageSize)}}
	if _, err := AppendHop(nil, m); err != ErrTooLarge {
		t.Fatalf("oversize write: %v", err)
	}
}

// The type field is written even for its zero value (RESERVE, CONNECT of
// stop): the first bytes are field 1, varint.
func TestTypeAlwaysWritten(t *testing.T) {
	b, _ := AppendHop(nil, &pb.HopMessage{Type: pb.HopMessage_RESERVE.Enum()})
	if !bytes.Equal(b, []byte{2, 0x08, 0x00}) {
		t.Fatalf("RESERVE is % x", b)
	}
	s, _ := AppendStop(nil, &pb.StopMessage{Type: pb.StopMessage_CONNECT.Enum()})
	if !bytes.Equal(s, []byte{2, 0x08, 0x00}) {
		t.Fatalf("STOP CONNECT is % x", s)
	}
}

func FuzzParseHop(f *testing.F) {
	for _, m := range hopSamples(f) {
		b, _ := AppendHop(nil, m)
		f.Add(b)
	}
	f.Add([]byte{0x80, 0x20})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, n, err := ParseHop(b)
		if err != nil {
			if n != 0 || m != nil {
				t.Fatal("error with a result")
			}
			return
		}
		if n > len(b) {
			t.Fatalf("used %d of %d", n, len(b))
		}
		for i := range n {
			if _, _, err := ParseHop(b[:i]); err != wire.ErrNeedMore {
				t.Fatalf("prefix %d/%d of a valid frame: %v", i, n, err)
			}
		}
		if m.Type == nil {
			m.Type = pb.HopMessage_RESERVE.Enum() // what a missing type reads as
		}
		out, err := AppendHop(nil, m)
		if err != nil {
			return // unknown fields can push a re-encoding past the limit
		}
		again, k, err := ParseHop(out)
		if err != nil || k != len(out) || !proto.Equal(again, m) {
			t.Fatalf("re-encoding does not parse back: %v", err)
		}
	})
}

func FuzzParseStop(f *testing.F) {
	for _, m := range stopSamples(f) {
		b, _ := AppendStop(nil, m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, n, err := ParseStop(b)
		if err != nil {
			if n != 0 || m != nil {
				t.Fatal("error with a result")
			}
			return
		}
		for i := range n {
			if _, _, err := ParseStop(b[:i]); err != wire.ErrNeedMore {
				t.Fatalf("prefix %d/%d of a valid frame: %v", i, n, err)
			}
		}
		if m.Type == nil {
			m.Type = pb.StopMessage_CONNECT.Enum()
		}
		out, err := AppendStop(nil, m)
		if err != nil {
			return
		}
		again, k, err := ParseStop(out)
		if err != nil || k != len(out) || !proto.Equal(again, m) {
			t.Fatalf("re-encoding does not parse back: %v", err)
		}
	})
}
