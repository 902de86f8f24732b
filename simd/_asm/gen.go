// Command gen generates simd/mask_amd64.s, the amd64 masking kernels.
//
// Run it through "go generate ./simd" (see the directive in mask_amd64.go)
// or with check.sh, which also fails if the committed file is stale.
//
// The output is one function,
//
//	func xorKey(dst, src *byte, n int, key uint32, impl int)
//
// which writes dst[i] = src[i] ^ byte(key>>(8*(i&3))) for i < n using the
// SSE2, AVX2 or AVX-512 kernel named by impl. The caller has already rotated
// the masking key to the payload offset of src[0], so the kernels never see
// pos. One entry point rather than one per kernel saves a Go-level call on
// every Mask: at 16 bytes that call is a third of the time.
//
// dst and src are either the same pointer or disjoint. Every byte is
// loaded before any store that could overwrite it, which is what makes the
// overlapping head and tail vectors below safe in place.
//
// No length takes a slow path: under 16 bytes two overlapping words (or up
// to three bytes) are done in general-purpose registers; 16 to 128 (AVX2) or
// 256 (AVX-512) bytes are a head and a tail vector pair, possibly
// overlapping, with no loop; longer inputs run an unrolled loop whose
// leftovers are covered by an overlapping tail (SSE2, AVX2) or one
// byte-masked store (AVX-512, which also aligns its stores that way).
//
// AVX2 code must use only VEX encodings: one legacy-SSE MOVQ into X0 while
// the upper halves were dirty (Intel's SSE/AVX transition penalty) made the
// AVX2 loop 3-8x slower on the Xeon (Emerald Rapids) we measure on.
package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// Implementation numbers; they must match the impl* constants in mask.go.
const (
	implSSE2   = 1
	implAVX2   = 2
	implAVX512 = 3
)

// Register plan.
var (
	dst  = RDI // destination pointer
	src  = RSI // source pointer
	n    = RBX // length in bytes
	key  = RDX // key rotated to src[0], zero-extended
	tkey = R9  // key rotated to src[n], and so to src[n-4k] for any k
)

func main() {
	ConstraintExpr("gc,!purego")

	TEXT("xorKey", NOSPLIT, "func(dst, src *byte, n int, key uint32, impl int)")
	Doc("xorKey masks n bytes from src into dst with the kernel impl selects.")
	Load(Param("dst"), dst)
	Load(Param("src"), src)
	Load(Param("n"), n)
	Load(Param("key"), EDX)
	Load(Param("impl"), RAX)
	tailKey()
	CMPQ(n, Imm(16))
	JB(LabelRef("small"))
	CMPQ(RAX, Imm(implAVX512))
	JE(LabelRef("avx512"))
	CMPQ(RAX, Imm(implAVX2))
	JE(LabelRef("avx2"))

	sse2()
	small()
	avx2()
	avx512()

	Generate()
}

// at returns the memory operand base+disp.
func at(base Register, disp int) Mem { return Mem{Base: base, Disp: disp} }

// fromEnd returns base+n+disp, for vectors that end at the last byte.
func fromEnd(base Register, disp int) Mem {
	return Mem{Base: base, Index: n, Scale: 1, Disp: disp}
}

// tailKey computes tkey = key rotated right by 8*n bits and leaves 8*n in
// CX. A 32-bit rotate masks its count to 5 bits, so this is a rotation by
// 8*(n&3): the key as seen from any offset ≡ n mod 4, such as n-4, n-8,
// n-16 or n-64.
func tailKey() {
	MOVL(n.As32(), ECX)
	SHLL(Imm(3), ECX)
	MOVL(EDX, tkey.As32())
	RORL(CL, tkey.As32())
}

