package simd

import "unsafe"

// inexactOverlap reports whether x and y share memory at different offsets.
// Empty slices never overlap; exact aliases (same first byte) are allowed.
func inexactOverlap(x, y []byte) bool {
	if len(x) == 0 || len(y) == 0 {
		return false
	}
	xp := uintptr(unsafe.Pointer(unsafe.SliceData(x)))
	yp := uintptr(unsafe.Pointer(unsafe.SliceData(y)))
	if xp == yp {
		return false
	}
	return xp < yp+uintptr(len(y)) && yp < xp+uintptr(len(x))
}
