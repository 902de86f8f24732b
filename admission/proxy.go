package admission

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
)

// Behind a load balancer or CDN every connection comes from the proxy's
// address, so admission limits would count the proxy, not its clients.
// TrustedProxies recovers the client's address from the headers a proxy
// adds, and only from a proxy the operator named: a header from anyone
// else is the client's own claim and is ignored.
//
// A chain (X-Forwarded-For, Forwarded) is read from the right, as nginx's
// real_ip_recursive does: each proxy appends the address it received the
// request from, so the right-most address that is not a trusted proxy is
// the first one no trusted party vouches for, and everything left of it
// may be forged by the client. Only the right part is examined, at most
// MaxProxyHops entries.

// MaxProxyHops bounds the chain entries examined from the right. Real
// chains are a CDN, a load balancer and an ingress; a longer run of
// trusted entries means a misconfigured list, and the TCP peer is used.
const MaxProxyHops = 32

// ProxyHeader names a header that carries the client address.
type ProxyHeader uint8

const (
	// HeaderXForwardedFor is X-Forwarded-For: a comma-separated chain of
	// addresses, each optionally with a port (nginx, HAProxy, Envoy, Caddy,
	// Traefik, cloud load balancers).
	HeaderXForwardedFor ProxyHeader = iota + 1
	// HeaderForwarded is RFC 7239's Forwarded: elements with for= nodes,
	// IPv6 quoted and bracketed, ports allowed.
	HeaderForwarded
	// HeaderXRealIP is X-Real-IP: one address, set (not appended) by the
	// nearest proxy (nginx's proxy_set_header X-Real-IP $remote_addr).
	HeaderXRealIP
)

// DefaultProxyHeader is what a proxy named without a header is trusted
// for. Each proxy is trusted for exactly one header, the one it sets: a
// proxy passes the others through untouched, so the client writes them
// (a proxy that sets only X-Real-IP and forwards the client's own
// X-Forwarded-For would otherwise let the client choose the address the
// per-source limits count). X-Forwarded-For is the default because the
// proxies in front of libp2p nodes append to it (nginx
// $proxy_add_x_forwarded_for, HAProxy, Envoy, cloud load balancers) and
// its right-most untrusted entry cannot be forged.
const DefaultProxyHeader = HeaderXForwardedFor

// proxyHeaderNames are the names a -trusted-proxy spec may give.
var proxyHeaderNames = map[string]ProxyHeader{
	"x-forwarded-for": HeaderXForwardedFor,
	"forwarded":       HeaderForwarded,
	"x-real-ip":       HeaderXRealIP,
}

// Client address sources, stable tokens for a metric label
// (swarmgate_proxy_client_addr_total{source}, proposed).
const (
	SourcePeer          = "peer"            // TCP peer is not a trusted proxy (or none configured)
	SourceNoHeader      = "no_header"       // trusted peer sent no usable header: the peer itself
	SourceXForwardedFor = "x_forwarded_for" // right-most untrusted X-Forwarded-For address
	SourceForwarded     = "forwarded"       // right-most untrusted RFC 7239 for= node
	SourceXRealIP       = "x_real_ip"       // X-Real-IP
	SourceMalformed     = "malformed"       // header unparsable where it mattered: the peer
	SourceUnknown       = "unknown"         // the client hop is "unknown" or obfuscated: the peer
	SourceTooManyHops   = "too_many_hops"   // more than MaxProxyHops trusted entries: the peer
)

// TrustedProxies is the set of proxies whose address headers are believed,
// each for the one header it sets. A nil *TrustedProxies trusts no one.
// It is read-only after creation and safe for concurrent use.
type TrustedProxies struct {
	prefixes []netip.Prefix
	headers  []ProxyHeader // headers[i] is what prefixes[i] is trusted for
}

