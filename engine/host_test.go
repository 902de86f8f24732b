package engine

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/mux"
)

// startHost runs an engine with a libp2p host on a /ws listener.
func startHost(t testing.TB, cfg HostConfig) (*Host, ma.Multiaddr) {
	t.Helper()
	e := New(Config{Logger: quiet})
	t.Cleanup(func() { e.Close() })
	h, err := NewHost(e, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.Handle(ProtoEcho, EchoStream)
	l, err := e.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"), Routes{Fallback: h.Handler()})
	if err != nil {
		t.Fatal(err)
	}
	h.SetListenAddrs([]ma.Multiaddr{l.Addr()})
	return h, l.Addr()
}

// collector is a client stream handler gathering what the peer sends.
type collector struct {
	got  []byte
	done chan error
}

func (c *collector) OnData(st *mux.Stream, p []byte) int { c.got = append(c.got, p...); return len(p) }
func (c *collector) OnWritable(*mux.Stream)              {}
func (c *collector) OnFIN(*mux.Stream)                   { c.done <- nil }
func (c *collector) OnReset(_ *mux.Stream, err error)    { c.done <- err }

// dialHost dials a host with our client role and waits until muxed.
func dialHost(t testing.TB, srv *Host, addr ma.Multiaddr, opt DialOptions) *PeerConn {
	t.Helper()
	e := New(Config{Logger: quiet})
	t.Cleanup(func() { e.Close() })
	cli, err := NewHost(e, HostConfig{InsecurePlaintext: opt.Plaintext})
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan error, 1)
	var pc *PeerConn
	if _, err := cli.DialPeer(addr, opt, func(p *PeerConn, err error) { pc = p; ready <- err }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("upgrade did not finish")
	}
	return pc
}

// echoOver writes data on an echo stream from the client and checks the
// echo, in pieces that exercise yamux windows and Noise framing.
func echoOver(t *testing.T, pc *PeerConn, data []byte) {
	t.Helper()
	col := &collector{done: make(chan error, 1)}
	var st *mux.Stream
	var err error
	pc.Conn().Do(func(*Conn) { st, err = pc.OpenStream(ProtoEcho, col) })
	if err != nil {
		t.Fatal(err)
	}
	// Write as the window allows, from outside the engine.
	rest := data
	deadline := time.Now().Add(20 * time.Second)
	for len(rest) > 0 {
		pc.Conn().Do(func(*Conn) {
			n, _ := st.Write(rest)
			rest = rest[n:]
			pc.flush()
		})
		if time.Now().After(deadline) {
			t.Fatalf("stuck with %d bytes unwritten", len(rest))
		}
		if len(rest) > 0 {
			time.Sleep(time.Millisecond)
		}
	}
	pc.Conn().Do(func(*Conn) { st.CloseWrite(); pc.flush() })
	select {
	case err := <-col.done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("echo incomplete: %d of %d bytes", len(col.got), len(data))
	}
	if !bytes.Equal(col.got, data) {
		t.Fatalf("echo differs: %d bytes back of %d", len(col.got), len(data))
	}
}

func TestHostEchoOwnClient(t *testing.T) {
	for _, plain := range []bool{false, true} {
		srv, addr := startHost(t, HostConfig{InsecurePlaintext: true})
		pc := dialHost(t, srv, addr, DialOptions{Expect: srv.ID(), Plaintext: plain})
		if pc.RemotePeer() != srv.ID() {
			t.Fatalf("remote %s, want %s", pc.RemotePeer(), srv.ID())
		}
		data := make([]byte, 3<<20)
		for i := range data {
			data[i] = byte(rand.Uint32())
		}
		echoOver(t, pc, data)
		echoOver(t, pc, []byte("small"))
	}
}

func TestHostWrongPeerID(t *testing.T) {
	srv, addr := startHost(t, HostConfig{})
	other, _ := startHost(t, HostConfig{})
	e := New(Config{Logger: quiet})
	defer e.Close()
	cli, _ := NewHost(e, HostConfig{})
	ready := make(chan error, 1)
	cli.DialPeer(addr, DialOptions{Expect: other.ID()}, func(_ *PeerConn, err error) { ready <- err })
	select {
	case err := <-ready:
		if err == nil {
			t.Fatal("dial to the wrong peer ID succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no result")
	}
	_ = srv
	_ = errors.New
}
