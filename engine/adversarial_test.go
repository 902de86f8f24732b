package engine

import (
	"net"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/ws"
)

// limitedEcho is the raw echo with a protocol that bounds what a compliant
// peer may have in flight (as yamux windows do for libp2p).
type limitedEcho struct {
	Stage
	allowance int
}

func (l limitedEcho) InboundAllowance() int { return l.allowance }

func (l limitedEcho) Tick(c *Conn, now time.Time) { l.Stage.(Ticker).Tick(c, now) }

// A peer that sends and never reads, on a connection whose protocol
// allows 1 MiB in flight: netpoll's read-ahead is cut at the allowance,
// not at MaxInboundBuffered (32 MiB), so each such peer cannot make the
// server hold 32 MiB for WriteTimeout. netpoll reads on between the
// engine's checks (every pass, and every 10 ms while a flush waits), so
// what the peer sends meanwhile comes on top: on loopback a few MiB, the
// test's bound is half of MaxInboundBuffered. The server socket's receive
// buffer is pinned at 128 KiB (the kernel doubles it) rather than left to
// loopback autotuning.
func TestWaitReadAheadBoundedByAllowance(t *testing.T) {
	const allowance = 1 << 20
	reg := prometheus.NewRegistry()
	e := New(Config{Logger: testutil.Quiet, Registerer: reg, WriteTimeout: 5 * time.Second})
	t.Cleanup(func() { e.Close() })
	conns := make(chan *Conn, 1)
	l, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"), Routes{Paths: map[string]StageFunc{
		"/echo": func(c *Conn) Stage {
			unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 128<<10)
			conns <- c
			return limitedEcho{Echo(c), allowance}
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	addr := hostPort(t, l.Addr())
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.(*net.TCPConn).SetReadBuffer(4 << 10) // and we never read
	key := ws.NewKey()
	nc.Write(ws.AppendRequest(nil, addr, "/echo", key[:]))
	c := <-conns
	stop := make(chan struct{})
	peak := make(chan int)
	go func() {
		p := 0
		for {
			p = max(p, c.nc.Reader().Len())
			select {
			case <-stop:
				peak <- p
				return
			case <-time.After(100 * time.Microsecond):
			}
		}
	}()
	msg := ws.AppendFrame(nil, ws.Client, true, ws.OpBinary, make([]byte, 32<<10))
	sent := 0
	nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for sent < 64<<20 {
		n, err := nc.Write(msg)
		sent += n
		if err != nil {
			break
		}
	}
	testutil.WaitFor(t, 10*time.Second, func() bool { return e.OpenConns() == 0 })
	close(stop)
	p := <-peak
	t.Logf("sent %d MiB; netpoll's read-ahead peaked at %d KiB (allowance %d KiB)", sent>>20, p>>10, allowance>>10)
	if got := testutil.CounterValue(t, reg, "swarmgate_connection_failures_total", map[string]string{"reason": "inbound_flood"}); got != 1 {
		t.Fatalf("inbound_flood counted %v times", got)
	}
	if p > DefaultMaxInboundBuffered/2 {
		t.Fatalf("read-ahead reached %d KiB with an allowance of %d KiB", p>>10, allowance>>10)
	}
}
