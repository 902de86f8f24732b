package ws

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

const sampleKey = "dGhlIHNhbXBsZSBub25jZQ=="

func TestAcceptKeyVector(t *testing.T) {
	// RFC 6455 §1.3 and shared/protocol-notes.md §9.1.
	if got := string(AppendAcceptKey(nil, []byte(sampleKey))); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("accept = %q", got)
	}
}

func request(lines ...string) []byte {
	return []byte(strings.Join(lines, "\r\n") + "\r\n\r\n")
}

var goodRequest = request(
	"GET /chat?x=1 HTTP/1.1",
	"Host: server.example.com",
	"Upgrade: websocket",
	"Connection: Upgrade",
	"Sec-WebSocket-Key: "+sampleKey,
	"Origin: http://example.com",
	"Sec-WebSocket-Protocol: chat, superchat",
	"Sec-WebSocket-Extensions: permessage-deflate",
	"Sec-WebSocket-Version: 13",
)

func TestParseRequest(t *testing.T) {
	in := append(bytes.Clone(goodRequest), 0x81, 0x80) // a pipelined frame
	r, n, err := ParseRequest(in, 0)
	if err != nil || n != len(goodRequest) {
		t.Fatalf("n=%d err=%v", n, err)
	}
	if string(r.Path) != "/chat" || string(r.Host) != "server.example.com" || string(r.Key) != sampleKey || string(r.Origin) != "http://example.com" {
		t.Fatalf("parsed %+v", r)
	}
	resp := AppendResponse(nil, r.Key)
	want := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
	if string(resp) != want {
		t.Fatalf("response %q", resp)
	}
	// Our client accepts it.
	if n, err := ParseResponse(resp, []byte(sampleKey), 0); err != nil || n != len(resp) {
		t.Fatalf("ParseResponse: %d %v", n, err)
	}
}

func TestParseRequestTruncatedPrefixes(t *testing.T) {
	for i := 0; i < len(goodRequest); i++ {
		if _, _, err := ParseRequest(goodRequest[:i], 0); err != ErrNeedMore {
			t.Fatalf("prefix %d: err %v", i, err)
		}
	}
	resp := AppendResponse(nil, []byte(sampleKey))
	for i := 0; i < len(resp); i++ {
		if _, err := ParseResponse(resp[:i], []byte(sampleKey), 0); err != ErrNeedMore {
			t.Fatalf("response prefix %d: err %v", i, err)
		}
	}
}

