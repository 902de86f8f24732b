package kad

import (
	"errors"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/libp2p/kad/pb"
)

// DefaultGracePeriod is how long a DHT server stays in the table after its
// last connection to us ended. A disconnect is weak evidence that a server
// is gone: go-libp2p's connection manager trims idle connections (a
// bootstrap connection is the first to go) and restarts reconnect within
// seconds to a minute, while go-libp2p-kad-dht itself keeps a peer in its
// table until a query to it fails. Five minutes rides out both; past that we
// would be handing out addresses we know nothing fresh about.
const DefaultGracePeriod = 5 * time.Minute

// ErrNotFound reports a table operation on a peer the table does not hold.
var ErrNotFound = errors.New("kad: peer not in the table")

// Table is the routing table of the server role: every DHT server we know,
// not k per bucket, keyed by PeerKey, with each peer's record (ID and
// addresses, encoded once for responses; see record).
//
// It is a crit-bit tree (a path-compressed binary trie) over the 256-bit
// keys: a leaf per peer and an inner node per branching point, each naming
// the first bit at which its two subtrees differ. Every key below an inner
// node shares the bits before that one, so walking the tree depth-first and
// taking, at each inner node, first the child on the target's side of the
// bit yields the keys in increasing XOR distance from the target, exactly:
// everything on the near side is closer than everything on the far side.
// Closest(k) therefore visits the k nearest leaves and the inner nodes on
// the paths to them, O(k + depth) nodes with depth about log2(n) for
// SHA-256 keys (go-libp2p-xor's trie, used by go-libp2p-kad-dht's full
// routing table client, answers the same query on an uncompressed trie).
//
// Nodes and entries live in two slices addressed by 32-bit index, with free
// lists, so the tree holds no pointers for the garbage collector to chase
// and an inner node costs 12 bytes. Records are immutable strings: a reader
// may keep one after releasing the lock while a writer replaces it.
//
// An entry is connected (at least one live connection counted by Connect),
// disconnected (in the grace period since its last connection ended,
// removed by Sweep once it passes), or static (added by the embedder with
// Add, kept until Remove). Connected entries carry ConnectionType
// CONNECTED on the wire, the others NOT_CONNECTED, as go does.
//
// All methods are safe for concurrent use: lookups take a read lock, so
// the many connections answering FIND_NODE at once do not wait for each
// other, and changes (identify, disconnects, sweeps) take the write lock
// for a few hundred nanoseconds.
type Table struct {
	grace time.Duration

	mu        sync.RWMutex
	root      ref
	nodes     []node
	freeNodes []uint32
	slots     []slot
	freeSlots []uint32
	n         int // entries
	connected int // entries with conns > 0
	// expiry lists disconnected entries in the order they went (since
	// ascending); Sweep drops those whose grace has passed and skips items
	// made stale by a reconnect or a removal.
	expiry  []expiring
	expHead int
	// epoch is the first instant the table was given: since values are
	// nanoseconds after it, on the monotonic clock when the caller's clock
	// has one, so a wall-clock step moves no grace period.
	epoch time.Time
}

// mono is now as nanoseconds since the table's epoch, plus 1 so that 0
// keeps meaning "never disconnected"; held under t.mu.
func (t *Table) mono(now time.Time) int64 {
	if t.epoch.IsZero() {
		t.epoch = now
	}
	return int64(now.Sub(t.epoch)) + 1
}

// ref addresses a tree position: 0 is the empty tree, leafBit|i the entry
// in slots[i], any other value the inner node nodes[value-1].
type ref uint32

const leafBit ref = 1 << 31

type node struct {
	child [2]ref
	bit   uint8 // the bit (0 = most significant) at which the children differ
}

type slot struct {
	key    Key
	rec    record
	since  int64  // Table.mono when the last connection ended (conns == 0, not static)
	conns  uint32 // live connections counted by Connect
	static bool   // added by Add: kept while disconnected
}

