package mux

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Vectors from protocol-notes §9.8 (go-yamux v4/v5 captures).
var headerVectors = []struct {
	hex  string
	want Header
}{
	{"00 01 0001 00000001 00000000", Header{TypeWindowUpdate, FlagSYN, 1, 0}},
	{"00 00 0000 00000001 00000002", Header{TypeData, 0, 1, 2}},
	{"00 01 0004 00000001 00000000", Header{TypeWindowUpdate, FlagFIN, 1, 0}},
	{"00 02 0001 00000000 00000000", Header{TypePing, FlagSYN, 0, 0}},
	{"00 01 0002 00000001 00000000", Header{TypeWindowUpdate, FlagACK, 1, 0}},
	{"00 01 0001 00000002 00000000", Header{TypeWindowUpdate, FlagSYN, 2, 0}},
	{"00 02 0002 00000000 00000000", Header{TypePing, FlagACK, 0, 0}},
	{"00 01 0000 00000001 00040000", Header{TypeWindowUpdate, 0, 1, 262144}},
	{"00 01 0008 00000003 00000000", Header{TypeWindowUpdate, FlagRST, 3, 0}},
	{"00 01 0008 00000003 00001001", Header{TypeWindowUpdate, FlagRST, 3, 0x1001}},
	{"00 03 0000 00000000 00000000", Header{TypeGoAway, 0, 0, 0}},
	{"00 03 0000 00000000 00000001", Header{TypeGoAway, 0, 0, 1}},
	{"00 00 ffff ffffffff ffffffff", Header{TypeData, 0xffff, 0xffffffff, 0xffffffff}},
}

func TestHeaderVectors(t *testing.T) {
	for _, v := range headerVectors {
		b := unhex(t, v.hex)
		h, n, err := ParseHeader(b)
		if err != nil || n != HeaderLen || h != v.want {
			t.Errorf("ParseHeader(%s) = %+v, %d, %v; want %+v", v.hex, h, n, err, v.want)
		}
		if got := AppendHeader(nil, v.want); !bytes.Equal(got, b) {
			t.Errorf("AppendHeader(%+v) = %x; want %x", v.want, got, b)
		}
		// Trailing bytes are left alone.
		h2, n2, err := ParseHeader(append(b, 0x68, 0x69))
		if err != nil || n2 != HeaderLen || h2 != v.want {
			t.Errorf("with trailer: %+v %d %v", h2, n2, err)
		}
		// Every truncated prefix is "need more", never an error.
		for i := range HeaderLen {
			if _, n, err := ParseHeader(b[:i]); n != 0 || err != ErrNeedMore {
				t.Errorf("prefix %d of %s: n=%d err=%v", i, v.hex, n, err)
			}
		}
	}
}

func TestHeaderAppendKeepsDst(t *testing.T) {
	dst := []byte("xyz")
	got := AppendHeader(dst, Header{TypePing, FlagACK, 0, 7})
	if string(got[:3]) != "xyz" || len(got) != 3+HeaderLen {
		t.Fatalf("got %x", got)
	}
}

func TestHeaderInvalid(t *testing.T) {
	for _, tc := range []struct {
		hex    string
		reason string
	}{
		{"01 00 0000 00000001 00000000", "bad_version"},
		{"ff 02 0001 00000000 00000000", "bad_version"},
		{"00 04 0000 00000001 00000000", "bad_type"},
		{"00 ff 0000 00000001 00000000", "bad_type"},
	} {
		_, n, err := ParseHeader(unhex(t, tc.hex))
		var e *Error
		if n != 0 || !errors.As(err, &e) || e.Reason != tc.reason || e.Code != CodeProtocolError {
			t.Errorf("%s: n=%d err=%v", tc.hex, n, err)
		}
		if !errors.Is(err, ErrSessionClosed) {
			t.Errorf("%s: *Error does not match ErrSessionClosed", tc.hex)
		}
	}
}

func FuzzHeader(f *testing.F) {
	for _, v := range headerVectors {
		f.Add(AppendHeader(nil, v.want))
	}
	f.Add([]byte{})
	f.Add([]byte{0, 5})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := ParseHeader(b)
		if len(b) < HeaderLen {
			if err != ErrNeedMore || n != 0 {
				t.Fatalf("short input: n=%d err=%v", n, err)
			}
			return
		}
		if err != nil {
			if n != 0 {
				t.Fatalf("error with n=%d", n)
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeProtocolError {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if n != HeaderLen {
			t.Fatalf("n=%d", n)
		}
		// Re-serialize and compare.
		if got := AppendHeader(nil, h); !bytes.Equal(got, b[:HeaderLen]) {
			t.Fatalf("round trip %x -> %+v -> %x", b[:HeaderLen], h, got)
		}
	})
}
