// Package simd holds the byte-crunching kernels of the WebSocket hot path:
// XOR masking of frame payloads (RFC 6455 §5.3).
//
// Every byte a client sends is masked, so unmasking touches all inbound
// traffic. The exported functions are safe for any input length and any
// starting key offset; an implementation is chosen once at start-up from
// the CPU's features.
package simd

// Mask XORs b in place with the masking key, treating b as the payload bytes
// pos, pos+1, … of one frame (pos counts from the frame's first payload byte,
// so a parser can unmask a payload that arrives in pieces). It returns the key
// offset for the byte after b: (pos+len(b))&3.
func Mask(key [4]byte, pos int, b []byte) int {
	return maskGeneric(key, pos, b)
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
	return maskCopyGeneric(key, pos, dst, src)
}