func TestParseRequestVariants(t *testing.T) {
	ok := []struct {
		name string
		req  []byte
		path string
	}{
		{"firefox connection list, mixed case", request("GET / HTTP/1.1", "host: h", "upgrade: WebSocket", "Connection: keep-alive, Upgrade", "sec-websocket-key: "+sampleKey, "SEC-WEBSOCKET-VERSION: 13"), "/"},
		{"absolute form", request("GET http://h:80/foo/bar HTTP/1.1", "Host: h:80", "Upgrade: websocket", "Connection: upgrade", "Sec-WebSocket-Key: "+sampleKey, "Sec-WebSocket-Version: 13"), "/foo/bar"},
		{"absolute form no path", request("GET ws://h HTTP/1.1", "Host: h", "Upgrade: websocket", "Connection: upgrade", "Sec-WebSocket-Key: "+sampleKey, "Sec-WebSocket-Version: 13"), "/"},
	}
	for _, c := range ok {
		r, _, err := ParseRequest(c.req, 0)
		if err != nil || string(r.Path) != c.path {
			t.Errorf("%s: path %q err %v", c.name, r.Path, err)
		}
	}
	base := []string{"Host: h", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: " + sampleKey, "Sec-WebSocket-Version: 13"}
	without := func(i int) []string {
		return append(append([]string{"GET / HTTP/1.1"}, base[:i]...), base[i+1:]...)
	}
	with := func(extra ...string) []string { return append(append([]string{"GET / HTTP/1.1"}, base...), extra...) }
	bad := []struct {
		name string
		req  []byte
		want *HandshakeError
	}{
		{"POST", request(append([]string{"POST / HTTP/1.1"}, base...)...), ErrMethod},
		{"HTTP/1.0", request(append([]string{"GET / HTTP/1.0"}, base...)...), ErrHTTPVersion},
		{"garbage line", request(append([]string{"GARBAGE"}, base...)...), ErrBadRequestLine},
		{"no host", request(without(0)...), ErrMissingHost},
		{"no upgrade", request(without(1)...), ErrMissingUpgrade},
		{"no connection", request(without(2)...), ErrMissingConnection},
		{"no key", request(without(3)...), ErrBadKey},
		{"no version", request(without(4)...), ErrMissingVersion},
		{"version 8", request(append([]string{"GET / HTTP/1.1"}, append(base[:4:4], "Sec-WebSocket-Version: 8")...)...), ErrVersion},
		{"short key", request(append([]string{"GET / HTTP/1.1"}, "Host: h", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: abc", "Sec-WebSocket-Version: 13")...), ErrBadKey},
		{"non-base64 key", request(append([]string{"GET / HTTP/1.1"}, "Host: h", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==", "Sec-WebSocket-Version: 13")...), ErrBadKey},
		{"duplicate key", request(with("Sec-WebSocket-Key: " + sampleKey)...), ErrDuplicateHeader},
		{"folded header", request(with(" folded")...), ErrBadHeader},
		{"no colon", request(with("NoColon")...), ErrBadHeader},
		{"star target", request(append([]string{"GET * HTTP/1.1"}, base...)...), ErrBadTarget},
	}
	for _, c := range bad {
		_, _, err := ParseRequest(c.req, 0)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
	long := append([]byte("GET / HTTP/1.1\r\nX: "), bytes.Repeat([]byte("a"), 9000)...)
	if _, _, err := ParseRequest(long, 0); err != ErrRequestTooLarge {
		t.Errorf("oversized incomplete request: %v", err)
	}
}

func TestAppendReject(t *testing.T) {
	got := string(AppendReject(nil, ErrVersion))
	for _, want := range []string{"HTTP/1.1 426 Upgrade Required\r\n", "Sec-WebSocket-Version: 13\r\n", "Connection: close\r\n", "\r\n\r\nunsupported_version\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("426 response lacks %q:\n%s", want, got)
		}
	}
}

func TestParseResponseFailures(t *testing.T) {
	key := []byte(sampleKey)
	cases := map[string]string{
		"refused":    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
		"bad accept": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
		"extension":  "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
		"no upgrade": "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
		"garbage":    "NOT HTTP\r\n\r\n",
	}
	for name, resp := range cases {
		if _, err := ParseResponse([]byte(resp), key, 0); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	var he *HandshakeError
	if _, err := ParseResponse([]byte(cases["refused"]), key, 0); !errors.As(err, &he) || he.Status != 404 {
		t.Errorf("refusal status: %v", err)
	}
}

func TestClientRequestParses(t *testing.T) {
	k := NewKey()
	req := AppendRequest(nil, "127.0.0.1:4001", "/echo", k[:])
	r, n, err := ParseRequest(req, 0)
	if err != nil || n != len(req) || string(r.Path) != "/echo" || string(r.Key) != string(k[:]) {
		t.Fatalf("%+v %d %v", r, n, err)
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add(goodRequest)
	f.Add(request("GET / HTTP/1.1", "Host: h", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: "+sampleKey, "Sec-WebSocket-Version: 8"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: h\r\n"))
	f.Add(AppendResponse(nil, []byte(sampleKey)))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, n, err := ParseRequest(in, 1024)
		switch {
		case err == ErrNeedMore:
			if bytes.Contains(in, headerEnd) || len(in) >= 1024 {
				t.Fatalf("need-more for a complete or oversized input")
			}
		case err != nil:
			var he *HandshakeError
			if !errors.As(err, &he) || he.Status < 400 {
				t.Fatalf("error without an HTTP status: %v", err)
			}
		default:
			if n > len(in) || !validKey(r.Key) || r.Host == nil {
				t.Fatalf("accepted an invalid request: %+v", r)
			}
			// Every strict prefix of an accepted request asks for more bytes.
			for i := 0; i < n; i++ {
				if _, _, err := ParseRequest(in[:i], 1024); err != ErrNeedMore {
					t.Fatalf("prefix %d: %v", i, err)
				}
			}
		}
		ParseResponse(in, []byte(sampleKey), 1024)
	})
}

// A response header longer than the limit is refused whether it arrives
// whole or in pieces (found by FuzzParseResponse: whole, it was accepted,
// while its prefix of the limit's length was refused).
func TestParseResponseLimitWholeOrInPieces(t *testing.T) {
	key := []byte(sampleKey)
	resp := AppendResponse(nil, key)
	long := append([]byte("HTTP/1.1 101 Switching Protocols\r\nX-Pad: "+strings.Repeat("p", 2000)+"\r\n"), resp[len("HTTP/1.1 101 Switching Protocols\r\n"):]...)
	if _, err := ParseResponse(long, key, 1024); err != ErrResponseTooLarge {
		t.Fatalf("whole: %v", err)
	}
	if _, err := ParseResponse(long[:1024], key, 1024); err != ErrResponseTooLarge {
		t.Fatalf("in pieces: %v", err)
	}
	if n, err := ParseResponse(resp, key, len(resp)); err != nil || n != len(resp) {
		t.Fatalf("at the limit exactly: %d %v", n, err)
	}
}
