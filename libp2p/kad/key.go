package kad

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math/bits"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Key is a position in the Kademlia keyspace: the SHA-256 of a peer's binary
// ID, or of a lookup key's bytes exactly as they were sent (protocol-notes
// §1.3; go-libp2p-kbucket ConvertPeerID/ConvertKey, js-libp2p
// convertBuffer). Distance is a XOR of two keys read as a 256-bit big-endian
// number, so two distinct keys are never at the same distance from a third:
// an order by distance has no ties.
type Key [32]byte

// KeyOf is the position of a raw lookup key (FIND_NODE, GET_VALUE and
// GET_PROVIDERS hash the key bytes as sent, with no parsing).
func KeyOf(b []byte) Key { return sha256.Sum256(b) }

// PeerKey is the position of a peer: SHA-256 of its binary ID.
func PeerKey(id peer.ID) Key { return sha256.Sum256([]byte(id)) }

// bit is bit i of k, counting from the most significant bit of k[0].
func (k *Key) bit(i uint8) int { return int(k[i>>3]>>(7-i&7)) & 1 }

// CommonPrefixLen is the number of leading bits a and b share (256 when
// equal): the Kademlia "bucket" of b as seen from a.
func (a Key) CommonPrefixLen(b Key) int {
	for i := 0; i < len(a); i += 8 {
		x := binary.BigEndian.Uint64(a[i:]) ^ binary.BigEndian.Uint64(b[i:])
		if x != 0 {
			return i*8 + bits.LeadingZeros64(x)
		}
	}
	return 256
}

// Xor is the distance between a and b.
func (a Key) Xor(b Key) Key {
	var d Key
	for i := range a {
		d[i] = a[i] ^ b[i]
	}
	return d
}

// Closer reports whether a is closer to target than b.
func Closer(target, a, b Key) bool {
	for i := range target {
		da, db := a[i]^target[i], b[i]^target[i]
		if da != db {
			return da < db
		}
	}
	return false
}

func (k Key) String() string { return hex.EncodeToString(k[:]) }
