//go:build gc && !purego

package simd

import "github.com/klauspost/cpuid/v2"

// hasNEON is read once at start-up. Advanced SIMD is part of every ARMv8-A
// core Go supports, but asking keeps the ladder honest on odd emulators.
var hasNEON = cpuid.CPU.Supports(cpuid.ASIMD)

func bestImpl() int {
	if hasNEON {
		return implNEON
	}
	return implGeneric
}

func implAvailable(i int) bool {
	return i == implGeneric || i == implNEON && hasNEON
}

// xorKey writes dst[i] = src[i] ^ byte(key>>(8*(i&3))) for i < n with NEON;
// impl is always implNEON here. dst and src are the same pointer or
// disjoint. It is hand-written in mask_arm64.s (avo is amd64-only).
//
//go:noescape
func xorKey(dst, src *byte, n int, key uint32, impl int)
