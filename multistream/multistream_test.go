package multistream

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	multistream "github.com/multiformats/go-multistream"
)

func msHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// protocol-notes §9.3.
var msVectors = []struct{ text, hex string }{
	{"/multistream/1.0.0", "13 2f6d756c746973747265616d2f312e302e30 0a"},
	{"/noise", "07 2f6e6f697365 0a"},
	{"/tls/1.0.0", "0b 2f746c732f312e302e30 0a"},
	{"/yamux/1.0.0", "0d 2f79616d75782f312e302e30 0a"},
	{"/ipfs/id/1.0.0", "0f 2f697066732f69642f312e302e30 0a"},
	{"/ipfs/id/push/1.0.0", "14 2f697066732f69642f707573682f312e302e30 0a"},
	{"/ipfs/ping/1.0.0", "11 2f697066732f70696e672f312e302e30 0a"},
	{"na", "03 6e61 0a"},
	{"ls", "03 6c73 0a"},
}

func TestMultistreamVectors(t *testing.T) {
	for _, v := range msVectors {
		want := msHex(t, v.hex)
		if got := AppendMessage(nil, v.text); !bytes.Equal(got, want) {
			t.Errorf("Append(%q) = %x, want %x", v.text, got, want)
		}
		text, n, err := ParseMessage(append(want, 0xff))
		if err != nil || n != len(want) || string(text) != v.text {
			t.Errorf("Parse(%x) = %q, %d, %v", want, text, n, err)
		}
		for i := range want {
			if _, _, err := ParseMessage(want[:i]); err != ErrNeedMore {
				t.Errorf("Parse(prefix %d of %q) err = %v, want ErrNeedMore", i, v.text, err)
			}
		}
	}
	// Longest legal message: 1023 bytes of text + newline, 2-byte prefix.
	long := strings.Repeat("a", MaxMessage-1)
	enc := AppendMessage(nil, long)
	for i := range enc {
		if _, _, err := ParseMessage(enc[:i]); err != ErrNeedMore {
			t.Fatalf("prefix %d: %v", i, err)
		}
	}
	if text, n, err := ParseMessage(enc); err != nil || n != len(enc) || string(text) != long {
		t.Fatalf("max message: %d %v", n, err)
	}
}

func TestMultistreamParseErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		in   string
		want error
	}{
		{"zero length", "00", ErrMalformed},
		{"no newline", "03 6e6161", ErrMalformed},
		{"length 1025", "8108" + strings.Repeat("61", 1024) + "0a", ErrTooLarge},
		{"length 1025 before body", "8108", ErrTooLarge},
		{"3-byte varint", "808001", ErrTooLarge},
		{"3-byte varint early", "8080", ErrTooLarge},
		{"non-minimal varint", "8300 6e61 0a", ErrMalformed},
	} {
		_, _, err := ParseMessage(msHex(t, c.in))
		if err != c.want {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
		var me *Error
		if !errors.As(err, &me) || me.Reason() == "" {
			t.Errorf("%s: %v has no reason", c.name, err)
		}
	}
}

var msTestProtos, _ = NewProtocols("/noise", "/yamux/1.0.0")

// msFeed drives a listener with in split into pieces of the given sizes
// (cycled; 0 means all at once), re-presenting unconsumed bytes like the
// engine does, and returns everything written, the leftover bytes and the
// error.
func msFeed(l *Listener, out, in []byte, chunk int) (_, rest []byte, err error) {
	var buf []byte
	if chunk == 0 {
		chunk = len(in) + 1
	}
	for len(in) > 0 || len(buf) > 0 {
		k := min(chunk, len(in))
		buf = append(buf, in[:k]...)
		in = in[k:]
		var n int
		out, n, err = l.Input(out, buf)
		buf = buf[n:]
		if err != nil {
			return out, append(buf, in...), err
		}
		if l.Done() || k == 0 {
			return out, append(buf, in...), nil
		}
	}
	return out, buf, nil
}

