// Command node embeds swarmgate: a libp2p node over WebSocket with identify,
// ping and /example/greet/1.0.0, which answers "hello <peer id>\n" and closes.
//
//	go run ./examples/node -listen /ip4/127.0.0.1/tcp/4001/ws
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os/signal"
	"syscall"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/libp2p"
	"github.com/swarmgate/swarmgate/mux"
)

func main() {
	listen := flag.String("listen", "/ip4/127.0.0.1/tcp/4001/ws", "multiaddr to listen on")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Fatal(run(ctx, ma.StringCast(*listen), func(a ma.Multiaddr) { fmt.Println(a) }))
}

// run serves on addr until ctx ends; ready gets the address with /p2p/<id>.
func run(ctx context.Context, addr ma.Multiaddr, ready func(ma.Multiaddr)) error {
	h, err := libp2p.New(libp2p.Config{}) // a fresh Ed25519 identity; identify and ping
	if err != nil {
		return err
	}
	defer h.Close()
	// Runs on the event loop, never blocks: a fresh stream's window takes the greeting whole.
	h.Handle("/example/greet/1.0.0", func(pc *libp2p.PeerConn, st *mux.Stream) mux.Handler {
		st.Write([]byte("hello " + pc.RemotePeer().String() + "\n"))
		st.CloseWrite()
		return &mux.Funcs{} // the stream's later events: input ignored
	})
	bound, err := h.Listen(addr)
	if err == nil {
		ready(bound.Encapsulate(ma.StringCast("/p2p/" + h.ID().String())))
		<-ctx.Done()
	}
	return err
}
