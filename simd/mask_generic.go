package simd

import (
	"encoding/binary"
)

// maskGeneric is the portable reference: a word at a time over the body,
// a byte at a time over the unaligned head and tail. It is compiled on every
// platform so the assembly paths can be cross-checked against it.
func maskGeneric(key [4]byte, pos int, b []byte) int {
	pos &= 3
	end := (pos + len(b)) & 3
	// Bring the key stream to offset 0 by finishing the current key word.
	for pos != 0 && len(b) > 0 {
		b[0] ^= key[pos]
		b = b[1:]
		pos = (pos + 1) & 3
	}
	if len(b) >= 8 {
		k32 := binary.LittleEndian.Uint32(key[:])
		k64 := uint64(k32) | uint64(k32)<<32
		for len(b) >= 32 {
			binary.LittleEndian.PutUint64(b[0:], binary.LittleEndian.Uint64(b[0:])^k64)
			binary.LittleEndian.PutUint64(b[8:], binary.LittleEndian.Uint64(b[8:])^k64)
			binary.LittleEndian.PutUint64(b[16:], binary.LittleEndian.Uint64(b[16:])^k64)
			binary.LittleEndian.PutUint64(b[24:], binary.LittleEndian.Uint64(b[24:])^k64)
			b = b[32:]
		}
		for len(b) >= 8 {
			binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k64)
			b = b[8:]
		}
	}
	for i := range b {
		b[i] ^= key[i&3]
	}
	return end
}

// maskCopyGeneric is the portable reference for MaskCopy: dst[i] = src[i] XOR
// the key stream, a word at a time over the body. len(dst) must equal
// len(src); dst and src are either the same slice or disjoint.
func maskCopyGeneric(key [4]byte, pos int, dst, src []byte) int {
	pos &= 3
	end := (pos + len(src)) & 3
	dst = dst[:len(src)]
	for pos != 0 && len(src) > 0 {
		dst[0] = src[0] ^ key[pos]
		dst, src = dst[1:], src[1:]
		pos = (pos + 1) & 3
	}
	if len(src) >= 8 {
		k32 := binary.LittleEndian.Uint32(key[:])
		k64 := uint64(k32) | uint64(k32)<<32
		for len(src) >= 32 {
			d, s := dst[:32], src[:32]
			binary.LittleEndian.PutUint64(d[0:], binary.LittleEndian.Uint64(s[0:])^k64)
			binary.LittleEndian.PutUint64(d[8:], binary.LittleEndian.Uint64(s[8:])^k64)
			binary.LittleEndian.PutUint64(d[16:], binary.LittleEndian.Uint64(s[16:])^k64)
			binary.LittleEndian.PutUint64(d[24:], binary.LittleEndian.Uint64(s[24:])^k64)
			dst, src = dst[32:], src[32:]
		}
		for len(src) >= 8 {
			binary.LittleEndian.PutUint64(dst, binary.LittleEndian.Uint64(src)^k64)
			dst, src = dst[8:], src[8:]
		}
	}
	dst = dst[:len(src)]
	for i := range src {
		dst[i] = src[i] ^ key[i&3]
	}
	return end
}
