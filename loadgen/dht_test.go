package main

import (
	"bytes"
	"crypto/sha256"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/swarmgate/swarmgate/libp2p/kad/pb"
)

// The reply check: exact when this generator's clients are the whole
// table; when another generator's clients are in it too, strangers are
// judged by their distance and no closer client of ours may be missing.
func TestBruteForceExact(t *testing.T) {
	newID := func() peer.ID {
		_, pub, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := peer.IDFromPublicKey(pub)
		return id
	}
	var own, strangers []peer.ID
	for range 25 {
		own = append(own, newID())
	}
	for range 5 {
		strangers = append(strangers, newID())
	}
	bf := &bruteForce{}
	for _, id := range own {
		bf.ids = append(bf.ids, string(id))
		bf.keys = append(bf.keys, sha256.Sum256([]byte(id)))
	}
	key := []byte("some key")
	target := sha256.Sum256(key)
	byDistance := func(ids []peer.ID) []peer.ID {
		ids = slices.Clone(ids)
		slices.SortFunc(ids, func(a, b peer.ID) int {
			ka, kb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
			for i := range ka {
				ka[i] ^= target[i]
				kb[i] ^= target[i]
			}
			return bytes.Compare(ka[:], kb[:])
		})
		return ids
	}
	reply := func(ids ...peer.ID) *pb.Message {
		m := &pb.Message{}
		for _, id := range ids {
			m.CloserPeers = append(m.CloserPeers, &pb.Message_Peer{Id: []byte(id)})
		}
		return m
	}
	requester := own[0]
	ownSorted := byDistance(own[1:])
	allSorted := byDistance(append(slices.Clone(own[1:]), strangers...))

	// Alone: exactly the 20 closest of ours.
	if !bf.exact(key, requester, reply(ownSorted[:20]...), true, len(own)) {
		t.Fatal("the 20 closest refused")
	}
	if bf.exact(key, requester, reply(append(ownSorted[:19], ownSorted[20])...), true, len(own)) {
		t.Fatal("a reply missing the 20th closest accepted")
	}
	if bf.exact(key, requester, reply(append(ownSorted[:19], strangers[0])...), true, len(own)) {
		t.Fatal("a stranger accepted while this generator is alone")
	}
	if bf.exact(key, requester, reply(append(ownSorted[:19], requester)...), true, len(own)) {
		t.Fatal("the requester accepted")
	}
	if bf.exact(key, requester, reply(append(ownSorted[:19], ownSorted[0])...), true, len(own)) {
		t.Fatal("a duplicate accepted")
	}
	// Shared table: the true 20 closest of everyone pass; leaving out a
	// closer client of ours fails.
	total := len(own) + len(strangers)
	if !bf.exact(key, requester, reply(allSorted[:20]...), false, total) {
		t.Fatal("the 20 closest of the shared table refused")
	}
	var skip int
	for i, id := range allSorted[:20] {
		if slices.Contains(own, id) {
			skip = i
		}
	}
	bad := append(slices.Clone(allSorted[:skip]), allSorted[skip+1:21]...)
	if bf.exact(key, requester, reply(bad...), false, total) {
		t.Fatal("a reply leaving out a closer client of ours accepted")
	}
	if bf.exact(key, requester, reply(allSorted[:19]...), false, total) {
		t.Fatal("19 peers accepted from a table of 30")
	}
}
