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
