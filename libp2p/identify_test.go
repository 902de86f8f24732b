package libp2p

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify/pb"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/internal/wire"
	"github.com/swarmgate/swarmgate/multistream"
	"github.com/swarmgate/swarmgate/mux"
)

// vectorKey is the §9.5 responder identity (Ed25519 seed 32×0x01).
func vectorKey(t *testing.T) crypto.PrivKey {
	t.Helper()
	k, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newTestHost(t *testing.T, cfg Config) *Host {
	t.Helper()
	e := engine.New(engine.Config{Logger: testutil.Quiet})
	t.Cleanup(func() { e.Close() })
	h, err := NewOn(e, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestIdentifyVector reproduces protocol-notes §9.9 byte for byte.
func TestIdentifyVector(t *testing.T) {
	want, _ := hex.DecodeString("79" +
		"0a24080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c" +
		"120a047f000001060fa1dd03" +
		"1a0e2f697066732f69642f312e302e30" +
		"1a102f697066732f70696e672f312e302e30" +
		"220a047f00000106c350dd03" +
		"2a0a697066732f302e312e30" +
		"320b6578616d706c652f312e30")
	h := newTestHost(t, Config{Key: vectorKey(t), AgentVersion: "example/1.0"})
	h.Handle(ProtoIdentify, IdentifyStream)
	h.Handle(ProtoPing, PingStream)
	// /p2p is stripped from announced addresses.
	h.SetListenAddrs([]ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/4001/ws/p2p/" + h.ID().String())})
	m, err := h.identifyMsg()
	if err != nil {
		t.Fatal(err)
	}
	observed := ma.StringCast("/ip4/127.0.0.1/tcp/50000/ws")
	got, err := m.append(nil, observed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("identify message\n got %x\nwant %x", got, want)
	}
	// The spliced message is what proto.Marshal makes of the whole.
	var whole pb.Identify
	if err := proto.Unmarshal(got[1:], &whole); err != nil {
		t.Fatal(err)
	}
	if b, _ := proto.Marshal(&whole); !bytes.Equal(b, got[1:]) {
		t.Fatal("splice differs from proto.Marshal")
	}

	// Cached until the protocols or addresses change.
	if m2, _ := h.identifyMsg(); m2 != m {
		t.Fatal("message rebuilt without a change")
	}
	h.Handle(ProtoEcho, EchoStream)
	m3, _ := h.identifyMsg()
	if m3 == m {
		t.Fatal("message not rebuilt after Handle")
	}
	// A non-loopback peer is not told loopback addresses.
	got, _ = m3.append(nil, ma.StringCast("/ip4/198.51.100.7/tcp/51234/ws"))
	var far pb.Identify
	if err := proto.Unmarshal(got[1:], &far); err != nil {
		t.Fatal(err)
	}
	if len(far.ListenAddrs) != 0 || len(far.Protocols) != 3 {
		t.Fatalf("far peer got %d addrs, protocols %v", len(far.ListenAddrs), far.Protocols)
	}
}

// TestIdentifyTrimmed keeps our message under 4 KiB for rust-libp2p.
func TestIdentifyTrimmed(t *testing.T) {
	h := newTestHost(t, Config{})
	var addrs []ma.Multiaddr
	for port := range 400 {
		a, _ := manet.FromNetAddr(&net.TCPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 1000 + port})
		addrs = append(addrs, a.Encapsulate(ma.StringCast("/ws")))
	}
	h.SetListenAddrs(addrs)
	h.Handle(ProtoEcho, EchoStream)
	m, err := h.identifyMsg()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := m.append(nil, ma.StringCast("/ip6/2001:db8::1/tcp/51234/ws"))
	if len(got) > maxOwnIdentify {
		t.Fatalf("%d bytes", len(got))
	}
	var msg pb.Identify
	if err := proto.Unmarshal(got[2:], &msg); err != nil {
		t.Fatal(err)
	}
	if len(msg.ListenAddrs) == 0 || len(msg.ListenAddrs) == len(addrs) || len(msg.Protocols) != 3 {
		t.Fatalf("%d addrs, %d protocols", len(msg.ListenAddrs), len(msg.Protocols))
	}
}

// identifyOver runs our identify client on pc.
func identifyOver(t *testing.T, pc *PeerConn) (*pb.Identify, error) {
	t.Helper()
	type result struct {
		m   *pb.Identify
		err error
	}
	ch := make(chan result, 1)
	pc.Do(func() {
		pc.Identify(func(m *pb.Identify, err error) { ch <- result{m, err} })
	})
	select {
	case r := <-ch:
		return r.m, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("identify did not finish")
	}
	return nil, nil
}

func TestIdentifyOwnClient(t *testing.T) {
	srv, addr := startHost(t, Config{})
	if err := srv.Handle(ProtoEcho, EchoStream); err != nil {
		t.Fatal(err)
	}
	pc := dialHost(t, srv, addr, DialOptions{Expect: srv.ID()})
	m, err := identifyOver(t, pc)
	if err != nil {
		t.Fatal(err)
	}
	if m.GetAgentVersion() != "swarmgate/"+Version || m.GetProtocolVersion() != IdentifyProtocolVersion {
		t.Fatalf("versions %q %q", m.GetAgentVersion(), m.GetProtocolVersion())
	}
	if !slices.Equal(m.Protocols, []string{ProtoEcho, ProtoIdentify, ProtoPing}) {
		t.Fatalf("protocols %v", m.Protocols)
	}
	if len(m.ListenAddrs) != 1 || !bytes.Equal(m.ListenAddrs[0], addr.Bytes()) {
		t.Fatalf("listen addrs %x, want %s", m.ListenAddrs, addr)
	}
	obs, err := ma.NewMultiaddrBytes(m.ObservedAddr)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(obs.String(), "/ip4/127.0.0.1/tcp/") || !strings.HasSuffix(obs.String(), "/ws") {
		t.Fatalf("observed %s", obs)
	}
	k, _ := crypto.MarshalPublicKey(srv.Key().GetPublic())
	if !bytes.Equal(m.PublicKey, k) {
		t.Fatal("public key")
	}
	// The stream ended cleanly on both sides: nothing left open.
	time.Sleep(50 * time.Millisecond)
	var n int
	pc.Do(func() { n = pc.NumStreams() })
	if n != 0 {
		t.Fatalf("%d streams left", n)
	}
}

// rawIdentify is a server identify handler writing fixed bytes in pieces
// (separate frames), then FIN.
func rawIdentify(pieces ...[]byte) StreamFunc {
	return func(pc *PeerConn, st *mux.Stream) mux.Handler {
		go func() {
			for _, p := range pieces {
				pc.Do(func() { st.Write(p) })
				time.Sleep(2 * time.Millisecond)
			}
			pc.Do(func() { st.CloseWrite() })
		}()
		return &mux.Funcs{}
	}
}

func lp(b []byte) []byte { return append(wire.AppendUvarint(nil, uint64(len(b))), b...) }

func marshal(t *testing.T, m *pb.Identify) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIdentifyClientChecks(t *testing.T) {
	other := newTestHost(t, Config{})
	otherKey, _ := crypto.MarshalPublicKey(other.Key().GetPublic())
	agent := "x/1"
	cases := []struct {
		name   string
		pieces func(own []byte) [][]byte
		want   error
	}{
		{"split-and-merged", func(own []byte) [][]byte {
			m1 := lp(marshal(t, &pb.Identify{PublicKey: own, Protocols: []string{"/a"}}))
			m2 := lp(marshal(t, &pb.Identify{Protocols: []string{"/b"}, AgentVersion: &agent}))
			all := append(m1, m2...)
			var out [][]byte
			for i := range all { // one byte per frame
				out = append(out, all[i:i+1])
			}
			return out
		}, nil},
		{"wrong-key", func([]byte) [][]byte {
			return [][]byte{lp(marshal(t, &pb.Identify{PublicKey: otherKey}))}
		}, ErrIdentifyKeyMismatch},
		{"no-key", func([]byte) [][]byte {
			return [][]byte{lp(marshal(t, &pb.Identify{AgentVersion: &agent}))}
		}, ErrIdentifyNoKey},
		{"too-large", func(own []byte) [][]byte {
			return [][]byte{wire.AppendUvarint(nil, MaxIdentifyMessage+1)}
		}, ErrIdentifyTooLarge},
		{"too-many", func(own []byte) [][]byte {
			m := lp(marshal(t, &pb.Identify{PublicKey: own}))
			return [][]byte{bytes.Repeat(m, maxIdentifyMessages+1)}
		}, ErrIdentifyTooMany},
		{"truncated", func(own []byte) [][]byte {
			m := lp(marshal(t, &pb.Identify{PublicKey: own}))
			return [][]byte{m[:len(m)-1]}
		}, ErrIdentifyTruncated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, addr := startHost(t, Config{})
			own, _ := crypto.MarshalPublicKey(srv.Key().GetPublic())
			srv.Handle(ProtoIdentify, rawIdentify(tc.pieces(own)...))
			pc := dialHost(t, srv, addr, DialOptions{})
			m, err := identifyOver(t, pc)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if tc.want == nil && (!slices.Equal(m.Protocols, []string{"/a", "/b"}) || m.GetAgentVersion() != agent) {
				t.Fatalf("merged %v %q", m.Protocols, m.GetAgentVersion())
			}
		})
	}
}

// TestIdentifyRefused: a peer without identify answers na.
func TestIdentifyRefused(t *testing.T) {
	srv, addr := startHost(t, Config{})
	srv.Unhandle(ProtoIdentify)
	pc := dialHost(t, srv, addr, DialOptions{})
	var mse *multistream.Error
	if _, err := identifyOver(t, pc); !errors.As(err, &mse) {
		t.Fatalf("err %v (%T)", err, err)
	}
}

// TestIdentifyServerDrops resets a requester that streams data at us.
func TestIdentifyServerDrops(t *testing.T) {
	srv, addr := startHost(t, Config{})
	srv.Handle(ProtoEcho, EchoStream)
	pc := dialHost(t, srv, addr, DialOptions{})
	col := &collector{done: make(chan error, 2)}
	var st *mux.Stream
	pc.Do(func() {
		st, _ = pc.OpenStream(ProtoIdentify, col)
		st.Write(make([]byte, MaxIdentifyMessage+1))
	})
	select {
	case err := <-col.done:
		if err == nil {
			// FIN after the message; the reset follows.
			err = <-col.done
		}
		var se *mux.StreamError
		if !errors.As(err, &se) {
			t.Fatalf("err %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no reset")
	}
}

// feedIdentify runs the client parser over chunks as the stream presents
// them: unconsumed bytes come back with the next chunk.
func feedIdentify(chunks ...[]byte) (*pb.Identify, error, int) {
	c := &identifyClient{msg: &pb.Identify{}}
	var pending []byte
	for _, ch := range chunks {
		pending = append(pending, ch...)
		n, err := c.parse(pending)
		if err != nil {
			return nil, err, 0
		}
		if n < 0 || n > len(pending) {
			panic("parse consumed outside the buffer")
		}
		pending = pending[n:]
	}
	if len(pending) > MaxIdentifyMessage+identifyLenBytes {
		panic("more than one partial message left unconsumed")
	}
	return c.msg, nil, len(pending)
}

// FuzzIdentifyParse: any split of the input gives the result of the whole
// (same message, same error, same leftover), and the leftover is at most
// one partial message.
func FuzzIdentifyParse(f *testing.F) {
	vec, _ := hex.DecodeString("790a24080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c120a047f000001060fa1dd031a0e2f697066732f69642f312e302e301a102f697066732f70696e672f312e302e30220a047f00000106c350dd032a0a697066732f302e312e30320b6578616d706c652f312e30")
	f.Add(vec, uint16(1))
	f.Add(append(append([]byte{}, vec...), vec...), uint16(121))
	f.Add(wire.AppendUvarint(nil, MaxIdentifyMessage+1), uint16(1))
	f.Add(bytes.Repeat([]byte{0}, 12), uint16(5)) // 12 empty messages
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		k := int(cut) % (len(data) + 1)
		m1, err1, rest1 := feedIdentify(data)
		m2, err2, rest2 := feedIdentify(data[:k], data[k:])
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("whole: %v, split at %d: %v", err1, k, err2)
		}
		// Our errors must match; protobuf's decode errors are fresh values.
		for _, e := range []error{ErrIdentifyTooLarge, ErrIdentifyTooMany, wire.ErrUvarintNotMinimal} {
			if errors.Is(err1, e) != errors.Is(err2, e) {
				t.Fatalf("whole: %v, split at %d: %v", err1, k, err2)
			}
		}
		if err1 == nil && (!proto.Equal(m1, m2) || rest1 != rest2) {
			t.Fatalf("split at %d differs: rest %d vs %d", k, rest1, rest2)
		}
	})
}
