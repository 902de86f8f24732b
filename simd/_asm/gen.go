// Command gen generates simd/mask_amd64.s, the amd64 masking kernels.
//
// Run it through "go generate" in simd (see the directive in mask_amd64.go)
// or with check.sh, which also fails if the committed file is stale.
//
// Every kernel has the Go signature
//
//	func xorKeyX(dst, src *byte, n int, key uint32)
//
// and writes dst[i] = src[i] ^ byte(key>>(8*(i&3))) for i < n. The caller
// has already rotated the masking key to the payload offset of src[0], so the
// kernels never see pos. dst and src are either the same pointer or disjoint:
// every block is loaded before the store that could overwrite it, which is
// what makes the overlapping head/tail tricks below safe in place.
package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// Register plan shared by all kernels.
var (
	dst  = RDI // destination pointer
	src  = RSI // source pointer
	n    = RBX // length in bytes
	key  = RDX // key rotated to src[0], zero-extended
	tkey = R9  // key rotated to src[n] (and so to src[n-4k] for any k)
)

const sig = "func(dst, src *byte, n int, key uint32)"

func main() {
	ConstraintExpr("gc,!purego")

	genSSE2()
	genAVX2()
	genAVX512()

	Generate()
}

// at returns the memory operand base+disp.
func at(base Register, disp int) Mem { return Mem{Base: base, Disp: disp} }

// fromEnd returns the memory operand base+n+disp, used for overlapping
// loads and stores that end exactly at the last byte.
func fromEnd(base Register, disp int) Mem {
	return Mem{Base: base, Index: n, Scale: 1, Disp: disp}
}

// loadArgs loads the four arguments into the shared registers.
func loadArgs() {
	Load(Param("dst"), dst)
	Load(Param("src"), src)
	Load(Param("n"), n)
	Load(Param("key"), EDX)
}

// tailKey computes tkey = key rotated right by 8*n bits. A 32-bit rotate
// masks its count to 5 bits, so this is a rotation by 8*(n&3): the key as
// seen from any offset that is ≡ n mod 4, such as n-4, n-8, n-16 or n-64.
func tailKey() {
	MOVL(n.As32(), ECX)
	SHLL(Imm(3), ECX)
	MOVL(EDX, tkey.As32())
	RORL(CL, tkey.As32())
}

// small emits the n < 16 path with general-purpose registers: two
// overlapping words for 4..15 bytes (both loaded before either is stored),
// bytes for 0..3. Inputs this small are the common case for libp2p control
// messages, so there is no loop and at most four branches.
func small(p string) {
	Label(p + "_small")
	tailKey()
	CMPQ(n, Imm(8))
	JB(LabelRef(p + "_lt8"))

	// 8..15 bytes: key and tail key widened to 64 bits.
	MOVQ(key, R8)
	SHLQ(Imm(32), R8)
	ORQ(key, R8)
	MOVQ(R8, R10)
	RORQ(CL, R10) // count 8n mod 64: 8*(n&3) or that plus 32, same word
	MOVQ(at(src, 0), RAX)
	MOVQ(fromEnd(src, -8), R11)
	XORQ(R8, RAX)
	XORQ(R10, R11)
	MOVQ(RAX, at(dst, 0))
	MOVQ(R11, fromEnd(dst, -8))
	RET()

	Label(p + "_lt8")
	CMPQ(n, Imm(4))
	JB(LabelRef(p + "_lt4"))
	// 4..7 bytes.
	MOVL(at(src, 0), EAX)
	MOVL(fromEnd(src, -4), R11L)
	XORL(EDX, EAX)
	XORL(tkey.As32(), R11L)
	MOVL(EAX, at(dst, 0))
	MOVL(R11L, fromEnd(dst, -4))
	RET()

	Label(p + "_lt4")
	// 0..3 bytes: no overlap, so each piece is stored before the next load.
	TESTQ(n, n)
	JZ(LabelRef(p + "_ret"))
	CMPQ(n, Imm(2))
	JB(LabelRef(p + "_one"))
	MOVW(at(src, 0), AX)
	XORW(DX, AX)
	MOVW(AX, at(dst, 0))
	CMPQ(n, Imm(2))
	JE(LabelRef(p + "_ret"))
	MOVB(at(src, 2), AL)
	SHRL(Imm(16), EDX)
	XORB(DL, AL)
	MOVB(AL, at(dst, 2))
	RET()
	Label(p + "_one")
	MOVB(at(src, 0), AL)
	XORB(DL, AL)
	MOVB(AL, at(dst, 0))
	Label(p + "_ret")
	RET()
}

