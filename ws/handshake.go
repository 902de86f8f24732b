package ws

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"strconv"

	"github.com/gobwas/httphead"
)

// DefaultMaxRequestSize bounds the opening handshake's request line and
// header block together (RFC 6455 §10.4 asks for limits; browsers send well
// under 2 KiB, go-libp2p under 300 bytes).
const DefaultMaxRequestSize = 8 << 10

// HandshakeError is a refused opening handshake. On the server side Status is
// the HTTP status to answer with; on the client side it is the status the
// server answered (0 when the response itself was malformed). Token is a
// stable identifier of the failure path, suitable as a metrics label.
type HandshakeError struct {
	Status int
	Token  string
}

func (e *HandshakeError) Error() string {
	return "ws: handshake " + e.Token + " (" + strconv.Itoa(e.Status) + ")"
}

func hsErr(status int, token string) *HandshakeError {
	return &HandshakeError{Status: status, Token: token}
}

// Server-side handshake failures.
var (
	ErrRequestTooLarge   = hsErr(431, "request_too_large")
	ErrBadRequestLine    = hsErr(400, "bad_request_line")
	ErrMethod            = hsErr(405, "method_not_get")
	ErrHTTPVersion       = hsErr(400, "http_version")
	ErrBadHeader         = hsErr(400, "bad_header")
	ErrDuplicateHeader   = hsErr(400, "duplicate_header")
	ErrMissingHost       = hsErr(400, "missing_host")
	ErrMissingUpgrade    = hsErr(400, "missing_upgrade")
	ErrMissingConnection = hsErr(400, "missing_connection_upgrade")
	ErrMissingVersion    = hsErr(400, "missing_version")
	ErrVersion           = hsErr(426, "unsupported_version")
	ErrBadKey            = hsErr(400, "bad_key")
	ErrBadTarget         = hsErr(400, "bad_request_target")
	ErrForbiddenOrigin   = hsErr(403, "origin_refused")
	ErrNotFound          = hsErr(404, "path_not_found")
)

// Request holds what a server needs from a valid upgrade request. Its slices
// alias the parsed input.
type Request struct {
	Path   []byte // the request target's path, without query
	Host   []byte
	Origin []byte
	Key    []byte // Sec-WebSocket-Key as sent (it is hashed, not decoded)

	// Client address headers, for trusted proxies only.
	XForwardedFor []byte
	XRealIP       []byte
	Forwarded     []byte
}

var headerEnd = []byte("\r\n\r\n")