func TestMultistreamListenerScenarios(t *testing.T) {
	hdr := AppendMessage(nil, ProtocolID)
	msg := func(s ...string) []byte {
		var b []byte
		for _, x := range s {
			b = AppendMessage(b, x)
		}
		return b
	}
	noiseMsg1 := append([]byte{0, 32}, bytes.Repeat([]byte{7}, 32)...)
	cases := []struct {
		name    string
		eager   bool
		in      []byte
		out     []byte
		proto   string
		rest    []byte
		wantErr error
	}{
		{"go default dialer", true, msg(ProtocolID, "/tls/1.0.0", "/noise"),
			msg(ProtocolID, "na", "/noise"), "/noise", nil, nil},
		{"js-style lazy header", false, msg(ProtocolID, "/noise"),
			msg(ProtocolID, "/noise"), "/noise", nil, nil},
		{"rust V1Lazy with noise msg1", true, append(msg(ProtocolID, "/noise"), noiseMsg1...),
			msg(ProtocolID, "/noise"), "/noise", noiseMsg1, nil},
		{"ls then proposal", true, msg(ProtocolID, "ls", "/yamux/1.0.0"),
			append(append(hdr, msHex(t, "17 07 2f6e6f697365 0a 0d 2f79616d75782f312e302e30 0a 0a")...), msg("/yamux/1.0.0")...),
			"/yamux/1.0.0", nil, nil},
		{"repeated header is na", true, msg(ProtocolID, ProtocolID, "/noise"),
			msg(ProtocolID, "na", "/noise"), "/noise", nil, nil},
		{"first message not header", true, msg("/noise"), hdr, "", nil, ErrBadHeader},
		{"garbage", true, []byte("GET / HTTP/1.1\r\n" + strings.Repeat("x", 80)), hdr, "", nil, ErrMalformed},
	}
	for _, c := range cases {
		for _, chunk := range []int{0, 1, 2, 3, 7} {
			var l Listener
			l.Reset(msTestProtos)
			var out []byte
			if c.eager {
				out = l.Start(out)
			}
			out, rest, err := msFeed(&l, out, c.in, chunk)
			if err != c.wantErr {
				t.Errorf("%s/%d: err = %v, want %v", c.name, chunk, err, c.wantErr)
				continue
			}
			if !bytes.Equal(out, c.out) {
				t.Errorf("%s/%d: out = %q, want %q", c.name, chunk, out, c.out)
			}
			if err == nil && (l.Protocol() != c.proto || msTestProtos.ids[l.Selected()] != c.proto || !bytes.Equal(rest, c.rest)) {
				t.Errorf("%s/%d: proto %q rest %x", c.name, chunk, l.Protocol(), rest)
			}
		}
	}
}

func TestMultistreamListenerTooManyProposals(t *testing.T) {
	var l Listener
	l.Reset(msTestProtos)
	in := AppendMessage(nil, ProtocolID)
	for range MaxProposals + 1 {
		in = AppendMessage(in, "/nope")
	}
	_, _, err := l.Input(nil, in)
	if err != ErrTooManyProposals {
		t.Fatalf("err = %v", err)
	}
	if _, _, err := l.Input(nil, in); err != ErrTooManyProposals {
		t.Fatalf("sticky err = %v", err)
	}
}

