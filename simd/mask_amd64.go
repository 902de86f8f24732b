//go:build gc && !purego

package simd

import "github.com/klauspost/cpuid/v2"

//go:generate sh -c "cd _asm && go run . -out ../mask_amd64.s"

// CPU features, read once at start-up. The AVX-512 kernel needs AVX512BW for
// byte-granular masked loads and stores, BMI2 for BZHI, which builds the
// mask, and AVX2, whose code it reuses up to 64 bytes; every CPU with
// AVX512BW has the other two. cpuid also checks that the OS saves the wider
// registers.
var (
	hasAVX512 = cpuid.CPU.Supports(cpuid.AVX512F, cpuid.AVX512BW, cpuid.BMI2, cpuid.AVX2)
	hasAVX2   = cpuid.CPU.Supports(cpuid.AVX2)
)

func bestImpl() int {
	switch {
	case hasAVX512:
		return implAVX512
	case hasAVX2:
		return implAVX2
	default:
		return implSSE2 // part of the amd64 baseline
	}
}

func implAvailable(i int) bool {
	switch i {
	case implGeneric, implSSE2:
		return true
	case implAVX2:
		return hasAVX2
	case implAVX512:
		return hasAVX512
	}
	return false
}

// xorKey writes dst[i] = src[i] ^ byte(key>>(8*(i&3))) for i < n with the
// kernel impl names (implSSE2, implAVX2 or implAVX512; any other value means
// SSE2). dst and src are the same pointer or disjoint. It is generated into
// mask_amd64.s by _asm/gen.go.
//
//go:noescape
func xorKey(dst, src *byte, n int, key uint32, impl int)
