package kad

import (
	"context"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/internal/testutil"
)

// Two fleet members, one seeding the other: each enters the other's table
// through the identify the connection gets, and the seed connection comes
// back after it is cut.
func TestSeedsKeepConnected(t *testing.T) {
	a, roleA, infoA := startServer(t)
	b, roleB, _ := startServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seed := infoA.Addrs[0].Encapsulate(ma.StringCast("/p2p/" + infoA.ID.String()))
	if err := roleB.KeepConnected(ctx, []ma.Multiaddr{seed}, testutil.Quiet); err != nil {
		t.Fatal(err)
	}
	inTables := func() bool {
		ea, okA := roleA.Table().Lookup(b.ID())
		eb, okB := roleB.Table().Lookup(a.ID())
		return okA && okB && ea.Connected && eb.Connected
	}
	testutil.WaitFor(t, 10*time.Second, inTables)
	// Cut it from A's side: B redials after its first backoff (1 s).
	for _, pc := range a.ConnsToPeer(b.ID()) {
		pc.Do(pc.Close)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return len(a.ConnsToPeer(b.ID())) == 0 })
	testutil.WaitFor(t, 10*time.Second, func() bool { return len(a.ConnsToPeer(b.ID())) == 1 && inTables() })
	if err := roleB.KeepConnected(ctx, []ma.Multiaddr{infoA.Addrs[0]}, testutil.Quiet); err == nil {
		t.Fatal("a seed without /p2p/ID accepted")
	}
}
