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
	for _, c := range []struct{ n, cap int }{{0, Small}, {1, Small}, {Small, Small}, {Small + 1, Medium}, {Medium, Medium}, {Medium + 1, Large}, {Large, Large}, {Large + 1, Large + 1}} {
		b := Get(c.n)
		if cap(b) != c.cap || len(b) != 0 || Class(c.n) != c.cap {
			t.Fatalf("Get(%d): cap %d len %d, Class %d; want cap %d", c.n, cap(b), len(b), Class(c.n), c.cap)
		}
		Put(b)
	}
}

func TestPutForeignPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Put of a foreign size did not panic")
		}
	}()
	Put(make([]byte, 0, 100))
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