func TestMultistreamDialer(t *testing.T) {
	d, err := NewDialer("/tls/1.0.0", "/noise")
	if err != nil {
		t.Fatal(err)
	}
	out := d.Start(nil)
	if want := msHex(t, "132f6d756c746973747265616d2f312e302e300a 0b2f746c732f312e302e300a"); !bytes.Equal(out, want) {
		t.Fatalf("start = %x", out)
	}
	in := msHex(t, "132f6d756c746973747265616d2f312e302e300a 036e610a")
	in = append(in, msHex(t, "072f6e6f6973650a 00")...)
	for i := 1; i <= len(in); i++ { // byte at a time, re-presenting leftovers
		d2, _ := NewDialer("/tls/1.0.0", "/noise")
		var got []byte
		var buf []byte
		for j := range in {
			buf = append(buf, in[j])
			var n int
			got, n, err = d2.Input(got, buf)
			if err != nil {
				t.Fatal(err)
			}
			buf = buf[n:]
		}
		if !d2.Done() || d2.Protocol() != "/noise" || !bytes.Equal(buf, []byte{0}) || !bytes.Equal(got, msHex(t, "072f6e6f6973650a")) {
			t.Fatalf("done=%v proto=%q rest=%x out=%x", d2.Done(), d2.Protocol(), buf, got)
		}
		break
	}
	d3, _ := NewDialer("/noise")
	d3.Start(nil)
	if _, _, err := d3.Input(nil, msHex(t, "132f6d756c746973747265616d2f312e302e300a 036e610a")); err != ErrNotSupported {
		t.Fatalf("na: %v", err)
	}
	d4, _ := NewDialer("/noise")
	if _, _, err := d4.Input(nil, msHex(t, "132f6d756c746973747265616d2f312e302e300a 036e6f0a")); err != ErrUnexpected {
		t.Fatalf("unexpected: %v", err)
	}
	if _, err := NewDialer("bad\nproto"); err != ErrBadProtocol {
		t.Fatalf("bad proto: %v", err)
	}
}

// msServe runs a listener over conn like the engine would, returning the
// selected protocol and the connection with leftover bytes in front.
func msServe(conn net.Conn, protos *Protocols) (string, []byte, error) {
	var l Listener
	l.Reset(protos)
	if _, err := conn.Write(l.Start(nil)); err != nil {
		return "", nil, err
	}
	var buf []byte
	tmp := make([]byte, 4096)
	for !l.Done() {
		n, err := conn.Read(tmp)
		if err != nil {
			return "", nil, err
		}
		buf = append(buf, tmp[:n]...)
		out, c, err := l.Input(nil, buf)
		buf = buf[c:]
		if len(out) > 0 {
			if _, werr := conn.Write(out); werr != nil {
				return "", nil, werr
			}
		}
		if err != nil {
			return "", nil, err
		}
	}
	return l.Protocol(), buf, nil
}

