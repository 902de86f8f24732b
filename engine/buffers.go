package engine

import (
	"sync"
	"sync/atomic"
)

// Pool accounting for /metrics: buffers of each class out on loan, and
// allocations past the largest class.
var (
	smallOut, largeOut atomic.Int64
	oversize           atomic.Int64
)

func borrowedBytes() int64 { return smallOut.Load()*smallBuf + largeOut.Load()*largeBuf }

// Outbound bytes of one processing pass are gathered in a pooled buffer and
// written with one system call; the buffer goes back to its pool as soon as
// the kernel has the bytes, so an idle connection holds none. Two size
// classes cover control traffic and full 64 KiB transport frames; larger
// writes get an exact allocation that is dropped after use.
const (
	smallBuf = 4 << 10
	largeBuf = 64 << 10
)

var (
	smallPool = sync.Pool{New: func() any { return new([smallBuf]byte) }}
	largePool = sync.Pool{New: func() any { return new([largeBuf]byte) }}
)

// getBuf returns an empty slice with room for at least n bytes.
func getBuf(n int) []byte {
	switch {
	case n <= smallBuf:
		smallOut.Add(1)
		return smallPool.Get().(*[smallBuf]byte)[:0]
	case n <= largeBuf:
		largeOut.Add(1)
		return largePool.Get().(*[largeBuf]byte)[:0]
	}
	oversize.Add(1)
	return make([]byte, 0, n)
}

// putBuf returns b's array to its pool. A slice whose capacity is not a size
// class (an exact allocation, or one that append grew) is left to the GC.
func putBuf(b []byte) {
	switch cap(b) {
	case smallBuf:
		smallOut.Add(-1)
		smallPool.Put((*[smallBuf]byte)(b[:smallBuf]))
	case largeBuf:
		largeOut.Add(-1)
		largePool.Put((*[largeBuf]byte)(b[:largeBuf]))
	}
}

// grow makes room for n more bytes in b, moving to a larger class if needed.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := getBuf(len(b) + n)
	nb = append(nb, b...)
	putBuf(b)
	return nb
}
