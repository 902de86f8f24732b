package kad

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/libp2p/kad/pb"
)

// randomID is an Ed25519-shaped peer ID (identity multihash of a protobuf
// public key: 00 24 08 01 12 20 ‖ 32 bytes) without generating a key pair.
func randomID(r *rand.Rand) peer.ID {
	b := make([]byte, 38)
	copy(b, []byte{0x00, 0x24, 0x08, 0x01, 0x12, 0x20})
	for i := 6; i < len(b); i++ {
		b[i] = byte(r.Uint32())
	}
	return peer.ID(b)
}

func testAddr(i int) [][]byte {
	a := ma.StringCast("/ip4/127.0.0.1/tcp/4001/ws")
	b := a.Bytes()
	b[6], b[7] = byte(i>>8), byte(i) // vary the port (after 04 ‖ 4-byte IP ‖ 06)
	return [][]byte{b}
}

func randomKey(r *rand.Rand) Key {
	var k Key
	for i := range k {
		k[i] = byte(r.Uint32())
	}
	return k
}

// bruteClosest is the reference: the k keys nearest to target by a plain
// XOR comparison over every key, without the excluded ones.
func bruteClosest(keys []Key, target Key, k int, exclude ...Key) []Key {
	var best []Key
	for _, key := range keys {
		if slices.Contains(exclude, key) {
			continue
		}
		i := len(best)
		for i > 0 && Closer(target, key, best[i-1]) {
			i--
		}
		if i < k {
			best = slices.Insert(best, i, key)
			if len(best) > k {
				best = best[:k]
			}
		}
	}
	return best
}

func entryKeys(es []Entry) []Key {
	ks := make([]Key, len(es))
	for i, e := range es {
		ks[i] = e.Key
	}
	return ks
}

// checkTree verifies the crit-bit invariants: bits strictly increase down
// every path, every key below a node agrees with the node's path on the
// bits above it and sits on the side its bit names, and the leaves are
// exactly the n entries.
func checkTree(t *testing.T, tb *Table) {
	t.Helper()
	leaves := 0
	var visit func(r ref, minBit int, prefix *Key, plen int)
	visit = func(r ref, minBit int, prefix *Key, plen int) {
		if r&leafBit != 0 {
			s := &tb.slots[r&^leafBit]
			if prefix != nil && s.key.CommonPrefixLen(*prefix) < plen {
				t.Fatalf("leaf %v outside its subtree's prefix", s.key)
			}
			leaves++
			return
		}
		n := &tb.nodes[r-1]
		if int(n.bit) < minBit {
			t.Fatalf("bit %d below a parent's %d", n.bit, minBit-1)
		}
		for dir := range 2 {
			c := n.child[dir]
			if c == 0 {
				t.Fatal("inner node with an empty child")
			}
			// any leaf of the child fixes the prefix; check the side
			l := c
			for l&leafBit == 0 {
				l = tb.nodes[l-1].child[0]
			}
			k := tb.slots[l&^leafBit].key
			if k.bit(n.bit) != dir {
				t.Fatalf("key on side %d has bit %d = %d", dir, n.bit, k.bit(n.bit))
			}
			visit(c, int(n.bit)+1, &k, int(n.bit)+1)
		}
	}
	if tb.root != 0 {
		visit(tb.root, 0, nil, 0)
	}
	if leaves != tb.n {
		t.Fatalf("%d leaves, n = %d", leaves, tb.n)
	}
}

