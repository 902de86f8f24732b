package kad

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/internal/testutil"
)

// TestInteropJSKadDHT: js-libp2p's kad-dht in Node (@libp2p/kad-dht
// 16.4.5, bench/peers/js/kad.mjs) bootstraps from our server alone over
// /ws. Server-mode js nodes enter our table with their listen addresses
// and put us in their routing tables; a client-mode js node that knows
// only us completes getClosestPeers (a random key and its own ID) and
// findPeer for every js server, learning them from our FIND_NODE answers.
func TestInteropJSKadDHT(t *testing.T) {
	dir := testutil.JSDir(t, "@libp2p/kad-dht")
	const nServers = 6
	h, role, ours := startServer(t)
	target := ours.Addrs[0].Encapsulate(ma.StringCast("/p2p/" + h.ID().String()))

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "kad.mjs", target.String(), "--servers", "6", "--timeout-ms", "90000")
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { t.Logf("kad.mjs stderr:\n%s", stderr.String()) }()
	lines := bufio.NewScanner(stdout)
	lines.Buffer(nil, 1<<20)
	next := func(v any) {
		t.Helper()
		if !lines.Scan() {
			cmd.Wait()
			t.Fatalf("kad.mjs ended early: %v", lines.Err())
		}
		if err := json.Unmarshal(lines.Bytes(), v); err != nil {
			t.Fatalf("kad.mjs: %q: %v", lines.Text(), err)
		}
	}

	type peerOut struct {
		ID    string   `json:"id"`
		Addr  string   `json:"addr"`
		Addrs []string `json:"addrs"`
	}
	var joined struct {
		Phase   string    `json:"phase"`
		OK      *bool     `json:"ok"`
		Error   string    `json:"error"`
		Servers []peerOut `json:"servers"`
	}
	next(&joined)
	if joined.Phase != "joined" || len(joined.Servers) != nServers {
		t.Fatalf("kad.mjs: %+v", joined)
	}
	// Every js server is in our table, connected, with its listen address.
	ids := make([]peer.ID, nServers)
	listen := map[peer.ID]ma.Multiaddr{}
	for i, s := range joined.Servers {
		ids[i] = mustDecode(t, s.ID)
		listen[ids[i]], _ = peer.SplitAddr(ma.StringCast(s.Addr)) // js lists it with /p2p/
	}
	testutil.WaitFor(t, 20*time.Second, func() bool { return role.Table().Len() == nServers })
	for _, id := range ids {
		e, ok := role.Table().Lookup(id)
		if !ok || !e.Connected {
			t.Fatalf("%v in our table: %v %+v", id, ok, e)
		}
		ai, err := e.Peer()
		if err != nil || !slices.ContainsFunc(ai.Addrs, listen[id].Equal) {
			t.Fatalf("%v: table has %v (%v), js listens on %v", id, ai.Addrs, err, listen[id])
		}
	}
	// A key our server is the farthest peer from: js then queries every
	// js server it learns of from our answer, so the result is complete
	// only if our answer was.
	everyone := append(slices.Clone(ids), h.ID())
	var key []byte
	for {
		key = make([]byte, 32)
		rand.Read(key)
		if kb.SortClosestPeers(everyone, kb.ConvertKey(string(key)))[nServers] == h.ID() {
			break
		}
	}
	fmt.Fprintf(stdin, "%x\n", key)

	var res struct {
		OK          bool      `json:"ok"`
		Error       string    `json:"error"`
		ServerID    string    `json:"serverId"`
		Client      string    `json:"client"`
		ClosestKey  []peerOut `json:"closestKey"`
		ClosestSelf []peerOut `json:"closestSelf"`
		Found       []struct {
			ID    string    `json:"id"`
			Peers []peerOut `json:"peers"`
		} `json:"found"`
	}
	next(&res)
	if err := cmd.Wait(); err != nil || !res.OK {
		t.Fatalf("kad.mjs: exit %v: %s", err, res.Error)
	}
	if res.ServerID != h.ID().String() {
		t.Fatalf("js saw server %s", res.ServerID)
	}
	// Fewer than k peers: for the far key the closest set is everyone the
	// client can learn of (js leaves itself out).
	ids2 := func(ps []peerOut) []peer.ID {
		var out []peer.ID
		for _, p := range ps {
			out = append(out, mustDecode(t, p.ID))
		}
		return out
	}
	byKey := func(ids []peer.ID, key []byte) []peer.ID { return kb.SortClosestPeers(ids, kb.ConvertKey(string(key))) }
	if got, want := byKey(ids2(res.ClosestKey), key), byKey(everyone, key); !slices.Equal(got, want) {
		t.Fatalf("getClosestPeers(key)\n got %v\nwant %v", got, want)
	}
	// For its own ID: at least us and every peer closer to it than us
	// (js stops at peers no closer than the one that named them), and
	// nobody else.
	self := []byte(mustDecode(t, res.Client))
	got := ids2(res.ClosestSelf)
	sorted := byKey(everyone, self)
	for _, id := range sorted[:slices.Index(sorted, h.ID())+1] {
		if !slices.Contains(got, id) {
			t.Fatalf("getClosestPeers(own ID) = %v lacks %v (everyone by distance: %v)", got, id, sorted)
		}
	}
	for _, id := range got {
		if !slices.Contains(everyone, id) {
			t.Fatalf("getClosestPeers(own ID) returned a stranger %v", id)
		}
	}
	if len(res.Found) != nServers {
		t.Fatalf("findPeer ran for %d servers", len(res.Found))
	}
	for _, f := range res.Found {
		id := mustDecode(t, f.ID)
		i := slices.IndexFunc(f.Peers, func(p peerOut) bool { return p.ID == f.ID })
		if i < 0 {
			t.Fatalf("findPeer(%s) found %+v", f.ID, f.Peers)
		}
		if !slices.ContainsFunc(f.Peers[i].Addrs, func(a string) bool { return ma.StringCast(a).Equal(listen[id]) }) {
			t.Fatalf("findPeer(%s): addresses %v, listens on %v", f.ID, f.Peers[i].Addrs, listen[id])
		}
	}
}

func mustDecode(t testing.TB, s string) peer.ID {
	t.Helper()
	id, err := peer.Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
