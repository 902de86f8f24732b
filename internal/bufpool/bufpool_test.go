package bufpool

import "testing"

type meter struct{ used, limit int }

func (m *meter) Reserve(n int) bool {
	if m.used+n > m.limit {
		return false
	}
	m.used += n
	return true
}
func (m *meter) Release(n int) { m.used -= n }

func TestClasses(t *testing.T) {
	for _, c := range []struct{ n, cap int }{{0, Small}, {1, Small}, {Small, Small}, {Small + 1, Medium}, {Medium, Medium}, {Medium + 1, Large}, {Large, Large}, {Large + 1, 2 * Large}, {1 << 20, 1 << 20}, {1<<20 + 1, 2 << 20}, {Huge, Huge}, {Huge + 1, Huge + 1}} {
		b := Get(c.n)
		if cap(b) != c.cap || len(b) != 0 || Class(c.n) != c.cap {
			t.Fatalf("Get(%d): cap %d len %d, Class %d; want cap %d", c.n, cap(b), len(b), Class(c.n), c.cap)
		}
		Put(b)
	}
}

func TestPutForeignPanics(t *testing.T) {
	for _, n := range []int{100, Large + 1, 3 << 19} {
		func() {
			defer func() {
				if recover() == nil {
					t.Fatalf("Put of a foreign size %d did not panic", n)
				}
			}()
			Put(make([]byte, 0, n))
		}()
	}
	Put(make([]byte, 0, Huge+1)) // past the classes: left to the GC
}

// A class past Large comes back from the pool it was put in, and is
// counted as borrowed while out.
func TestHugeClassesPooled(t *testing.T) {
	before := Borrowed()
	b := Get(600 << 10)
	if cap(b) != 1<<20 || Borrowed()-before != 1<<20 {
		t.Fatalf("cap %d, borrowed +%d", cap(b), Borrowed()-before)
	}
	b = append(b, 7)
	Put(b)
	if Borrowed() != before {
		t.Fatalf("borrowed %d after Put, want %d", Borrowed(), before)
	}
	c := Get(1 << 20)
	if cap(c) != 1<<20 || len(c) != 0 {
		t.Fatalf("cap %d len %d", cap(c), len(c))
	}
	Put(c)
}

func TestGrowKeepsBytes(t *testing.T) {
	b := append(Get(3), 1, 2, 3)
	b = Grow(b, Small)
	if cap(b) != Medium || len(b) != 3 || b[2] != 3 {
		t.Fatalf("grown: cap %d len %d %v", cap(b), len(b), b)
	}
	Put(b)
	Put(nil) // ignored
}

func TestMeterCharges(t *testing.T) {
	m := &meter{limit: Small + Medium}
	b, ok := TryGet(m, 10)
	if !ok || m.used != Small {
		t.Fatalf("TryGet: %v used %d", ok, m.used)
	}
	b = append(b, 9)
	if b2, ok := TryGrow(m, b, Medium); ok || &b2[0] != &b[0] {
		t.Fatal("TryGrow past the meter succeeded")
	}
	if b, ok = TryGrow(m, b, Small); !ok || m.used != Medium || b[0] != 9 {
		t.Fatalf("TryGrow: %v used %d", ok, m.used)
	}
	Release(m, b)
	if m.used != 0 {
		t.Fatalf("released: used %d", m.used)
	}
	if before := Borrowed(); before < 0 {
		t.Fatalf("borrowed %d", before)
	}
}