// NewTrustedProxies parses proxy specs: a CIDR ("10.0.0.0/8",
// "2001:db8::/32") or a single address ("192.0.2.1", "::1"), optionally
// followed by "=" and the one header that proxy sets: x-forwarded-for
// (DefaultProxyHeader), forwarded or x-real-ip. A connection from a proxy
// is read for that header only; when several specs contain the address, the
// most specific one (the longest prefix) decides.
func NewTrustedProxies(specs []string) (*TrustedProxies, error) {
	t := &TrustedProxies{}
	for _, spec := range specs {
		s, hname, named := strings.Cut(strings.TrimSpace(spec), "=")
		s = strings.TrimSpace(s)
		h := DefaultProxyHeader
		if named {
			var ok bool
			if h, ok = proxyHeaderNames[strings.ToLower(strings.TrimSpace(hname))]; !ok {
				return nil, fmt.Errorf("admission: trusted proxy %q: unknown header %q (want x-forwarded-for, forwarded or x-real-ip)", spec, hname)
			}
		}
		var p netip.Prefix
		var err error
		if strings.Contains(s, "/") {
			p, err = netip.ParsePrefix(s)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(s); err == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
		if err != nil {
			return nil, fmt.Errorf("admission: trusted proxy %q: %w", spec, err)
		}
		p = p.Masked()
		if p.Addr().Is4In6() && p.Bits() >= 96 { // ::ffff:a.b.c.d/n is an IPv4 prefix
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		t.prefixes = append(t.prefixes, p)
		t.headers = append(t.headers, h)
	}
	return t, nil
}

// header is the header peer is trusted for (0: not a trusted proxy).
func (t *TrustedProxies) header(a netip.Addr) ProxyHeader {
	if t == nil || !a.IsValid() {
		return 0
	}
	a = a.Unmap().WithZone("")
	var h ProxyHeader
	bits := -1
	for i, p := range t.prefixes {
		if p.Bits() > bits && p.Contains(a) {
			h, bits = t.headers[i], p.Bits()
		}
	}
	return h
}

// Trusted reports whether a is one of the proxies.
func (t *TrustedProxies) Trusted(a netip.Addr) bool {
	if t == nil || !a.IsValid() {
		return false
	}
	a = a.Unmap().WithZone("")
	for _, p := range t.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientAddr returns the address to account the connection to and where
// it came from (a Source* token). Unless peer is a trusted proxy it is
// peer, whatever the headers say. Header values are as received (one
// field's value; the codec keeps the last of repeated fields).
func (t *TrustedProxies) ClientAddr(peer netip.Addr, xff, realIP, forwarded []byte) (netip.Addr, string) {
	var a netip.Addr
	var src string
	switch t.header(peer) {
	case 0:
		return peer, SourcePeer
	case HeaderXForwardedFor:
		a, src = t.fromXFF(xff)
	case HeaderForwarded:
		a, src = t.fromForwarded(forwarded)
	case HeaderXRealIP:
		a, src = fromRealIP(realIP)
	}
	switch src {
	case "": // absent
		return peer, SourceNoHeader
	case SourceXForwardedFor, SourceForwarded, SourceXRealIP:
		return a, src
	}
	return peer, src
}

// nodeKind classifies one chain entry.
type nodeKind uint8

const (
	nodeAddr      nodeKind = iota // an IP address
	nodeUnknown                   // "unknown" or an obfuscated identifier (RFC 7239 §6)
	nodeMalformed                 // anything else
)

// walker applies the right-to-left rule to entries fed right-most first.
type walker struct {
	t        *TrustedProxies
	leftmost netip.Addr // left-most trusted entry seen so far
	hops     int
}

// next takes one entry; done reports a decision (addr and src, src being
// a failure token or "" for an address found).
func (w *walker) next(a netip.Addr, k nodeKind) (netip.Addr, string, bool) {
	switch k {
	case nodeMalformed:
		return netip.Addr{}, SourceMalformed, true
	case nodeUnknown:
		return netip.Addr{}, SourceUnknown, true
	}
	if !w.t.Trusted(a) {
		return a, "", true
	}
	w.leftmost = a
	if w.hops++; w.hops >= MaxProxyHops {
		return netip.Addr{}, SourceTooManyHops, true
	}
	return netip.Addr{}, "", false
}

// fromXFF walks X-Forwarded-For from the right. Empty list elements are
// skipped (RFC 9110 §5.6.1 lets recipients ignore them). When every entry
// is a trusted proxy, the left-most is the best knowledge there is.
func (t *TrustedProxies) fromXFF(v []byte) (netip.Addr, string) {
	w := walker{t: t}
	for rest := v; len(rest) > 0; {
		var elem []byte
		if i := bytes.LastIndexByte(rest, ','); i >= 0 {
			elem, rest = rest[i+1:], rest[:i]
		} else {
			elem, rest = rest, nil
		}
		elem = trimOWS(elem)
		if len(elem) == 0 {
			continue
		}
		a, k := parseNode(elem)
		if a, src, done := w.next(a, k); done {
			if src == "" {
				src = SourceXForwardedFor
			}
			return a, src
		}
	}
	if w.leftmost.IsValid() {
		return w.leftmost, SourceXForwardedFor
	}
	return netip.Addr{}, "" // absent or only empty elements
}

// fromForwarded parses RFC 7239 Forwarded left to right (quoted strings
// may hold commas, so it cannot be split from the right), keeps the for=
// nodes of the last MaxProxyHops elements, then walks them from the right.
// Elements without for= are skipped; a header with none is absent.
func (t *TrustedProxies) fromForwarded(v []byte) (netip.Addr, string) {
	type hop struct {
		a netip.Addr
		k nodeKind
	}
	var ring [MaxProxyHops]hop
	n := 0
	ok := scanForwarded(v, func(node []byte, quoted bool) {
		a, k := parseNode(node)
		if !quoted && k == nodeAddr && a.Is6() && !a.Is4In6() && node[0] != '[' {
			// "IPv6 addresses ... MUST be enclosed in square brackets"
			// (RFC 7239 §6); a bare one is not what a proxy writes.
			k = nodeMalformed
		}
		ring[n%MaxProxyHops] = hop{a, k}
		n++
	})
	if !ok {
		return netip.Addr{}, SourceMalformed
	}
	if n == 0 {
		return netip.Addr{}, ""
	}
	w := walker{t: t}
	for i := n - 1; i >= 0 && i >= n-MaxProxyHops; i-- {
		h := ring[i%MaxProxyHops]
		if a, src, done := w.next(h.a, h.k); done {
			if src == "" {
				src = SourceForwarded
			}
			return a, src
		}
	}
	return w.leftmost, SourceForwarded
}

func fromRealIP(v []byte) (netip.Addr, string) {
	v = trimOWS(v)
	if len(v) == 0 {
		return netip.Addr{}, ""
	}
	switch a, k := parseNode(v); k {
	case nodeAddr:
		return a, SourceXRealIP
	case nodeUnknown:
		return netip.Addr{}, SourceUnknown
	}
	return netip.Addr{}, SourceMalformed
}

// scanForwarded runs the RFC 7239 §4 grammar over v and calls forNode with
// each element's for= value (unquoted) as it is parsed; a false result
// voids the nodes reported:
//
//	Forwarded         = 1#forwarded-element
//	forwarded-element = [ forwarded-pair ] *( ";" [ forwarded-pair ] )
//	forwarded-pair    = token "=" value
//	value             = token / quoted-string
//
// It reports false on a syntax error, an unterminated quoted string, a
// parameter repeated in one element ("MUST NOT occur more than once per
// forwarded-element", §4), or a value over maxNodeLen.
func scanForwarded(v []byte, forNode func(node []byte, quoted bool)) bool {
	var buf [maxNodeLen]byte
	i := 0
	for i <= len(v) {
		// One element.
		var seen uint8 // for, by, proto, host
		for {
			i = skipOWS(v, i)
			if i == len(v) || v[i] == ',' {
				break
			}
			if v[i] == ';' {
				i++
				continue
			}
			j := i
			for j < len(v) && isTchar(v[j]) {
				j++
			}
			name := v[i:j]
			if len(name) == 0 || j == len(v) || v[j] != '=' {
				return false
			}
			i = j + 1
			var val []byte
			quoted := i < len(v) && v[i] == '"'
			if quoted {
				val = buf[:0]
				i++
				for {
					if i == len(v) {
						return false // unterminated
					}
					c := v[i]
					if c == '"' {
						i++
						break
					}
					if c == '\\' {
						if i+1 == len(v) {
							return false
						}
						i++
						c = v[i]
					}
					if len(val) == maxNodeLen {
						return false
					}
					val = append(val, c)
					i++
				}
			} else {
				j = i
				for j < len(v) && v[j] != ';' && v[j] != ',' && v[j] != ' ' && v[j] != '\t' {
					j++
				}
				val, i = v[i:j], j
				if len(val) == 0 || len(val) > maxNodeLen {
					return false
				}
			}
			bit := uint8(0)
			switch {
			case equalFoldASCII(name, "for"):
				bit = 1
			case equalFoldASCII(name, "by"):
				bit = 2
			case equalFoldASCII(name, "proto"):
				bit = 4
			case equalFoldASCII(name, "host"):
				bit = 8
			}
			if seen&bit != 0 {
				return false
			}
			seen |= bit
			if bit == 1 {
				forNode(val, quoted) // now: buf is reused by the next value
			}
			i = skipOWS(v, i)
			if i < len(v) && v[i] != ';' && v[i] != ',' {
				return false
			}
		}
		i++ // past ',' (or the end)
	}
	return true
}

// maxNodeLen bounds one Forwarded value: "[" 45-character IPv6 "]:" port
// is 54; obfuscated identifiers are short by intent.
const maxNodeLen = 128

// parseNode parses a chain entry: IPv4, IPv6, "[IPv6]", either with
// ":port" (digits or an obfuscated "_port"), "unknown", or an obfuscated
// "_identifier". A bare IPv6 address is accepted here (X-Forwarded-For
// writes them bare); zones are dropped and IPv4-mapped addresses unmapped.
func parseNode(s []byte) (netip.Addr, nodeKind) {
	if len(s) == 0 {
		return netip.Addr{}, nodeMalformed
	}
	if s[0] == '_' || equalFoldASCII(s, "unknown") {
		return netip.Addr{}, nodeUnknown
	}
	host := s
	port := []byte(nil)
	switch {
	case s[0] == '[':
		j := bytes.IndexByte(s, ']')
		if j < 0 {
			return netip.Addr{}, nodeMalformed
		}
		host = s[1:j]
		if rest := s[j+1:]; len(rest) > 0 {
			if rest[0] != ':' {
				return netip.Addr{}, nodeMalformed
			}
			port = rest[1:]
			if len(port) == 0 {
				return netip.Addr{}, nodeMalformed
			}
		}
	case bytes.Count(s, []byte{':'}) == 1: // IPv4:port
		j := bytes.IndexByte(s, ':')
		host, port = s[:j], s[j+1:]
		if len(port) == 0 {
			return netip.Addr{}, nodeMalformed
		}
	}
	if port != nil && !validPort(port) {
		return netip.Addr{}, nodeMalformed
	}
	a, err := netip.ParseAddr(string(host))
	if err != nil {
		return netip.Addr{}, nodeMalformed
	}
	if s[0] == '[' && !a.Is6() {
		return netip.Addr{}, nodeMalformed
	}
	return a.Unmap().WithZone(""), nodeAddr
}

// validPort accepts RFC 7239's node-port: 1*5DIGIT (at most 65535) or "_" followed by
// ALPHA / DIGIT / "." / "_" / "-".
func validPort(p []byte) bool {
	if p[0] == '_' {
		for _, c := range p[1:] {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
				return false
			}
		}
		return len(p) > 1
	}
	if len(p) > 5 {
		return false
	}
	n := 0
	for _, c := range p {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n <= 65535
}

func trimOWS(b []byte) []byte { return bytes.Trim(b, " \t") }

func skipOWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	return i
}

// isTchar reports an RFC 9110 token character.
func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func equalFoldASCII(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
