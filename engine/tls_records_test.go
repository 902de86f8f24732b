package engine

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/internal/bufpool"
	"github.com/swarmgate/swarmgate/internal/testutil"
)

// recordingConn keeps a copy of everything written through it.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	out []byte
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.out = append(c.out, p...)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// tlsTranscript runs a crypto/tls client and server over an in-memory
// pipe (handshake, client writes of the given sizes, close_notify) and
// returns the record streams each side wrote.
func tlsTranscript(t testing.TB, version uint16, writes ...int) (c2s, s2c []byte) {
	t.Helper()
	cert, pool := testutil.SelfSigned(t, SelfSignedCertificate)
	a, b := net.Pipe()
	ca, sb := &recordingConn{Conn: a}, &recordingConn{Conn: b}
	cli := tls.Client(ca, &tls.Config{ServerName: "localhost", RootCAs: pool, MaxVersion: version})
	srv := tls.Server(sb, &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: version})
	served := make(chan struct{})
	go func() {
		defer close(served)
		io.Copy(io.Discard, srv) // until close_notify
		srv.Write([]byte("bye"))
		srv.CloseWrite()
	}()
	// Read from the start: a TLS 1.3 server writes session tickets, and a
	// pipe write waits for its reader.
	read := make(chan struct{})
	go func() { defer close(read); io.Copy(io.Discard, cli) }()
	for _, n := range writes {
		if _, err := cli.Write(bytes.Repeat([]byte{byte(n)}, n)); err != nil {
			t.Fatal(err)
		}
	}
	cli.CloseWrite()
	<-served
	<-read
	a.Close()
	b.Close()
	ca.mu.Lock()
	sb.mu.Lock()
	defer ca.mu.Unlock()
	defer sb.mu.Unlock()
	return ca.out, sb.out
}

// splitRecords is the reference framing: the complete records at the
// front of b, what is left of an incomplete one, and whether a header
// declared more than maxCiphertext (the stream ends there: crypto/tls
// rejects it).
func splitRecords(b []byte) (records [][]byte, tail []byte, overflow bool) {
	for {
		if len(b) < recordHeaderLen {
			return records, b, false
		}
		n := int(binary.BigEndian.Uint16(b[3:5]))
		if n > maxCiphertext {
			return records, b, true
		}
		if len(b) < recordHeaderLen+n {
			return records, b, false
		}
		records = append(records, b[:recordHeaderLen+n])
		b = b[recordHeaderLen+n:]
	}
}

// splitterRun is what a model of crypto/tls received from the pipe.
type splitterRun struct {
	records  [][]byte
	overflow bool
	left     []byte // ciphertext still buffered in the pipe at the end
}

// runSplitter feeds in to an open connection's TLS pipe in pieces of the
// given sizes (as tlsReceive buffers them) and drains it after each piece
// as tlsDecrypt does, with a reader that stands for crypto/tls: it reads
// with buffers of the given sizes, one record at a time, and stops at a
// header declaring an oversized record. It checks, on every read, that the
// pipe hands over only bytes of the current record, that a record it has
// started is never cut off by errWouldBlock, and that at most one partial
// record stays buffered.
func runSplitter(t testing.TB, in []byte, pieces, reads []int) splitterRun {
	t.Helper()
	// An admitted connection: the ciphertext held for an incomplete record
	// is charged to its scope.
	c := &Conn{}
	adm := admission.NewAdmission(admission.Limits{}, nil)
	if err := adm.Admit(&c.scope, netip.MustParseAddr("192.0.2.1"), time.Now()); err != nil {
		t.Fatal(err)
	}
	defer c.scope.Close()
	p := &tlsConn{c: c, phase: tlsOpen}
	defer func() {
		p.release()
		if u := c.scope.Used(); u != 0 {
			t.Fatalf("%d bytes still charged after release", u)
		}
	}()
	var r splitterRun
	var rec []byte // the record the reader is assembling
	buf := make([]byte, 1<<16)
	read := 0
	for i, fed := 0, 0; fed < len(in) && !r.overflow; i++ {
		k := min(max(pieces[i%len(pieces)], 1), len(in)-fed)
		b := in[fed : fed+k]
		fed += k
		// tlsReceive's buffering and charging.
		had := cap(p.in)
		if p.in == nil {
			p.in = bufpool.Get(len(b))
		} else {
			p.compact()
			p.in = bufpool.Grow(p.in, len(b))
		}
		c.scope.Charge(cap(p.in) - had)
		p.in = append(p.in, b...)
		// tlsDecrypt's loop: the reader runs while a record is ready;
		// one record may take several reads.
		for steps := 0; !r.overflow && (len(rec) > 0 || p.recordReady()); steps++ {
			if steps > len(in)+10 {
				t.Fatal("the pipe does not make progress")
			}
			size := max(reads[read%len(reads)], 1)
			read++
			n, err := p.Read(buf[:size])
			if errors.Is(err, errWouldBlock) {
				t.Fatalf("errWouldBlock inside a record (%d bytes of it read)", len(rec))
			}
			if err != nil || n == 0 || n > size {
				t.Fatalf("Read(%d) = %d, %v", size, n, err)
			}
			rec = append(rec, buf[:n]...)
			if len(rec) < recordHeaderLen {
				continue
			}
			l := int(binary.BigEndian.Uint16(rec[3:5]))
			if l > maxCiphertext {
				r.overflow = true // crypto/tls: record_overflow
				break
			}
			if len(rec) > recordHeaderLen+l {
				t.Fatalf("a read crossed a record boundary: %d bytes for a record of %d", len(rec), recordHeaderLen+l)
			}
			if len(rec) == recordHeaderLen+l {
				r.records = append(r.records, rec)
				rec = nil
			}
		}
		p.dropIn()
		if u := c.scope.Used(); u != int64(cap(p.in)) {
			t.Fatalf("%d bytes charged for a buffer of %d", u, cap(p.in))
		}
		if p.in != nil && !r.overflow && len(p.in)-p.inOff >= recordHeaderLen+maxCiphertext {
			t.Fatalf("%d bytes buffered: more than a partial record", len(p.in)-p.inOff)
		}
	}
	if len(rec) > 0 && !r.overflow {
		t.Fatalf("a started record was left incomplete (%d bytes)", len(rec))
	}
	if p.in != nil {
		r.left = bytes.Clone(p.in[p.inOff:])
	}
	return r
}

