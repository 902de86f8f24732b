package tls13

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	"github.com/swarmgate/swarmgate/internal/wire"
)

var suiteIDs = []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_AES_256_GCM_SHA384, tls.TLS_CHACHA20_POLY1305_SHA256}

// pair returns a server and a client Conn that talk to each other.
func pair(t testing.TB, id uint16) (srv, cli *Conn) {
	t.Helper()
	s := suiteByID(id)
	cs, ss := make([]byte, s.hashLen), make([]byte, s.hashLen)
	for i := range cs {
		cs[i], ss[i] = byte(i), byte(100+i)
	}
	srv, err := New(Server, id, cs, ss)
	if err != nil {
		t.Fatal(err)
	}
	cli, err = New(Client, id, ss, cs)
	if err != nil {
		t.Fatal(err)
	}
	return srv, cli
}

func payload(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

// openAll opens every record in b and returns the application data, the
// results in order, and the first error.
func openAll(c *Conn, b []byte) (data []byte, results []Result, err error) {
	for len(b) > 0 {
		d, n, r, err := c.Open(b)
		if err != nil {
			return data, results, err
		}
		results = append(results, r)
		data = append(data, d...)
		b = b[n:]
	}
	return data, results, nil
}

// rawRecord seals an arbitrary inner plaintext (content, type, padding) as
// c's next record, for inputs the API never produces.
func rawRecord(c *Conn, inner []byte) []byte {
	buf := append(make([]byte, HeaderLen), inner[:len(inner)-1]...)
	return c.seal(buf, 0, inner[len(inner)-1])
}

func TestNewRejects(t *testing.T) {
	if _, err := New(Server, 0x1304 /* TLS_AES_128_CCM_SHA256 */, make([]byte, 32), make([]byte, 32)); err != ErrUnsupportedSuite {
		t.Errorf("CCM: %v", err)
	}
	if _, err := New(Server, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, make([]byte, 32), make([]byte, 32)); err != ErrUnsupportedSuite {
		t.Errorf("TLS 1.2 suite: %v", err)
	}
	if _, err := New(Server, tls.TLS_AES_256_GCM_SHA384, make([]byte, 32), make([]byte, 32)); err != ErrSecretLength {
		t.Errorf("SHA-256 secret for a SHA-384 suite: %v", err)
	}
	if _, err := New(Server, tls.TLS_AES_128_GCM_SHA256, make([]byte, 32), make([]byte, 48)); err != ErrSecretLength {
		t.Errorf("mismatched secrets: %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	sizes := []int{0, 1, 2, 15, 16, 17, 100, 1000, MaxPlaintext - 1, MaxPlaintext, MaxPlaintext + 1, 2 * MaxPlaintext, 3*MaxPlaintext + 7, 100_000}
	for _, id := range suiteIDs {
		t.Run(tls.CipherSuiteName(id), func(t *testing.T) {
			srv, cli := pair(t, id)
			for _, n := range sizes {
				p := payload(n, 1)
				want := cli.SealedLen(n)
				out, err := cli.AppendSeal([]byte("prefix"), p)
				if err != nil {
					t.Fatal(err)
				}
				if got := len(out) - len("prefix"); got != want || want != SealedLen(n) {
					t.Fatalf("n=%d: sealed %d bytes, SealedLen %d, Conn.SealedLen %d", n, got, SealedLen(n), want)
				}
				// Full-size records, the last one shorter.
				rec := out[len("prefix"):]
				for off, left := 0, n; off < len(rec); {
					l := int(binary.BigEndian.Uint16(rec[off+3:]))
					if wantL := min(left, MaxPlaintext) + 1 + TagLen; l != wantL || !bytes.Equal(rec[off:off+3], []byte{23, 3, 3}) {
						t.Fatalf("n=%d: record header % x, want length %d", n, rec[off:off+5], wantL)
					}
					off += HeaderLen + l
					left -= MaxPlaintext
				}
				got, _, err := openAll(srv, rec)
				if err != nil || !bytes.Equal(got, p) {
					t.Fatalf("n=%d: opened %d bytes, err %v", n, len(got), err)
				}
				// And the other way, one record at a time.
				if n <= MaxPlaintext {
					out, err := srv.AppendRecord(nil, p)
					if err != nil || len(out) != n+RecordOverhead {
						t.Fatalf("AppendRecord(%d): %d bytes, %v", n, len(out), err)
					}
					d, m, r, err := cli.Open(out)
					if err != nil || r != Data || m != len(out) || !bytes.Equal(d, p) {
						t.Fatalf("n=%d: %v %v", n, r, err)
					}
				}
			}
		})
	}
}

// Every truncated prefix of a valid stream is need-more, leaves the
// buffer untouched and does not disturb the Conn.
func TestTruncatedPrefixes(t *testing.T) {
	srv, cli := pair(t, tls.TLS_AES_128_GCM_SHA256)
	var stream []byte
	stream, _ = cli.AppendRecord(stream, nil)
	stream, _ = cli.AppendSeal(stream, payload(3000, 2))
	stream, _ = cli.AppendKeyUpdate(stream, true)
	stream, _ = cli.AppendSeal(stream, payload(MaxPlaintext, 3))
	stream = cli.AppendAlert(stream, AlertCloseNotify)
	for len(stream) > 0 {
		l := HeaderLen + int(binary.BigEndian.Uint16(stream[3:]))
		for k := range l {
			b := bytes.Clone(stream[:k])
			before := *srv
			_, n, _, err := srv.Open(b)
			if err != wire.ErrNeedMore || n != 0 {
				t.Fatalf("prefix %d of %d: n %d err %v", k, l, n, err)
			}
			if !bytes.Equal(b, stream[:k]) || *srv != before {
				t.Fatalf("prefix %d of %d modified the buffer or the Conn", k, l)
			}
		}
		if _, n, _, err := srv.Open(stream); err != nil || n != l {
			t.Fatalf("record: n %d err %v", n, err)
		}
		stream = stream[l:]
	}
}

// expectAlert checks that opening b fails with want, that the failure is
// sticky, and that the alert AppendAlert then writes reaches the peer as
// the same code.
func expectAlert(t *testing.T, c, peer *Conn, b []byte, want *Error) {
	t.Helper()
	_, n, _, err := c.Open(b)
	if !errors.Is(err, want) || n != 0 {
		t.Fatalf("got n %d err %v, want %v", n, err, want)
	}
	if _, _, _, again := c.Open(nil); again != err {
		t.Fatalf("second Open: %v, want the same error", again)
	}
	var e *Error
	errors.As(err, &e)
	if e.Alert != want.Alert {
		t.Fatalf("alert %v, want %v", e.Alert, want.Alert)
	}
	if _, err := c.AppendSeal(nil, []byte("x")); err == nil {
		t.Fatal("sealed data after a read failure")
	}
	alert := c.AppendAlert(nil, e.Alert)
	if peer == nil {
		return
	}
	_, _, _, perr := peer.Open(alert)
	var pe *Error
	if !errors.As(perr, &pe) || !pe.Remote || pe.Alert != want.Alert || !errors.Is(perr, ErrRemoteAlert) {
		t.Fatalf("peer got %v, want remote alert %v", perr, want.Alert)
	}
	if _, err := peer.AppendSeal(nil, []byte("x")); err != ErrWriteClosed {
		t.Fatalf("peer sealed after a fatal alert: %v", err)
	}
}

func TestAlerts(t *testing.T) {
	type tc struct {
		name string
		// make returns the bytes the server opens; it may write with the
		// client (the server's peer).
		make func(srv, cli *Conn) []byte
		want *Error
	}
	data := func(srv, cli *Conn) []byte { b, _ := cli.AppendRecord(nil, []byte("hello")); return b }
	cases := []tc{
		{"tampered ciphertext", func(srv, cli *Conn) []byte { b := data(srv, cli); b[8] ^= 1; return b }, ErrBadRecordMAC},
		{"tampered tag", func(srv, cli *Conn) []byte { b := data(srv, cli); b[len(b)-1] ^= 0x80; return b }, ErrBadRecordMAC},
		{"tampered version", func(srv, cli *Conn) []byte { b := data(srv, cli); b[2] = 1; return b }, ErrBadRecordMAC},
		{"replayed", func(srv, cli *Conn) []byte {
			b := data(srv, cli)
			srv.Open(bytes.Clone(b))
			return b
		}, ErrBadRecordMAC},
		{"reordered", func(srv, cli *Conn) []byte { data(srv, cli); return data(srv, cli) }, ErrBadRecordMAC},
		{"another connection's key", func(srv, cli *Conn) []byte {
			_, other := pair(t, tls.TLS_AES_128_GCM_SHA256)
			other.w.secret[0] ^= 1
			b, _ := other.AppendRecord(nil, []byte("hi"))
			return b
		}, ErrBadRecordMAC},
		{"shorter than a tag", func(srv, cli *Conn) []byte { return []byte{23, 3, 3, 0, 15} }, ErrBadRecordMAC},
		{"ciphertext over 2^14+256", func(srv, cli *Conn) []byte { return []byte{23, 3, 3, 0x41, 0x01} }, ErrRecordOverflow},
		{"inner plaintext over 2^14+1", func(srv, cli *Conn) []byte {
			return rawRecord(cli, append(payload(MaxPlaintext+1, 4), typeApplicationData))
		}, ErrRecordOverflow},
		{"all-zero inner plaintext", func(srv, cli *Conn) []byte { return rawRecord(cli, make([]byte, 40)) }, ErrNoContentType},
		{"empty inner plaintext", func(srv, cli *Conn) []byte {
			// A tag alone: it authenticates, and holds no content type.
			h := []byte{23, 3, 3, 0, TagLen}
			cli.w.setNonce()
			return cli.cipher(&cli.w).Seal(h, cli.w.nonce[:], nil, bytes.Clone(h))
		}, ErrNoContentType},
		{"plaintext change_cipher_spec", func(srv, cli *Conn) []byte { return []byte{20, 3, 3, 0, 1, 1} }, ErrChangeCipherSpec},
		{"protected change_cipher_spec", func(srv, cli *Conn) []byte { return rawRecord(cli, []byte{1, typeChangeCipherSpec}) }, ErrChangeCipherSpec},
		{"plaintext alert", func(srv, cli *Conn) []byte { return []byte{21, 3, 3, 0, 2, 2, 40} }, ErrRecordType},
		{"plaintext handshake", func(srv, cli *Conn) []byte { return []byte{22, 3, 3, 0, 5, 24, 0, 0, 1, 0} }, ErrRecordType},
		{"unknown inner type", func(srv, cli *Conn) []byte { return rawRecord(cli, []byte{1, 2, 3, 99, 0, 0}) }, ErrRecordType},
		{"empty handshake", func(srv, cli *Conn) []byte { return rawRecord(cli, []byte{typeHandshake, 0, 0}) }, ErrEmptyControl},
		{"empty alert", func(srv, cli *Conn) []byte { return rawRecord(cli, []byte{typeAlert}) }, ErrEmptyControl},
		{"three-byte alert", func(srv, cli *Conn) []byte { return rawRecord(cli, []byte{2, 40, 0, typeAlert}) }, ErrDecode},
		{"two alerts", func(srv, cli *Conn) []byte { return rawRecord(cli, []byte{1, 0, 1, 0, typeAlert}) }, ErrDecode},
		{"ticket to a server", func(srv, cli *Conn) []byte {
			return rawRecord(cli, append([]byte{hsNewSessionTicket, 0, 0, 14}, append(make([]byte, 14), typeHandshake)...))
		}, ErrHandshakeMessage},
		{"finished after the handshake", func(srv, cli *Conn) []byte {
			return rawRecord(cli, append([]byte{20, 0, 0, 32}, append(make([]byte, 32), typeHandshake)...))
		}, ErrHandshakeMessage},
		{"key update value 2", func(srv, cli *Conn) []byte { return rawRecord(cli, []byte{hsKeyUpdate, 0, 0, 1, 2, typeHandshake}) }, ErrKeyUpdateValue},
		{"key update length 2", func(srv, cli *Conn) []byte { return rawRecord(cli, []byte{hsKeyUpdate, 0, 0, 2, 0, 0, typeHandshake}) }, ErrDecode},
		{"key update length 0", func(srv, cli *Conn) []byte { return rawRecord(cli, []byte{hsKeyUpdate, 0, 0, 0, typeHandshake}) }, ErrDecode},
		{"data after key update", func(srv, cli *Conn) []byte {
			return rawRecord(cli, []byte{hsKeyUpdate, 0, 0, 1, 0, hsKeyUpdate, 0, 0, 1, 0, typeHandshake})
		}, ErrKeyUpdateAlignment},
		{"data inside a fragmented message", func(srv, cli *Conn) []byte {
			b := rawRecord(cli, []byte{hsKeyUpdate, 0, typeHandshake})
			if _, _, r, err := srv.Open(b); err != nil || r != Handshake {
				t.Fatalf("fragment: %v %v", r, err)
			}
			b, _ = cli.AppendRecord(nil, []byte("data"))
			return b
		}, ErrInterleaved},
		{"too many empty records", func(srv, cli *Conn) []byte {
			for range maxControlRun {
				b, _ := cli.AppendRecord(nil, nil)
				if _, _, r, err := srv.Open(b); err != nil || r != Data {
					t.Fatalf("empty record: %v %v", r, err)
				}
			}
			b, _ := cli.AppendRecord(nil, nil)
			return b
		}, ErrTooManyControl},
		{"too many key updates", func(srv, cli *Conn) []byte {
			for range maxControlRun {
				b, _ := cli.AppendKeyUpdate(nil, false)
				if _, _, _, err := srv.Open(b); err != nil {
					t.Fatal(err)
				}
			}
			b, _ := cli.AppendKeyUpdate(nil, false)
			return b
		}, ErrTooManyControl},
		{"sequence number would wrap", func(srv, cli *Conn) []byte {
			srv.r.seq, cli.w.seq = math.MaxUint64, math.MaxUint64
			return append([]byte{23, 3, 3, 0, 17}, make([]byte, 17)...)
		}, ErrSequenceExhausted},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv, cli := pair(t, tls.TLS_AES_128_GCM_SHA256)
			b := c.make(srv, cli)
			peer := cli
			if c.want == ErrSequenceExhausted {
				peer = nil
			}
			// The header decisions come before the body.
			if b[0] != 23 || binary.BigEndian.Uint16(b[3:]) > MaxCiphertext {
				expectAlert(t, srv, peer, b[:HeaderLen], c.want)
				return
			}
			expectAlert(t, srv, peer, b, c.want)
		})
	}
}

// Records the API never writes but a peer may: padding, coalesced and
// fragmented handshake messages, a ticket to a client, the runs being
// reset by data.
func TestPeerLiberties(t *testing.T) {
	srv, cli := pair(t, tls.TLS_CHACHA20_POLY1305_SHA256)
	// Padded data, and a padded record of maximum inner size.
	b := rawRecord(cli, append([]byte("abc"), typeApplicationData, 0, 0, 0, 0))
	b = append(b, rawRecord(cli, append(append(payload(100, 5), typeApplicationData), make([]byte, MaxPlaintext-100)...))...)
	got, _, err := openAll(srv, b)
	if err != nil || !bytes.Equal(got, append([]byte("abc"), payload(100, 5)...)) {
		t.Fatalf("padded: %q %v", got, err)
	}
	// A KeyUpdate fragmented over three records.
	for _, frag := range [][]byte{{hsKeyUpdate}, {0, 0}, {1, 1}} {
		b := rawRecord(cli, append(bytes.Clone(frag), typeHandshake))
		if len(frag) == 2 && frag[1] == 1 {
			cli.update(&cli.w) // the sender moves after the whole message
		}
		_, _, r, err := srv.Open(b)
		want := Handshake
		if len(frag) == 2 && frag[1] == 1 {
			want = KeyUpdateRequested
		}
		if err != nil || r != want {
			t.Fatalf("fragment %x: %v %v", frag, r, err)
		}
	}
	if !srv.Pending() {
		t.Fatal("update_requested did not queue a KeyUpdate")
	}
	b, _ = cli.AppendRecord(nil, []byte("after"))
	if d, _, _, err := srv.Open(b); err != nil || string(d) != "after" {
		t.Fatalf("after fragmented KeyUpdate: %q %v", d, err)
	}

	// A client ignores tickets, coalesced with each other and with a
	// KeyUpdate that ends the record.
	nst := append([]byte{hsNewSessionTicket, 0, 0, 14}, make([]byte, 14)...)
	rec := append(append(bytes.Clone(nst), nst...), hsKeyUpdate, 0, 0, 1, 0, typeHandshake)
	b = rawRecord(srv, rec)
	srv.update(&srv.w)
	if _, _, r, err := cli.Open(b); err != nil || r != Handshake {
		t.Fatalf("tickets + KeyUpdate: %v %v", r, err)
	}
	// A ticket fragmented across records, then data.
	b = rawRecord(srv, append(bytes.Clone(nst[:6]), typeHandshake))
	b = append(b, rawRecord(srv, append(bytes.Clone(nst[6:]), typeHandshake))...)
	b, _ = srv.AppendSeal(b, []byte("data"))
	got, results, err := openAll(cli, b)
	// Two ticket fragments, the KeyUpdate the server still owed (AppendSeal
	// puts it before the data), the data.
	if want := []Result{Handshake, Handshake, Handshake, Data}; err != nil || string(got) != "data" || !slices.Equal(results, want) {
		t.Fatalf("fragmented ticket: %q %v %v", got, results, err)
	}
	// Data resets the run: many control records with data between them
	// are fine.
	for range 3 * maxControlRun {
		b, _ := cli.AppendKeyUpdate(nil, false)
		b, _ = cli.AppendRecord(b, []byte("x"))
		if _, _, err := openAll(srv, b); err != nil {
			t.Fatal(err)
		}
	}
	// A ticket body shorter than its fixed fields (§4.6.1: 4 + 4 + 1 +
	// 2 + 1 + 2 = 14 bytes) is decode_error, even though it is ignored.
	srv, cli = pair(t, tls.TLS_CHACHA20_POLY1305_SHA256)
	short := rawRecord(srv, append([]byte{hsNewSessionTicket, 0, 0, 13}, append(make([]byte, 13), typeHandshake)...))
	if _, _, _, err := cli.Open(short); !errors.Is(err, ErrDecode) {
		t.Fatalf("13-byte ticket: %v, want decode_error", err)
	}
}

func TestKeyUpdate(t *testing.T) {
	for _, id := range suiteIDs {
		t.Run(tls.CipherSuiteName(id), func(t *testing.T) {
			srv, cli := pair(t, id)
			sSecret, cSecret := srv.w.secret, cli.w.secret
			b, err := cli.AppendKeyUpdate(nil, true)
			if err != nil || len(b) != keyUpdateRecordLen {
				t.Fatalf("%d bytes, %v", len(b), err)
			}
			// A second request while the server is silent: one answer.
			b, _ = cli.AppendKeyUpdate(b, true)
			b, _ = cli.AppendSeal(b, []byte("new keys"))
			got, results, err := openAll(srv, b)
			if err != nil || string(got) != "new keys" || len(results) != 3 || results[0] != KeyUpdateRequested || results[1] != KeyUpdateRequested {
				t.Fatalf("%q %v %v", got, results, err)
			}
			if srv.r.secret != cli.w.secret || srv.r.seq != 1 {
				t.Fatal("read side did not follow the writer's two updates")
			}
			if !srv.Pending() || srv.SealedLen(5) != keyUpdateRecordLen+SealedLen(5) {
				t.Fatalf("pending %v, SealedLen %d", srv.Pending(), srv.SealedLen(5))
			}
			out, err := srv.AppendSeal(nil, []byte("reply"))
			if err != nil || len(out) != keyUpdateRecordLen+SealedLen(5) || srv.Pending() {
				t.Fatalf("reply: %d bytes %v", len(out), err)
			}
			got, results, err = openAll(cli, out)
			if err != nil || string(got) != "reply" || results[0] != Handshake {
				t.Fatalf("%q %v %v", got, results, err)
			}
			// update_not_requested answered it: one generation on the
			// server's side, two on the client's.
			if srv.w.secret == sSecret || cli.r.secret != srv.w.secret || cli.w.secret == cSecret {
				t.Fatal("keys did not move")
			}
			want := suiteByID(id).nextSecret(sSecret[:suiteByID(id).hashLen])
			if !bytes.Equal(srv.w.secret[:len(want)], want) {
				t.Fatal("server write secret is not traffic upd of the old one")
			}
			// AppendPending writes the answer with no data.
			b, _ = srv.AppendKeyUpdate(nil, true)
			cli.Open(b)
			if b, _ := cli.AppendPending(nil); len(b) != keyUpdateRecordLen {
				t.Fatalf("AppendPending: %d bytes", len(b))
			} else if _, _, r, err := srv.Open(b); err != nil || r != Handshake {
				t.Fatal(r, err)
			}
			if b, _ := cli.AppendPending(nil); len(b) != 0 {
				t.Fatal("AppendPending wrote twice")
			}
		})
	}
}

// The write side moves to a new key before its sequence number reaches
// the suite's limit; the read side fails before its own would wrap.
func TestSequenceLimits(t *testing.T) {
	for _, id := range suiteIDs {
		t.Run(tls.CipherSuiteName(id), func(t *testing.T) {
			srv, cli := pair(t, id)
			limit := cli.suite.keyUpdateAfter
			cli.w.seq, srv.r.seq = limit-1, limit-1
			p := payload(2*MaxPlaintext+10, 6)
			want := cli.SealedLen(len(p))
			if want != SealedLen(len(p))+keyUpdateRecordLen {
				t.Fatalf("SealedLen %d does not count the KeyUpdate", want)
			}
			out, err := cli.AppendSeal(nil, p)
			if err != nil || len(out) != want {
				t.Fatalf("%d bytes, want %d: %v", len(out), want, err)
			}
			got, results, err := openAll(srv, out)
			if err != nil || !bytes.Equal(got, p) {
				t.Fatal(err)
			}
			if len(results) != 4 || results[1] != Handshake || cli.w.seq != 2 || srv.r.seq != 2 {
				t.Fatalf("results %v, seq %d/%d", results, cli.w.seq, srv.r.seq)
			}
			// SealInPlace rekeys the same way.
			cli.w.seq, srv.r.seq = limit, limit
			buf := append(make([]byte, 3+HeaderLen), "in place"...)
			buf, err = cli.SealInPlace(buf, 3)
			if err != nil || len(buf) != 3+keyUpdateRecordLen+SealedLen(8) {
				t.Fatal(len(buf), err)
			}
			if got, _, err := openAll(srv, buf[3:]); err != nil || string(got) != "in place" {
				t.Fatal(got, err)
			}
		})
	}
}

// SealInPlace writes what AppendRecord writes, and puts a pending
// KeyUpdate in front.
func TestSealInPlace(t *testing.T) {
	a, _ := pair(t, tls.TLS_AES_256_GCM_SHA384)
	b, _ := pair(t, tls.TLS_AES_256_GCM_SHA384)
	_, peer := pair(t, tls.TLS_AES_256_GCM_SHA384)
	for _, pending := range []bool{false, true} {
		if pending {
			a.flags |= flagKeyUpdatePending
			b.flags |= flagKeyUpdatePending
		}
		for _, n := range []int{0, 1, 500, MaxPlaintext} {
			p := payload(n, 7)
			want, _ := a.AppendRecord([]byte("head"), p)
			buf := make([]byte, 0, 4+HeaderLen+n+1+TagLen+2*keyUpdateRecordLen)
			buf = append(buf, "head"...)
			buf = append(buf, make([]byte, HeaderLen)...)
			buf = append(buf, p...)
			before := &buf[:1][0]
			got, err := b.SealInPlace(buf, 4)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("pending %v n %d: %v\n got %x\nwant %x", pending, n, err, got[:min(40, len(got))], want[:min(40, len(want))])
			}
			if &got[:1][0] != before {
				t.Fatal("SealInPlace reallocated a buffer with room")
			}
			d, _, err := openAll(peer, got[4:])
			if err != nil || !bytes.Equal(d, p) {
				t.Fatal(err)
			}
			pending = false
		}
	}
	if _, err := a.SealInPlace(make([]byte, HeaderLen+MaxPlaintext+1), 0); err != ErrTooLarge {
		t.Fatal(err)
	}
	if _, err := a.AppendRecord(nil, make([]byte, MaxPlaintext+1)); err != ErrTooLarge {
		t.Fatal(err)
	}
}

