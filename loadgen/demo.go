package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/simd"
)

// demo runs an embedded engine on loopback, opens client connections to it
// with the engine's own client role, echoes a message on each and reports
// what the idle connections cost this process (server and client ends).
func demo(args []string) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	n := fs.Int("n", 2000, "connections to open")
	memprofile := fs.String("memprofile", "", "write a heap profile of the idle connections to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := engine.New(engine.Config{Logger: quiet})
	defer srv.Close()
	l, err := srv.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws"), engine.Routes{Paths: map[string]engine.StageFunc{"/echo": engine.Echo}})
	if err != nil {
		return err
	}
	cli := engine.New(engine.Config{Logger: quiet})
	defer cli.Close()

	g0, heap0 := settle()
	start := time.Now()
	conns, err := openEchoed(cli, l.Addr(), "/echo", *n, 128, make([]byte, 64))
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	g1, heap1 := settle()
	if *memprofile != "" {
		if err := writeHeapProfile(*memprofile); err != nil {
			return err
		}
	}

	fmt.Printf("# swarmgate loadgen (embedded engine, loopback)\n\n")
	fmt.Printf("listen %s, mask %s, %s/%s, %d CPUs\n\n", l.Addr(), simd.Impl(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	fmt.Printf("| figure | value |\n|---|---|\n")
	fmt.Printf("| connections (each upgraded, one 64-byte echo) | %d |\n", len(conns))
	fmt.Printf("| connect + upgrade + echo rate | %.0f conn/s |\n", float64(*n)/elapsed.Seconds())
	fmt.Printf("| goroutines per idle connection (both ends) | %.3f |\n", float64(g1-g0)/float64(*n))
	fmt.Printf("| Go heap per idle connection (both ends) | %.0f B |\n", float64(heap1-heap0)/float64(*n))
	fmt.Printf("| server connections open | %d |\n", srv.OpenConns())
	runtime.KeepAlive(conns)
	return nil
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.Lookup("heap").WriteTo(f, 0)
}

// settle collects garbage and returns the goroutine count and live heap.
func settle() (int, uint64) {
	time.Sleep(200 * time.Millisecond)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapInuse
}
