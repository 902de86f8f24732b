package libp2p

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/swarmgate/swarmgate/mux"
)

// pingOver runs our ping client on pc.
func pingOver(t *testing.T, pc *PeerConn) (time.Duration, error) {
	t.Helper()
	type result struct {
		rtt time.Duration
		err error
	}
	ch := make(chan result, 1)
	pc.Do(func() { pc.Ping(func(rtt time.Duration, err error) { ch <- result{rtt, err} }) })
	select {
	case r := <-ch:
		return r.rtt, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("ping did not finish")
	}
	return 0, nil
}

func TestPingOwnClient(t *testing.T) {
	srv, addr := startHost(t, Config{})
	srv.Handle(ProtoEcho, EchoStream)
	pc := dialHost(t, srv, addr, DialOptions{})
	for i := range 10 {
		rtt, err := pingOver(t, pc)
		if err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
		if rtt <= 0 || rtt > 5*time.Second {
			t.Fatalf("ping %d: rtt %v", i, rtt)
		}
	}
	waitPingsReleased(t)
}

// livePings sums the inbound ping streams counted on every libp2p
// connection of every engine the test started.
func livePings() int {
	n := 0
	testHosts.Range(func(k, _ any) bool {
		for _, pc := range k.(*Host).conns() {
			pc.Do(func() { n += int(pc.inboundPings) })
		}
		return true
	})
	return n
}

// waitPingsReleased checks that the server's ping streams all ended and
// no connection counts them any more.
func waitPingsReleased(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := livePings()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d ping streams still counted", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// openRaw opens a stream with a collector and returns a writer that sends
// each piece as its own frame.
func openRaw(t *testing.T, pc *PeerConn, proto string) (*mux.Stream, *collector, func([]byte)) {
	t.Helper()
	col := &collector{done: make(chan error, 2)}
	var st *mux.Stream
	var err error
	pc.Do(func() { st, err = pc.OpenStream(proto, col) })
	if err != nil {
		t.Fatal(err)
	}
	write := func(p []byte) {
		pc.Do(func() {
			if _, err := st.Write(p); err != nil {
				t.Errorf("write: %v", err)
			}
		})
		time.Sleep(2 * time.Millisecond) // separate frames
	}
	return st, col, write
}

// TestPingServerChunks: §8 pitfalls. 1+31 and 16+16 → one echo each, 64
// at once → two, a trailing partial chunk before FIN is not echoed.
func TestPingServerChunks(t *testing.T) {
	srv, addr := startHost(t, Config{})
	srv.Handle(ProtoEcho, EchoStream)
	pc := dialHost(t, srv, addr, DialOptions{})
	st, col, write := openRaw(t, pc, ProtoPing)
	var data []byte
	for i := range 128 + 10 {
		data = append(data, byte(i))
	}
	for _, cut := range [][2]int{{0, 1}, {1, 32}, {32, 48}, {48, 64}, {64, 128}, {128, 138}} {
		write(data[cut[0]:cut[1]])
	}
	pc.Do(func() { st.CloseWrite() })
	select {
	case err := <-col.done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no FIN")
	}
	var got []byte
	pc.Do(func() { got = append(got, col.got...) })
	if !bytes.Equal(got, data[:128]) {
		t.Fatalf("echo %x", got)
	}
	waitPingsReleased(t)
}

// TestPingInboundLimit: a third concurrent ping stream is reset.
func TestPingInboundLimit(t *testing.T) {
	srv, addr := startHost(t, Config{})
	srv.Handle(ProtoEcho, EchoStream)
	pc := dialHost(t, srv, addr, DialOptions{})
	var cols []*collector
	var sts []*mux.Stream
	for range MaxInboundPings + 1 {
		st, col, write := openRaw(t, pc, ProtoPing)
		write(make([]byte, PingSize))
		cols, sts = append(cols, col), append(sts, st)
	}
	select {
	case err := <-cols[MaxInboundPings].done:
		var se *mux.StreamError
		if !errors.As(err, &se) {
			t.Fatalf("third stream: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("third stream not reset")
	}
	pc.Do(func() {
		for i, col := range cols[:MaxInboundPings] {
			if len(col.got) != PingSize {
				t.Errorf("stream %d echoed %d bytes", i, len(col.got))
			}
			sts[i].Reset()
		}
	})
	waitPingsReleased(t)
}

// TestPingIdle: a ping stream without pings is reset after the idle time,
// counted from the last answered ping.
func TestPingIdle(t *testing.T) {
	old := pingIdle
	pingIdle = 150 * time.Millisecond
	defer func() { pingIdle = old }()
	srv, addr := startHost(t, Config{})
	srv.Handle(ProtoEcho, EchoStream)
	pc := dialHost(t, srv, addr, DialOptions{})
	start := time.Now()
	_, col, write := openRaw(t, pc, ProtoPing)
	for range 3 {
		write(make([]byte, PingSize))
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case err := <-col.done:
		var se *mux.StreamError
		if !errors.As(err, &se) {
			t.Fatalf("err %v", err)
		}
		if el := time.Since(start); el < 350*time.Millisecond {
			t.Fatalf("reset after %v, before the idle time", el)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("idle stream not reset")
	}
	waitPingsReleased(t)
}

// TestPingConnClose: ping streams end with the connection.
func TestPingConnClose(t *testing.T) {
	srv, addr := startHost(t, Config{})
	srv.Handle(ProtoEcho, EchoStream)
	pc := dialHost(t, srv, addr, DialOptions{})
	_, _, write := openRaw(t, pc, ProtoPing)
	write(make([]byte, PingSize))
	pc.Do(func() { pc.Close() })
	waitPingsReleased(t)
}