func TestTableClosestMatchesBruteForce(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	r := rand.New(rand.NewPCG(1, 2))
	tb := NewTable(0)
	keys := make([]Key, 0, n)
	for i := range n {
		id := randomID(r)
		added, err := tb.Connect(id, testAddr(i))
		if err != nil || !added {
			t.Fatalf("connect %d: %v %v", i, added, err)
		}
		keys = append(keys, PeerKey(id))
	}
	if tb.Len() != n {
		t.Fatalf("len %d", tb.Len())
	}
	checkTree(t, tb)
	var dst []Entry
	for i := range 300 {
		target := randomKey(r)
		switch i % 3 {
		case 1: // a key in the table: its own leaf comes first
			target = keys[r.IntN(len(keys))]
		case 2: // near a key: the deepest paths
			target = keys[r.IntN(len(keys))]
			target[31] ^= byte(1 + r.IntN(255))
		}
		var exclude []Key
		if i%5 == 0 {
			exclude = []Key{keys[r.IntN(len(keys))], target}
		}
		dst = tb.Closest(target, 20, dst[:0], exclude...)
		want := bruteClosest(keys, target, 20, exclude...)
		if got := entryKeys(dst); !slices.Equal(got, want) {
			t.Fatalf("target %v: closest differs\n got %v\nwant %v", target, got, want)
		}
	}
	// k larger than the table returns everything, in order.
	small := NewTable(0)
	var sk []Key
	for i := range 50 {
		id := randomID(r)
		small.Connect(id, testAddr(i))
		sk = append(sk, PeerKey(id))
	}
	target := randomKey(r)
	if got, want := entryKeys(small.Closest(target, 100, nil)), bruteClosest(sk, target, 100); !slices.Equal(got, want) || len(got) != 50 {
		t.Fatalf("k > n: %d entries", len(got))
	}
}

func TestTableChurnMatchesModel(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	tb := NewTable(0)
	live := map[peer.ID]Key{}
	var ids []peer.ID
	for step := range 20_000 {
		switch {
		case len(ids) == 0 || r.IntN(3) > 0:
			id := randomID(r)
			if _, err := tb.Connect(id, testAddr(step)); err != nil {
				t.Fatal(err)
			}
			live[id] = PeerKey(id)
			ids = append(ids, id)
		default:
			i := r.IntN(len(ids))
			id := ids[i]
			ids[i] = ids[len(ids)-1]
			ids = ids[:len(ids)-1]
			if !tb.Remove(id) {
				t.Fatalf("remove %d failed", step)
			}
			if tb.Remove(id) {
				t.Fatal("removed twice")
			}
			delete(live, id)
		}
		if step%1000 == 0 {
			checkTree(t, tb)
			keys := make([]Key, 0, len(live))
			for _, k := range live {
				keys = append(keys, k)
			}
			target := randomKey(r)
			if got, want := entryKeys(tb.Closest(target, 20, nil)), bruteClosest(keys, target, 20); !slices.Equal(got, want) {
				t.Fatalf("step %d: closest differs", step)
			}
		}
	}
	if tb.Len() != len(live) {
		t.Fatalf("len %d, want %d", tb.Len(), len(live))
	}
	// Empty it entirely, then reuse the freed slots and nodes.
	for _, id := range ids {
		tb.Remove(id)
	}
	if tb.Len() != 0 || tb.root != 0 {
		t.Fatalf("not empty: %d", tb.Len())
	}
	if got := tb.Closest(randomKey(r), 20, nil); len(got) != 0 {
		t.Fatal("closest on an empty table")
	}
	nodes, slots := len(tb.nodes), len(tb.slots)
	for i := range 100 {
		tb.Connect(randomID(r), testAddr(i))
	}
	checkTree(t, tb)
	if len(tb.nodes) != nodes || len(tb.slots) != slots {
		t.Fatal("free lists not reused")
	}
}