type expiring struct {
	key   Key
	since int64
}

// NewTable creates an empty table that keeps disconnected entries for grace
// (DefaultGracePeriod when zero or less).
func NewTable(grace time.Duration) *Table {
	if grace <= 0 {
		grace = DefaultGracePeriod
	}
	return &Table{grace: grace}
}

// GracePeriod is how long disconnected entries are kept.
func (t *Table) GracePeriod() time.Duration { return t.grace }

// Entry is a table entry as Closest and Lookup return it: a copy, valid
// after the table changes.
type Entry struct {
	Key Key
	rec record
	// Connected reports a live connection; otherwise DisconnectedAt is when
	// the last one ended (zero for a static entry never connected since).
	Connected      bool
	Static         bool
	DisconnectedAt time.Time
}

// Peer decodes the entry's peer ID and addresses (as the wire carries them,
// at most MaxPeerRecordSize).
func (e Entry) Peer() (peer.AddrInfo, error) {
	id, raw, _, err := recordPeer(e.rec)
	if err != nil {
		return peer.AddrInfo{}, err
	}
	ai := peer.AddrInfo{ID: id}
	for _, b := range raw {
		a, err := ma.NewMultiaddrBytes(b)
		if err != nil {
			return ai, err
		}
		ai.Addrs = append(ai.Addrs, a)
	}
	return ai, nil
}

func (s *slot) entry(epoch time.Time) Entry {
	e := Entry{Key: s.key, rec: s.rec, Connected: s.conns > 0, Static: s.static}
	if s.conns == 0 && s.since != 0 {
		e.DisconnectedAt = epoch.Add(time.Duration(s.since - 1))
	}
	return e
}

// Len is the number of entries.
func (t *Table) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.n
}

// Counts returns the number of entries and how many of them are connected.
func (t *Table) Counts() (entries, connected int) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.n, t.connected
}

// Connect counts a live connection of a DHT server and sets its addresses
// (binary multiaddrs, already filtered; see AddrFilter): it adds the peer,
// or refreshes a known one and ends its grace period. added reports a new
// entry. Without any address the peer is not stored (errNoAddrs): FIND_NODE
// could not hand it out. Each Connect must be matched by one Disconnect.
func (t *Table) Connect(id peer.ID, addrs [][]byte) (added bool, err error) {
	rec, err := encodeRecord([]byte(id), addrs, pb.Message_CONNECTED)
	if err != nil {
		return false, err
	}
	k := PeerKey(id)
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.lookup(&k); s != nil {
		if s.conns == 0 {
			t.connected++
		}
		s.conns++
		s.rec, s.since = rec, 0
		return false, nil
	}
	t.insert(slot{key: k, rec: rec, conns: 1})
	t.connected++
	return true, nil
}

// Update replaces the addresses of a peer already in the table (identify
// push), keeping its connection state. Without any address the entry is
// left as it was and errNoAddrs returned; the caller decides whether to
// Remove it.
func (t *Table) Update(id peer.ID, addrs [][]byte) error {
	k := PeerKey(id)
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.lookup(&k)
	if s == nil {
		return ErrNotFound
	}
	conn := pb.Message_NOT_CONNECTED
	if s.conns > 0 {
		conn = pb.Message_CONNECTED
	}
	rec, err := encodeRecord([]byte(id), addrs, conn)
	if err != nil {
		return err
	}
	s.rec = rec
	return nil
}

// Add puts a static entry in the table (the embedding API: peers an
// operator knows from elsewhere), or makes a known entry static. Static
// entries stay until Remove, connected or not.
func (t *Table) Add(id peer.ID, addrs [][]byte) (added bool, err error) {
	rec, err := encodeRecord([]byte(id), addrs, pb.Message_NOT_CONNECTED)
	if err != nil {
		return false, err
	}
	k := PeerKey(id)
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.lookup(&k); s != nil {
		s.static = true
		if s.conns == 0 {
			s.rec, s.since = rec, 0
		}
		return false, nil
	}
	t.insert(slot{key: k, rec: rec, static: true})
	return true, nil
}

