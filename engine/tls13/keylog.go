package tls13

import (
	"bytes"
	"encoding/hex"
)

// NSS key log labels (https://firefox-source-docs.mozilla.org/security/nss/legacy/key_log_format/)
// of the TLS 1.3 application traffic secrets, generation 0: the only ones
// this package takes. crypto/tls also logs the handshake traffic secrets
// (CLIENT_HANDSHAKE_TRAFFIC_SECRET, SERVER_HANDSHAKE_TRAFFIC_SECRET) and,
// for TLS 1.2, CLIENT_RANDOM; KeyLog ignores them.
const (
	labelClientTraffic = "CLIENT_TRAFFIC_SECRET_0"
	labelServerTraffic = "SERVER_TRAFFIC_SECRET_0"
)

// maxKeyLogLine bounds one buffered key log line. The longest line
// crypto/tls writes for TLS 1.3 is 194 bytes (a 31-byte label, the 64 hex
// digits of the client random, the 96 of a SHA-384 secret, two spaces and a
// newline); a longer line is dropped unread.
const maxKeyLogLine = 200

// randomLen is the ClientHello random (RFC 8446 §4.1.2).
const randomLen = 32

// KeyLog takes the application traffic secrets of one TLS 1.3 handshake
// from crypto/tls: it is the KeyLogWriter of a tls.Config clone made for
// that one connection, so no table correlates lines with connections.
// crypto/tls writes one line per secret, "LABEL <client random> <secret>"
// in hex, from the goroutine running the handshake; KeyLog parses the two
// lines it needs into fixed arrays, ignores every other label, and holds at
// most one partial line (maxKeyLogLine bytes) at a time. It never returns
// an error: crypto/tls aborts the handshake on a key log write error, and a
// line KeyLog cannot use must not cost the connection; Conn then reports
// ErrNoSecrets and the caller keeps crypto/tls for that connection.
//
// A KeyLog is used by one handshake at a time and is not safe for
// concurrent use (crypto/tls serializes all key log writes with one global
// mutex anyway).
type KeyLog struct {
	line     [maxKeyLogLine]byte
	n        int
	overlong bool // the current line outgrew line: skip to its newline
	bad      bool // a line with one of our labels did not parse

	random         [randomLen]byte
	haveRandom     bool
	client, server [maxSecretLen]byte
	clientLen      uint8
	serverLen      uint8
}

// Write buffers p and parses each complete line.
func (k *KeyLog) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if !k.overlong {
			if k.n+len(chunk) > len(k.line) {
				k.overlong = true
			} else {
				k.n += copy(k.line[k.n:], chunk)
			}
		}
		if i < 0 {
			break
		}
		if !k.overlong {
			k.parse(k.line[:k.n])
		}
		clear(k.line[:k.n]) // the line held a secret in hex
		k.n, k.overlong = 0, false
		p = p[i+1:]
	}
	return n, nil
}

// parse takes one line without its newline.
func (k *KeyLog) parse(line []byte) {
	label, rest, ok := bytes.Cut(line, []byte{' '})
	if !ok {
		return
	}
	var dst *[maxSecretLen]byte
	var dstLen *uint8
	switch string(label) {
	case labelClientTraffic:
		dst, dstLen = &k.client, &k.clientLen
	case labelServerTraffic:
		dst, dstLen = &k.server, &k.serverLen
	default:
		return
	}
	rnd, secret, ok := bytes.Cut(rest, []byte{' '})
	var r [randomLen]byte
	if !ok || len(rnd) != 2*randomLen || (len(secret) != 64 && len(secret) != 2*maxSecretLen) {
		k.bad = true
		return
	}
	if _, err := hex.Decode(r[:], rnd); err != nil {
		k.bad = true
		return
	}
	// Every line of one handshake carries the same client random; two
	// randoms mean the KeyLog was shared between connections.
	if k.haveRandom && r != k.random {
		k.bad = true
		return
	}
	k.random, k.haveRandom = r, true
	m, err := hex.Decode(dst[:], secret)
	if err != nil {
		clear(dst[:])
		k.bad = true
		return
	}
	*dstLen = uint8(m)
}

// Conn builds the record layer from the captured secrets, for the role
// this side played and the suite crypto/tls negotiated
// (tls.ConnectionState().CipherSuite), then wipes the KeyLog. It returns
// ErrNoSecrets when the handshake did not log both TLS 1.3 application
// traffic secrets (TLS 1.2, an unfinished handshake, a line that did not
// parse), and New's errors.
func (k *KeyLog) Conn(role Role, suiteID uint16) (*Conn, error) {
	defer k.Wipe()
	if k.bad || k.clientLen == 0 || k.serverLen == 0 {
		return nil, ErrNoSecrets
	}
	client, server := k.client[:k.clientLen], k.server[:k.serverLen]
	if role == Client {
		return New(role, suiteID, server, client)
	}
	return New(role, suiteID, client, server)
}

// Wipe forgets everything captured.
func (k *KeyLog) Wipe() {
	*k = KeyLog{}
}
