package libp2p

import (
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

// The peer index keeps every live connection of a peer, whichever order
// they end in, and forgets the peer with its last one.
func TestPeerIndexTrackUntrack(t *testing.T) {
	h := &Host{peers: map[peer.ID]*PeerConn{}}
	a, b := peer.ID("a"), peer.ID("b")
	pcs := make([]*PeerConn, 5)
	for i := range pcs {
		pcs[i] = &PeerConn{h: h, remote: a}
		h.track(pcs[i])
	}
	other := &PeerConn{h: h, remote: b}
	h.track(other)
	want := slices.Clone(pcs)
	for _, i := range []int{2, 4, 0, 3, 1} { // middle, head, tail, ...
		h.untrack(pcs[i])
		h.untrack(pcs[i]) // twice: no effect
		want = slices.DeleteFunc(want, func(pc *PeerConn) bool { return pc == pcs[i] })
		got := h.ConnsToPeer(a)
		if len(got) != len(want) {
			t.Fatalf("after removing %d: %d connections, want %d", i, len(got), len(want))
		}
		for _, pc := range want {
			if !slices.Contains(got, pc) {
				t.Fatalf("after removing %d: a live connection is missing", i)
			}
		}
	}
	if _, ok := h.peers[a]; ok {
		t.Fatal("a peer without connections stays in the index")
	}
	if got := h.ConnsToPeer(b); len(got) != 1 || got[0] != other {
		t.Fatal("another peer's connection was disturbed")
	}
}