// Disconnect records that one of the peer's connections counted by Connect
// ended at now. After the last one the entry is kept for the grace period
// (static entries indefinitely). It reports whether the peer went from
// connected to disconnected.
func (t *Table) Disconnect(id peer.ID, now time.Time) bool {
	k := PeerKey(id)
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.lookup(&k)
	if s == nil || s.conns == 0 {
		return false
	}
	if s.conns--; s.conns > 0 {
		return false
	}
	t.connected--
	if rec, err := withConnection(s.rec, pb.Message_NOT_CONNECTED); err == nil {
		s.rec = rec
	}
	if s.static {
		return true
	}
	s.since = t.mono(now)
	t.expiry = append(t.expiry, expiring{key: k, since: s.since})
	return true
}

// Remove drops the peer at once, whatever its state.
func (t *Table) Remove(id peer.ID) bool {
	k := PeerKey(id)
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.remove(&k)
}

// Sweep removes the disconnected entries whose grace period has passed by
// now, and returns how many. The owner calls it periodically (every tenth
// of the grace period or so); its cost is the number of entries it
// examines, not the table size.
func (t *Table) Sweep(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	limit := t.mono(now) - int64(t.grace)
	removed := 0
	for t.expHead < len(t.expiry) {
		x := &t.expiry[t.expHead]
		if x.since > limit {
			break
		}
		if s := t.lookup(&x.key); s != nil && s.conns == 0 && !s.static && s.since == x.since {
			t.remove(&x.key)
			removed++
		}
		t.expHead++
	}
	// Keep the queue's dead prefix below half of it.
	if t.expHead > 0 && t.expHead*2 >= len(t.expiry) {
		t.expiry = t.expiry[:copy(t.expiry, t.expiry[t.expHead:])]
		t.expHead = 0
	}
	return removed
}

// Lookup returns the peer's entry.
func (t *Table) Lookup(id peer.ID) (Entry, bool) {
	k := PeerKey(id)
	t.mu.RLock()
	defer t.mu.RUnlock()
	if s := t.lookup(&k); s != nil {
		return s.entry(t.epoch), true
	}
	return Entry{}, false
}

// record is k's record, or "" when k is not in the table.
func (t *Table) record(k *Key) record {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if s := t.lookup(k); s != nil {
		return s.rec
	}
	return ""
}

// Closest appends to dst the k entries nearest to target by XOR distance,
// nearest first, leaving out the keys in exclude (the requester and
// ourselves), and returns dst. It holds the read lock while it walks.
func (t *Table) Closest(target Key, k int, dst []Entry, exclude ...Key) []Entry {
	t.mu.RLock()
	defer t.mu.RUnlock()
	t.walk(&target, k, exclude, func(s *slot) { dst = append(dst, s.entry(t.epoch)) })
	return dst
}

// closestRecords is Closest for responses: only the records.
func (t *Table) closestRecords(target *Key, k int, dst []record, exclude []Key) []record {
	t.mu.RLock()
	defer t.mu.RUnlock()
	t.walk(target, k, exclude, func(s *slot) { dst = append(dst, s.rec) })
	return dst
}

// walk calls emit for the k entries nearest to target that are not
// excluded, nearest first (see Table for why depth-first order is XOR
// order). Called with the lock held.
func (t *Table) walk(target *Key, k int, exclude []Key, emit func(*slot)) {
	if t.root == 0 || k <= 0 {
		return
	}
	// Bits strictly increase down a path, so a path has at most 256 inner
	// nodes and the stack of far siblings at most 256 refs.
	var stack [256]ref
	sp := 0
	r := t.root
	for {
		for r&leafBit == 0 {
			n := &t.nodes[r-1]
			b := target.bit(n.bit)
			stack[sp] = n.child[1-b]
			sp++
			r = n.child[b]
		}
		s := &t.slots[r&^leafBit]
		if !excluded(&s.key, exclude) {
			emit(s)
			if k--; k == 0 {
				return
			}
		}
		if sp == 0 {
			return
		}
		sp--
		r = stack[sp]
	}
}