func genSSE2() {
	TEXT("xorKeySSE2", NOSPLIT, sig)
	Doc("xorKeySSE2 masks n bytes from src into dst with 16-byte SSE2 vectors.")
	loadArgs()
	CMPQ(n, Imm(16))
	JB(LabelRef("sse2_small"))
	tailKey()
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
	// More than 64 bytes: load and mask the last 64 bytes first, run 64-byte
	// blocks from the front while more than 64 bytes remain, then store the
	// saved tail over whatever the last block overlapped.
	MOVOU(fromEnd(src, -64), X4)
	MOVOU(fromEnd(src, -48), X5)
	MOVOU(fromEnd(src, -32), X6)
	MOVOU(fromEnd(src, -16), X7)
	PXOR(X1, X4)
	PXOR(X1, X5)
	PXOR(X1, X6)
	PXOR(X1, X7)
	LEAQ(Mem{Base: dst, Index: n, Scale: 1}, R8)
	MOVQ(n, RAX)
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
	SUBQ(Imm(64), RAX)
	CMPQ(RAX, Imm(64))
	JA(LabelRef("sse2_loop64"))
	MOVOU(X4, at(R8, -64))
	MOVOU(X5, at(R8, -48))
	MOVOU(X6, at(R8, -32))
	MOVOU(X7, at(R8, -16))
	RET()

	small("sse2")
}

func genAVX2() {
	TEXT("xorKeyAVX2", NOSPLIT, sig)
	Doc("xorKeyAVX2 masks n bytes from src into dst with 32-byte AVX2 vectors.")
	loadArgs()
	CMPQ(n, Imm(16))
	JB(LabelRef("avx2_small"))
	tailKey()
	MOVQ(key, X0)
	MOVQ(tkey, X1)

	CMPQ(n, Imm(32))
	JA(LabelRef("avx2_gt32"))
	// 16..32 bytes: head and tail 16-byte vectors, VEX-encoded, so the
	// upper halves stay clean and no VZEROUPPER is needed.
	VPBROADCASTD(X0, X0)
	VPBROADCASTD(X1, X1)
	VMOVDQU(at(src, 0), X2)
	VMOVDQU(fromEnd(src, -16), X3)
	VPXOR(X0, X2, X2)
	VPXOR(X1, X3, X3)
	VMOVDQU(X2, at(dst, 0))
	VMOVDQU(X3, fromEnd(dst, -16))
	RET()

	Label("avx2_gt32")
	VPBROADCASTD(X0, Y0)
	VPBROADCASTD(X1, Y1)
	CMPQ(n, Imm(64))
	JA(LabelRef("avx2_gt64"))
	// 33..64 bytes: head and tail 32-byte vectors.
	VMOVDQU(at(src, 0), Y2)
	VMOVDQU(fromEnd(src, -32), Y3)
	VPXOR(Y0, Y2, Y2)
	VPXOR(Y1, Y3, Y3)
	VMOVDQU(Y2, at(dst, 0))
	VMOVDQU(Y3, fromEnd(dst, -32))
	VZEROUPPER()
	RET()

	Label("avx2_gt64")
	CMPQ(n, Imm(128))
	JA(LabelRef("avx2_gt128"))
	// 65..128 bytes: two head and two tail vectors.
	VMOVDQU(at(src, 0), Y2)
	VMOVDQU(at(src, 32), Y3)
	VMOVDQU(fromEnd(src, -64), Y4)
	VMOVDQU(fromEnd(src, -32), Y5)
	VPXOR(Y0, Y2, Y2)
	VPXOR(Y0, Y3, Y3)
	VPXOR(Y1, Y4, Y4)
	VPXOR(Y1, Y5, Y5)
	VMOVDQU(Y2, at(dst, 0))
	VMOVDQU(Y3, at(dst, 32))
	VMOVDQU(Y4, fromEnd(dst, -64))
	VMOVDQU(Y5, fromEnd(dst, -32))
	VZEROUPPER()
	RET()

	Label("avx2_gt128")
	// More than 128 bytes: the SSE2 scheme with 128-byte blocks.
	VPXOR(fromEnd(src, -128), Y1, Y4)
	VPXOR(fromEnd(src, -96), Y1, Y5)
	VPXOR(fromEnd(src, -64), Y1, Y6)
	VPXOR(fromEnd(src, -32), Y1, Y7)
	LEAQ(Mem{Base: dst, Index: n, Scale: 1}, R8)
	MOVQ(n, RAX)
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
	SUBQ(Imm(128), RAX)
	CMPQ(RAX, Imm(128))
	JA(LabelRef("avx2_loop128"))
	VMOVDQU(Y4, at(R8, -128))
	VMOVDQU(Y5, at(R8, -96))
	VMOVDQU(Y6, at(R8, -64))
	VMOVDQU(Y7, at(R8, -32))
	VZEROUPPER()
	RET()

	small("avx2")
}

