package simd

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// maskBytewise is the definition from RFC 6455 §5.3, one byte at a time.
func maskBytewise(key [4]byte, pos int, b []byte) int {
	for i := range b {
		b[i] ^= key[(pos+i)&3]
	}
	return (pos + len(b)) & 3
}

// availableImpls lists the implementations this CPU and build can run,
// best first, by asking Use.
func availableImpls(tb testing.TB) []string {
	var names []string
	for i := numImpls - 1; i >= 0; i-- {
		restore, err := Use(implNames[i])
		if err != nil {
			if !errors.Is(err, errors.ErrUnsupported) {
				tb.Fatalf("Use(%q): %v", implNames[i], err)
			}
			continue
		}
		restore()
		names = append(names, implNames[i])
	}
	return names
}

// forEachImpl runs f once per available implementation, walking down the
// feature ladder, with that implementation selected.
func forEachImpl(t *testing.T, f func(t *testing.T)) {
	for _, name := range availableImpls(t) {
		t.Run(name, func(t *testing.T) {
			restore, err := Use(name)
			if err != nil {
				t.Fatal(err)
			}
			defer restore()
			f(t)
		})
	}
}

func randKey(rng *rand.Rand) [4]byte {
	var k [4]byte
	for i := range k {
		k[i] = byte(rng.Uint32())
	}
	return k
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}

// testLengths returns every length 0..300, then a spread up to 64 KiB that
// hits each power of two and its neighbours, then 1 MiB and its neighbour.
func testLengths() []int {
	var ns []int
	for n := 0; n <= 300; n++ {
		ns = append(ns, n)
	}
	for p := 512; p <= 65536; p *= 2 {
		for _, d := range []int{-65, -64, -63, -33, -1, 0, 1, 3, 63, 64, 65, 127} {
			if n := p + d; n > 300 && n <= 65536 {
				ns = append(ns, n)
			}
		}
	}
	for n := 301; n < 65536; n = n*5/4 + 7 {
		ns = append(ns, n)
	}
	return append(ns, 1<<20-1, 1<<20)
}

const guard = 64 // bytes checked on each side of the slice under test

// checkGuards fails if the guard bytes around buf[lo:hi] lost their fill.
func checkGuards(t *testing.T, buf []byte, lo, hi int, fill byte, what string) {
	t.Helper()
	for i := lo - guard; i < lo; i++ {
		if buf[i] != fill {
			t.Fatalf("%s: byte %d before the slice was overwritten", what, lo-i)
		}
	}
	for i := hi; i < hi+guard; i++ {
		if buf[i] != fill {
			t.Fatalf("%s: byte %d after the slice was overwritten", what, i-hi)
		}
	}
}

// TestMaskMatchesBytewise checks every available path against the
// byte-at-a-time definition for every length up to 300 at every alignment
// 0–63 and key offset 0–3, and for a spread of larger lengths at sampled
// alignments and offsets, with guard bytes on both sides.
func TestMaskMatchesBytewise(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		const fill = 0xA5
		buf := make([]byte, guard+64+1<<20+guard)
		want := make([]byte, 1<<20)
		for _, n := range testLengths() {
			type combo struct{ align, pos int }
			var combos []combo
			switch {
			case n <= 300:
				for align := 0; align < 64; align++ {
					for pos := 0; pos < 4; pos++ {
						combos = append(combos, combo{align, pos})
					}
				}
			case n <= 65536:
				for range 6 {
					combos = append(combos, combo{rng.IntN(64), rng.IntN(4)})
				}
			default:
				combos = append(combos, combo{0, 1}, combo{rng.IntN(64), rng.IntN(4)})
			}
			for _, c := range combos {
				key := randKey(rng)
				lo := guard + c.align
				b := buf[lo : lo+n]
				for i := lo - guard; i < lo+n+guard; i++ {
					buf[i] = fill
				}
				fillRandom(rng, b)
				w := want[:n]
				copy(w, b)
				wantPos := maskBytewise(key, c.pos, w)
				gotPos := Mask(key, c.pos, b)
				what := fmt.Sprintf("n=%d align=%d pos=%d", n, c.align, c.pos)
				if gotPos != wantPos {
					t.Fatalf("%s: returned pos %d, want %d", what, gotPos, wantPos)
				}
				if !bytes.Equal(b, w) {
					t.Fatalf("%s: wrong bytes", what)
				}
				checkGuards(t, buf, lo, lo+n, fill, what)
				// Positions past 3 and negative are reduced mod 4 the
				// same way: pos+4k behaves like pos.
				if n <= 300 && c.align == 0 {
					copy(w, b)
					maskBytewise(key, c.pos+4, w)
					if got := Mask(key, c.pos+4, b); got != (c.pos+n)&3 || !bytes.Equal(b, w) {
						t.Fatalf("%s: pos+4 differs", what)
					}
				}
			}
		}
	})
}

