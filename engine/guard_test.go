package engine

import (
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swarmgate/swarmgate/internal/testutil"
)

// A panic in the pipeline on the TLS handshake goroutine ends that
// connection, counted, and not the process.
func TestGuardedPanicEndsConnectionOnly(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := New(Config{Logger: testutil.Quiet, Registerer: reg})
	defer e.Close()
	c := &Conn{eng: e, state: stateOpen}
	c.mu.Lock()
	c.guarded(func() { panic("a parser bug") })
	closed := c.state == stateClosed
	c.closeTCP = false // no socket in this test
	c.mu.Unlock()
	if !closed {
		t.Fatal("connection not ended after the panic")
	}
	if v := testutil.Gather(t, reg)["swarmgate_connection_failures_total{reason=panic}"]; v != 1 {
		t.Fatalf("panics counted: %v", v)
	}
}

// Close codes a peer chooses (3000–4999) do not become one series each.
func TestCloseCodeLabelsBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, _, addr := startEcho(t, Config{Registerer: reg})
	for code := 3000; code < 3050; code++ {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/echo", nil)
		if err != nil {
			t.Fatal(err)
		}
		c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.ReadMessage() // our echo of the Close
		c.Close()
	}
	got := testutil.Gather(t, reg)
	if v := got["swarmgate_ws_close_received_total{code=application}"]; v != 50 {
		t.Fatalf("application closes counted %v, want 50", v)
	}
	n := 0
	for k := range got {
		if len(k) > 33 && k[:33] == "swarmgate_ws_close_received_total" {
			n++
		}
	}
	if n > 20 {
		t.Fatalf("%d close-code series after 50 distinct codes", n)
	}
}
