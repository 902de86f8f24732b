// Command gobulk is a bulk echo client built from go-libp2p v0.51.0 (its
// WebSocket transport, Noise and yamux): the client real peers use, for
// measuring what a server spends per byte when the bytes come from a peer
// that is not swarmgate's own client role. It opens -conns connections to
// -target (each from its own go-libp2p host, so each is a distinct peer),
// -streams /echo/1.0.0 streams on each, writes -mib MiB on every stream
// while reading the echo back, checks the bytes, and prints one JSON line:
//
//	{"bytes": N, "seconds": S, "conns": C, "streams": K}
//
// Server CPU is the caller's to measure (bench/peers/compare reads
// /proc/PID/schedstat around the run).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/websocket"
	ma "github.com/multiformats/go-multiaddr"
)

const protoEcho = "/echo/1.0.0"

func main() {
	target := flag.String("target", "", "server multiaddr ending in /p2p/ID (/ws)")
	conns := flag.Int("conns", 4, "connections, each from its own go-libp2p host")
	streams := flag.Int("streams", 4, "echo streams per connection")
	mib := flag.Int("mib", 32, "MiB written (and echoed) on each stream")
	chunk := flag.Int("chunk", 64<<10, "bytes per Write")
	flag.Parse()
	if err := run(*target, *conns, *streams, *mib<<20, *chunk); err != nil {
		fmt.Fprintln(os.Stderr, "gobulk:", err)
		os.Exit(1)
	}
}

func run(target string, nconns, nstreams, size, chunk int) error {
	addr, err := ma.NewMultiaddr(target)
	if err != nil {
		return err
	}
	info, err := peer.AddrInfoFromP2pAddr(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	hosts := make([]host.Host, nconns)
	for i := range hosts {
		h, err := libp2p.New(libp2p.NoListenAddrs, libp2p.Transport(websocket.New), libp2p.Security(noise.ID, noise.New), libp2p.DisableRelay())
		if err != nil {
			return err
		}
		defer h.Close()
		if err := h.Connect(ctx, *info); err != nil {
			return err
		}
		hosts[i] = h
	}
	pattern := make([]byte, chunk)
	for i := range pattern {
		pattern[i] = byte(rand.Uint32())
	}
	var wg sync.WaitGroup
	errs := make(chan error, nconns*nstreams)
	start := time.Now()
	for _, h := range hosts {
		for range nstreams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- echo(ctx, h, info.ID, pattern, size)
			}()
		}
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"bytes": int64(size) * int64(nconns*nstreams), "seconds": secs, "conns": nconns, "streams": nstreams})
}

// echo writes size bytes of pattern on a new echo stream and checks that
// they come back.
func echo(ctx context.Context, h host.Host, p peer.ID, pattern []byte, size int) error {
	s, err := h.NewStream(ctx, p, protoEcho)
	if err != nil {
		return err
	}
	defer s.Close()
	werr := make(chan error, 1)
	go func() {
		for sent := 0; sent < size; {
			n := min(len(pattern), size-sent)
			if _, err := s.Write(pattern[:n]); err != nil {
				werr <- err
				return
			}
			sent += n
		}
		werr <- s.CloseWrite()
	}()
	buf := make([]byte, len(pattern))
	for got := 0; got < size; {
		n := min(len(buf), size-got)
		if _, err := io.ReadFull(s, buf[:n]); err != nil {
			return fmt.Errorf("after %d of %d bytes: %w", got, size, err)
		}
		if !bytes.Equal(buf[:n], pattern[:n]) {
			return fmt.Errorf("echo differs at %d", got)
		}
		got += n
	}
	return <-werr
}
