package main

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestIdentitySeed(t *testing.T) {
	id := func(seed uint64) peer.ID {
		t.Helper()
		k, err := identity(seed)
		if err != nil {
			t.Fatal(err)
		}
		p, err := peer.IDFromPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if a, b := id(7), id(7); a != b {
		t.Errorf("seed 7 gave %s and %s, want one peer ID", a, b)
	}
	if a, b := id(7), id(8); a == b {
		t.Errorf("seeds 7 and 8 both gave %s", a)
	}
	if a, b := id(0), id(0); a == b {
		t.Errorf("seed 0 (random) gave %s twice", a)
	}
}

func TestUserAgent(t *testing.T) {
	// Test binaries carry build info with their dependencies too.
	if ua := userAgent(); ua == "" {
		t.Fatal("empty user agent")
	}
}