// small is the n < 16 path, shared by every kernel: libp2p control messages
// are this short, so it has no loop and at most four branches.
func small() {
	Label("small")
	CMPQ(n, Imm(8))
	JB(LabelRef("lt8"))
	// 8..15 bytes: two overlapping 64-bit words, both loaded first.
	MOVQ(key, R8)
	SHLQ(Imm(32), R8)
	ORQ(key, R8)
	MOVQ(tkey, R10)
	SHLQ(Imm(32), R10)
	ORQ(tkey, R10)
	MOVQ(at(src, 0), RAX)
	MOVQ(fromEnd(src, -8), R11)
	XORQ(R8, RAX)
	XORQ(R10, R11)
	MOVQ(RAX, at(dst, 0))
	MOVQ(R11, fromEnd(dst, -8))
	RET()

	Label("lt8")
	CMPQ(n, Imm(4))
	JB(LabelRef("lt4"))
	// 4..7 bytes: two overlapping 32-bit words.
	MOVL(at(src, 0), EAX)
	MOVL(fromEnd(src, -4), R11L)
	XORL(EDX, EAX)
	XORL(tkey.As32(), R11L)
	MOVL(EAX, at(dst, 0))
	MOVL(R11L, fromEnd(dst, -4))
	RET()

	Label("lt4")
	// 0..3 bytes: disjoint pieces, each stored before the next load.
	TESTQ(n, n)
	JZ(LabelRef("ret"))
	CMPQ(n, Imm(2))
	JB(LabelRef("one"))
	MOVW(at(src, 0), AX)
	XORW(DX, AX)
	MOVW(AX, at(dst, 0))
	CMPQ(n, Imm(2))
	JE(LabelRef("ret"))
	MOVB(at(src, 2), AL)
	SHRL(Imm(16), EDX)
	XORB(DL, AL)
	MOVB(AL, at(dst, 2))
	RET()
	Label("one")
	MOVB(at(src, 0), AL)
	XORB(DL, AL)
	MOVB(AL, at(dst, 0))
	Label("ret")
	RET()
}

// sse2 is the baseline kernel, 16-byte vectors, n >= 16.
func sse2() {
	Comment("SSE2: 16-byte vectors.")
	MOVQ(key, X0)
	PSHUFD(Imm(0), X0, X0)
	MOVQ(tkey, X1)
	PSHUFD(Imm(0), X1, X1)

	CMPQ(n, Imm(32))
	JA(LabelRef("sse2_gt32"))
	// 16..32 bytes: head and tail vectors, possibly overlapping.
	MOVOU(at(src, 0), X2)
	MOVOU(fromEnd(src, -16), X3)
	PXOR(X0, X2)
	PXOR(X1, X3)
	MOVOU(X2, at(dst, 0))
	MOVOU(X3, fromEnd(dst, -16))
	RET()

	Label("sse2_gt32")
	CMPQ(n, Imm(64))
	JA(LabelRef("sse2_gt64"))
	// 33..64 bytes: two head and two tail vectors.
	MOVOU(at(src, 0), X2)
	MOVOU(at(src, 16), X3)
	MOVOU(fromEnd(src, -32), X4)
	MOVOU(fromEnd(src, -16), X5)
	PXOR(X0, X2)
	PXOR(X0, X3)
	PXOR(X1, X4)
	PXOR(X1, X5)
	MOVOU(X2, at(dst, 0))
	MOVOU(X3, at(dst, 16))
	MOVOU(X4, fromEnd(dst, -32))
	MOVOU(X5, fromEnd(dst, -16))
	RET()

	Label("sse2_gt64")
	// More than 64 bytes: mask the last 64 bytes into registers first, run
	// 64-byte blocks from the front while more than 64 bytes remain, then
	// store the saved tail over whatever the last block overlapped.
	MOVOU(fromEnd(src, -64), X4)
	MOVOU(fromEnd(src, -48), X5)
	MOVOU(fromEnd(src, -32), X6)
	MOVOU(fromEnd(src, -16), X7)
	PXOR(X1, X4)
	PXOR(X1, X5)
	PXOR(X1, X6)
	PXOR(X1, X7)
	LEAQ(Mem{Base: dst, Index: n, Scale: 1}, R8)
	Label("sse2_loop64")
	MOVOU(at(src, 0), X8)
	MOVOU(at(src, 16), X9)
	MOVOU(at(src, 32), X10)
	MOVOU(at(src, 48), X11)
	PXOR(X0, X8)
	PXOR(X0, X9)
	PXOR(X0, X10)
	PXOR(X0, X11)
	MOVOU(X8, at(dst, 0))
	MOVOU(X9, at(dst, 16))
	MOVOU(X10, at(dst, 32))
	MOVOU(X11, at(dst, 48))
	ADDQ(Imm(64), src)
	ADDQ(Imm(64), dst)
	SUBQ(Imm(64), n)
	CMPQ(n, Imm(64))
	JA(LabelRef("sse2_loop64"))
	MOVOU(X4, at(R8, -64))
	MOVOU(X5, at(R8, -48))
	MOVOU(X6, at(R8, -32))
	MOVOU(X7, at(R8, -16))
	RET()
}

