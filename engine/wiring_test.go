package engine

import (
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/internal/testutil"
)

func TestWiredPerIPLimit(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, _, addr := startEcho(t, Config{Registerer: reg, Limits: admission.Limits{MaxConnsPerIP: 2, LimitLoopback: true}})
	for i := range 3 {
		wc, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/echo", nil)
		if i < 2 {
			if err != nil {
				t.Fatal(err)
			}
			defer wc.Close()
			continue
		}
		if err == nil {
			t.Fatal("third connection from one IP admitted")
		}
	}
	if got := testutil.Gather(t, reg)["swarmgate_limit_rejections_total{reason=per_ip}"]; got != 1 {
		t.Fatalf("per_ip rejections %v", got)
	}
}

func TestWiredTrustedProxy(t *testing.T) {
	tp, _ := admission.NewTrustedProxies([]string{"127.0.0.1"})
	_, _, addr := startEcho(t, Config{TrustedProxies: tp, Limits: admission.Limits{MaxConnsPerIP: 1}})
	dial := func(client string) (*websocket.Conn, *http.Response, error) {
		return websocket.DefaultDialer.Dial("ws://"+addr+"/echo", http.Header{"X-Forwarded-For": {client + ", 127.0.0.1"}})
	}
	wc, _, err := dial("203.0.113.5")
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	_, resp, err := dial("203.0.113.5")
	if err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("second connection of one client behind the proxy: %v %v", resp, err)
	}
	wc2, _, err := dial("203.0.113.6")
	if err != nil {
		t.Fatal(err)
	}
	wc2.Close()
}

// Review item 3, end to end: a proxy trusted for X-Real-IP only (nginx
// setting X-Real-IP and passing the client's X-Forwarded-For through).
// The client forges a new X-Forwarded-For on every connection, and the
// per-IP limit still counts it under the address in X-Real-IP.
func TestWiredTrustedProxyOwnHeader(t *testing.T) {
	tp, err := admission.NewTrustedProxies([]string{"127.0.0.1=x-real-ip"})
	if err != nil {
		t.Fatal(err)
	}
	_, _, addr := startEcho(t, Config{TrustedProxies: tp, Limits: admission.Limits{MaxConnsPerIP: 1, ConnRatePerIP: -1}})
	dial := func(forged string) (*websocket.Conn, *http.Response, error) {
		return websocket.DefaultDialer.Dial("ws://"+addr+"/echo", http.Header{"X-Real-Ip": {"203.0.113.5"}, "X-Forwarded-For": {forged}})
	}
	wc, _, err := dial("198.51.100.1")
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	for _, forged := range []string{"198.51.100.2", "198.51.100.3, 127.0.0.1"} {
		if c, resp, err := dial(forged); err == nil || resp == nil || resp.StatusCode != 503 {
			if c != nil {
				c.Close()
			}
			t.Fatalf("a forged X-Forwarded-For %q got through: %v %v", forged, resp, err)
		}
	}
}

// Refused connections are closed by netpoll (no descriptor kept).
func TestWiredRefusalLeavesNoFD(t *testing.T) {
	e, _, addr := startEcho(t, Config{Limits: admission.Limits{MaxConnsPerIP: 1, LimitLoopback: true, ConnRatePerIP: -1}})
	wc, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	before := countFDs(t)
	start := time.Now()
	defer func() { t.Logf("200 refusals in %v", time.Since(start)) }()
	for range 200 {
		if c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/echo", nil); err == nil {
			c.Close()
			t.Fatal("admitted over the limit")
		}
	}
	t.Logf("before %d after %d", before, countFDs(t))
	time.Sleep(time.Second)
	t.Logf("after 1s %d", countFDs(t))
	testutil.WaitFor(t, 5*time.Second, func() bool { return countFDs(t) <= before+5 })
	if e.OpenConns() != 1 {
		t.Fatalf("open %d", e.OpenConns())
	}
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	return len(ents)
}
