package ws

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Vectors from shared/protocol-notes.md §9.2.
func TestFrameVectors(t *testing.T) {
	hello := []byte("Hello")
	cases := []struct {
		name string
		h    Header
		body []byte
		want string
	}{
		{"server text", Header{Fin: true, Op: OpText, Length: 5}, hello, "81 05 48 65 6c 6c 6f"},
		{"server ping", Header{Fin: true, Op: OpPing, Length: 5}, hello, "89 05 48 65 6c 6c 6f"},
		{"server binary 256", Header{Fin: true, Op: OpBinary, Length: 256}, nil, "82 7e 01 00"},
		{"server binary 65536", Header{Fin: true, Op: OpBinary, Length: 65536}, nil, "82 7f 00 00 00 00 00 01 00 00"},
		{"client text masked", Header{Fin: true, Op: OpText, Masked: true, Key: [4]byte{0x37, 0xfa, 0x21, 0x3d}, Length: 5}, nil, "81 85 37 fa 21 3d"},
	}
	for _, c := range cases {
		got := AppendHeader(nil, c.h)
		got = append(got, c.body...)
		if want := unhex(t, c.want); !bytes.Equal(got, want) {
			t.Errorf("%s: got % x, want % x", c.name, got, want)
		}
		h, n, err := ParseHeader(got)
		if err != nil || n != HeaderSize(c.h.Length, c.h.Masked) || h != c.h {
			t.Errorf("%s: parse = %+v, %d, %v", c.name, h, n, err)
		}
	}
	// The client frame of §9.2 unmasks to "Hello".
	d := NewDecoder(Server, 0)
	ev, n, err := d.Next(unhex(t, "81 85 37 fa 21 3d 7f 9f 4d 51 58"))
	if err != nil || n != 11 || ev.Kind != EventData || !ev.End || string(ev.Payload) != "Hello" {
		t.Fatalf("decode masked Hello: %+v %d %v", ev, n, err)
	}
	// go-libp2p's close and our echo of it.
	if got := AppendClose(nil, Server, CloseNormal, ""); !bytes.Equal(got, unhex(t, "88 02 03 e8")) {
		t.Errorf("close echo = % x", got)
	}
	if got := AppendClose(nil, Server, CloseNoStatus, ""); !bytes.Equal(got, unhex(t, "88 00")) {
		t.Errorf("empty close = % x", got)
	}
}

func TestParseHeaderTruncatedPrefixes(t *testing.T) {
	for _, l := range []int64{0, 125, 126, 65535, 65536, 1 << 40} {
		for _, masked := range []bool{false, true} {
			full := AppendHeader(nil, Header{Fin: true, Op: OpBinary, Masked: masked, Key: [4]byte{1, 2, 3, 4}, Length: l})
			for i := 0; i < len(full); i++ {
				if _, _, err := ParseHeader(full[:i]); err != ErrNeedMore {
					t.Fatalf("len %d masked %v prefix %d: err %v, want ErrNeedMore", l, masked, i, err)
				}
			}
		}
	}
}

func TestLengthMSB(t *testing.T) {
	b := unhex(t, "82 ff 80 00 00 00 00 00 00 00 01 02 03 04")
	if _, _, err := ParseHeader(b); err != ErrLengthMSB {
		t.Fatalf("err = %v, want ErrLengthMSB", err)
	}
}

// feed runs b through d in pieces chosen by split and collects the events,
// joining data payloads per message.
type collected struct {
	msgs   []string
	ops    []Opcode
	pings  []string
	pongs  []string
	closes []CloseCode
	err    error
}

func feed(d *Decoder, b []byte, split func(rest int) int) collected {
	var c collected
	var cur []byte
	b = bytes.Clone(b)
	for len(b) > 0 {
		k := split(len(b))
		chunk := b[:k]
		b = b[k:]
		for len(chunk) > 0 {
			ev, n, err := d.Next(chunk)
			chunk = chunk[n:]
			if err != nil {
				c.err = err
				return c
			}
			switch ev.Kind {
			case EventData:
				cur = append(cur, ev.Payload...)
				if ev.End {
					c.msgs = append(c.msgs, string(cur))
					c.ops = append(c.ops, ev.Op)
					cur = nil
				}
			case EventPing:
				c.pings = append(c.pings, string(ev.Payload))
			case EventPong:
				c.pongs = append(c.pongs, string(ev.Payload))
			case EventClose:
				c.closes = append(c.closes, ev.Code)
				return c
			}
			if n == 0 && ev.Kind == EventNone {
				panic("no progress")
			}
		}
	}
	return c
}

func clientFrame(fin bool, op Opcode, p []byte) []byte {
	return AppendFrame(nil, Client, fin, op, p)
}

