package tls13

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
)

// keyLogLines is what crypto/tls writes for one TLS 1.3 handshake, in its
// format ("%s %x %x\n"), for secrets of n bytes.
func keyLogLines(random byte, n int) (lines string, client, server []byte) {
	r := bytes.Repeat([]byte{random}, randomLen)
	client, server = bytes.Repeat([]byte{0xc1}, n), bytes.Repeat([]byte{0x5e}, n)
	hs := bytes.Repeat([]byte{0x77}, n)
	for _, l := range []struct {
		label  string
		secret []byte
	}{
		{"CLIENT_HANDSHAKE_TRAFFIC_SECRET", hs},
		{"SERVER_HANDSHAKE_TRAFFIC_SECRET", hs},
		{labelClientTraffic, client},
		{labelServerTraffic, server},
	} {
		lines += fmt.Sprintf("%s %x %x\n", l.label, r, l.secret)
	}
	return lines, client, server
}

func TestKeyLogCapture(t *testing.T) {
	for _, n := range []int{32, 48} {
		lines, client, server := keyLogLines(7, n)
		id := uint16(tls.TLS_AES_128_GCM_SHA256)
		if n == 48 {
			id = tls.TLS_AES_256_GCM_SHA384
		}
		// Whole lines, and the same bytes cut at every size.
		for _, chunk := range []int{0, 1, 2, 3, 7, 64, 199, 1000} {
			var k KeyLog
			b := []byte(lines)
			for len(b) > 0 {
				m := min(len(b), max(chunk, 1))
				if chunk == 0 {
					m = bytes.IndexByte(b, '\n') + 1
				}
				if w, err := k.Write(b[:m]); err != nil || w != m {
					t.Fatalf("Write: %d %v", w, err)
				}
				b = b[m:]
			}
			if k.n != 0 || k.line != [maxKeyLogLine]byte{} {
				t.Fatal("a parsed line stayed in the buffer")
			}
			if !bytes.Equal(k.client[:k.clientLen], client) || !bytes.Equal(k.server[:k.serverLen], server) {
				t.Fatalf("chunk %d: captured %x / %x", chunk, k.client[:k.clientLen], k.server[:k.serverLen])
			}
			c, err := k.Conn(Server, id)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(c.r.secret[:n], client) || !bytes.Equal(c.w.secret[:n], server) {
				t.Fatal("server role: read must be the client's secret, write the server's")
			}
			if k != (KeyLog{}) {
				t.Fatal("Conn did not wipe the KeyLog")
			}
		}
		var k KeyLog
		k.Write([]byte(lines))
		c, err := k.Conn(Client, id)
		if err != nil || !bytes.Equal(c.r.secret[:n], server) || !bytes.Equal(c.w.secret[:n], client) {
			t.Fatal("client role: read must be the server's secret, write the client's", err)
		}
	}
}

func TestKeyLogRefuses(t *testing.T) {
	lines, _, _ := keyLogLines(7, 32)
	other, _, _ := keyLogLines(8, 32)
	for _, c := range []struct{ name, in string }{
		{"nothing", ""},
		{"TLS 1.2", "CLIENT_RANDOM " + strings.Repeat("ab", 32) + " " + strings.Repeat("cd", 48) + "\n"},
		{"client secret only", strings.SplitAfter(lines, "\n")[2]},
		{"unterminated last line", strings.TrimSuffix(lines, "\n")},
		{"two connections", strings.Join(strings.SplitAfter(lines, "\n")[:3], "") + strings.SplitAfter(other, "\n")[3]},
		{"bad hex", strings.Replace(lines, labelServerTraffic+" 07", labelServerTraffic+" zz", 1)},
		{"short secret", strings.Replace(lines, strings.Repeat("5e", 32), strings.Repeat("5e", 31), 1)},
		{"no secret", labelClientTraffic + " " + strings.Repeat("07", 32) + "\n"},
		{"overlong line", labelClientTraffic + " " + strings.Repeat("07", 32) + " " + strings.Repeat("c1", 200) + "\n" + strings.SplitAfter(lines, "\n")[3]},
	} {
		var k KeyLog
		if n, err := k.Write([]byte(c.in)); err != nil || n != len(c.in) {
			t.Fatalf("%s: Write %d %v: KeyLog must never fail a handshake", c.name, n, err)
		}
		if _, err := k.Conn(Server, tls.TLS_AES_128_GCM_SHA256); err != ErrNoSecrets {
			t.Errorf("%s: %v, want ErrNoSecrets", c.name, err)
		}
	}
	// Captured, but for another suite's hash.
	var k KeyLog
	k.Write([]byte(lines))
	if _, err := k.Conn(Server, tls.TLS_AES_256_GCM_SHA384); err != ErrSecretLength {
		t.Errorf("SHA-256 secrets for a SHA-384 suite: %v", err)
	}
	// An overlong line is skipped, and the next one still parses.
	k = KeyLog{}
	k.Write([]byte(strings.Repeat("x", 3*maxKeyLogLine) + "\n" + lines))
	if _, err := k.Conn(Server, tls.TLS_AES_128_GCM_SHA256); err != nil {
		t.Errorf("after an overlong line: %v", err)
	}
}
