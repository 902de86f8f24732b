package simd

import (
	"bytes"
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

func TestMaskMatchesBytewise(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 4096+64)
	for _, n := range []int{0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 125, 126, 1000, 4096} {
		for align := 0; align < 16; align++ {
			for pos := 0; pos < 4; pos++ {
				var key [4]byte
				for i := range key {
					key[i] = byte(rng.Uint32())
				}
				src := buf[align : align+n]
				for i := range src {
					src[i] = byte(rng.Uint32())
				}
				want := bytes.Clone(src)
				wantPos := maskBytewise(key, pos, want)
				gotPos := Mask(key, pos, src)
				if gotPos != wantPos || !bytes.Equal(src, want) {
					t.Fatalf("n=%d align=%d pos=%d: got pos %d, want %d; bytes equal=%v", n, align, pos, gotPos, wantPos, bytes.Equal(src, want))
				}
			}
		}
	}
}

func TestMaskChunkedEqualsOneShot(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for iter := 0; iter < 200; iter++ {
		n := rng.IntN(3000)
		key := [4]byte{byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())}
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		one := bytes.Clone(data)
		Mask(key, 0, one)
		pos := 0
		for rest := data; len(rest) > 0; {
			k := 1 + rng.IntN(len(rest))
			pos = Mask(key, pos, rest[:k])
			rest = rest[k:]
		}
		if !bytes.Equal(one, data) {
			t.Fatalf("iter %d: chunked result differs from one-shot", iter)
		}
	}
}

func TestMaskCopyMatchesBytewise(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 125, 126, 1000, 4096} {
		for pos := 0; pos < 4; pos++ {
			key := [4]byte{byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())}
			src := make([]byte, n)
			for i := range src {
				src[i] = byte(rng.Uint32())
			}
			orig := bytes.Clone(src)
			want := bytes.Clone(src)
			wantPos := maskBytewise(key, pos, want)
			dst := make([]byte, n+8)
			for i := range dst {
				dst[i] = 0xAA
			}
			gotPos := MaskCopy(key, pos, dst, src)
			if gotPos != wantPos || !bytes.Equal(dst[:n], want) || !bytes.Equal(src, orig) {
				t.Fatalf("n=%d pos=%d: wrong result", n, pos)
			}
			for _, c := range dst[n:] {
				if c != 0xAA {
					t.Fatalf("n=%d pos=%d: wrote past len(src)", n, pos)
				}
			}
		}
	}
}
