// Package bufpool is the one buffer pool of swarmgate: fixed size classes
// of *[N]byte in sync.Pools, so a connection borrows a buffer only while
// bytes move through it and an idle connection holds none.
//
// Rules, the same for every layer:
//   - Get(n) returns an empty slice with room for at least n bytes: the
//     smallest class that fits, or an exact allocation past the largest
//     class (counted as oversize, left to the GC when put back).
//   - Past Large the classes are powers of two up to Huge (a yamux stream
//     whose auto-tuned window filled faster than its handler consumed):
//     pooled too, so a bulk stream does not allocate and zero a fresh
//     megabyte buffer every time its receive queue grows.
//   - A buffer grows only through Grow, never by a bare append past its
//     capacity: an append would hand Put a capacity that is no class.
//   - Put panics on a capacity at or below the largest class that is not a
//     class: that slice did not come from Get, and pooling it would corrupt
//     a class.
//
// A buffer a peer can make a connection hold between reads is charged to a
// Meter (the connection's share of admission's memory model) with TryGet,
// TryGrow and Release; buffers that live only inside one read pass use the
// uncharged Get, Grow and Put.
package bufpool

import (
	"sync"
	"sync/atomic"
)

// The size classes. Small holds control traffic and handshake messages,
// Medium one full transport frame (a 64 KiB Noise frame, a WebSocket pass),
// Large a yamux stream's initial receive window (256 KiB).
const (
	Small  = 4 << 10
	Medium = 64 << 10
	Large  = 256 << 10
	// Huge is the largest pooled class; the classes between Large and Huge
	// are the powers of two (512 KiB, 1 MiB, 2 MiB, 4 MiB).
	Huge = 4 << 20
)

// numHuge is the number of classes past Large.
const numHuge = 4

var (
	pools = [3]sync.Pool{
		{New: func() any { return new([Small]byte) }},
		{New: func() any { return new([Medium]byte) }},
		{New: func() any { return new([Large]byte) }},
	}
	// hugePools hold the classes past Large, Large<<1 … Huge, as arrays
	// like the others (a Put converts the slice back without allocating).
	hugePools = [numHuge]sync.Pool{
		{New: func() any { return new([Large << 1]byte) }},
		{New: func() any { return new([Large << 2]byte) }},
		{New: func() any { return new([Large << 3]byte) }},
		{New: func() any { return new([Huge]byte) }},
	}
	// out counts buffers of each class on loan, for Borrowed.
	out      [3]atomic.Int64
	outHuge  atomic.Int64 // bytes of the classes past Large on loan
	oversize atomic.Int64
)

// hugeClass is the index in hugePools of the class for n (Large < n ≤
// Huge) and that class's size.
func hugeClass(n int) (int, int) {
	i, c := 0, Large<<1
	for c < n {
		i, c = i+1, c<<1
	}
	return i, c
}

// Class is the capacity Get(n) returns.
func Class(n int) int {
	switch {
	case n <= Small:
		return Small
	case n <= Medium:
		return Medium
	case n <= Large:
		return Large
	case n <= Huge:
		_, c := hugeClass(n)
		return c
	}
	return n
}

// Get returns an empty slice with room for at least n bytes.
func Get(n int) []byte {
	switch {
	case n <= Small:
		out[0].Add(1)
		return pools[0].Get().(*[Small]byte)[:0]
	case n <= Medium:
		out[1].Add(1)
		return pools[1].Get().(*[Medium]byte)[:0]
	case n <= Large:
		out[2].Add(1)
		return pools[2].Get().(*[Large]byte)[:0]
	case n <= Huge:
		i, c := hugeClass(n)
		outHuge.Add(int64(c))
		switch p := hugePools[i].Get().(type) {
		case *[Large << 1]byte:
			return p[:0]
		case *[Large << 2]byte:
			return p[:0]
		case *[Large << 3]byte:
			return p[:0]
		default:
			return p.(*[Huge]byte)[:0]
		}
	}
	oversize.Add(1)
	return make([]byte, 0, n)
}

// Put returns b, obtained from Get (or Grow), to its class. nil is ignored;
// a capacity above the largest class is an exact allocation left to the GC.
func Put(b []byte) {
	switch cap(b) {
	case 0:
		if b == nil {
			return
		}
	case Small:
		out[0].Add(-1)
		pools[0].Put((*[Small]byte)(b[:Small]))
		return
	case Medium:
		out[1].Add(-1)
		pools[1].Put((*[Medium]byte)(b[:Medium]))
		return
	case Large:
		out[2].Add(-1)
		pools[2].Put((*[Large]byte)(b[:Large]))
		return
	}
	if cap(b) <= Large {
		panic("bufpool: Put of a buffer that Get did not return")
	}
	if c := cap(b); c <= Huge {
		i, class := hugeClass(c)
		if class != c {
			panic("bufpool: Put of a buffer that Get did not return")
		}
		outHuge.Add(-int64(c))
		switch i {
		case 0:
			hugePools[i].Put((*[Large << 1]byte)(b[:c]))
		case 1:
			hugePools[i].Put((*[Large << 2]byte)(b[:c]))
		case 2:
			hugePools[i].Put((*[Large << 3]byte)(b[:c]))
		default:
			hugePools[i].Put((*[Huge]byte)(b[:c]))
		}
	}
}

// Grow makes room for n more bytes in b, moving its bytes to a larger class
// when needed. b may be nil.
func Grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := Get(len(b) + n)
	nb = append(nb, b...)
	Put(b)
	return nb
}

// Borrowed is the bytes of pooled buffers currently on loan.
func Borrowed() int64 {
	return out[0].Load()*Small + out[1].Load()*Medium + out[2].Load()*Large + outHuge.Load()
}

// Oversize counts allocations past the largest class (Huge).
func Oversize() int64 { return oversize.Load() }

// Meter is what a charged buffer's bytes are charged to. Reserve reports
// whether n more bytes fit; every successful Reserve is matched by one
// Release of the same n.
type Meter interface {
	Reserve(n int) bool
	Release(n int)
}

// TryGet is Get charged to m at the class size: nil, false when m refuses.
func TryGet(m Meter, n int) ([]byte, bool) {
	if !m.Reserve(Class(n)) {
		return nil, false
	}
	return Get(n), true
}

// TryGrow is Grow for a buffer charged to m: b unchanged and false when m
// refuses the larger class.
func TryGrow(m Meter, b []byte, n int) ([]byte, bool) {
	if cap(b)-len(b) >= n {
		return b, true
	}
	nb, ok := TryGet(m, len(b)+n)
	if !ok {
		return b, false
	}
	nb = append(nb, b...)
	Release(m, b)
	return nb, true
}

// Release returns a charged buffer: m gets its capacity back, the pool its
// array. nil is ignored.
func Release(m Meter, b []byte) {
	if b == nil {
		return
	}
	m.Release(cap(b))
	Put(b)
}