func TestTableGrace(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	tb := NewTable(time.Minute)
	t0 := time.Unix(1_700_000_000, 0)
	a, b, c, s := randomID(r), randomID(r), randomID(r), randomID(r)
	for _, id := range []peer.ID{a, b, c} {
		if added, err := tb.Connect(id, testAddr(1)); !added || err != nil {
			t.Fatal(added, err)
		}
	}
	if added, err := tb.Add(s, testAddr(2)); !added || err != nil {
		t.Fatal(added, err)
	}
	// b has a second connection: losing one keeps it connected.
	if added, _ := tb.Connect(b, testAddr(3)); added {
		t.Fatal("second connection added a duplicate")
	}
	if n, conn := tb.Counts(); n != 4 || conn != 3 {
		t.Fatalf("counts %d %d", n, conn)
	}
	if !tb.Disconnect(a, t0) || tb.Disconnect(a, t0) {
		t.Fatal("a: disconnect should report once")
	}
	if tb.Disconnect(b, t0) {
		t.Fatal("b still has a connection")
	}
	if !tb.Disconnect(b, t0.Add(10*time.Second)) {
		t.Fatal("b's last connection")
	}
	tb.Disconnect(c, t0.Add(20*time.Second))
	if tb.Disconnect(s, t0) {
		t.Fatal("a static entry was never connected")
	}
	e, ok := tb.Lookup(a)
	if !ok || e.Connected || !e.DisconnectedAt.Equal(t0) {
		t.Fatalf("a: %+v", e)
	}
	if _, _, conn, _ := recordPeer(e.rec); conn != pb.Message_NOT_CONNECTED {
		t.Fatalf("a's record says %v", conn)
	}
	// c reconnects inside its grace period: its expiry item goes stale.
	tb.Connect(c, testAddr(4))
	if e, _ := tb.Lookup(c); !e.Connected {
		t.Fatal("c not connected again")
	}
	if n := tb.Sweep(t0.Add(time.Minute - time.Nanosecond)); n != 0 {
		t.Fatalf("swept %d before the grace ended", n)
	}
	if n := tb.Sweep(t0.Add(time.Minute)); n != 1 {
		t.Fatalf("swept %d at a's expiry", n)
	}
	if _, ok := tb.Lookup(a); ok {
		t.Fatal("a still there")
	}
	if n := tb.Sweep(t0.Add(time.Hour)); n != 1 { // b; c is connected, s static
		t.Fatalf("swept %d", n)
	}
	for _, id := range []peer.ID{c, s} {
		if _, ok := tb.Lookup(id); !ok {
			t.Fatalf("%v was swept", id)
		}
	}
	if len(tb.expiry)-tb.expHead != 0 {
		t.Fatalf("%d items left in the expiry queue", len(tb.expiry)-tb.expHead)
	}
	// A static entry that connects and disconnects stays.
	tb.Connect(s, testAddr(5))
	tb.Disconnect(s, t0.Add(2*time.Hour))
	if tb.Sweep(t0.Add(100*time.Hour)) != 0 {
		t.Fatal("static entry swept")
	}
	if n, conn := tb.Counts(); n != 2 || conn != 1 {
		t.Fatalf("counts %d %d", n, conn)
	}
}

func TestTableRecords(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	tb := NewTable(0)
	id := randomID(r)
	a1 := ma.StringCast("/ip4/1.2.3.4/tcp/4001")
	a2 := ma.StringCast("/dns4/example.com/tcp/443/wss")
	if _, err := tb.Connect(id, [][]byte{a1.Bytes(), a2.Bytes()}); err != nil {
		t.Fatal(err)
	}
	e, _ := tb.Lookup(id)
	ai, err := e.Peer()
	if err != nil || ai.ID != id || len(ai.Addrs) != 2 || !ai.Addrs[0].Equal(a1) || !ai.Addrs[1].Equal(a2) {
		t.Fatalf("peer %v %v", ai, err)
	}
	if _, _, conn, _ := recordPeer(e.rec); conn != pb.Message_CONNECTED {
		t.Fatalf("connection %v", conn)
	}
	if err := tb.Update(id, [][]byte{a2.Bytes()}); err != nil {
		t.Fatal(err)
	}
	e, _ = tb.Lookup(id)
	if ai, _ := e.Peer(); len(ai.Addrs) != 1 || !ai.Addrs[0].Equal(a2) {
		t.Fatalf("after update %v", ai.Addrs)
	}
	if err := tb.Update(randomID(r), [][]byte{a1.Bytes()}); err != ErrNotFound {
		t.Fatalf("update of an unknown peer: %v", err)
	}
	if _, err := tb.Connect(randomID(r), nil); err != errNoAddrs {
		t.Fatalf("no addresses: %v", err)
	}
	if err := tb.Update(id, nil); err != errNoAddrs {
		t.Fatalf("update to no addresses: %v", err)
	}
	// A record over MaxPeerRecordSize loses addresses from the end.
	big := make([][]byte, 0, 40)
	for i := range 40 {
		big = append(big, ma.StringCast("/dns4/"+string(bytes.Repeat([]byte{'a' + byte(i%26)}, 240))+".example/tcp/443/wss").Bytes())
	}
	rec, err := encodeRecord([]byte(id), big, pb.Message_CONNECTED)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := decodeRecord(rec)
	if n := len(p.Addrs); n == 0 || n >= 40 || !bytes.Equal(p.Addrs[n-1], big[n-1]) {
		t.Fatalf("trimmed to %d", n)
	}
	if sz := len(rec) - 3; sz > MaxPeerRecordSize { // minus field 8's tag and 2-byte length
		t.Fatalf("record of %d bytes", sz)
	}
}
