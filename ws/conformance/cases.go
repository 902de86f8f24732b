package conformance

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/swarmgate/swarmgate/ws"
)

func cases(tg Target) []testCase {
	var cs []testCase
	add := func(name string, run func(t *testing.T, tg Target)) {
		cs = append(cs, testCase{name, run})
	}

	// 1. Framing: every length form, both data opcodes, whole and chopped.
	for _, n := range []int{0, 125, 126, 127, 65535, 65536, 1 << 20} {
		add("1.echo/binary/"+strconv.Itoa(n), func(t *testing.T, tg Target) {
			c := open(t, tg)
			c.write(bin(payload(n)))
			c.expectMessage(ws.OpBinary, payload(n))
		})
		add("1.echo/text/"+strconv.Itoa(n), func(t *testing.T, tg Target) {
			c := open(t, tg)
			s := strings.Repeat("*", n)
			c.write(text(s))
			c.expectMessage(ws.OpText, []byte(s))
		})
	}
	for _, chop := range []int{1, 2, 3, 7, 64} {
		add("1.chopped/"+strconv.Itoa(chop), func(t *testing.T, tg Target) {
			c := open(t, tg)
			var b []byte
			b = append(b, bin(payload(300))...)
			b = append(b, text("Hello-µ@ßöäüàá-UTF-8!!")...)
			c.writeChopped(b, chop)
			c.expectMessage(ws.OpBinary, payload(300))
			c.expectMessage(ws.OpText, []byte("Hello-µ@ßöäüàá-UTF-8!!"))
		})
	}
	add("1.pipelined-after-request", func(t *testing.T, tg Target) {
		c := dialRaw(t, tg)
		key := ws.NewKey()
		c.write(append(ws.AppendRequest(nil, tg.Addr, tg.Path, key[:]), bin([]byte("early"))...))
		if status, head := c.readResponse(); status != 101 {
			t.Fatalf("status %d\n%s", status, head)
		}
		c.expectMessage(ws.OpBinary, []byte("early"))
	})
	add("1.many-messages-one-write", func(t *testing.T, tg Target) {
		c := open(t, tg)
		var b []byte
		for i := 0; i < 100; i++ {
			b = append(b, bin([]byte(strconv.Itoa(i)))...)
		}
		c.write(b)
		for i := 0; i < 100; i++ {
			c.expectMessage(ws.OpBinary, []byte(strconv.Itoa(i)))
		}
	})

	// 2. Pings and pongs.
	for _, n := range []int{0, 1, 125} {
		add("2.ping/"+strconv.Itoa(n), func(t *testing.T, tg Target) {
			c := open(t, tg)
			c.write(fr(true, ws.OpPing, payload(n)))
			c.expectPong(payload(n))
		})
	}
	add("2.ping/126", func(t *testing.T, tg Target) {
		c := open(t, tg)
		c.write(fr(true, ws.OpPing, payload(126)))
		c.expectFail(ws.CloseProtocolError)
	})
	add("2.ping/fragmented", func(t *testing.T, tg Target) {
		c := open(t, tg)
		c.write(fr(false, ws.OpPing, []byte("a")))
		c.write(fr(true, ws.OpContinuation, []byte("b")))
		c.expectFail(ws.CloseProtocolError)
	})
	add("2.ping/binary-payload", func(t *testing.T, tg Target) {
		c := open(t, tg)
		p := []byte{0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff}
		c.write(fr(true, ws.OpPing, p))
		c.expectPong(p)
	})
	add("2.unsolicited-pong", func(t *testing.T, tg Target) {
		c := open(t, tg)
		c.write(fr(true, ws.OpPong, []byte("unsolicited")))
		c.write(fr(true, ws.OpPing, []byte("after")))
		c.expectPong([]byte("after"))
	})
	add("2.ten-pings", func(t *testing.T, tg Target) {
		c := open(t, tg)
		var b []byte
		for i := 0; i < 10; i++ {
			b = append(b, fr(true, ws.OpPing, []byte("p"+strconv.Itoa(i)))...)
		}
		c.write(b)
		for i := 0; i < 10; i++ {
			c.expectPong([]byte("p" + strconv.Itoa(i)))
		}
	})
	add("2.ping-chopped", func(t *testing.T, tg Target) {
		c := open(t, tg)
		c.writeChopped(fr(true, ws.OpPing, payload(125)), 1)
		c.expectPong(payload(125))
	})

	// 3. Reserved bits. The echo before the bad frame must still arrive.
	for _, rsv := range []byte{0x40, 0x20, 0x10, 0x70} {
		add("3.rsv/"+strconv.Itoa(int(rsv>>4)), func(t *testing.T, tg Target) {
			c := open(t, tg)
			c.write(text("ok"))
			c.write(withBits(0x80|rsv|byte(ws.OpText), []byte("x")))
			c.expectMessage(ws.OpText, []byte("ok"))
			c.expectFail(ws.CloseProtocolError)
		})
	}

	// 4. Reserved opcodes.
	for _, op := range []byte{3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF} {
		add("4.opcode/"+strconv.Itoa(int(op)), func(t *testing.T, tg Target) {
			c := open(t, tg)
			c.write(withBits(0x80|op, []byte("x")))
			c.expectFail(ws.CloseProtocolError)
		})
	}

	// 5. Fragmentation.
	add("5.fragmented-text", func(t *testing.T, tg Target) {
		c := open(t, tg)
		c.write(fr(false, ws.OpText, []byte("frag")))
		c.write(fr(false, ws.OpContinuation, []byte("men")))
		c.write(fr(true, ws.OpContinuation, []byte("ted")))
		c.expectMessage(ws.OpText, []byte("fragmented"))
	})
	add("5.fragmented-binary-empty-pieces", func(t *testing.T, tg Target) {
		c := open(t, tg)
		c.write(fr(false, ws.OpBinary, nil))
		c.write(fr(false, ws.OpContinuation, []byte{1, 2}))
		c.write(fr(true, ws.OpContinuation, nil))
		c.expectMessage(ws.OpBinary, []byte{1, 2})
	})
	add("5.ping-between-fragments", func(t *testing.T, tg Target) {
		c := open(t, tg)
		c.write(fr(false, ws.OpText, []byte("a")))
		c.write(fr(true, ws.OpPing, []byte("mid")))
		c.write(fr(true, ws.OpContinuation, []byte("b")))
		c.expectPong([]byte("mid"))
		c.expectMessage(ws.OpText, []byte("ab"))
	})
	add("5.continuation-without-start", func(t *testing.T, tg Target) {
		c := open(t, tg)
		c.write(fr(true, ws.OpContinuation, []byte("x")))
		c.expectFail(ws.CloseProtocolError)
	})
	add("5.new-message-inside-fragmented", func(t *testing.T, tg Target) {
		c := open(t, tg)
		c.write(fr(false, ws.OpText, []byte("a")))
		c.write(text("b"))
		c.expectFail(ws.CloseProtocolError)
	})
	add("5.many-fragments", func(t *testing.T, tg Target) {
		c := open(t, tg)
		var b []byte
		b = append(b, fr(false, ws.OpBinary, []byte{0})...)
		for i := 1; i < 1000; i++ {
			b = append(b, fr(i == 999, ws.OpContinuation, []byte{byte(i)})...)
		}
		c.write(b)
		want := make([]byte, 1000)
		for i := range want {
			want[i] = byte(i)
		}
		c.expectMessage(ws.OpBinary, want)
	})

	// 6. UTF-8.
	valid := "κόσμε 𝄞 €"
	add("6.valid-multibyte", func(t *testing.T, tg Target) {
		c := open(t, tg)
		c.write(text(valid))
		c.expectMessage(ws.OpText, []byte(valid))
	})
	add("6.valid-split-inside-runes", func(t *testing.T, tg Target) {
		c := open(t, tg)
		b := []byte(valid)
		c.write(fr(false, ws.OpText, b[:1]))
		for i := 1; i < len(b)-1; i++ {
			c.write(fr(false, ws.OpContinuation, b[i:i+1]))
		}
		c.write(fr(true, ws.OpContinuation, b[len(b)-1:]))
		c.expectMessage(ws.OpText, b)
	})
	for name, bad := range map[string]string{
		"overlong":        "\xc0\xaf",
		"surrogate":       "\xed\xa0\x80",
		"above-max":       "\xf4\x90\x80\x80",
		"lone-cont":       "a\x80b",
		"invalid-byte":    "\xff",
		"truncated-end":   "κόσμε\xce",
		"overlong-3-byte": "\xe0\x80\xaf",
	} {
		add("6.invalid/"+name, func(t *testing.T, tg Target) {
			c := open(t, tg)
			c.write(text(bad))
			c.expectFail(ws.CloseInvalidPayload)
		})
	}
	add("6.fail-fast", func(t *testing.T, tg Target) {
		// The first fragment is already invalid; the message never ends.
		// The server must not wait for the rest (Autobahn 6.4).
		c := open(t, tg)
		c.write(fr(false, ws.OpText, []byte("κόσμε\xf4\x90\x80\x80")))
		c.expectFail(ws.CloseInvalidPayload)
	})
	add("6.invalid-across-fragments", func(t *testing.T, tg Target) {
		c := open(t, tg)
		c.write(fr(false, ws.OpText, []byte{0xce}))
		c.write(fr(true, ws.OpContinuation, []byte{0x41}))
		c.expectFail(ws.CloseInvalidPayload)
	})
	add("6.binary-not-validated", func(t *testing.T, tg Target) {
		c := open(t, tg)
		c.write(bin([]byte{0xff, 0xfe}))
		c.expectMessage(ws.OpBinary, []byte{0xff, 0xfe})
	})

	// 7. Close handshake and codes.
	add("7.close/empty", func(t *testing.T, tg Target) {
		c := open(t, tg)
		c.write(fr(true, ws.OpClose, nil))
		c.expectClose(ws.CloseNoStatus)
	})
	for _, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999} {
		add("7.close/valid/"+strconv.Itoa(int(code)), func(t *testing.T, tg Target) {
			c := open(t, tg)
			c.write(closeFrame(code, "reason"))
			c.expectClose(ws.CloseCode(code))
		})
	}
	for _, code := range []uint16{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		add("7.close/invalid/"+strconv.Itoa(int(code)), func(t *testing.T, tg Target) {
			c := open(t, tg)
			c.write(closeFrame(code, ""))
			c.expectFail(ws.CloseProtocolError)
		})
	}
	add("7.close/one-byte-body", func(t *testing.T, tg Target) {
		c := open(t, tg)
		c.write(fr(true, ws.OpClose, []byte{3}))
		c.expectFail(ws.CloseProtocolError)
	})
	add("7.close/125-byte-body", func(t *testing.T, tg Target) {
		c := open(t, tg)
		c.write(closeFrame(1000, strings.Repeat("r", 123)))
		c.expectClose(ws.CloseNormal)
	})
	add("7.close/invalid-utf8-reason", func(t *testing.T, tg Target) {
		c := open(t, tg)
		c.write(closeFrame(1000, "\xce\xba\xff"))
		c.expectFail(ws.CloseInvalidPayload)
	})
	add("7.close/data-after-close-ignored", func(t *testing.T, tg Target) {
		c := open(t, tg)
		var b []byte
		b = append(b, closeFrame(1000, "")...)
		b = append(b, text("after close")...)
		b = append(b, fr(true, ws.OpPing, []byte("after close"))...)
		c.write(b)
		c.expectClose(ws.CloseNormal)
	})
	add("7.close/after-message", func(t *testing.T, tg Target) {
		c := open(t, tg)
		c.write(append(text("last"), closeFrame(1000, "bye")...))
		c.expectMessage(ws.OpText, []byte("last"))
		c.expectClose(ws.CloseNormal)
	})
	add("7.close/chopped", func(t *testing.T, tg Target) {
		c := open(t, tg)
		c.writeChopped(closeFrame(4000, "chopped close"), 1)
		c.expectClose(4000)
	})

	// 9. Limits and masking.
	if tg.MaxMessage > 0 {
		add("9.message-over-limit", func(t *testing.T, tg Target) {
			c := open(t, tg)
			// Only the header: the limit is judged before any payload.
			c.write(ws.AppendHeader(nil, ws.Header{Fin: true, Op: ws.OpBinary, Masked: true, Length: tg.MaxMessage + 1}))
			c.expectFail(ws.CloseMessageTooBig)
		})
		add("9.fragments-over-limit", func(t *testing.T, tg Target) {
			c := open(t, tg)
			c.write(ws.AppendHeader(nil, ws.Header{Op: ws.OpBinary, Masked: true, Length: tg.MaxMessage}))
			c.write(make([]byte, tg.MaxMessage))
			c.write(fr(true, ws.OpContinuation, []byte{1}))
			c.expectFail(ws.CloseMessageTooBig)
		})
	}
	add("9.length-msb-set", func(t *testing.T, tg Target) {
		c := open(t, tg)
		c.write([]byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4})
		c.expectFail(ws.CloseProtocolError)
	})
	add("9.unmasked-frame", func(t *testing.T, tg Target) {
		c := open(t, tg)
		c.write([]byte{0x81, 0x02, 'h', 'i'})
		c.expectFail(ws.CloseProtocolError)
	})

	// 10. Opening handshake.
	key := ws.NewKey()
	good := func(path string) []string {
		return []string{"GET " + path + " HTTP/1.1", "Host: " + tg.Addr, "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: " + string(key[:]), "Sec-WebSocket-Version: 13"}
	}
	reqCase := func(name string, lines []string, status int, header string) {
		add("10.handshake/"+name, func(t *testing.T, tg Target) {
			c := dialRaw(t, tg)
			c.write([]byte(strings.Join(lines, "\r\n") + "\r\n\r\n"))
			got, head := c.readResponse()
			if got != status || !strings.Contains(head, header) {
				t.Fatalf("status %d, want %d with %q:\n%s", got, status, header, head)
			}
			if status != 101 {
				c.expectEOF()
			}
		})
	}
	g := good(tg.Path)
	reqCase("ok", g, 101, "Sec-WebSocket-Accept: ")
	reqCase("connection-list-mixed-case", []string{g[0], g[1], "upgrade: WebSocket", "Connection: keep-alive, Upgrade", g[4], g[5]}, 101, "Upgrade: websocket")
	reqCase("subprotocol-and-deflate-offered", append(g, "Sec-WebSocket-Protocol: chat", "Sec-WebSocket-Extensions: permessage-deflate"), 101, "Connection: Upgrade")
	if tg.LibP2PFallback {
		reqCase("other-path-is-libp2p", good(tg.Path+"/nowhere"), 101, "Sec-WebSocket-Accept: ")
	} else {
		reqCase("unknown-path", good(tg.Path+"/nowhere"), 404, "")
	}
	reqCase("version-8", []string{g[0], g[1], g[2], g[3], g[4], "Sec-WebSocket-Version: 8"}, 426, "Sec-WebSocket-Version: 13")
	reqCase("post", append([]string{"POST " + tg.Path + " HTTP/1.1"}, g[1:]...), 405, "")
	reqCase("http-1.0", append([]string{"GET " + tg.Path + " HTTP/1.0"}, g[1:]...), 400, "")
	reqCase("no-key", []string{g[0], g[1], g[2], g[3], g[5]}, 400, "")
	reqCase("short-key", []string{g[0], g[1], g[2], g[3], "Sec-WebSocket-Key: c2hvcnQ=", g[5]}, 400, "")
	reqCase("no-host", []string{g[0], g[2], g[3], g[4], g[5]}, 400, "")
	reqCase("no-upgrade", []string{g[0], g[1], g[3], g[4], g[5]}, 400, "")
	reqCase("oversized-header", append(g, "X-Big: "+strings.Repeat("b", 16<<10)), 431, "")
	add("10.handshake/no-extension-or-protocol-in-101", func(t *testing.T, tg Target) {
		c := dialRaw(t, tg)
		c.write([]byte(strings.Join(append(g, "Sec-WebSocket-Protocol: chat", "Sec-WebSocket-Extensions: permessage-deflate"), "\r\n") + "\r\n\r\n"))
		_, head := c.readResponse()
		if bytes.Contains(bytes.ToLower([]byte(head)), []byte("sec-websocket-protocol")) || bytes.Contains(bytes.ToLower([]byte(head)), []byte("sec-websocket-extensions")) {
			t.Fatalf("101 selected something we never agreed to:\n%s", head)
		}
	})
	add("10.handshake/request-chopped", func(t *testing.T, tg Target) {
		c := dialRaw(t, tg)
		c.writeChopped([]byte(strings.Join(g, "\r\n")+"\r\n\r\n"), 3)
		if got, head := c.readResponse(); got != 101 {
			t.Fatalf("status %d\n%s", got, head)
		}
	})
	return cs
}