// ParseRequest parses a complete WebSocket upgrade request from the start of
// b and validates it as RFC 6455 §4.2.1 asks. It returns ErrNeedMore while
// the header block is incomplete and shorter than max, and a *HandshakeError
// carrying the HTTP status otherwise. max <= 0 selects DefaultMaxRequestSize.
// Bytes after the returned length belong to the frame stream.
func ParseRequest(b []byte, max int) (Request, int, error) {
	if max <= 0 {
		max = DefaultMaxRequestSize
	}
	end := bytes.Index(b, headerEnd)
	if end < 0 {
		if len(b) >= max {
			return Request{}, 0, ErrRequestTooLarge
		}
		return Request{}, 0, ErrNeedMore
	}
	n := end + len(headerEnd)
	if n > max {
		return Request{}, 0, ErrRequestTooLarge
	}
	head := b[:end+2] // every line, each ending in CRLF
	eol := bytes.Index(head, crlf)
	rl, ok := httphead.ParseRequestLine(head[:eol])
	if !ok {
		return Request{}, 0, ErrBadRequestLine
	}
	// "The method of the request MUST be GET, and the HTTP version MUST be
	// at least 1.1" (RFC 6455 §4.1, checked by the server in §4.2.1).
	if !bytes.Equal(rl.Method, []byte("GET")) {
		return Request{}, 0, ErrMethod
	}
	if rl.Version.Major < 1 || (rl.Version.Major == 1 && rl.Version.Minor < 1) {
		return Request{}, 0, ErrHTTPVersion
	}
	var r Request
	if r.Path, ok = requestPath(rl.URI); !ok {
		return Request{}, 0, ErrBadTarget
	}
	var upgrade, connection bool
	var version []byte
	for rest := head[eol+2:]; len(rest) > 0; {
		i := bytes.Index(rest, crlf)
		line := rest[:i]
		rest = rest[i+2:]
		if line[0] == ' ' || line[0] == '\t' {
			return Request{}, 0, ErrBadHeader // obsolete line folding (RFC 7230 §3.2.4)
		}
		k, v, ok := httphead.ParseHeaderLine(line)
		if !ok || len(k) == 0 {
			return Request{}, 0, ErrBadHeader
		}
		var dst *[]byte
		switch {
		case equalFold(k, "Host"):
			dst = &r.Host
		case equalFold(k, "Sec-WebSocket-Key"):
			dst = &r.Key
		case equalFold(k, "Sec-WebSocket-Version"):
			dst = &version
		case equalFold(k, "Origin"):
			dst = &r.Origin
		case equalFold(k, "Upgrade"):
			upgrade = upgrade || hasToken(v, "websocket")
		case equalFold(k, "Connection"):
			connection = connection || hasToken(v, "upgrade")
		case equalFold(k, "X-Forwarded-For"):
			r.XForwardedFor = v
		case equalFold(k, "X-Real-IP"):
			r.XRealIP = v
		case equalFold(k, "Forwarded"):
			r.Forwarded = v
		}
		if dst != nil {
			if *dst != nil {
				return Request{}, 0, ErrDuplicateHeader
			}
			*dst = v
		}
	}
	// "A |Host| header field", "An |Upgrade| header field containing the
	// value "websocket"", "A |Connection| header field that includes the
	// token "Upgrade"" (RFC 6455 §4.2.1 items 2–4).
	switch {
	case r.Host == nil:
		return Request{}, 0, ErrMissingHost
	case !upgrade:
		return Request{}, 0, ErrMissingUpgrade
	case !connection:
		return Request{}, 0, ErrMissingConnection
	case version == nil:
		return Request{}, 0, ErrMissingVersion
	case !bytes.Equal(version, []byte("13")):
		// "If this version does not match a version understood by the
		// server, the server MUST abort ... and instead send an appropriate
		// HTTP error code (such as 426 Upgrade Required) and a
		// |Sec-WebSocket-Version| header field" (RFC 6455 §4.2.2).
		return Request{}, 0, ErrVersion
	case !validKey(r.Key):
		// "A |Sec-WebSocket-Key| header field with a base64-encoded value
		// that, when decoded, is 16 bytes in length" (RFC 6455 §4.2.1 item 5).
		return Request{}, 0, ErrBadKey
	}
	return r, n, nil
}

var crlf = []byte("\r\n")

// requestPath extracts the path from an origin-form ("/a?b") or
// absolute-form ("http://h/a") request target (RFC 7230 §5.3).
func requestPath(uri []byte) ([]byte, bool) {
	if len(uri) == 0 {
		return nil, false
	}
	if uri[0] != '/' {
		i := bytes.Index(uri, []byte("://"))
		if i <= 0 {
			return nil, false
		}
		uri = uri[i+3:]
		j := bytes.IndexByte(uri, '/')
		if j < 0 {
			return []byte("/"), true
		}
		uri = uri[j:]
	}
	if q := bytes.IndexAny(uri, "?#"); q >= 0 {
		uri = uri[:q]
	}
	return uri, true
}

func validKey(k []byte) bool {
	if len(k) != 24 {
		return false
	}
	var raw [18]byte
	n, err := base64.StdEncoding.Decode(raw[:], k)
	return err == nil && n == 16
}

func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// hasToken reports whether the comma-separated list v holds tok,
// case-insensitively (Firefox sends "Connection: keep-alive, Upgrade").
func hasToken(v []byte, tok string) bool {
	found := false
	httphead.ScanTokens(v, func(t []byte) bool {
		found = equalFold(t, tok)
		return !found
	})
	return found
}

const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// AppendAcceptKey appends Sec-WebSocket-Accept for key: base64 of the SHA-1
// of the key as sent followed by the protocol GUID (RFC 6455 §4.2.2 item 5.4).
func AppendAcceptKey(dst, key []byte) []byte {
	h := sha1.New()
	h.Write(key)
	h.Write([]byte(acceptGUID))
	var sum [sha1.Size]byte
	return base64.StdEncoding.AppendEncode(dst, h.Sum(sum[:0]))
}

