//go:build !(amd64 || arm64) || !gc || purego

package simd

import "unsafe"

func bestImpl() int { return implGeneric }

func implAvailable(i int) bool { return i == implGeneric }

// xorKey is unreachable here (impl is always implGeneric) but keeps Mask and
// MaskCopy architecture-independent.
func xorKey(dst, src *byte, n int, key uint32, _ int) {
	k := [4]byte{byte(key), byte(key >> 8), byte(key >> 16), byte(key >> 24)}
	maskCopyGeneric(k, 0, unsafe.Slice(dst, n), unsafe.Slice(src, n))
}
