package kad

import (
	"bytes"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// AddrFilter chooses which of a peer's announced addresses the table keeps
// and hands out (-dht-addr-filter).
type AddrFilter uint8

const (
	// AddrsPublic keeps only addresses other peers can dial: a public IP
	// or a DNS name outside the special-use domains (.local, localhost,
	// …), as manet.IsPublicAddr decides, the test go-libp2p-kad-dht's WAN
	// DHT applies to what it learns. The default: loopback and private
	// addresses are noise to a stranger at best, and js-libp2p strips them
	// from every reply anyway.
	AddrsPublic AddrFilter = iota
	// AddrsAll keeps every address that parses, for tests on loopback and
	// for private networks.
	AddrsAll
)

// DefaultMaxAddrsPerPeer caps the addresses a table entry keeps. go-libp2p
// accepts up to 500 listen addresses from identify, but a real DHT server
// announces a handful (TCP, QUIC, WebTransport, WebRTC over IPv4 and IPv6:
// up to about ten), and a client takes only the first few it can dial from
// a reply. Sixteen keeps every address of such a server while bounding what
// one entry costs us and every reply it appears in.
const DefaultMaxAddrsPerPeer = 16

// ParseAddrFilter parses "public" or "all".
func ParseAddrFilter(s string) (AddrFilter, error) {
	switch s {
	case "public", "":
		return AddrsPublic, nil
	case "all":
		return AddrsAll, nil
	}
	return 0, fmt.Errorf("kad: address filter %q is neither public nor all", s)
}

func (f AddrFilter) String() string {
	if f == AddrsAll {
		return "all"
	}
	return "public"
}

// Keeps reports whether f keeps a.
func (f AddrFilter) Keeps(a ma.Multiaddr) bool {
	return f == AddrsAll || manet.IsPublicAddr(a)
}

// Select returns the binary multiaddrs of raw (identify's listenAddrs) that
// parse, pass f and are not repeated, at most max (DefaultMaxAddrsPerPeer
// when max ≤ 0), in the order announced. Every address we hand out must
// parse: js-libp2p fails a whole reply over one bad multiaddr. The result
// aliases raw.
func (f AddrFilter) Select(raw [][]byte, max int) [][]byte {
	if max <= 0 {
		max = DefaultMaxAddrsPerPeer
	}
	var out [][]byte
	for _, b := range raw {
		if len(out) == max {
			break
		}
		a, err := ma.NewMultiaddrBytes(b)
		if err != nil || !f.Keeps(a) {
			continue
		}
		dup := false
		for _, o := range out {
			if bytes.Equal(o, b) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, b)
		}
	}
	return out
}

// SelectAddrs is Select for parsed addresses (our own listen addresses),
// announced without a /p2p suffix as identify announces them.
func (f AddrFilter) SelectAddrs(addrs []ma.Multiaddr, max int) [][]byte {
	raw := make([][]byte, 0, len(addrs))
	for _, a := range addrs {
		if t, _ := peer.SplitAddr(a); t != nil {
			raw = append(raw, t.Bytes())
		}
	}
	return f.Select(raw, max)
}