// A stream of fragmented messages with interleaved control frames, decoded
// in one piece, one byte at a time and in random pieces, gives the same events.
func TestDecoderSplitsEqualOneShot(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789"), 7000)
	var s []byte
	s = append(s, clientFrame(true, OpText, []byte("Hello"))...)
	s = append(s, clientFrame(false, OpText, []byte("κόσ"))...)
	s = append(s, clientFrame(true, OpPing, []byte("p1"))...)
	s = append(s, clientFrame(false, OpContinuation, []byte("με"))...)
	s = append(s, clientFrame(true, OpPong, nil)...)
	s = append(s, clientFrame(true, OpContinuation, nil)...)
	s = append(s, clientFrame(true, OpBinary, big)...)
	s = append(s, clientFrame(true, OpBinary, nil)...)
	s = append(s, clientFrame(true, OpPing, bytes.Repeat([]byte{'x'}, 125))...)
	s = append(s, AppendClose(nil, Client, CloseNormal, "bye")...)

	check := func(name string, c collected) {
		t.Helper()
		if c.err != nil {
			t.Fatalf("%s: %v", name, c.err)
		}
		want := []string{"Hello", "κόσμε", string(big), ""}
		if len(c.msgs) != len(want) {
			t.Fatalf("%s: %d messages", name, len(c.msgs))
		}
		for i := range want {
			if c.msgs[i] != want[i] {
				t.Fatalf("%s: message %d differs", name, i)
			}
		}
		if c.ops[0] != OpText || c.ops[1] != OpText || c.ops[2] != OpBinary {
			t.Fatalf("%s: ops %v", name, c.ops)
		}
		if len(c.pings) != 2 || c.pings[0] != "p1" || len(c.pings[1]) != 125 || len(c.pongs) != 1 {
			t.Fatalf("%s: pings %q pongs %q", name, c.pings, c.pongs)
		}
		if len(c.closes) != 1 || c.closes[0] != CloseNormal {
			t.Fatalf("%s: closes %v", name, c.closes)
		}
	}
	d := NewDecoder(Server, 0)
	check("one shot", feed(&d, s, func(r int) int { return r }))
	d = NewDecoder(Server, 0)
	check("bytewise", feed(&d, s, func(int) int { return 1 }))
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 50; i++ {
		d = NewDecoder(Server, 0)
		check("random", feed(&d, s, func(r int) int { return 1 + rng.IntN(min(r, 300)) }))
	}
}

func TestDecoderFailures(t *testing.T) {
	type tc struct {
		name string
		role Role
		in   []byte
		want error
	}
	raw := func(b ...byte) []byte { return b }
	cases := []tc{
		{"unmasked client frame", Server, raw(0x82, 0x01, 'x'), ErrUnmaskedFrame},
		{"masked server frame", Client, raw(0x82, 0x81, 1, 2, 3, 4, 'x'), ErrMaskedFrame},
		{"rsv1", Server, raw(0xc2, 0x80, 0, 0, 0, 0), ErrReservedBits},
		{"rsv3", Server, raw(0x92, 0x80, 0, 0, 0, 0), ErrReservedBits},
		{"opcode 3", Server, raw(0x83, 0x80, 0, 0, 0, 0), ErrReservedOpcode},
		{"opcode 7", Server, raw(0x87, 0x80, 0, 0, 0, 0), ErrReservedOpcode},
		{"opcode B", Server, raw(0x8b, 0x80, 0, 0, 0, 0), ErrReservedOpcode},
		{"opcode F", Server, raw(0x8f, 0x80, 0, 0, 0, 0), ErrReservedOpcode},
		{"ping 126", Server, clientFrame(true, OpPing, make([]byte, 126)), ErrControlTooLong},
		{"fragmented ping", Server, clientFrame(false, OpPing, nil), ErrControlFragmented},
		{"continuation first", Server, clientFrame(true, OpContinuation, []byte("x")), ErrUnexpectedCont},
		{"text mid-fragment", Server, append(clientFrame(false, OpText, []byte("a")), clientFrame(true, OpText, []byte("b"))...), ErrExpectedCont},
		{"close 1 byte", Server, clientFrame(true, OpClose, []byte{3}), ErrCloseBody},
		{"bad utf8", Server, clientFrame(true, OpText, []byte{0xce, 0xba, 0xff}), ErrInvalidUTF8},
		{"truncated utf8 at end", Server, clientFrame(true, OpText, []byte{0xce}), ErrInvalidUTF8},
		{"bad utf8 across fragments", Server, append(clientFrame(false, OpText, []byte{0xce}), clientFrame(true, OpContinuation, []byte{0x41})...), ErrInvalidUTF8},
		{"bad close reason", Server, clientFrame(true, OpClose, []byte{3, 0xe8, 0xff}), ErrCloseReasonUTF8},
		{"length msb", Server, raw(0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4), ErrLengthMSB},
	}
	for _, code := range []uint16{0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535} {
		cases = append(cases, tc{"close code", Server, clientFrame(true, OpClose, []byte{byte(code >> 8), byte(code)}), ErrCloseCode})
	}
	for _, c := range cases {
		for _, bytewise := range []bool{false, true} {
			d := NewDecoder(c.role, 0)
			got := feed(&d, c.in, func(r int) int {
				if bytewise {
					return 1
				}
				return r
			})
			if !errors.Is(got.err, c.want) {
				t.Errorf("%s (bytewise %v): err %v, want %v", c.name, bytewise, got.err, c.want)
			}
			var pe *ProtocolError
			if !errors.As(got.err, &pe) || pe.Code == 0 {
				t.Errorf("%s: not a ProtocolError with a code: %v", c.name, got.err)
			}
		}
	}
	for _, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 4999} {
		d := NewDecoder(Server, 0)
		got := feed(&d, clientFrame(true, OpClose, []byte{byte(code >> 8), byte(code), 'o', 'k'}), func(r int) int { return r })
		if got.err != nil || len(got.closes) != 1 || got.closes[0] != CloseCode(code) {
			t.Errorf("close %d: %+v", code, got)
		}
	}
}

