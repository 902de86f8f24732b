package admission

import (
	"net/netip"
	"strings"
	"testing"
)

// testProxies trusts a few prefixes, each for header (a -trusted-proxy
// name; "" for the default).
func testProxies(t testing.TB, header string) *TrustedProxies {
	t.Helper()
	specs := []string{"10.0.0.0/8", "2001:db8:ffff::/48", "192.0.2.1", " ::ffff:172.16.0.0/108 "}
	if header != "" {
		for i := range specs {
			specs[i] += "=" + header
		}
	}
	tp, err := NewTrustedProxies(specs)
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

func TestTrustedProxiesParse(t *testing.T) {
	tp := testProxies(t, "")
	for s, want := range map[string]bool{
		"10.1.2.3": true, "::ffff:10.1.2.3": true, "192.0.2.1": true, "192.0.2.2": false,
		"172.16.5.5": true, "172.31.0.1": true, "172.32.0.1": false, "2001:db8:ffff:1::9": true, "2001:db8:fffe::1": false,
		"fe80::1%eth0": false,
	} {
		if got := tp.Trusted(netip.MustParseAddr(s)); got != want {
			t.Errorf("Trusted(%s) = %v", s, got)
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "not-an-ip", "", "10.0.0.0/8/8"} {
		if _, err := NewTrustedProxies([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := NewTrustedProxies([]string{"10.0.0.0/8=x-client-ip"}); err == nil {
		t.Error("unknown header accepted")
	}
	var none *TrustedProxies
	peer := netip.MustParseAddr("10.0.0.1")
	if a, src := none.ClientAddr(peer, []byte("1.2.3.4"), nil, nil); a != peer || src != SourcePeer {
		t.Errorf("nil proxies: %v %s", a, src)
	}
}

func TestClientAddr(t *testing.T) {
	proxy := "10.0.0.5"
	for _, tc := range []struct {
		name, peer, xff, realIP, fwd string
		want, src                    string
	}{
		// Never trust headers from untrusted peers.
		{"untrusted peer", "198.51.100.1", "1.2.3.4", "1.2.3.4", "for=1.2.3.4", "198.51.100.1", SourcePeer},
		{"trusted peer, no header", proxy, "", "", "", proxy, SourceNoHeader},
		{"xff one", proxy, "203.0.113.9", "", "", "203.0.113.9", SourceXForwardedFor},
		{"xff right-most untrusted", proxy, "6.6.6.6, 203.0.113.9, 10.9.9.9", "", "", "203.0.113.9", SourceXForwardedFor},
		{"xff spoofed left part ignored", proxy, "garbage, 6.6.6.6,203.0.113.9", "", "", "203.0.113.9", SourceXForwardedFor},
		{"xff all trusted: left-most", proxy, "10.1.1.1, 10.2.2.2", "", "", "10.1.1.1", SourceXForwardedFor},
		{"xff ports and brackets", proxy, "[2001:db8::7]:4711, 203.0.113.9:80", "", "", "203.0.113.9", SourceXForwardedFor},
		{"xff bare ipv6", proxy, "2001:db8::7", "", "", "2001:db8::7", SourceXForwardedFor},
		{"xff bracketed ipv6 port", proxy, " [2001:db8::7]:4711 ", "", "", "2001:db8::7", SourceXForwardedFor},
		{"xff mapped", proxy, "::ffff:203.0.113.9", "", "", "203.0.113.9", SourceXForwardedFor},
		{"xff zone dropped", proxy, "fe80::1%eth0", "", "", "fe80::1", SourceXForwardedFor},
		{"xff empty elements", proxy, ",203.0.113.9,, ", "", "", "203.0.113.9", SourceXForwardedFor},
		{"xff only commas: absent", proxy, " , ,", "203.0.113.4", "", proxy, SourceNoHeader},
		{"xff malformed right of client", proxy, "203.0.113.9, bogus", "", "", proxy, SourceMalformed},
		{"xff truncated", proxy, "203.0.113.9, 10.0.0.", "", "", proxy, SourceMalformed},
		{"xff bad port", proxy, "203.0.113.9:99999", "", "", proxy, SourceMalformed},
		{"xff empty port", proxy, "203.0.113.9:", "", "", proxy, SourceMalformed},
		{"xff unclosed bracket", proxy, "[2001:db8::7", "", "", proxy, SourceMalformed},
		{"xff bracketed ipv4", proxy, "[203.0.113.9]", "", "", proxy, SourceMalformed},
		{"xff unknown", proxy, "unknown", "", "", proxy, SourceUnknown},
		{"only the proxy's header is read", proxy, "203.0.113.9", "203.0.113.4", "for=203.0.113.1", "203.0.113.9", SourceXForwardedFor},

		{"forwarded simple", proxy, "", "", "for=203.0.113.1", "203.0.113.1", SourceForwarded},
		{"forwarded case and params", proxy, "", "", `For=203.0.113.1;proto=https;by=10.0.0.5, for=10.0.0.7;host="example.com"`, "203.0.113.1", SourceForwarded},
		{"forwarded quoted ipv6 port", proxy, "", "", `for="[2001:db8:cafe::17]:4711"`, "2001:db8:cafe::17", SourceForwarded},
		{"forwarded quoted comma", proxy, "", "", `for=6.6.6.6;host="a,b", for="203.0.113.1:80"`, "203.0.113.1", SourceForwarded},
		{"forwarded escaped", proxy, "", "", `for="203.0.113.\1"`, "203.0.113.1", SourceForwarded},
		{"forwarded obfuscated port", proxy, "", "", `for="203.0.113.1:_abc"`, "203.0.113.1", SourceForwarded},
		{"forwarded right-most untrusted", proxy, "", "", "for=6.6.6.6, for=203.0.113.1, for=192.0.2.1", "203.0.113.1", SourceForwarded},
		{"forwarded obfuscated client", proxy, "", "", "for=_hidden, for=10.0.0.1", proxy, SourceUnknown},
		{"forwarded unknown", proxy, "", "", "for=unknown", proxy, SourceUnknown},
		{"forwarded no for: absent", proxy, "", "203.0.113.4", "proto=https;host=x", proxy, SourceNoHeader},
		{"forwarded unterminated", proxy, "", "", `for="203.0.113.1`, proxy, SourceMalformed},
		{"forwarded unbalanced client quote", proxy, "", "", `for="6.6.6.6, for=203.0.113.1`, proxy, SourceMalformed},
		{"forwarded duplicate for", proxy, "", "", "for=203.0.113.1;for=203.0.113.2", proxy, SourceMalformed},
		{"forwarded no value", proxy, "", "", "for=", proxy, SourceMalformed},
		{"forwarded no equals", proxy, "", "", "for", proxy, SourceMalformed},
		{"forwarded garbage after value", proxy, "", "", `for="1.2.3.4"x`, proxy, SourceMalformed},
		{"forwarded bare ipv6", proxy, "", "", "for=2001:db8::1", proxy, SourceMalformed},
		{"forwarded empty elements", proxy, "", "", ", ;for=203.0.113.1;,", "203.0.113.1", SourceForwarded},

		{"x-real-ip", proxy, "", " 203.0.113.4 ", "", "203.0.113.4", SourceXRealIP},
		{"x-real-ip port", proxy, "", "203.0.113.4:5000", "", "203.0.113.4", SourceXRealIP},
		{"x-real-ip malformed", proxy, "", "203.0.113", "", proxy, SourceMalformed},
		{"x-real-ip unknown", proxy, "", "unknown", "", proxy, SourceUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The proxy is trusted for the header the case is about.
			header := "x-forwarded-for"
			switch {
			case strings.HasPrefix(tc.name, "forwarded"):
				header = "forwarded"
			case strings.HasPrefix(tc.name, "x-real-ip"):
				header = "x-real-ip"
			}
			tp := testProxies(t, header)
			got, src := tp.ClientAddr(netip.MustParseAddr(tc.peer), []byte(tc.xff), []byte(tc.realIP), []byte(tc.fwd))
			if got != netip.MustParseAddr(tc.want) || src != tc.src {
				t.Fatalf("got %v %s, want %s %s", got, src, tc.want, tc.src)
			}
		})
	}
}

// A run of trusted entries longer than MaxProxyHops falls back to the peer.
func TestClientAddrHopBound(t *testing.T) {
	tp := testProxies(t, "")
	peer := netip.MustParseAddr("10.0.0.5")
	xff := []byte("203.0.113.9")
	fwd := []byte("for=203.0.113.9")
	for range MaxProxyHops {
		xff = append(xff, ", 10.1.1.1"...)
		fwd = append(fwd, ", for=10.1.1.1"...)
	}
	if a, src := tp.ClientAddr(peer, xff, nil, nil); a != peer || src != SourceTooManyHops {
		t.Fatalf("xff: %v %s", a, src)
	}
	if a, src := testProxies(t, "forwarded").ClientAddr(peer, nil, nil, fwd); a != peer || src != SourceTooManyHops {
		t.Fatalf("forwarded: %v %s", a, src)
	}
	// Long chains to the left of the client cost nothing.
	long := []byte("")
	for range 1000 {
		long = append(long, "6.6.6.6, "...)
	}
	long = append(long, "203.0.113.9, 10.0.0.1"...)
	if a, _ := tp.ClientAddr(peer, long, nil, nil); a != netip.MustParseAddr("203.0.113.9") {
		t.Fatalf("long xff: %v", a)
	}
}

// Each proxy is read for its own header only. With nginx setting only
// X-Real-IP and passing the client's X-Forwarded-For through, the client
// must not choose its address: the proxy is trusted for x-real-ip, and the
// forged X-Forwarded-For is never read.
func TestClientAddrPerProxyHeader(t *testing.T) {
	tp, err := NewTrustedProxies([]string{"10.0.0.0/8=x-real-ip", "10.9.0.0/16=forwarded", "192.0.2.1"})
	if err != nil {
		t.Fatal(err)
	}
	nginx := netip.MustParseAddr("10.0.0.5")
	forged := []byte("203.0.113.66")
	if a, src := tp.ClientAddr(nginx, forged, []byte("198.51.100.7"), nil); a != netip.MustParseAddr("198.51.100.7") || src != SourceXRealIP {
		t.Fatalf("x-real-ip proxy: %v %s", a, src)
	}
	if a, src := tp.ClientAddr(nginx, forged, nil, nil); a != nginx || src != SourceNoHeader {
		t.Fatalf("x-real-ip proxy without its header read X-Forwarded-For: %v %s", a, src)
	}
	// The most specific prefix decides.
	inner := netip.MustParseAddr("10.9.1.1")
	if a, src := tp.ClientAddr(inner, forged, []byte("198.51.100.7"), []byte("for=198.51.100.8")); a != netip.MustParseAddr("198.51.100.8") || src != SourceForwarded {
		t.Fatalf("forwarded proxy: %v %s", a, src)
	}
	// Without a header name: X-Forwarded-For.
	if a, src := tp.ClientAddr(netip.MustParseAddr("192.0.2.1"), []byte("198.51.100.9"), []byte("203.0.113.66"), nil); a != netip.MustParseAddr("198.51.100.9") || src != SourceXForwardedFor {
		t.Fatalf("default header: %v %s", a, src)
	}
}

// Every truncation of valid headers gives an address from the header or
// the peer, never a panic.
func TestClientAddrTruncated(t *testing.T) {
	peer := netip.MustParseAddr("10.0.0.5")
	for _, full := range []string{
		`for="[2001:db8:cafe::17]:4711";proto=https, for=203.0.113.1;by="_x", for=10.0.0.7`,
		`[2001:db8::7]:4711, 203.0.113.9:80, 10.0.0.3`,
	} {
		for n := range len(full) + 1 {
			for i, h := range [][3][]byte{{[]byte(full[:n]), nil, nil}, {nil, nil, []byte(full[:n])}, {nil, []byte(full[:n]), nil}} {
				tp := testProxies(t, []string{"x-forwarded-for", "forwarded", "x-real-ip"}[i])
				a, src := tp.ClientAddr(peer, h[0], h[1], h[2])
				checkClientAddr(t, tp, peer, a, src)
			}
		}
	}
}

func checkClientAddr(t *testing.T, tp *TrustedProxies, peer, a netip.Addr, src string) {
	t.Helper()
	switch src {
	case SourceXForwardedFor, SourceForwarded, SourceXRealIP:
		if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
			t.Fatalf("%s gave %v", src, a)
		}
		if !tp.Trusted(peer) {
			t.Fatalf("header believed from untrusted %v", peer)
		}
	case SourcePeer, SourceNoHeader, SourceMalformed, SourceUnknown, SourceTooManyHops:
		if a != peer {
			t.Fatalf("%s gave %v, not the peer %v", src, a, peer)
		}
	default:
		t.Fatalf("unknown source %q", src)
	}
}

func FuzzClientAddr(f *testing.F) {
	f.Add(true, []byte("6.6.6.6, 203.0.113.9, 10.0.0.1"), []byte("203.0.113.4"), []byte(`for="[2001:db8::1]:80";proto=https, for=10.0.0.2`))
	f.Add(false, []byte("203.0.113.9"), []byte(""), []byte("for=203.0.113.1"))
	f.Add(true, []byte(""), []byte("unknown"), []byte(`for="\"x\\`))
	f.Add(true, []byte("[::1]:1,,,"), []byte("_x"), []byte(`;;,for=_y;by=1,for="[fe80::1%25eth0]"`))
	// Three proxies, one per header; trusted picks the peer among them.
	tp, err := NewTrustedProxies([]string{"10.0.0.0/8", "10.1.0.0/16=forwarded", "10.2.0.0/16=x-real-ip", "2001:db8::/32"})
	if err != nil {
		f.Fatal(err)
	}
	peers := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.2.0.1")}
	f.Fuzz(func(t *testing.T, trusted bool, xff, realIP, fwd []byte) {
		peer := netip.MustParseAddr("198.51.100.1")
		if trusted {
			peer = peers[(len(xff)+len(realIP)+len(fwd))%len(peers)]
		}
		a, src := tp.ClientAddr(peer, xff, realIP, fwd)
		checkClientAddr(t, tp, peer, a, src)
		if !trusted && src != SourcePeer {
			t.Fatalf("untrusted peer: %s", src)
		}
	})
}

func BenchmarkClientAddr(b *testing.B) {
	tp, _ := NewTrustedProxies([]string{"10.0.0.0/8", "10.1.0.0/16=forwarded"})
	peer, fpeer := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.1.0.1")
	xff := []byte("6.6.6.6, 203.0.113.9, 10.0.0.1")
	fwd := []byte(`for="[2001:db8::1]:80";proto=https, for=10.0.0.2`)
	b.ReportAllocs()
	for b.Loop() {
		tp.ClientAddr(peer, xff, nil, nil)
		tp.ClientAddr(fpeer, nil, nil, fwd)
	}
}