func TestCloseNotify(t *testing.T) {
	srv, cli := pair(t, tls.TLS_AES_128_GCM_SHA256)
	b, _ := cli.AppendSeal(nil, []byte("last words"))
	b = cli.AppendAlert(b, AlertCloseNotify)
	if x, err := cli.AppendSeal(nil, []byte("more")); err != ErrWriteClosed || x != nil {
		t.Fatal("sealed after close_notify")
	}
	if len(cli.AppendAlert(nil, AlertInternalError)) != 0 {
		t.Fatal("alert after close_notify")
	}
	got, results, err := openAll(srv, b)
	if err != nil || string(got) != "last words" || results[1] != CloseNotify {
		t.Fatal(got, results, err)
	}
	// Everything after it is ignored, even garbage.
	if _, n, r, err := srv.Open([]byte("garbage")); err != nil || r != CloseNotify || n != 7 {
		t.Fatal(n, r, err)
	}
	// The other side may still write (half close), and the closed side
	// does not answer a KeyUpdate request.
	b, _ = srv.AppendKeyUpdate(nil, true)
	b, _ = srv.AppendSeal(b, []byte("reply"))
	got, _, err = openAll(cli, b)
	if err != nil || string(got) != "reply" || cli.Pending() {
		t.Fatal(got, err, cli.Pending())
	}
	// Warning level for close_notify, fatal otherwise.
	_, c2 := pair(t, tls.TLS_AES_128_GCM_SHA256)
	s2, _ := pair(t, tls.TLS_AES_128_GCM_SHA256)
	a := c2.AppendAlert(nil, AlertBadRecordMAC)
	inner, err := s2.cipher(&s2.r).Open(nil, nonceFor(&s2.r), a[HeaderLen:], a[:HeaderLen])
	if err != nil || !bytes.Equal(inner, []byte{levelFatal, byte(AlertBadRecordMAC), typeAlert}) {
		t.Fatalf("%x %v", inner, err)
	}
	c2.Close()
	if _, err := c2.AppendSeal(nil, nil); err != ErrWriteClosed || c2.w.secret != [maxSecretLen]byte{} {
		t.Fatal("Close left the Conn usable or the secret in memory")
	}
}

