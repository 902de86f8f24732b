package engine

import (
	"testing"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/internal/testutil"
)

// Each limit exceeded from loopback: the refusal, its metric, and the
// clients already admitted carry on unaffected.
func TestWiredLimitsFromLoopback(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limits admission.Limits
		reason string
	}{
		{"total", admission.Limits{MaxConns: 2}, "total"},
		{"rate", admission.Limits{LimitLoopback: true, MaxConnsPerIP: 100, ConnRatePerIP: 0.001, ConnBurstPerIP: 2}, "rate"},
		{"per_ip", admission.Limits{LimitLoopback: true, MaxConnsPerIP: 2}, "per_ip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			_, _, addr := startEcho(t, Config{Registerer: reg, Limits: tc.limits})
			var held []*websocket.Conn
			for i := 0; i < 2; i++ {
				wc, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/echo", nil)
				if err != nil {
					t.Fatalf("connection %d refused: %v", i, err)
				}
				defer wc.Close()
				held = append(held, wc)
			}
			if wc, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/echo", nil); err == nil {
				wc.Close()
				t.Fatal("third connection admitted")
			}
			if got := testutil.Gather(t, reg)["swarmgate_limit_rejections_total{reason="+tc.reason+"}"]; got != 1 {
				t.Fatalf("%s rejections %v, want 1", tc.reason, got)
			}
			for i, wc := range held {
				if err := wc.WriteMessage(websocket.BinaryMessage, []byte("unaffected")); err != nil {
					t.Fatal(err)
				}
				if _, msg, err := wc.ReadMessage(); err != nil || string(msg) != "unaffected" {
					t.Fatalf("admitted connection %d after the refusal: %q %v", i, msg, err)
				}
			}
		})
	}
}
