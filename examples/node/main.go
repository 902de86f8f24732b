// Command node is a minimal swarmgate node: libp2p over WebSocket with the
// default protocols (identify, ping, echo) and one protocol of its own,
// /example/greet/1.0.0, which answers "hello <peer id>\n" and closes.
//
//	go run ./examples/node -listen /ip4/127.0.0.1/tcp/4001/ws
//
// It prints its address with /p2p/<id>, which go-libp2p and js-libp2p
// clients can dial.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/mux"
)

const protoGreet = "/example/greet/1.0.0"

func main() {
	listen := flag.String("listen", "/ip4/127.0.0.1/tcp/4001/ws", "multiaddr to listen on")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, *listen, func(addr ma.Multiaddr) { fmt.Println(addr) })
	if err != nil {
		log.Fatal(err)
	}
}

// run serves on listen until ctx ends; ready gets the dialable address.
func run(ctx context.Context, listen string, ready func(ma.Multiaddr)) error {
	laddr, err := ma.NewMultiaddr(listen)
	if err != nil {
		return err
	}
	e := engine.New(engine.Config{})
	defer e.Close()
	h, err := engine.NewHost(e, engine.HostConfig{}) // fresh Ed25519 identity
	if err != nil {
		return err
	}
	if err := h.HandleDefaults(); err != nil {
		return err
	}
	if err := h.Handle(protoGreet, greet); err != nil {
		return err
	}
	l, err := e.Listen(laddr, engine.Routes{Fallback: h.Handler()})
	if err != nil {
		return err
	}
	h.SetListenAddrs([]ma.Multiaddr{l.Addr()}) // announced by identify
	ready(l.Addr().Encapsulate(ma.StringCast("/p2p/" + h.ID().String())))
	<-ctx.Done()
	return nil
}

// greet is an event-driven handler: it runs on the engine's callback, so
// it never blocks. It writes what the stream takes now and the rest when
// OnWritable says there is room, then half-closes.
func greet(pc *engine.PeerConn, st *mux.Stream) mux.Handler {
	g := &greeter{rest: []byte("hello " + pc.RemotePeer().String() + "\n")}
	g.send(st)
	return g
}

type greeter struct{ rest []byte }

func (g *greeter) send(st *mux.Stream) {
	n, err := st.Write(g.rest) // never blocks: short count + mux.ErrWouldBlock
	g.rest = g.rest[n:]
	if err == nil {
		st.CloseWrite()
	}
}

func (g *greeter) OnData(_ *mux.Stream, p []byte) int { return len(p) } // ignore input
func (g *greeter) OnWritable(st *mux.Stream)          { g.send(st) }
func (g *greeter) OnFIN(*mux.Stream)                  {}
func (g *greeter) OnReset(*mux.Stream, error)         {}