func checkSplitter(t testing.TB, in []byte, r splitterRun) {
	t.Helper()
	records, tail, overflow := splitRecords(in)
	if len(r.records) != len(records) {
		t.Fatalf("%d records, want %d", len(r.records), len(records))
	}
	for i := range records {
		if !bytes.Equal(r.records[i], records[i]) {
			t.Fatalf("record %d differs", i)
		}
	}
	if r.overflow != overflow {
		t.Fatalf("overflow %v, want %v", r.overflow, overflow)
	}
	if !overflow && !bytes.Equal(r.left, tail) {
		t.Fatalf("%d bytes left buffered, want %d", len(r.left), len(tail))
	}
}

// Every truncated prefix of a real record stream (both directions, TLS 1.3
// and 1.2) is need-more: the complete records in it are handed over whole,
// and the incomplete one stays buffered, never half-handed.
func TestTLSRecordPrefixes(t *testing.T) {
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		c2s, s2c := tlsTranscript(t, v, 1, 100, 1<<14, 20000)
		for _, in := range [][]byte{c2s, s2c} {
			records, tail, overflow := splitRecords(in)
			if len(records) < 5 || len(tail) != 0 || overflow {
				t.Fatalf("transcript: %d records, tail %d", len(records), len(tail))
			}
			for i := 0; i <= len(in); i++ {
				// Every prefix near a record boundary, a sample elsewhere.
				if i%101 != 0 && !nearBoundary(records, i) {
					continue
				}
				r := runSplitter(t, in[:i], []int{i}, []int{1 << 15})
				checkSplitter(t, in[:i], r)
			}
		}
	}
}

func nearBoundary(records [][]byte, i int) bool {
	off := 0
	for _, r := range records {
		if i-off >= -2 && i-off <= recordHeaderLen+2 {
			return true
		}
		off += len(r)
	}
	return i-off >= -2
}

// FuzzTLSRecords feeds the TLS pipe of an open connection arbitrary bytes
// in the fuzzer's pieces and drains it with the fuzzer's read sizes: never
// a panic or a stall, the reader gets exactly the records the reference
// framing finds (any split yields the same records), a record is handed
// only once complete and never together with bytes of the next, and a
// header declaring an oversized record is handed over at once for
// crypto/tls to refuse.
func FuzzTLSRecords(f *testing.F) {
	// Small transcripts: the fuzzer minimizes every input it finds
	// interesting, and a long one would take its whole time budget. The
	// largest records are covered by TestTLSRecordPrefixes.
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		c2s, s2c := tlsTranscript(f, v, 1, 100)
		f.Add(c2s, []byte{}, []byte{255})
		f.Add(s2c, []byte{0, 4, 20}, []byte{0, 3, 12})
	}
	f.Add([]byte{0x17, 3, 3, 0xff, 0xff, 1, 2, 3}, []byte{2}, []byte{1})
	f.Add([]byte{0x16, 3, 1, 0, 0, 0x17, 3, 3, 0, 1, 9}, []byte{0}, []byte{0})
	f.Add([]byte{0x17, 3, 3, maxCiphertext >> 8, maxCiphertext & 0xff, 1, 2}, []byte{1}, []byte{2})
	f.Add([]byte{0x17, 3, 3, (maxCiphertext + 1) >> 8, (maxCiphertext + 1) & 0xff, 1, 2}, []byte{1}, []byte{2})
	f.Fuzz(func(t *testing.T, in, pieces, reads []byte) {
		ps := []int{len(in)}
		if len(pieces) > 0 {
			ps = make([]int, len(pieces))
			for i, b := range pieces {
				ps[i] = int(b)*int(b) + 1
			}
		}
		rs := []int{1 << 15}
		if len(reads) > 0 {
			rs = make([]int, len(reads))
			for i, b := range reads {
				rs[i] = int(b)*int(b) + 1
			}
		}
		whole := runSplitter(t, in, []int{len(in)}, []int{1 << 16})
		checkSplitter(t, in, whole)
		split := runSplitter(t, in, ps, rs)
		checkSplitter(t, in, split)
		if !slices.EqualFunc(whole.records, split.records, bytes.Equal) {
			t.Fatal("split differs from whole")
		}
	})
}