func nonceFor(d *direction) []byte {
	d.setNonce()
	return d.nonce[:]
}

func TestRemoteAlertIgnoresLevel(t *testing.T) {
	srv, cli := pair(t, tls.TLS_AES_128_GCM_SHA256)
	// user_canceled at warning level, and an unknown alert: errors.
	b := rawRecord(cli, []byte{levelWarning, byte(AlertUserCanceled), typeAlert})
	_, _, _, err := srv.Open(b)
	var e *Error
	if !errors.As(err, &e) || !e.Remote || e.Alert != AlertUserCanceled {
		t.Fatal(err)
	}
	srv, cli = pair(t, tls.TLS_AES_128_GCM_SHA256)
	b = rawRecord(cli, []byte{levelWarning, 201, typeAlert})
	if _, _, _, err := srv.Open(b); !errors.As(err, &e) || e.Alert != 201 || e.Error() != "tls13: peer sent alert alert(201)" {
		t.Fatal(err)
	}
	// close_notify at fatal level is still close_notify.
	srv, cli = pair(t, tls.TLS_AES_128_GCM_SHA256)
	b = rawRecord(cli, []byte{levelFatal, 0, typeAlert})
	if _, _, r, err := srv.Open(b); err != nil || r != CloseNotify {
		t.Fatal(r, err)
	}
}