// Fail fast: the invalid byte is detected in the fragment that carries it,
// before the rest of the message arrives (Autobahn 6.4).
func TestUTF8FailFast(t *testing.T) {
	d := NewDecoder(Server, 0)
	in := clientFrame(false, OpText, []byte("κόσμε\xf4\x90")) // U+110000 and above: never valid
	got := feed(&d, in, func(r int) int { return r })
	if got.err != ErrInvalidUTF8 {
		t.Fatalf("err %v, want ErrInvalidUTF8 before the message ends", got.err)
	}
}

func TestMessageLimit(t *testing.T) {
	d := NewDecoder(Server, 100)
	in := append(clientFrame(false, OpBinary, make([]byte, 60)), clientFrame(true, OpContinuation, make([]byte, 41))...)
	if got := feed(&d, in, func(r int) int { return r }); got.err != ErrMessageTooBig {
		t.Fatalf("err %v, want ErrMessageTooBig", got.err)
	}
	d = NewDecoder(Server, 100)
	in = append(clientFrame(false, OpBinary, make([]byte, 60)), clientFrame(true, OpContinuation, make([]byte, 40))...)
	if got := feed(&d, in, func(r int) int { return r }); got.err != nil || len(got.msgs) != 1 {
		t.Fatalf("at the limit: %+v", got)
	}
	// The limit is checked from the header, before any payload is read.
	d = NewDecoder(Server, 100)
	hdr := AppendHeader(nil, Header{Fin: true, Op: OpBinary, Masked: true, Length: 1 << 40})
	if _, _, err := d.Next(hdr); err != ErrMessageTooBig {
		t.Fatalf("huge header: err %v", err)
	}
}

func TestUTF8ValidatorMatchesStdlib(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	alphabet := []string{"a", "é", "€", "𝄞", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc0\xaf", "\xe0\x80\xaf", "\xff", "\x80", "\xf0\x9f", "\xe2\x82"}
	for i := 0; i < 5000; i++ {
		var msg []byte
		for j := rng.IntN(8); j >= 0; j-- {
			msg = append(msg, alphabet[rng.IntN(len(alphabet))]...)
		}
		var v UTF8Validator
		ok := true
		for rest := msg; len(rest) > 0 && ok; {
			k := 1 + rng.IntN(len(rest))
			ok = v.Write(rest[:k])
			rest = rest[k:]
		}
		ok = ok && v.Done()
		if ok != utf8.Valid(msg) {
			t.Fatalf("% x: validator %v, utf8.Valid %v", msg, ok, utf8.Valid(msg))
		}
	}
}

func FuzzDecoder(f *testing.F) {
	f.Add(clientFrame(true, OpText, []byte("Hello")), uint8(3))
	f.Add(append(clientFrame(false, OpBinary, []byte("ab")), clientFrame(true, OpContinuation, []byte("cd"))...), uint8(1))
	f.Add(clientFrame(true, OpPing, []byte("ping")), uint8(2))
	f.Add(AppendClose(nil, Client, CloseGoingAway, "bye"), uint8(5))
	f.Add(AppendHeader(nil, Header{Fin: true, Op: OpBinary, Masked: true, Length: 70000}), uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		one := NewDecoder(Server, 1<<16)
		a := feed(&one, in, func(r int) int { return r })
		pieces := NewDecoder(Server, 1<<16)
		b := feed(&pieces, in, func(r int) int { return min(r, int(step)+1) })
		// Splitting the input never changes the outcome.
		if (a.err == nil) != (b.err == nil) || len(a.msgs) != len(b.msgs) || len(a.closes) != len(b.closes) || len(a.pings) != len(b.pings) {
			t.Fatalf("one-shot %+v vs pieces %+v", a, b)
		}
		for i := range a.msgs {
			if a.msgs[i] != b.msgs[i] {
				t.Fatalf("message %d differs", i)
			}
		}
	})
}