func excluded(k *Key, exclude []Key) bool {
	for i := range exclude {
		// The first byte settles almost every comparison without a call
		// to the runtime's memequal.
		if exclude[i][0] == k[0] && exclude[i] == *k {
			return true
		}
	}
	return false
}

// lookup finds k's slot. Called with the lock held.
func (t *Table) lookup(k *Key) *slot {
	r := t.root
	if r == 0 {
		return nil
	}
	for r&leafBit == 0 {
		n := &t.nodes[r-1]
		r = n.child[k.bit(n.bit)]
	}
	if s := &t.slots[r&^leafBit]; s.key == *k {
		return s
	}
	return nil
}

// insert adds s, whose key is not in the tree. Called with the write lock.
func (t *Table) insert(s slot) {
	leaf := leafBit | ref(t.allocSlot(s))
	t.n++
	if t.root == 0 {
		t.root = leaf
		return
	}
	k := &s.key
	// The leaf the new key would meet; the first bit where they differ is
	// where the new leaf branches off.
	r := t.root
	for r&leafBit == 0 {
		n := &t.nodes[r-1]
		r = n.child[k.bit(n.bit)]
	}
	crit := k.CommonPrefixLen(t.slots[r&^leafBit].key)
	ni := t.allocNode()
	// Walk down again to the first node that branches below crit: the new
	// inner node goes above it.
	parent, pdir := -1, 0
	r = t.root
	for r&leafBit == 0 {
		n := &t.nodes[r-1]
		if int(n.bit) > crit {
			break
		}
		parent, pdir = int(r-1), k.bit(n.bit)
		r = n.child[pdir]
	}
	dir := k.bit(uint8(crit))
	nn := &t.nodes[ni]
	nn.bit = uint8(crit)
	nn.child[dir] = leaf
	nn.child[1-dir] = r
	if parent < 0 {
		t.root = ref(ni + 1)
	} else {
		t.nodes[parent].child[pdir] = ref(ni + 1)
	}
}

// remove takes k out of the tree. Called with the write lock.
func (t *Table) remove(k *Key) bool {
	r := t.root
	if r == 0 {
		return false
	}
	parent, pdir, grand, gdir := -1, 0, -1, 0
	for r&leafBit == 0 {
		grand, gdir = parent, pdir
		parent = int(r - 1)
		pdir = k.bit(t.nodes[parent].bit)
		r = t.nodes[parent].child[pdir]
	}
	si := uint32(r &^ leafBit)
	s := &t.slots[si]
	if s.key != *k {
		return false
	}
	if s.conns > 0 {
		t.connected--
	}
	switch {
	case parent < 0:
		t.root = 0
	default:
		sibling := t.nodes[parent].child[1-pdir]
		if grand < 0 {
			t.root = sibling
		} else {
			t.nodes[grand].child[gdir] = sibling
		}
		t.nodes[parent] = node{}
		t.freeNodes = append(t.freeNodes, uint32(parent))
	}
	*s = slot{}
	t.freeSlots = append(t.freeSlots, si)
	t.n--
	return true
}

func (t *Table) allocSlot(s slot) uint32 {
	if n := len(t.freeSlots); n > 0 {
		i := t.freeSlots[n-1]
		t.freeSlots = t.freeSlots[:n-1]
		t.slots[i] = s
		return i
	}
	t.slots = append(t.slots, s)
	return uint32(len(t.slots) - 1)
}

func (t *Table) allocNode() int {
	if n := len(t.freeNodes); n > 0 {
		i := t.freeNodes[n-1]
		t.freeNodes = t.freeNodes[:n-1]
		return int(i)
	}
	t.nodes = append(t.nodes, node{})
	return len(t.nodes) - 1
}