// Release drops the AEADs; the next use rebuilds them from the secrets.
func TestRelease(t *testing.T) {
	for _, id := range suiteIDs {
		srv, cli := pair(t, id)
		for i := range 3 {
			b, _ := cli.AppendSeal(nil, payload(100+i, 8))
			srv.Release()
			cli.Release()
			if srv.r.aead != nil || cli.w.aead != nil {
				t.Fatal("Release kept an AEAD")
			}
			got, _, err := openAll(srv, b)
			if err != nil || !bytes.Equal(got, payload(100+i, 8)) {
				t.Fatal(err)
			}
		}
	}
}

func TestNoAllocations(t *testing.T) {
	for _, id := range suiteIDs {
		srv, cli := pair(t, id)
		p := payload(MaxPlaintext, 9)
		out := make([]byte, 0, SealedLen(len(p)))
		in := make([]byte, 0, cap(out))
		var err error
		allocs := testing.AllocsPerRun(100, func() {
			out, err = cli.AppendSeal(out[:0], p)
			in = append(in[:0], out...)
			if _, _, _, err = srv.Open(in); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per record", tls.CipherSuiteName(id), allocs)
		}
	}
}

// TestSize bounds the Conn itself: what an idle connection keeps once
// Release dropped the AEAD states (BenchmarkConnMemory measures the heap).
func TestSize(t *testing.T) {
	if size := unsafe.Sizeof(Conn{}); size > 256 {
		t.Errorf("Sizeof(Conn) = %d, want at most 256", size)
	}
}

func TestMaxSealable(t *testing.T) {
	if got := MaxSealable(64 << 10); got != 65394 {
		t.Errorf("MaxSealable(64 KiB) = %d", got)
	}
	// The states that add a KeyUpdate: one pending, the limit reached.
	_, pending := pair(t, tls.TLS_AES_128_GCM_SHA256)
	pending.flags |= flagKeyUpdatePending
	_, limit := pair(t, tls.TLS_AES_128_GCM_SHA256)
	limit.w.seq = limit.suite.keyUpdateAfter
	for room := 0; room < 5*(MaxPlaintext+RecordOverhead); room += 7 {
		n := MaxSealable(room)
		for _, c := range []*Conn{pending, limit} {
			if n > 0 && c.SealedLen(n) > room {
				t.Fatalf("room %d: MaxSealable %d seals to %d", room, n, c.SealedLen(n))
			}
		}
		if room >= 2*keyUpdateRecordLen+RecordOverhead+1 && SealedLen(n+1)+2*keyUpdateRecordLen <= room {
			t.Fatalf("room %d: MaxSealable %d is not the most", room, n)
		}
	}
}
