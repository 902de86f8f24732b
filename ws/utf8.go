package ws

import "unicode/utf8"

// UTF8Validator checks a text message for valid UTF-8 as its payload arrives
// in pieces, and fails as soon as a byte sequence can no longer become valid
// ("fail fast", RFC 6455 §8.1 and Autobahn case 6). The zero value is ready.
type UTF8Validator struct {
	pend [utf8.UTFMax]byte // lead and continuation bytes of an unfinished rune
	n    uint8
}

// Write validates the next piece of the message. It returns false when the
// message can no longer be valid UTF-8.
func (v *UTF8Validator) Write(p []byte) bool {
	if v.n > 0 {
		need := runeLen(v.pend[0]) - int(v.n)
		for need > 0 && len(p) > 0 {
			v.pend[v.n] = p[0]
			v.n++
			p = p[1:]
			need--
		}
		if !validPrefix(v.pend[:v.n]) {
			return false
		}
		if need > 0 {
			return true
		}
		v.n = 0
	}
	// Split off a trailing incomplete rune; the rest must be valid as is.
	tail := incompleteTail(p)
	if !utf8.Valid(p[:len(p)-tail]) {
		return false
	}
	if tail > 0 {
		if !validPrefix(p[len(p)-tail:]) {
			return false
		}
		v.n = uint8(copy(v.pend[:], p[len(p)-tail:]))
	}
	return true
}

// Done reports whether the message ended on a rune boundary, and resets v.
func (v *UTF8Validator) Done() bool {
	ok := v.n == 0
	v.n = 0
	return ok
}

// runeLen is the sequence length announced by a lead byte, 0 for a byte that
// cannot start a sequence.
func runeLen(b byte) int {
	switch {
	case b < 0x80:
		return 1
	case b >= 0xC2 && b <= 0xDF:
		return 2
	case b >= 0xE0 && b <= 0xEF:
		return 3
	case b >= 0xF0 && b <= 0xF4:
		return 4
	}
	return 0
}

// incompleteTail returns how many bytes at the end of p form the start of a
// multi-byte sequence that p cuts short (0 to 3).
func incompleteTail(p []byte) int {
	for i := 1; i <= 3 && i <= len(p); i++ {
		c := p[len(p)-i]
		if c < 0x80 {
			return 0
		}
		if c >= 0xC0 { // a lead byte (or an invalid one, left to utf8.Valid)
			if l := runeLen(c); l > i {
				return i
			}
			return 0
		}
	}
	return 0
}

// validPrefix reports whether p, which starts with a lead byte and is no
// longer than the sequence it announces, can still become a valid rune.
func validPrefix(p []byte) bool {
	l := runeLen(p[0])
	if l < 2 || len(p) > l {
		return false
	}
	if len(p) == 1 {
		return true
	}
	lo, hi := byte(0x80), byte(0xBF)
	switch p[0] {
	case 0xE0:
		lo = 0xA0 // overlong
	case 0xED:
		hi = 0x9F // surrogates
	case 0xF0:
		lo = 0x90 // overlong
	case 0xF4:
		hi = 0x8F // above U+10FFFF
	}
	if p[1] < lo || p[1] > hi {
		return false
	}
	for _, c := range p[2:] {
		if c < 0x80 || c > 0xBF {
			return false
		}
	}
	return true
}
