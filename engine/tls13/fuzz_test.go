package tls13

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/swarmgate/swarmgate/internal/wire"
)

// fuzzSeeds are streams the server of pair(AES-128-GCM) wrote, for its
// client to open: data of several sizes, padding, KeyUpdates, tickets
// (coalesced and fragmented), alerts, and a few broken records.
func fuzzSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	add := func(f func(srv *Conn) []byte) {
		srv, _ := pair(t, tls.TLS_AES_128_GCM_SHA256)
		seeds = append(seeds, f(srv))
	}
	for _, n := range []int{0, 1, 100, MaxPlaintext, MaxPlaintext + 1} {
		add(func(srv *Conn) []byte { b, _ := srv.AppendSeal(nil, payload(n, 11)); return b })
	}
	add(func(srv *Conn) []byte { b, _ := srv.AppendRecord(nil, nil); return b })
	add(func(srv *Conn) []byte {
		return rawRecord(srv, append([]byte("padded"), typeApplicationData, 0, 0, 0, 0, 0))
	})
	add(func(srv *Conn) []byte {
		b, _ := srv.AppendKeyUpdate(nil, true)
		b, _ = srv.AppendSeal(b, []byte("after"))
		b, _ = srv.AppendKeyUpdate(b, false)
		return srv.AppendAlert(b, AlertCloseNotify)
	})
	nst := append([]byte{hsNewSessionTicket, 0, 0, 13}, make([]byte, 13)...)
	add(func(srv *Conn) []byte {
		b := rawRecord(srv, append(append(bytes.Clone(nst), nst...), typeHandshake))
		b = append(b, rawRecord(srv, append(bytes.Clone(nst[:5]), typeHandshake))...)
		b = append(b, rawRecord(srv, append(bytes.Clone(nst[5:]), typeHandshake))...)
		b, _ = srv.AppendSeal(b, []byte("data"))
		return b
	})
	add(func(srv *Conn) []byte { return srv.AppendAlert(nil, AlertBadRecordMAC) })
	add(func(srv *Conn) []byte { return rawRecord(srv, make([]byte, 30)) })
	add(func(srv *Conn) []byte { return rawRecord(srv, []byte{hsKeyUpdate, 0, 0, 1, 7, typeHandshake}) })
	seeds = append(seeds,
		[]byte{20, 3, 3, 0, 1, 1},
		[]byte{23, 3, 3, 0x41, 0x01},
		[]byte{23, 3, 3, 0, 3, 1, 2, 3},
	)
	return seeds
}

// headerError reports whether Open decides err from the header alone.
func headerError(err error) bool {
	return errors.Is(err, ErrChangeCipherSpec) || errors.Is(err, ErrRecordType) ||
		errors.Is(err, ErrRecordOverflow) || errors.Is(err, ErrBadRecordMAC)
}

// FuzzOpen runs the client's Open over a stream record by record and
// checks, at every record boundary: every truncated prefix of what is left
// is need-more (or, once the header is in, the header's own error), and
// touches neither the buffer nor the Conn; no panic; an application data
// record without padding seals back to the same bytes.
func FuzzOpen(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 1<<16 {
			in = in[:1<<16]
		}
		_, c := pair(t, tls.TLS_AES_128_GCM_SHA256)
		for len(in) > 0 {
			// The outcome on the whole input decides what its prefixes
			// may return.
			probe := *c
			_, _, _, fullErr := probe.Open(bytes.Clone(in))
			recLen := len(in)
			if len(in) >= HeaderLen {
				recLen = min(recLen, HeaderLen+int(binary.BigEndian.Uint16(in[3:])))
			}
			for k := 0; k < recLen; k++ {
				p := bytes.Clone(in[:k])
				before := *c
				_, n, _, err := c.Open(p)
				switch {
				case err == wire.ErrNeedMore:
					if n != 0 || !bytes.Equal(p, in[:k]) || *c != before {
						t.Fatalf("prefix %d: need-more with n %d, or it modified its input", k, n)
					}
				case k >= HeaderLen && headerError(err) && err == fullErr:
					*c = before // a failed Conn stays failed; undo for the next prefix
				default:
					t.Fatalf("prefix %d of %d: n %d err %v (whole record: %v)", k, recLen, n, err, fullErr)
				}
			}
			rec := bytes.Clone(in)
			readSide := c.r
			data, n, r, err := c.Open(in)
			if err != nil {
				if err == wire.ErrNeedMore {
					return
				}
				if _, _, _, again := c.Open(in); again != err {
					t.Fatalf("failure not sticky: %v then %v", err, again)
				}
				return
			}
			if n <= 0 || n > len(in) {
				t.Fatalf("n = %d of %d", n, len(in))
			}
			if r == CloseNotify {
				if _, m, r2, err := c.Open(in[n:]); err != nil || r2 != CloseNotify || m != len(in)-n {
					t.Fatalf("after close_notify: %d %v %v", m, r2, err)
				}
				return
			}
			if r != Data && data != nil {
				t.Fatalf("%v record returned data", r)
			}
			if r == Data && n == len(data)+RecordOverhead {
				// Re-seal with the read side as it was: same bytes.
				m := &Conn{suite: c.suite, w: readSide}
				m.w.aead = nil
				out, err := m.AppendRecord(nil, data)
				if err != nil || !bytes.Equal(out, rec[:n]) {
					t.Fatalf("re-sealed record differs: %v", err)
				}
			}
			in = in[n:]
		}
	})
}