func TestMultistreamInteropGoDialer(t *testing.T) {
	protos, _ := NewProtocols("/noise", "/ipfs/ping/1.0.0")
	type res struct {
		proto string
		rest  []byte
		err   error
	}
	run := func(t *testing.T, client func(net.Conn) error, wantProto string, wantRest []byte) {
		c, s := net.Pipe()
		defer c.Close()
		defer s.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_ = s.SetDeadline(time.Now().Add(5 * time.Second))
		ch := make(chan res, 1)
		go func() {
			p, rest, err := msServe(s, protos)
			// Read the lazily sent application bytes that did not arrive
			// with the proposal.
			for err == nil && len(rest) < len(wantRest) {
				tmp := make([]byte, 64)
				var n int
				n, err = s.Read(tmp)
				rest = append(rest, tmp[:n]...)
			}
			ch <- res{p, rest, err}
		}()
		if err := client(c); err != nil {
			t.Fatal(err)
		}
		r := <-ch
		if r.err != nil || r.proto != wantProto || !bytes.Equal(r.rest, wantRest) {
			t.Fatalf("server: %q %q %v", r.proto, r.rest, r.err)
		}
	}
	t.Run("SelectProtoOrFail", func(t *testing.T) {
		run(t, func(c net.Conn) error { return multistream.SelectProtoOrFail("/noise", c) }, "/noise", nil)
	})
	t.Run("SelectOneOf", func(t *testing.T) {
		run(t, func(c net.Conn) error {
			p, err := multistream.SelectOneOf([]string{"/tls/1.0.0", "/noise"}, c)
			if err == nil && p != "/noise" {
				err = errors.New("selected " + p)
			}
			return err
		}, "/noise", nil)
	})
	t.Run("lazy NewMSSelect", func(t *testing.T) {
		ping := bytes.Repeat([]byte{0xab}, 32)
		run(t, func(c net.Conn) error {
			lc := multistream.NewMSSelect(c, "/ipfs/ping/1.0.0")
			if _, err := lc.Write(ping); err != nil {
				return err
			}
			// Reading completes the lazy handshake (header + echo).
			_, err := lc.Read(make([]byte, 0))
			return err
		}, "/ipfs/ping/1.0.0", ping)
	})
	t.Run("lazy unsupported", func(t *testing.T) {
		c, s := net.Pipe()
		defer c.Close()
		go func() { _, _, _ = msServe(s, protos); s.Close() }()
		lc := multistream.NewMSSelect(c, "/unknown/1.0.0")
		go func() { _, _ = lc.Write([]byte("x")) }()
		_, err := lc.Read(make([]byte, 1))
		if !errors.Is(err, multistream.ErrNotSupported[string]{}) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestMultistreamInteropGoListener(t *testing.T) {
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	mux := multistream.NewMultistreamMuxer[string]()
	mux.AddHandler("/yamux/1.0.0", nil)
	done := make(chan error, 1)
	go func() {
		p, _, err := mux.Negotiate(s)
		if err == nil && p != "/yamux/1.0.0" {
			err = errors.New("negotiated " + p)
		}
		if err == nil {
			_, err = s.Write([]byte("after"))
		}
		done <- err
	}()
	d, _ := NewDialer("/mplex/6.7.0", "/yamux/1.0.0")
	go func() { _, _ = c.Write(d.Start(nil)) }()
	var buf []byte
	tmp := make([]byte, 1)
	for !d.Done() {
		n, err := c.Read(tmp) // one byte at a time
		if err != nil {
			t.Fatal(err)
		}
		buf = append(buf, tmp[:n]...)
		out, k, err := d.Input(nil, buf)
		if err != nil {
			t.Fatal(err)
		}
		buf = buf[k:]
		if len(out) > 0 {
			go func() { _, _ = c.Write(out) }()
		}
	}
	if d.Protocol() != "/yamux/1.0.0" {
		t.Fatalf("proto %q", d.Protocol())
	}
	rest, err := io.ReadAll(io.LimitReader(c, 5))
	if err != nil || string(append(buf, rest...)) != "after" {
		t.Fatalf("rest %q %v", rest, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func FuzzMultistreamMessage(f *testing.F) {
	for _, v := range msVectors {
		f.Add(AppendMessage(nil, v.text))
	}
	f.Add(appendLS(nil, []string{"/noise", "/yamux/1.0.0"}))
	f.Add(AppendMessage(nil, strings.Repeat("x", MaxMessage-1)))
	f.Add([]byte{0x81, 0x08})
	f.Fuzz(func(t *testing.T, b []byte) {
		text, n, err := ParseMessage(b)
		if err != nil {
			if text != nil || n != 0 {
				t.Fatal("data with error")
			}
			if err == ErrNeedMore {
				// A short buffer must stay short or become valid/invalid
				// only with more bytes: every prefix is short too.
				for i := range b {
					if _, _, e := ParseMessage(b[:i]); e != ErrNeedMore {
						t.Fatalf("prefix %d of short input: %v", i, e)
					}
				}
			}
			return
		}
		if len(text) >= MaxMessage {
			t.Fatalf("text of %d bytes", len(text))
		}
		if re := AppendMessage(nil, string(text)); !bytes.Equal(re, b[:n]) {
			t.Fatalf("re-encoded %x != %x", re, b[:n])
		}
		// A listener fed the same bytes one at a time and all at once ends
		// in the same state.
		in := append(AppendMessage(nil, ProtocolID), b...)
		var l1, l2 Listener
		l1.Reset(msTestProtos)
		l2.Reset(msTestProtos)
		o1, r1, e1 := msFeed(&l1, nil, in, 0)
		o2, r2, e2 := msFeed(&l2, nil, in, 1)
		if e1 != e2 || !bytes.Equal(o1, o2) || !bytes.Equal(r1, r2) || l1.Protocol() != l2.Protocol() {
			t.Fatalf("chunked differs: %v/%v %x/%x", e1, e2, o1, o2)
		}
	})
}
