package multistream

import (
	"bytes"
	"testing"
)

// dialerProtos are the proposal lists the dialer tests choose from: one
// protocol (the lazy case), and a fallback list like go-libp2p's security
// negotiation.
var dialerProtos = [][]string{
	{"/noise"},
	{"/tls/1.0.0", "/noise"},
	{"/tls/1.0.0", "/noise", "/yamux/1.0.0"},
}

// dialerRun is what a dialer made of an answer stream.
type dialerRun struct {
	out      []byte // everything the dialer wrote after Start
	consumed int    // bytes of the answers it consumed
	err      error
	proto    string
}

// dFeed drives a fresh dialer with in split into pieces of the given sizes
// (cycled; none: all at once), re-presenting unconsumed bytes like the
// engine does, until it is done, fails or the input ends.
func dFeed(protos []string, in []byte, sizes []int) dialerRun {
	d, err := NewDialer(protos...)
	if err != nil {
		panic(err)
	}
	d.Start(nil)
	if len(sizes) == 0 {
		sizes = []int{len(in)}
	}
	var r dialerRun
	var buf []byte
	for i, fed := 0, 0; fed < len(in); i++ {
		k := min(max(sizes[i%len(sizes)], 1), len(in)-fed)
		buf = append(buf, in[fed:fed+k]...)
		fed += k
		var n int
		r.out, n, r.err = d.Input(r.out, buf)
		if n < 0 || n > len(buf) {
			panic("consumed outside the buffer")
		}
		r.consumed += n
		buf = buf[n:]
		if r.err != nil || d.Done() {
			break
		}
		// Unconsumed bytes are at most one partial message.
		if len(buf) > MaxMessage+maxLenBytes {
			panic("more than a partial message left unconsumed")
		}
	}
	r.proto = d.Protocol()
	if r.err != nil {
		// An error is sticky and consumes nothing more.
		if _, n, err := d.Input(nil, []byte("\x07/noise\n")); n != 0 || err != r.err {
			panic("error not sticky")
		}
	}
	return r
}

func sameRun(a, b dialerRun) bool {
	return a.err == b.err && a.consumed == b.consumed && a.proto == b.proto && bytes.Equal(a.out, b.out)
}

// answers builds a listener's answer stream.
func answers(texts ...string) []byte {
	var b []byte
	for _, s := range texts {
		b = AppendMessage(b, s)
	}
	return b
}

// Every truncated prefix of a valid answer stream is need-more: no error,
// not done, and only the further proposals the complete messages in it
// call for.
func TestDialerTruncatedPrefixes(t *testing.T) {
	protos := dialerProtos[2]
	for _, in := range [][]byte{
		answers(ProtocolID, "/tls/1.0.0"),
		answers(ProtocolID, NA, "/noise"),
		answers(ProtocolID, NA, NA, "/yamux/1.0.0"),
	} {
		whole := dFeed(protos, in, nil)
		if whole.err != nil || whole.proto == "" || whole.consumed != len(in) {
			t.Fatalf("%q: %+v", in, whole)
		}
		for i := range in {
			r := dFeed(protos, in[:i], nil)
			if r.err != nil || r.proto != "" || !bytes.HasPrefix(whole.out, r.out) {
				t.Fatalf("%q prefix %d: %+v", in, i, r)
			}
		}
		// Byte at a time gives the same run.
		if r := dFeed(protos, in, []int{1}); !sameRun(r, whole) {
			t.Fatalf("%q bytewise: %+v, whole %+v", in, r, whole)
		}
	}
}

// FuzzDialer feeds arbitrary listener answers to a dialer: never a panic,
// only the package's errors, an error is sticky, and any split of the
// answers (the fuzzer's piece sizes, and a byte at a time) gives the run
// of the whole: same output, consumption, protocol and error. A run that
// selects a protocol stays need-more on every truncated prefix.
func FuzzDialer(f *testing.F) {
	f.Add(answers(ProtocolID, "/noise"), []byte{3}, uint8(0))
	f.Add(append(answers(ProtocolID, "/noise"), 0, 1, 2), []byte{1, 20}, uint8(0))
	f.Add(answers(ProtocolID, NA, "/noise"), []byte{19, 2}, uint8(1))
	f.Add(answers(ProtocolID, NA, NA), []byte{5}, uint8(1))
	f.Add(answers(ProtocolID, NA, NA, "/yamux/1.0.0"), []byte{7, 1, 1}, uint8(2))
	f.Add(answers(ProtocolID, "/yamux/1.0.0"), []byte{}, uint8(2))
	f.Add(answers("/multistream/2.0.0"), []byte{}, uint8(0))
	f.Add(append(answers(ProtocolID), appendLS(nil, []string{"/noise"})...), []byte{2}, uint8(0))
	f.Add([]byte{0x81, 0x08}, []byte{}, uint8(0))
	f.Fuzz(func(t *testing.T, in, sizes []byte, which uint8) {
		protos := dialerProtos[int(which)%len(dialerProtos)]
		whole := dFeed(protos, in, nil)
		if whole.err != nil {
			if _, ok := whole.err.(*Error); !ok {
				t.Fatalf("untyped error %v", whole.err)
			}
		}
		cut := make([]int, len(sizes))
		for i, s := range sizes {
			cut[i] = int(s) + 1
		}
		for _, split := range [][]int{cut, {1}} {
			if r := dFeed(protos, in, split); !sameRun(r, whole) {
				t.Fatalf("split %v: %+v, whole %+v", split, r, whole)
			}
		}
		if whole.proto == "" {
			return
		}
		// Selected: every proposal written was one of ours, in order.
		want := answers(protos[1:]...)
		if !bytes.HasPrefix(want, whole.out) {
			t.Fatalf("proposals %q, list %q", whole.out, protos)
		}
		for i := range whole.consumed {
			r := dFeed(protos, in[:i], nil)
			if r.err != nil || r.proto != "" {
				t.Fatalf("prefix %d of a selecting run: %+v", i, r)
			}
		}
	})
}
