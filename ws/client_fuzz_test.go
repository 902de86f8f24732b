package ws

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

func serverFrame(fin bool, op Opcode, p []byte) []byte {
	return AppendFrame(nil, Server, fin, op, p)
}

// serverStream is a valid server-to-client frame stream: fragmented
// messages with control frames between the fragments, every length form,
// and a Close at the end.
func serverStream() []byte {
	var s []byte
	s = append(s, serverFrame(true, OpText, []byte("Hello"))...)
	s = append(s, serverFrame(false, OpBinary, []byte{1, 2, 3})...)
	s = append(s, serverFrame(true, OpPing, []byte("p"))...)
	s = append(s, serverFrame(false, OpContinuation, bytes.Repeat([]byte{4}, 200))...)
	s = append(s, serverFrame(true, OpPong, nil)...)
	s = append(s, serverFrame(true, OpContinuation, nil)...)
	s = append(s, serverFrame(true, OpBinary, bytes.Repeat([]byte{5}, 70000))...)
	s = append(s, serverFrame(true, OpText, []byte("κόσμε"))...)
	return append(s, AppendClose(nil, Server, CloseGoingAway, "bye")...)
}

func sameCollected(a, b collected) bool {
	return errors.Is(a.err, b.err) && (a.err == nil) == (b.err == nil) &&
		slices.Equal(a.msgs, b.msgs) && slices.Equal(a.ops, b.ops) &&
		slices.Equal(a.pings, b.pings) && slices.Equal(a.pongs, b.pongs) && slices.Equal(a.closes, b.closes)
}

// Every truncated prefix of a valid server stream is need-more for a
// client decoder: no error, and only the messages complete in it.
func TestClientDecoderTruncatedPrefixes(t *testing.T) {
	s := serverStream()
	d := NewDecoder(Client, 0)
	whole := feed(&d, s, func(r int) int { return r })
	if whole.err != nil || len(whole.msgs) != 4 || len(whole.closes) != 1 || whole.closes[0] != CloseGoingAway {
		t.Fatalf("whole: %+v", whole)
	}
	// Every prefix up to the large frame, and around each frame boundary
	// after it (each prefix is decoded from scratch).
	for i := 0; i < len(s); i++ {
		if i > 400 && i < len(s)-400 && i%997 != 0 {
			continue
		}
		d := NewDecoder(Client, 0)
		got := feed(&d, s[:i], func(r int) int { return r })
		if got.err != nil || len(got.msgs) > len(whole.msgs) || len(got.closes) != 0 {
			t.Fatalf("prefix %d: %+v", i, got)
		}
		for j, m := range got.msgs {
			if m != whole.msgs[j] {
				t.Fatalf("prefix %d: message %d differs", i, j)
			}
		}
	}
	// A client refuses the same frames masked.
	d = NewDecoder(Client, 0)
	if got := feed(&d, clientFrame(true, OpBinary, []byte("x")), func(r int) int { return r }); got.err != ErrMaskedFrame {
		t.Fatalf("masked frame: %v", got.err)
	}
}