func genAVX512() {
	TEXT("xorKeyAVX512", NOSPLIT, sig)
	Doc("xorKeyAVX512 masks n bytes from src into dst with 64-byte AVX-512 vectors;",
		"lengths that are not a multiple of 64 finish with one byte-masked",
		"(AVX512BW) load and store, so there is no scalar tail at all.")
	loadArgs()
	VPBROADCASTD(EDX, Z0)
	CMPQ(n, Imm(64))
	JA(LabelRef("avx512_big"))

	// 0..64 bytes: one masked load and store; K1 = low n bits.
	MOVQ(I64(-1), RAX)
	BZHIQ(n, RAX, RAX)
	KMOVQ(RAX, K1)
	VMOVDQU8_Z(at(src, 0), K1, Z1)
	VPXORD(Z0, Z1, Z1)
	VMOVDQU8(Z1, K1, at(dst, 0))
	VZEROUPPER()
	RET()

	Label("avx512_big")
	MOVQ(n, RAX)
	CMPQ(RAX, U32(256))
	JB(LabelRef("avx512_loop64"))
	Label("avx512_loop256")
	VPXORD(at(src, 0), Z0, Z1)
	VPXORD(at(src, 64), Z0, Z2)
	VPXORD(at(src, 128), Z0, Z3)
	VPXORD(at(src, 192), Z0, Z4)
	VMOVDQU64(Z1, at(dst, 0))
	VMOVDQU64(Z2, at(dst, 64))
	VMOVDQU64(Z3, at(dst, 128))
	VMOVDQU64(Z4, at(dst, 192))
	ADDQ(U32(256), src)
	ADDQ(U32(256), dst)
	SUBQ(U32(256), RAX)
	CMPQ(RAX, U32(256))
	JAE(LabelRef("avx512_loop256"))

	Label("avx512_loop64")
	CMPQ(RAX, Imm(64))
	JB(LabelRef("avx512_tail"))
	VPXORD(at(src, 0), Z0, Z1)
	VMOVDQU64(Z1, at(dst, 0))
	ADDQ(Imm(64), src)
	ADDQ(Imm(64), dst)
	SUBQ(Imm(64), RAX)
	JMP(LabelRef("avx512_loop64"))

	Label("avx512_tail")
	// The remainder starts at a multiple of 64, so the key needs no turn.
	MOVQ(I64(-1), RCX)
	BZHIQ(RAX, RCX, RCX)
	KMOVQ(RCX, K1)
	VMOVDQU8_Z(at(src, 0), K1, Z1)
	VPXORD(Z0, Z1, Z1)
	VMOVDQU8(Z1, K1, at(dst, 0))
	VZEROUPPER()
	RET()
}
