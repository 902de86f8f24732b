package libp2p

import (
	"bytes"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/bufpool"
	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/multistream"
	"github.com/swarmgate/swarmgate/ws"
)

// Peers that leave half a Noise frame pending are charged to the memory
// budget; past it, the next one is closed with 1013 and new connections are
// refused.
func TestWiredMemoryBudget(t *testing.T) {
	h, addr := startHost(t, Config{Engine: engine.Config{Limits: admission.Limits{MemoryBudget: 3 * bufpool.Medium}}})
	e, reg := h.Engine(), regOf(h)
	hp := testutil.HostPort(t, addr)
	stall := func(pending int) (*websocket.Conn, error) {
		wc, _, err := websocket.DefaultDialer.Dial("ws://"+hp+"/", nil)
		if err != nil {
			return nil, err
		}
		msg := multistream.AppendMessage(multistream.AppendMessage(nil, "/multistream/1.0.0"), ProtoNoise)
		msg = append(msg, 0xea, 0x60) // a 60,000-byte Noise message follows…
		msg = append(msg, bytes.Repeat([]byte{1}, pending)...)
		return wc, wc.WriteMessage(websocket.BinaryMessage, msg)
	}
	a, err := stall(5000) // 64 KiB held
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	testutil.WaitFor(t, 5*time.Second, func() bool { return e.Memory().Used() == bufpool.Medium })
	b, err := stall(5000) // 64 KiB held
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	testutil.WaitFor(t, 5*time.Second, func() bool { return e.Memory().Used() == 2*bufpool.Medium })
	c, err := stall(100) // 4 KiB held; less than 64 KiB left
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testutil.WaitFor(t, 5*time.Second, func() bool { return e.Memory().Used() == 2*bufpool.Medium+bufpool.Small })
	// No room for another connection's first buffer: refused at accept.
	if d, _, err := websocket.DefaultDialer.Dial("ws://"+hp+"/", nil); err == nil {
		d.Close()
		t.Fatal("admitted with the budget spent")
	}
	if got := testutil.Gather(t, reg)["swarmgate_limit_rejections_total{reason=memory}"]; got != 1 {
		t.Fatalf("memory rejections %v", got)
	}
	// c's pending input cannot grow: 1013.
	c.WriteMessage(websocket.BinaryMessage, bytes.Repeat([]byte{1}, 5000))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err = c.ReadMessage(); err != nil {
			break
		}
	}
	if !websocket.IsCloseError(err, int(ws.CloseTryAgainLater)) {
		t.Fatalf("over the budget: %v", err)
	}
	if failureCount(t, h, "memory_budget") != 1 {
		t.Fatal("not counted")
	}
	a.Close()
	b.Close()
	testutil.WaitFor(t, 5*time.Second, func() bool { return e.Memory().Used() == 0 })
}