// switchConn is a net.Conn whose reads move from a pipe (the handshake) to
// a TLS pipe of the engine once switched.
type switchConn struct {
	net.Conn
	mu   sync.Mutex
	pipe *tlsConn
}

func (c *switchConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	pipe := c.pipe
	c.mu.Unlock()
	if pipe != nil {
		return pipe.Read(p)
	}
	return c.Conn.Read(p)
}

// tlsSession runs a handshake over an in-memory pipe, switches the
// client's reads to p, and has the server write want in two records'
// worth of writes and close. It returns the client and everything the
// server wrote after the handshake (TLS 1.3 tickets, data records up to
// the largest, close_notify).
func tlsSession(t *testing.T, v uint16, want []byte, p *tlsConn) (*tls.Conn, []byte) {
	t.Helper()
	cert, pool := testutil.SelfSigned(t, SelfSignedCertificate)
	a, b := net.Pipe()
	sw := &switchConn{Conn: a}
	cli := tls.Client(sw, &tls.Config{ServerName: "localhost", RootCAs: pool, MaxVersion: v})
	srv := tls.Server(b, &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: v})
	hs := make(chan error, 1)
	go func() { hs <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	captured := make(chan []byte, 1)
	go func() {
		var all []byte
		buf := make([]byte, 1<<16)
		for {
			n, err := a.Read(buf)
			all = append(all, buf[:n]...)
			if err != nil {
				captured <- all
				return
			}
		}
	}()
	if err := <-hs; err != nil {
		t.Fatal(err)
	}
	srv.Write(want[:5])
	srv.Write(want[5:])
	srv.Close() // close_notify, then the pipe ends
	stream := <-captured
	a.Close()
	sw.mu.Lock()
	sw.pipe = p
	sw.mu.Unlock()
	return cli, stream
}

// readThroughPipe feeds stream to p in pieces of size, and after each
// piece drains it into cli as tlsDecrypt does. It returns the plaintext,
// and nil once close_notify was read.
func readThroughPipe(cli *tls.Conn, p *tlsConn, stream []byte, size int) ([]byte, error) {
	var got []byte
	buf := make([]byte, 1<<16)
	for len(stream) > 0 {
		b := stream[:min(size, len(stream))]
		stream = stream[len(b):]
		p.compact()
		p.in = append(p.in, b...)
		for p.recordReady() {
			n, err := cli.Read(buf)
			got = append(got, buf[:n]...)
			switch {
			case err == nil, errors.Is(err, errWouldBlock):
			case errors.Is(err, io.EOF):
				return got, nil
			default:
				return got, err
			}
		}
	}
	return got, io.ErrUnexpectedEOF
}

// crypto/tls itself, reading through an open connection's TLS pipe the
// records a real server wrote, fed in pieces of many sizes and drained as
// tlsDecrypt drains them, returns exactly the plaintext; and it refuses
// an oversized record header at once, without waiting for a body.
func TestTLSPipeFeedsCryptoTLS(t *testing.T) {
	want := append([]byte("hello"), bytes.Repeat([]byte{0xab}, 40000)...)
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		for _, size := range []int{1, 4, 5, 6, 100, 1 << 14, 1<<14 + 30, 1 << 20} {
			p := &tlsConn{phase: tlsOpen}
			cli, stream := tlsSession(t, v, want, p)
			got, err := readThroughPipe(cli, p, stream, size)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("TLS %x, pieces of %d: %d bytes, %v", v, size, len(got), err)
			}
		}
		p := &tlsConn{phase: tlsOpen}
		cli, stream := tlsSession(t, v, want, p)
		records, _, _ := splitRecords(stream)
		head := bytes.Join(records[:len(records)-3], nil) // up to "hello" at least
		bad := append(head, 0x17, 3, 3, (maxCiphertext+1)>>8, (maxCiphertext+1)&0xff)
		got, err := readThroughPipe(cli, p, bad, 1)
		if err == nil || errors.Is(err, errWouldBlock) || errors.Is(err, io.ErrUnexpectedEOF) || !bytes.HasPrefix(want, got) {
			t.Fatalf("TLS %x oversized header: %d bytes, %v", v, len(got), err)
		}
		t.Logf("TLS %x oversized header: %v after %d bytes", v, err, len(got))
	}
}
