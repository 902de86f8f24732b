// Package simd holds the byte-crunching kernels of the WebSocket hot path:
// XOR masking of frame payloads (RFC 6455 §5.3).
//
// Every byte a client sends is masked, so unmasking touches all inbound
// traffic. The exported functions are safe for any input length and any
// starting key offset; an implementation is chosen once at start-up from
// the CPU's features (AVX-512, AVX2 or SSE2 on amd64, NEON on arm64, a
// portable word-at-a-time loop elsewhere or under the purego build tag).
package simd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"unsafe"
)

// Implementations, in the order Impl names them. The amd64 ladder is
// AVX-512 → AVX2 → SSE2 → generic; arm64 has NEON → generic.
const (
	implGeneric = iota
	implSSE2
	implAVX2
	implAVX512
	implNEON
	numImpls
)

var implNames = [numImpls]string{
	implGeneric: "generic",
	implSSE2:    "sse2",
	implAVX2:    "avx2",
	implAVX512:  "avx512",
	implNEON:    "neon",
}

// impl selects the path Mask and MaskCopy take. It is set once at start-up
// to the best one the CPU supports (see bestImpl in the per-architecture
// files) and changed afterwards only by Use. It is passed to the single
// assembly entry point, which branches on it: one predictable compare
// instead of a second call, which matters for 16-byte payloads. A function
// variable measured no faster (BenchmarkDispatch) and, since an indirect
// call defeats //go:noescape, would make every buffer passed to Mask escape
// to the heap.
var impl = bestImpl()

// Impl names the implementation in use: "avx512", "avx2", "sse2", "neon" or
// "generic".
func Impl() string { return implNames[impl] }

// Use switches Mask and MaskCopy to the named implementation and returns a
// function that restores the previous one. It exists so tests and
// benchmarks can walk down the feature ladder; it is not safe to call while
// other goroutines are masking. It fails for an unknown name and, wrapping
// errors.ErrUnsupported, for a path this CPU or build lacks.
func Use(name string) (restore func(), err error) {
	for i, s := range implNames {
		if s != name {
			continue
		}
		if !implAvailable(i) {
			return nil, fmt.Errorf("simd: implementation %q: %w", name, errors.ErrUnsupported)
		}
		prev := impl
		impl = i
		return func() { impl = prev }, nil
	}
	return nil, fmt.Errorf("simd: unknown implementation %q", name)
}

// tinyLen is the length below which Mask and MaskCopy XOR byte by byte in
// Go on every path: passing arguments on the stack into the assembly costs
// more than a few bytes of work (BenchmarkTiny).
const tinyLen = 4

// rotKey returns the masking key as a little-endian word turned so that its
// low byte is the key byte for payload offset pos: the kernels then never
// need to know pos.
func rotKey(key [4]byte, pos int) uint32 {
	return bits.RotateLeft32(binary.LittleEndian.Uint32(key[:]), -8*(pos&3))
}

// Mask XORs b in place with the masking key, treating b as the payload bytes
// pos, pos+1, … of one frame (pos counts from the frame's first payload byte,
// so a parser can unmask a payload that arrives in pieces). It returns the key
// offset for the byte after b: (pos+len(b))&3.
func Mask(key [4]byte, pos int, b []byte) int {
	if len(b) < tinyLen {
		// A few bytes cost less here than the call into the assembly.
		for i := range b {
			b[i] ^= key[(pos+i)&3]
		}
		return (pos + len(b)) & 3
	}
	if impl == implGeneric {
		return maskGeneric(key, pos, b)
	}
	p := unsafe.SliceData(b)
	xorKey(p, p, len(b), rotKey(key, pos), impl)
	return (pos + len(b)) & 3
}

// MaskCopy writes src XOR the masking key stream into dst in one pass, as if
// by copy(dst, src) followed by Mask(key, pos, dst[:len(src)]), and returns
// (pos+len(src))&3. Fusing the two saves a second trip through memory when a
// payload is moved out of a read buffer.
//
// dst must be at least as long as src: MaskCopy panics if len(dst) <
// len(src), like an out-of-range slice expression, because silently dropping
// payload bytes would corrupt the stream. Bytes of dst past len(src) are not
// touched. dst and src may be the same slice (exact alias, &dst[0] ==
// &src[0]), which is the same as Mask; any other overlap panics, as in
// crypto/cipher, because the result would depend on the implementation's
// load/store order.
func MaskCopy(key [4]byte, pos int, dst, src []byte) int {
	if len(dst) < len(src) {
		panic("simd: MaskCopy: dst shorter than src")
	}
	dst = dst[:len(src)]
	if inexactOverlap(dst, src) {
		panic("simd: MaskCopy: invalid buffer overlap")
	}
	if len(src) < tinyLen {
		for i := range src {
			dst[i] = src[i] ^ key[(pos+i)&3]
		}
		return (pos + len(src)) & 3
	}
	if impl == implGeneric {
		return maskCopyGeneric(key, pos, dst, src)
	}
	xorKey(unsafe.SliceData(dst), unsafe.SliceData(src), len(src), rotKey(key, pos), impl)
	return (pos + len(src)) & 3
}
