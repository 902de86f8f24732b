package ws

import (
	"math/rand/v2"

	"github.com/swarmgate/swarmgate/simd"
)

// AppendFrame appends one complete frame. In the Client role the payload is
// masked with a fresh key: "The masking key MUST be derived from a strong
// source of entropy" and be unpredictable per frame (RFC 6455 §5.3, §10.3);
// math/rand/v2's top-level generator is the runtime's per-thread ChaCha8,
// which meets that without a system call per frame.
func AppendFrame(dst []byte, role Role, fin bool, op Opcode, payload []byte) []byte {
	h := Header{Fin: fin, Op: op, Length: int64(len(payload))}
	if role == Client {
		h.Masked = true
		h.Key = NewMaskKey()
	}
	dst = AppendHeader(dst, h)
	start := len(dst)
	if !h.Masked {
		return append(dst, payload...)
	}
	dst = append(dst, make([]byte, len(payload))...)
	simd.MaskCopy(h.Key, 0, dst[start:], payload)
	return dst
}

// FrameSize is the encoded size of a frame with n payload bytes.
func FrameSize(role Role, n int) int {
	return HeaderSize(int64(n), role == Client) + n
}

// AppendClose appends a Close frame with the given code and reason.
func AppendClose(dst []byte, role Role, code CloseCode, reason string) []byte {
	var body [MaxControlPayload]byte
	return AppendFrame(dst, role, true, OpClose, AppendCloseBody(body[:0], code, reason))
}

// NewMaskKey returns a fresh masking key for one client frame, from the
// runtime's per-thread ChaCha8 generator (unpredictable, as RFC 6455 §10.3
// requires, and free of system calls).
func NewMaskKey() [4]byte {
	k := rand.Uint32()
	return [4]byte{byte(k), byte(k >> 8), byte(k >> 16), byte(k >> 24)}
}