// avx2 is the 32-byte kernel, n >= 16. The AVX-512 kernel reuses its
// 16..64-byte code through the avx2_le32 and avx2_le64 labels.
func avx2() {
	Label("avx2")
	CMPQ(n, Imm(32))
	JA(LabelRef("avx2_gt32"))
	Label("avx2_le32")
	// 16..32 bytes: head and tail 16-byte vectors. VEX encoding leaves the
	// upper halves clean, so no VZEROUPPER.
	VMOVD(EDX, X0)
	VMOVD(tkey.As32(), X1)
	VPBROADCASTD(X0, X0)
	VPBROADCASTD(X1, X1)
	VPXOR(at(src, 0), X0, X2)
	VPXOR(fromEnd(src, -16), X1, X3)
	VMOVDQU(X2, at(dst, 0))
	VMOVDQU(X3, fromEnd(dst, -16))
	RET()

	Label("avx2_gt32")
	CMPQ(n, Imm(64))
	JA(LabelRef("avx2_gt64"))
	Label("avx2_le64")
	// 33..64 bytes: head and tail 32-byte vectors.
	VMOVD(EDX, X0)
	VMOVD(tkey.As32(), X1)
	VPBROADCASTD(X0, Y0)
	VPBROADCASTD(X1, Y1)
	VPXOR(at(src, 0), Y0, Y2)
	VPXOR(fromEnd(src, -32), Y1, Y3)
	VMOVDQU(Y2, at(dst, 0))
	VMOVDQU(Y3, fromEnd(dst, -32))
	VZEROUPPER()
	RET()

	Label("avx2_gt64")
	VMOVD(EDX, X0)
	VMOVD(tkey.As32(), X1)
	VPBROADCASTD(X0, Y0)
	VPBROADCASTD(X1, Y1)
	CMPQ(n, Imm(128))
	JA(LabelRef("avx2_gt128"))
	// 65..128 bytes: two head and two tail vectors.
	VPXOR(at(src, 0), Y0, Y2)
	VPXOR(at(src, 32), Y0, Y3)
	VPXOR(fromEnd(src, -64), Y1, Y4)
	VPXOR(fromEnd(src, -32), Y1, Y5)
	VMOVDQU(Y2, at(dst, 0))
	VMOVDQU(Y3, at(dst, 32))
	VMOVDQU(Y4, fromEnd(dst, -64))
	VMOVDQU(Y5, fromEnd(dst, -32))
	VZEROUPPER()
	RET()

	Label("avx2_gt128")
	// More than 128 bytes. Mask the first 32 and the last 128 bytes into
	// registers, then run 128-byte blocks from the first 32-byte boundary
	// of dst (so no store splits a cache line) while more than 128 bytes
	// remain, and store the saved head and tail last, over whatever the
	// blocks overlapped.
	VPXOR(at(src, 0), Y0, Y2)
	VPXOR(fromEnd(src, -128), Y1, Y4)
	VPXOR(fromEnd(src, -96), Y1, Y5)
	VPXOR(fromEnd(src, -64), Y1, Y6)
	VPXOR(fromEnd(src, -32), Y1, Y7)
	MOVQ(dst, R10)                               // start, for the head store
	LEAQ(Mem{Base: dst, Index: n, Scale: 1}, R8) // end, for the tail store
	// h = -dst & 31 bytes to the boundary; turn the key by h bytes.
	MOVQ(dst, RCX)
	NEGQ(RCX)
	ANDQ(Imm(31), RCX)
	ADDQ(RCX, src)
	ADDQ(RCX, dst)
	SUBQ(RCX, n)
	SHLL(Imm(3), ECX)
	RORL(CL, EDX)
	VMOVD(EDX, X0)
	VPBROADCASTD(X0, Y0)
	CMPQ(n, Imm(128))
	JBE(LabelRef("avx2_done"))
	Label("avx2_loop128")
	VPXOR(at(src, 0), Y0, Y8)
	VPXOR(at(src, 32), Y0, Y9)
	VPXOR(at(src, 64), Y0, Y10)
	VPXOR(at(src, 96), Y0, Y11)
	VMOVDQU(Y8, at(dst, 0))
	VMOVDQU(Y9, at(dst, 32))
	VMOVDQU(Y10, at(dst, 64))
	VMOVDQU(Y11, at(dst, 96))
	ADDQ(Imm(128), src)
	ADDQ(Imm(128), dst)
	SUBQ(Imm(128), n)
	CMPQ(n, Imm(128))
	JA(LabelRef("avx2_loop128"))
	Label("avx2_done")
	VMOVDQU(Y2, at(R10, 0))
	VMOVDQU(Y4, at(R8, -128))
	VMOVDQU(Y5, at(R8, -96))
	VMOVDQU(Y6, at(R8, -64))
	VMOVDQU(Y7, at(R8, -32))
	VZEROUPPER()
	RET()
}

