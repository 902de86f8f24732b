package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestUvarintRoundTrip(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 255, 300, 1 << 14, 1<<21 - 1, 1 << 32, 1<<63 - 1, 1<<64 - 1} {
		b := AppendUvarint(nil, v)
		if len(b) != UvarintLen(v) {
			t.Fatalf("%d: len %d, UvarintLen %d", v, len(b), UvarintLen(v))
		}
		if want := binary.AppendUvarint(nil, v); !bytes.Equal(b, want) {
			t.Fatalf("%d: %x, want %x", v, b, want)
		}
		got, n, err := ParseUvarint(b, MaxUvarintLen64)
		if err != nil || got != v || n != len(b) {
			t.Fatalf("%d: got %d %d %v", v, got, n, err)
		}
		for i := range len(b) {
			if _, _, err := ParseUvarint(b[:i], MaxUvarintLen64); err != ErrNeedMore {
				t.Fatalf("%d: prefix %d: %v, want ErrNeedMore", v, i, err)
			}
		}
	}
}

func TestUvarintRejects(t *testing.T) {
	cases := []struct {
		b      []byte
		maxLen int
		err    error
	}{
		{[]byte{0x81, 0x00}, 10, ErrUvarintNotMinimal},
		{[]byte{0x80, 0x80, 0x01}, 2, ErrUvarintTooLong},
		{bytes.Repeat([]byte{0xff}, 9), 10, ErrNeedMore},
		{append(bytes.Repeat([]byte{0xff}, 9), 0x02), 10, ErrUvarintTooLong},
	}
	for _, c := range cases {
		if _, _, err := ParseUvarint(c.b, c.maxLen); err != c.err {
			t.Errorf("%x max %d: %v, want %v", c.b, c.maxLen, err, c.err)
		}
	}
}

func TestDelimited(t *testing.T) {
	msg := bytes.Repeat([]byte{7}, 300)
	b := AppendDelimited(nil, msg)
	b = append(b, 0xaa) // the next message's first byte stays
	got, n, err := ParseDelimited(b, 4096)
	if err != nil || !bytes.Equal(got, msg) || n != len(b)-1 {
		t.Fatalf("got %d %v", n, err)
	}
	for i := range len(b) - 1 {
		if _, _, err := ParseDelimited(b[:i], 4096); err != ErrNeedMore {
			t.Fatalf("prefix %d: %v", i, err)
		}
	}
	if _, _, err := ParseDelimited(b, 299); err != ErrMessageTooLarge {
		t.Fatalf("over the limit: %v", err)
	}
	// A prefix longer than the limit's own encoding is refused before the
	// rest of it arrives.
	if _, _, err := ParseDelimited([]byte{0x80, 0x80}, 100); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("long prefix: %v", err)
	}
}

func FuzzParseDelimited(f *testing.F) {
	f.Add(AppendDelimited(nil, []byte("hello")), 16)
	f.Add([]byte{0x80, 0x01}, 200)
	f.Fuzz(func(t *testing.T, b []byte, max int) {
		if max < 0 || max > 1<<20 {
			return
		}
		msg, n, err := ParseDelimited(b, max)
		if err != nil {
			return
		}
		if len(msg) > max || n > len(b) {
			t.Fatalf("msg %d n %d over %d/%d", len(msg), n, max, len(b))
		}
		if re := AppendDelimited(nil, msg); !bytes.Equal(re, b[:n]) {
			t.Fatalf("re-encoding differs: %x vs %x", re, b[:n])
		}
	})
}