// AppendResponse appends the 101 response that completes the handshake for
// key. It selects no subprotocol and no extension, so it sends neither header
// (RFC 6455 §4.2.2: the server MUST NOT send a subprotocol it did not select).
func AppendResponse(dst, key []byte) []byte {
	dst = append(dst, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	dst = AppendAcceptKey(dst, key)
	return append(dst, "\r\n\r\n"...)
}

// AppendReject appends the HTTP response refusing a handshake with e's
// status, a plain-text body naming the reason, and the headers the status
// calls for.
func AppendReject(dst []byte, e *HandshakeError) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(e.Status), 10)
	dst = append(dst, ' ')
	dst = append(dst, statusText(e.Status)...)
	dst = append(dst, "\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"...)
	switch e.Status {
	case 426:
		dst = append(dst, "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"...)
	case 405:
		dst = append(dst, "Allow: GET\r\n"...)
	}
	dst = append(dst, "Content-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(e.Token)+1), 10)
	dst = append(dst, "\r\n\r\n"...)
	dst = append(dst, e.Token...)
	return append(dst, '\n')
}

func statusText(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 426:
		return "Upgrade Required"
	case 431:
		return "Request Header Fields Too Large"
	case 503:
		return "Service Unavailable"
	}
	return "Error"
}

// NewKey returns a fresh Sec-WebSocket-Key: 16 random bytes, base64-encoded
// ("randomly selected", RFC 6455 §4.1 item 7).
func NewKey() [24]byte {
	var raw [16]byte
	rand.Read(raw[:])
	var k [24]byte
	base64.StdEncoding.Encode(k[:], raw[:])
	return k
}

// AppendRequest appends a client upgrade request for path on host (the
// Host header value, "name:port").
func AppendRequest(dst []byte, host, path string, key []byte) []byte {
	if path == "" {
		path = "/"
	}
	dst = append(dst, "GET "...)
	dst = append(dst, path...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, host...)
	dst = append(dst, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "...)
	dst = append(dst, key...)
	return append(dst, "\r\nSec-WebSocket-Version: 13\r\n\r\n"...)
}

// Client-side handshake failures (the Status field of a refusal is the
// server's).
var (
	ErrBadStatusLine     = hsErr(0, "bad_status_line")
	ErrResponseTooLarge  = hsErr(0, "response_too_large")
	ErrBadAccept         = hsErr(101, "bad_accept")
	ErrUnrequestedHeader = hsErr(101, "unrequested_extension_or_protocol")
)

// ParseResponse parses the server's answer to a request sent with key. It
// returns ErrNeedMore while the header block is incomplete, and the length
// of the response when the upgrade succeeded; the bytes after it are frames.
func ParseResponse(b, key []byte, max int) (int, error) {
	if max <= 0 {
		max = DefaultMaxRequestSize
	}
	end := bytes.Index(b, headerEnd)
	if end < 0 {
		if len(b) >= max {
			return 0, ErrResponseTooLarge
		}
		return 0, ErrNeedMore
	}
	// The limit holds however the response arrives: whole in one read or
	// in pieces (where a prefix of max bytes is already refused above).
	if end+len(headerEnd) > max {
		return 0, ErrResponseTooLarge
	}
	head := b[:end+2]
	eol := bytes.Index(head, crlf)
	sl, ok := httphead.ParseResponseLine(head[:eol])
	if !ok {
		return 0, ErrBadStatusLine
	}
	// "If the status code received from the server is not 101, the client
	// handles the response per HTTP procedures" (RFC 6455 §4.1): for us,
	// a refusal.
	if sl.Status != 101 {
		return 0, &HandshakeError{Status: sl.Status, Token: "refused"}
	}
	var upgrade, connection, accepted bool
	var want [28]byte
	AppendAcceptKey(want[:0], key)
	for rest := head[eol+2:]; len(rest) > 0; {
		i := bytes.Index(rest, crlf)
		line := rest[:i]
		rest = rest[i+2:]
		k, v, ok := httphead.ParseHeaderLine(line)
		if !ok {
			return 0, hsErr(101, "bad_header")
		}
		switch {
		case equalFold(k, "Upgrade"):
			upgrade = upgrade || hasToken(v, "websocket")
		case equalFold(k, "Connection"):
			connection = connection || hasToken(v, "upgrade")
		case equalFold(k, "Sec-WebSocket-Accept"):
			accepted = bytes.Equal(v, want[:])
		case equalFold(k, "Sec-WebSocket-Extensions"), equalFold(k, "Sec-WebSocket-Protocol"):
			// We offer neither; "the client MUST _Fail the WebSocket
			// Connection_" if one is selected anyway (RFC 6455 §4.1).
			return 0, ErrUnrequestedHeader
		}
	}
	if !upgrade || !connection {
		return 0, hsErr(101, "missing_upgrade")
	}
	if !accepted {
		return 0, ErrBadAccept
	}
	return end + len(headerEnd), nil
}
