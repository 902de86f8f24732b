package libp2p

import (
	"bytes"
	"testing"
	"time"

	"github.com/swarmgate/swarmgate/internal/bufpool"
	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/multistream"
	"github.com/swarmgate/swarmgate/mux"
	"github.com/swarmgate/swarmgate/security"
	"github.com/swarmgate/swarmgate/ws"
)

// splitFrameConn is a Noise connection from the raw client with one
// recorder stream open, and the server's side of it.
type splitFrameConn struct {
	c    *rawClient
	sess *security.Session
	pc   *PeerConn
	log  *connLog
}

func openSplitFrameConn(t *testing.T, s *inputServer, cl *inputClient) *splitFrameConn {
	t.Helper()
	c := dialRaw(t, s.addr)
	t.Cleanup(func() { c.conn.Close() })
	hs := cl.noise[modeNoiseInlined].NewInitiator(s.h.ID())
	a := multistream.AppendMessage(multistream.AppendMessage(nil, multistream.ProtocolID), ProtoNoise)
	a, _ = hs.Start(a)
	c.send([][]byte{a}, false)
	msg3 := c.answerMsg2(t, hs)
	sess := hs.Session()
	open := append(yframe(mux.TypeWindowUpdate, mux.FlagSYN, 1, nil),
		yframe(mux.TypeData, 0, 1, append(msMsgs(multistream.ProtocolID, protoRecord), "ready"...))...)
	b, _ := sess.AppendFrame(msg3, open)
	c.send([][]byte{b}, false)
	sc := &splitFrameConn{c: c, sess: sess}
	testutil.WaitFor(t, 5*time.Second, func() bool {
		s.mu.Lock()
		sc.log = s.logs[c.conn.LocalAddr().String()]
		for p, l := range s.byPC {
			if l == sc.log {
				sc.pc = p
			}
		}
		s.mu.Unlock()
		return sc.pc != nil && bytes.Contains(sc.logged(), []byte("ready"))
	})
	return sc
}

// logged is a copy of the server's log of the connection, read under the
// connection's lock (the recorder writes it from callbacks).
func (sc *splitFrameConn) logged() []byte {
	var b []byte
	sc.pc.Do(func() { b = bytes.Clone(sc.log.b.Bytes()) })
	return b
}

// sendSplit sends one Noise frame of a yamux Data frame of n bytes on
// stream 1, cut into 4 KiB WebSocket frames (as go-libp2p's client cuts
// its 64 KiB Noise frames), then waits for the server to process it.
func (sc *splitFrameConn) sendSplit(t *testing.T, n int) bool {
	t.Helper()
	f, _ := sc.sess.AppendFrame(nil, yframe(mux.TypeData, 0, 1, bytes.Repeat([]byte{'z'}, n)))
	var pieces [][]byte
	for len(f) > 0 {
		k := min(len(f), 4096)
		pieces = append(pieces, f[:k])
		f = f[k:]
	}
	for _, p := range pieces {
		sc.c.send([][]byte{p}, false)
	}
	return sc.c.barrier(t)
}

// A Noise frame split across reads is the one thing a compliant peer
// cannot avoid making the connection hold: it is taken even when the
// connection's share is full (of window credit it was promised, say), so
// the peer is not closed for it; only the system budget refuses it, with
// 1013. And it is held at the size of the frame's ciphertext: a full
// 64 KiB Noise frame takes one Medium buffer, not the next class up.
func TestSplitFrameOverFullShare(t *testing.T) {
	s := startInputServer(t)
	cl := newInputClient(t)
	sc := openSplitFrameConn(t, s, cl)

	// The connection's share, full.
	var filled int
	var held int64
	sc.pc.Do(func() {
		m := sc.pc.c.Memory()
		filled = int(m.Limit() - m.Used())
		m.Charge(filled)
	})
	const n = security.MaxFramePlaintext - mux.HeaderLen // a whole 64 KiB Noise frame
	f, _ := sc.sess.AppendFrame(nil, yframe(mux.TypeData, 0, 1, make([]byte, n)))
	// Half of it: the server holds the rest of the frame to come.
	sc.c.send([][]byte{f[:len(f)/2]}, false)
	if !sc.c.barrier(t) {
		t.Fatal("closed while holding half a frame over a full share")
	}
	sc.pc.Do(func() { held = sc.pc.c.Memory().Used() - sc.pc.c.Memory().Limit() })
	if held < bufpool.Medium || held >= bufpool.Large {
		t.Fatalf("half a %d-byte frame holds %d bytes past the share, want one %d-byte buffer", len(f), held, bufpool.Medium)
	}
	sc.c.send([][]byte{f[len(f)/2:]}, false)
	if !sc.sendSplit(t, 60000) {
		t.Fatal("closed over a full share")
	}
	if got := bytes.Count(sc.logged(), []byte{'z'}); got != 60000 {
		t.Fatalf("%d bytes delivered, want 60000", got)
	}
	sc.pc.Do(func() {
		m := sc.pc.c.Memory()
		m.Release(filled)
		held = m.Used()
	})
	if held > bufpool.Large {
		t.Fatalf("%d bytes still charged after the frames", held)
	}

	// The system budget spent: the split frame is refused, 1013.
	sc = openSplitFrameConn(t, s, cl) // admitted while the budget has room
	budget := s.h.Engine().Memory()
	spent := int(budget.Available())
	budget.Charge(spent)
	defer budget.Release(spent)
	sc.sendSplit(t, 60000)
	select {
	case <-sc.log.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("not closed with the system budget spent")
	}
	<-sc.c.done
	sc.c.mu.Lock()
	code := sc.c.close
	sc.c.mu.Unlock()
	if code != ws.CloseTryAgainLater || sc.log.failed != "memory_budget" {
		t.Fatalf("closed with %d (%q), want 1013 memory_budget", code, sc.log.failed)
	}
}
