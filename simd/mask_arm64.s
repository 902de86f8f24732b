//go:build gc && !purego

#include "textflag.h"

// func xorKey(dst, src *byte, n int, key uint32, impl int)
//
// Writes dst[i] = src[i] ^ byte(key>>(8*(i&3))) for i < n. The caller has
// rotated key to the payload offset of src[0]. Blocks of 64 and then 16
// bytes are XORed with the key broadcast to every 32-bit lane; every block
// is a multiple of 4 bytes, so the key never turns until the last 0..15
// bytes, which take 8-, 4- and 1-byte steps. Each piece is loaded before it
// is stored and pieces never overlap, so dst == src is safe.
TEXT ·xorKey(SB), NOSPLIT, $0-40
	MOVD  dst+0(FP), R0
	MOVD  src+8(FP), R1
	MOVD  n+16(FP), R2
	MOVWU key+24(FP), R3
	VDUP  R3, V4.S4          // key in every 32-bit lane

	CMP $64, R2
	BLT blocks16

blocks64:
	VLD1.P 64(R1), [V0.B16, V1.B16, V2.B16, V3.B16]
	VEOR   V4.B16, V0.B16, V0.B16
	VEOR   V4.B16, V1.B16, V1.B16
	VEOR   V4.B16, V2.B16, V2.B16
	VEOR   V4.B16, V3.B16, V3.B16
	VST1.P [V0.B16, V1.B16, V2.B16, V3.B16], 64(R0)
	SUB    $64, R2
	CMP    $64, R2
	BGE    blocks64

blocks16:
	CMP $16, R2
	BLT word8

loop16:
	VLD1.P 16(R1), [V0.B16]
	VEOR   V4.B16, V0.B16, V0.B16
	VST1.P [V0.B16], 16(R0)
	SUB    $16, R2
	CMP    $16, R2
	BGE    loop16

word8:
	CMP    $8, R2
	BLT    word4
	ORR    R3<<32, R3, R4    // key in both halves of a 64-bit word
	MOVD.P 8(R1), R5
	EOR    R4, R5, R5
	MOVD.P R5, 8(R0)
	SUB    $8, R2

word4:
	CMP     $4, R2
	BLT     bytes
	MOVWU.P 4(R1), R5
	EORW    R3, R5, R5
	MOVW.P  R5, 4(R0)
	SUB     $4, R2

bytes:
	CBZ R2, done

loop1:
	MOVBU.P 1(R1), R5
	EORW    R3, R5, R5
	MOVB.P  R5, 1(R0)
	LSRW    $8, R3, R3       // next key byte
	SUB     $1, R2
	CBNZ    R2, loop1

done:
	RET