// FuzzClientDecoder decodes arbitrary bytes as server frames in the client
// role: never a panic, any split (the fuzzer's step, and a byte at a time)
// gives the events of the whole, the first frame is refused with
// ErrMaskedFrame once its mask bit is set, and a valid stream re-encoded
// from the decoded events decodes to the same events.
func FuzzClientDecoder(f *testing.F) {
	f.Add(serverStream(), uint8(7))
	f.Add(serverFrame(true, OpText, []byte("Hello")), uint8(1))
	f.Add(append(serverFrame(false, OpBinary, []byte("ab")), serverFrame(true, OpContinuation, []byte("cd"))...), uint8(2))
	f.Add(serverFrame(true, OpPing, bytes.Repeat([]byte{'p'}, 125)), uint8(3))
	f.Add(AppendClose(nil, Server, CloseNormal, ""), uint8(0))
	f.Add(AppendHeader(nil, Header{Fin: true, Op: OpBinary, Length: 1 << 20}), uint8(4))
	f.Add(clientFrame(true, OpBinary, []byte("masked")), uint8(5))
	f.Add([]byte{0x81, 0x02, 0xce, 0xba}, uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		const limit = 1 << 16
		run := func(split func(int) int) collected {
			d := NewDecoder(Client, limit)
			return feed(&d, in, split)
		}
		whole := run(func(r int) int { return r })
		if whole.err != nil {
			var pe *ProtocolError
			if !errors.As(whole.err, &pe) || pe.Code == 0 {
				t.Fatalf("untyped error %v", whole.err)
			}
		}
		for _, k := range []int{int(step) + 1, 1} {
			if got := run(func(r int) int { return min(r, k) }); !sameCollected(got, whole) {
				t.Fatalf("pieces of %d: %+v, whole %+v", k, got, whole)
			}
		}
		// The first frame with its mask bit set is refused before any of
		// it is delivered, whatever the rest of the header says, unless
		// an earlier check of the header (RFC 6455 §5.2) fails first.
		if h, n, err := ParseHeader(in); err == nil && !h.Masked && h.Rsv == 0 && !h.Op.reserved() {
			h.Masked, h.Key = true, [4]byte{1, 2, 3, 4}
			masked := append(AppendHeader(nil, h), in[n:]...)
			d := NewDecoder(Client, limit)
			ev, _, err := d.Next(masked)
			if err != ErrMaskedFrame || ev.Kind != EventNone {
				t.Fatalf("masked %+v: %+v %v", h, ev, err)
			}
		}
		if whole.err != nil {
			return
		}
		// Round trip: the decoded messages and control frames, encoded
		// again as a server would, decode to the same events.
		var re []byte
		for i, m := range whole.msgs {
			re = append(re, serverFrame(true, whole.ops[i], []byte(m))...)
		}
		for _, p := range whole.pings {
			re = append(re, serverFrame(true, OpPing, []byte(p))...)
		}
		for _, p := range whole.pongs {
			re = append(re, serverFrame(true, OpPong, []byte(p))...)
		}
		d := NewDecoder(Client, limit)
		got := feed(&d, re, func(r int) int { return r })
		if got.err != nil || !slices.Equal(got.msgs, whole.msgs) || !slices.Equal(got.ops, whole.ops) ||
			!slices.Equal(got.pings, whole.pings) || !slices.Equal(got.pongs, whole.pongs) {
			t.Fatalf("re-encoded: %+v, first %+v", got, whole)
		}
	})
}

// FuzzParseResponse parses arbitrary bytes as the server's answer to our
// upgrade request: never a panic, need-more only for an incomplete header
// block under the limit, every failure a *HandshakeError, and an accepted
// response need-more on every truncated prefix.
func FuzzParseResponse(f *testing.F) {
	key := []byte(sampleKey)
	ok := AppendResponse(nil, key)
	f.Add(ok)
	f.Add(append(bytes.Clone(ok), serverFrame(true, OpBinary, []byte("x"))...))
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Protocol: x\r\n\r\n"))
	f.Add(AppendReject(nil, ErrMissingUpgrade))
	f.Fuzz(func(t *testing.T, in []byte) {
		const limit = 1024
		n, err := ParseResponse(in, key, limit)
		switch {
		case err == ErrNeedMore:
			if bytes.Contains(in, headerEnd) || len(in) >= limit {
				t.Fatal("need-more for a complete or oversized response")
			}
		case err != nil:
			var he *HandshakeError
			if !errors.As(err, &he) || he.Token == "" {
				t.Fatalf("untyped error %v", err)
			}
		default:
			if n > len(in) || !bytes.HasSuffix(in[:n], headerEnd) {
				t.Fatalf("accepted %d bytes", n)
			}
			for i := range n {
				if _, err := ParseResponse(in[:i], key, limit); err != ErrNeedMore {
					t.Fatalf("prefix %d: %v", i, err)
				}
			}
		}
	})
}
