package simd

import (
	"fmt"
	"testing"
	"unsafe"

	"github.com/gobwas/ws"
)

// Benchmark sizes: libp2p control messages (16, 30 B), a typical small
// message (125 B, the largest 7-bit WebSocket length), and bulk sizes up to
// 1 MiB.
var benchSizes = []int{16, 30, 125, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 1 << 20}

// benchCases are the placements measured at each size: key offset 0 and 1
// on a 64-byte-aligned buffer, and key offset 1 on an odd address.
var benchCases = []struct {
	name       string
	align, pos int
}{
	{"pos0", 0, 0},
	{"pos1", 0, 1},
	{"odd", 1, 1},
}

// alignedBuf returns n bytes starting align bytes past a 64-byte boundary.
func alignedBuf(n, align int) []byte {
	buf := make([]byte, n+128)
	off := 0
	for uintptr(unsafe.Pointer(unsafe.SliceData(buf[off:])))%64 != 0 {
		off++
	}
	return buf[off+align : off+align+n]
}

var sinkPos int

// BenchmarkMask measures, in one run, every available Mask path, gobwas/ws
// Cipher (SSE2/AVX2 assembly) and copy() — the memory-bandwidth ceiling —
// then MaskCopy against copy() followed by Mask. Sub-benchmark names are
// op=…/impl=…/size=…/case=… so benchstat can pivot on any of them, e.g.
// benchstat -col /impl.
func BenchmarkMask(b *testing.B) {
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	impls := availableImpls(b)
	run := func(name string, n int, f func(b *testing.B)) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(n))
			f(b)
		})
	}
	withImpl := func(b *testing.B, name string) {
		restore, err := Use(name)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(restore)
	}
	for _, n := range benchSizes {
		for _, c := range benchCases {
			src := alignedBuf(n, c.align)
			dst := alignedBuf(n, c.align)
			for i := range src {
				src[i] = byte(i)
			}
			suffix := fmt.Sprintf("size=%d/case=%s", n, c.name)
			for _, impl := range impls {
				run("op=Mask/impl="+impl+"/"+suffix, n, func(b *testing.B) {
					withImpl(b, impl)
					for range b.N {
						sinkPos = Mask(key, c.pos, dst)
					}
				})
			}
			run("op=Mask/impl=gobwas/"+suffix, n, func(b *testing.B) {
				for range b.N {
					ws.Cipher(dst, key, c.pos)
				}
			})
			run("op=Mask/impl=copy/"+suffix, n, func(b *testing.B) {
				for range b.N {
					copy(dst, src)
				}
			})
			for _, impl := range impls {
				run("op=MaskCopy/impl="+impl+"/"+suffix, n, func(b *testing.B) {
					withImpl(b, impl)
					for range b.N {
						sinkPos = MaskCopy(key, c.pos, dst, src)
					}
				})
				run("op=CopyThenMask/impl="+impl+"/"+suffix, n, func(b *testing.B) {
					withImpl(b, impl)
					for range b.N {
						copy(dst, src)
						sinkPos = Mask(key, c.pos, dst)
					}
				})
			}
		}
	}
}

// xorKeyFn is the alternative dispatch design: a function variable holding
// the kernel. BenchmarkDispatch measures it against the chosen design (Mask
// passes impl to one assembly entry point that branches on it).
var xorKeyFn = xorKey

// BenchmarkDispatch measures what dispatch costs at tiny sizes: the public
// Mask (generic check, key rotation, one call into the assembly, which
// branches on impl) against calling the kernel directly, and against a
// call through a function variable.
func BenchmarkDispatch(b *testing.B) {
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	for _, n := range []int{1, 16} {
		buf := alignedBuf(n, 0)
		p := unsafe.SliceData(buf)
		k := rotKey(key, 1)
		b.Run(fmt.Sprintf("via=Mask/size=%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for range b.N {
				sinkPos = Mask(key, 1, buf)
			}
		})
		b.Run(fmt.Sprintf("via=direct/size=%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for range b.N {
				xorKey(p, p, n, k, impl)
			}
		})
		b.Run(fmt.Sprintf("via=funcvar/size=%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for range b.N {
				xorKeyFn(p, p, n, k, impl)
			}
		})
		b.Run(fmt.Sprintf("via=generic/size=%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for range b.N {
				sinkPos = maskGeneric(key, 1, buf)
			}
		})
	}
}

// BenchmarkTiny compares the selected path with the generic one at every
// length below 16, where the fixed cost of a call dominates; it justifies
// tinyLen.
func BenchmarkTiny(b *testing.B) {
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	for n := 1; n < 16; n++ {
		buf := alignedBuf(n, 0)
		for _, name := range []string{Impl(), "generic"} {
			b.Run(fmt.Sprintf("impl=%s/size=%d", name, n), func(b *testing.B) {
				restore, err := Use(name)
				if err != nil {
					b.Fatal(err)
				}
				defer restore()
				b.SetBytes(int64(n))
				for range b.N {
					sinkPos = Mask(key, 1, buf)
				}
			})
		}
	}
}