// avx512 is the 64-byte kernel (AVX512F, plus AVX512BW for byte-masked
// loads and stores and BMI2 for BZHI), n >= 16.
func avx512() {
	Label("avx512")
	// Up to 64 bytes, reuse the AVX2 code: on our Xeon a byte-masked store
	// costs more than two overlapping plain ones (measured: a masked
	// 32-byte store at 16..32 bytes took about 1.5x as long).
	CMPQ(n, Imm(32))
	JBE(LabelRef("avx2_le32"))
	CMPQ(n, Imm(64))
	JBE(LabelRef("avx2_le64"))
	VPBROADCASTD(EDX, Z0)
	VPBROADCASTD(tkey.As32(), Z1)
	CMPQ(n, Imm(128))
	JA(LabelRef("avx512_gt128"))
	// 65..128 bytes: head and tail 64-byte vectors.
	VPXORD(at(src, 0), Z0, Z2)
	VPXORD(fromEnd(src, -64), Z1, Z3)
	VMOVDQU64(Z2, at(dst, 0))
	VMOVDQU64(Z3, fromEnd(dst, -64))
	VZEROUPPER()
	RET()

	Label("avx512_gt128")
	CMPQ(n, U32(256))
	JA(LabelRef("avx512_gt256"))
	// 129..256 bytes: two head and two tail vectors.
	VPXORD(at(src, 0), Z0, Z2)
	VPXORD(at(src, 64), Z0, Z3)
	VPXORD(fromEnd(src, -128), Z1, Z4)
	VPXORD(fromEnd(src, -64), Z1, Z5)
	VMOVDQU64(Z2, at(dst, 0))
	VMOVDQU64(Z3, at(dst, 64))
	VMOVDQU64(Z4, fromEnd(dst, -128))
	VMOVDQU64(Z5, fromEnd(dst, -64))
	VZEROUPPER()
	RET()

	Label("avx512_gt256")
	// More than 256 bytes. One byte-masked store takes dst to a 64-byte
	// boundary, so no store in the loop splits a cache line; the key turns
	// by the bytes it did. (Preloading an overlapping head and tail as the
	// AVX2 code does measured slower here, at 1 and 4 KiB.)
	MOVQ(dst, RCX)
	NEGQ(RCX)
	ANDQ(Imm(63), RCX)
	JZ(LabelRef("avx512_aligned"))
	MOVQ(I64(-1), RAX)
	BZHIQ(RCX, RAX, RAX)
	KMOVQ(RAX, K1)
	VMOVDQU8_Z(at(src, 0), K1, Z2)
	VPXORD(Z0, Z2, Z2)
	VMOVDQU8(Z2, K1, at(dst, 0))
	ADDQ(RCX, src)
	ADDQ(RCX, dst)
	SUBQ(RCX, n)
	SHLL(Imm(3), ECX)
	RORL(CL, EDX)
	VPBROADCASTD(EDX, Z0)
	Label("avx512_aligned")
	CMPQ(n, U32(256))
	JB(LabelRef("avx512_loop64"))
	Label("avx512_loop256")
	VPXORD(at(src, 0), Z0, Z2)
	VPXORD(at(src, 64), Z0, Z3)
	VPXORD(at(src, 128), Z0, Z4)
	VPXORD(at(src, 192), Z0, Z5)
	VMOVDQU64(Z2, at(dst, 0))
	VMOVDQU64(Z3, at(dst, 64))
	VMOVDQU64(Z4, at(dst, 128))
	VMOVDQU64(Z5, at(dst, 192))
	ADDQ(U32(256), src)
	ADDQ(U32(256), dst)
	SUBQ(U32(256), n)
	CMPQ(n, U32(256))
	JAE(LabelRef("avx512_loop256"))

	Label("avx512_loop64")
	CMPQ(n, Imm(64))
	JB(LabelRef("avx512_tail"))
	VPXORD(at(src, 0), Z0, Z2)
	VMOVDQU64(Z2, at(dst, 0))
	ADDQ(Imm(64), src)
	ADDQ(Imm(64), dst)
	SUBQ(Imm(64), n)
	JMP(LabelRef("avx512_loop64"))

	Label("avx512_tail")
	// 0..63 bytes left at a multiple of 4 from the turned key: one masked
	// load and store, K1 = low n bits.
	TESTQ(n, n)
	JZ(LabelRef("avx512_done"))
	MOVQ(I64(-1), RAX)
	BZHIQ(n, RAX, RAX)
	KMOVQ(RAX, K1)
	VMOVDQU8_Z(at(src, 0), K1, Z2)
	VPXORD(Z0, Z2, Z2)
	VMOVDQU8(Z2, K1, at(dst, 0))
	Label("avx512_done")
	VZEROUPPER()
	RET()
}
