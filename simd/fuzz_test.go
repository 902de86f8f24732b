package simd

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// FuzzMask runs Mask and MaskCopy on every available implementation against
// the byte-at-a-time definition, for any key, key offset (including
// negative and large ones, which count mod 4), slice alignment and
// payload, and checks guard bytes on both sides of the output.
func FuzzMask(f *testing.F) {
	for i, n := range []int{0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 300, 1000, 4099} {
		data := make([]byte, n)
		for j := range data {
			data[j] = byte(j*7 + i)
		}
		f.Add(uint32(0x9e3779b9*uint32(i+1)), int8(i%5-1), uint8(i*13), data)
	}
	impls := availableImpls(f)
	f.Fuzz(func(t *testing.T, k uint32, pos int8, align uint8, data []byte) {
		var key [4]byte
		binary.LittleEndian.PutUint32(key[:], k)
		p := int(pos)
		want := bytes.Clone(data)
		wantPos := maskBytewise(key, p, want)
		n := len(data)
		srcAlign, dstAlign := int(align&63), int(align>>2)
		const fill = 0xC3
		for _, name := range impls {
			restore, err := Use(name)
			if err != nil {
				t.Fatal(err)
			}
			// In place, at srcAlign past a guard.
			buf := bytes.Repeat([]byte{fill}, guard+srcAlign+n+guard)
			b := buf[guard+srcAlign : guard+srcAlign+n]
			copy(b, data)
			if got := Mask(key, p, b); got != wantPos || !bytes.Equal(b, want) {
				restore()
				t.Fatalf("%s: Mask(pos=%d, len=%d, align=%d) wrong (pos %d, want %d)", name, p, n, srcAlign, got, wantPos)
			}
			checkGuards(t, buf, guard+srcAlign, guard+srcAlign+n, fill, name+" Mask")

			// Copying, from the untouched input to dstAlign past a guard.
			dbuf := bytes.Repeat([]byte{fill}, guard+dstAlign+n+guard)
			d := dbuf[guard+dstAlign : guard+dstAlign+n]
			src := bytes.Clone(data)
			if got := MaskCopy(key, p, d, src); got != wantPos || !bytes.Equal(d, want) || !bytes.Equal(src, data) {
				restore()
				t.Fatalf("%s: MaskCopy(pos=%d, len=%d) wrong", name, p, n)
			}
			checkGuards(t, dbuf, guard+dstAlign, guard+dstAlign+n, fill, name+" MaskCopy")

			// Exact alias.
			if got := MaskCopy(key, p, src, src); got != wantPos || !bytes.Equal(src, want) {
				restore()
				t.Fatalf("%s: in-place MaskCopy(pos=%d, len=%d) wrong", name, p, n)
			}
			restore()
		}
	})
}