// TestMaskCopyMatchesBytewise does the same for MaskCopy with independent
// source and destination alignments, and checks that src is unchanged and
// dst is untouched outside dst[:len(src)].
func TestMaskCopyMatchesBytewise(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 6))
		const fill = 0x5A
		sbuf := make([]byte, guard+64+1<<20+guard)
		dbuf := make([]byte, guard+64+1<<20+8+guard)
		want := make([]byte, 1<<20)
		for _, n := range testLengths() {
			var aligns [][3]int // src align, dst align, pos
			switch {
			case n <= 300:
				for a := 0; a < 64; a++ {
					for pos := 0; pos < 4; pos++ {
						aligns = append(aligns, [3]int{a, (a*7 + pos) & 63, pos})
					}
				}
			default:
				for range 4 {
					aligns = append(aligns, [3]int{rng.IntN(64), rng.IntN(64), rng.IntN(4)})
				}
			}
			for _, c := range aligns {
				key := randKey(rng)
				slo, dlo := guard+c[0], guard+c[1]
				src := sbuf[slo : slo+n]
				fillRandom(rng, src)
				for i := dlo - guard; i < dlo+n+8+guard; i++ {
					dbuf[i] = fill
				}
				w := want[:n]
				copy(w, src)
				wantPos := maskBytewise(key, c[2], w)
				orig := bytes.Clone(src)
				// dst is 8 bytes longer than src: the extra bytes stay put.
				gotPos := MaskCopy(key, c[2], dbuf[dlo:dlo+n+8], src)
				what := fmt.Sprintf("n=%d src align=%d dst align=%d pos=%d", n, c[0], c[1], c[2])
				if gotPos != wantPos || !bytes.Equal(dbuf[dlo:dlo+n], w) {
					t.Fatalf("%s: wrong result", what)
				}
				if !bytes.Equal(src, orig) {
					t.Fatalf("%s: src modified", what)
				}
				checkGuards(t, dbuf, dlo, dlo+n+8, fill, what)
				// Exact alias: MaskCopy(b, b) is Mask(b).
				if n <= 300 || c[0] == 0 {
					if got := MaskCopy(key, c[2], src, src); got != wantPos || !bytes.Equal(src, w) {
						t.Fatalf("%s: in-place MaskCopy wrong", what)
					}
				}
			}
		}
	})
}

// TestChunkedEqualsOneShot splits payloads at random points, including
// empty pieces, and checks the pieces masked with the returned positions
// equal one call over the whole payload.
func TestChunkedEqualsOneShot(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(3, 4))
		for iter := 0; iter < 300; iter++ {
			n := rng.IntN(3000)
			if iter%50 == 0 {
				n = rng.IntN(70000)
			}
			key := randKey(rng)
			start := rng.IntN(4)
			data := make([]byte, n)
			fillRandom(rng, data)
			one := bytes.Clone(data)
			endPos := Mask(key, start, one)

			chunked := bytes.Clone(data)
			copied := make([]byte, n)
			pos, cpos := start, start
			for off := 0; off < n; {
				k := rng.IntN(min(n-off, 300) + 1)
				pos = Mask(key, pos, chunked[off:off+k])
				cpos = MaskCopy(key, cpos, copied[off:off+k], data[off:off+k])
				off += k
			}
			if pos != endPos || cpos != endPos {
				t.Fatalf("iter %d: chunked end pos %d/%d, one-shot %d", iter, pos, cpos, endPos)
			}
			if !bytes.Equal(one, chunked) || !bytes.Equal(one, copied) {
				t.Fatalf("iter %d (n=%d): chunked result differs from one-shot", iter, n)
			}
		}
	})
}

func TestMaskCopyPanics(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		key := [4]byte{1, 2, 3, 4}
		buf := make([]byte, 100)
		for _, tc := range []struct {
			name     string
			dst, src []byte
		}{
			{"short dst", buf[:9], buf[50:60]},
			{"dst overlaps src tail", buf[5:15], buf[0:10]},
			{"dst overlaps src head", buf[0:10], buf[5:15]},
			{"one byte overlap", buf[9:19], buf[0:10]},
		} {
			func() {
				defer func() {
					if recover() == nil {
						t.Errorf("%s: MaskCopy did not panic", tc.name)
					}
				}()
				MaskCopy(key, 0, tc.dst, tc.src)
			}()
		}
		// Adjacent, empty and exactly aliased slices are fine.
		MaskCopy(key, 0, buf[10:20], buf[0:10])
		MaskCopy(key, 0, buf[0:10], buf[10:20])
		MaskCopy(key, 0, buf[0:0], buf[5:5])
		MaskCopy(key, 0, nil, nil)
		MaskCopy(key, 0, buf, buf[:0])
		MaskCopy(key, 0, buf[0:10], buf[0:10])
		MaskCopy(key, 0, buf[0:20], buf[0:10]) // alias with longer dst
	})
}

func TestUse(t *testing.T) {
	names := availableImpls(t)
	if len(names) == 0 || names[0] != Impl() || names[len(names)-1] != "generic" {
		t.Fatalf("available %v, Impl() = %q: want the best first and generic last", names, Impl())
	}
	if _, err := Use("mmx"); err == nil || errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Use(unknown) = %v, want a plain error", err)
	}
	for _, name := range implNames {
		restore, err := Use(name)
		if err != nil {
			if !errors.Is(err, errors.ErrUnsupported) {
				t.Errorf("Use(%q) = %v", name, err)
			}
			continue
		}
		if Impl() != name {
			t.Errorf("after Use(%q), Impl() = %q", name, Impl())
		}
		restore()
	}
	if Impl() != names[0] {
		t.Errorf("restore left Impl() = %q, want %q", Impl(), names[0])
	}
	t.Logf("implementations: %v", names)
}
