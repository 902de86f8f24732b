// Command tcpfloor measures what the round trips of a libp2p connection over
// /ws cost a Go server when it does nothing else: no WebSocket, no Noise, no
// yamux, only accept and the same reads and writes, of the same sizes and in
// the same order, as swarmgate's server sees for one `loadgen run -scenario
// connect` connection (strace of the server: the HTTP upgrade, the
// multistream proposal, Noise message 1, message 3 with the pipelined yamux
// frames, the identify answer; and the server's 101 with its multistream
// header, the /noise echo, Noise message 2, the yamux answers).
//
// It is the transport part of the floor that bench/setup-cost.sh sets
// beside the crypto floor: on loopback every write also runs the receiving
// socket's TCP path and wakes the reader, and that is charged to the
// writer, so a connection's syscalls cost the server what they cost here
// whatever the server does.
//
// The server is this binary again (-serve), in its own process, with
// goroutine-per-connection net.Conn: the idiomatic Go server, whose CPU
// is read from /proc before and after n connections.
//
//	go run ./tcpfloor -n 3000 -par 16
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The sizes of one /ws libp2p connection (Noise, yamux, one echo, the
// identify the server opens), in the order they cross: the client's writes
// (up[i]) each answered by the server's write down[i] where there is one.
var (
	up   = []int{154, 34, 40, 355, 248}
	down = []int{151, 10, 222, 239}
)

func main() {
	serve := flag.Bool("serve", false, "run as the server (prints its address)")
	n := flag.Int("n", 3000, "connections")
	par := flag.Int("par", 16, "connections opened at once")
	upFlag := flag.String("up", "", "the client's write sizes, comma-separated (default: a /ws libp2p connection's)")
	downFlag := flag.String("down", "", "the server's answers' sizes, comma-separated")
	flag.Parse()
	if *upFlag != "" {
		up, down = sizes(*upFlag), sizes(*downFlag)
	}
	if *serve {
		server()
		return
	}
	srv := exec.Command(os.Args[0], "-serve", "-up", join(up), "-down", join(down))
	out, err := srv.StdoutPipe()
	if err != nil {
		fail(err)
	}
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		fail(err)
	}
	defer srv.Process.Kill()
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		fail(err)
	}
	addr = strings.TrimSpace(addr)

	pid := srv.Process.Pid
	c0 := cpu(pid)
	conns := make([]net.Conn, *n)
	var wg sync.WaitGroup
	next := make(chan int)
	errs := make(chan error, *n)
	for w := 0; w < *par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := client(addr)
				if err != nil {
					errs <- err
					continue
				}
				conns[i] = c
			}
		}()
	}
	for i := 0; i < *n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	time.Sleep(100 * time.Millisecond) // the server reads the last message
	c1 := cpu(pid)
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	close(errs)
	nerr := 0
	for range errs {
		nerr++
	}
	fmt.Printf("%.1f %d\n", float64(c1-c0)/float64(time.Microsecond)/float64(*n), nerr)
}

// client opens one connection and plays the client's side of the exchange.
func client(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	for i, u := range up {
		if _, err := c.Write(buf[:u]); err != nil {
			c.Close()
			return nil, err
		}
		if i < len(down) {
			if _, err := io.ReadFull(c, buf[:down[i]]); err != nil {
				c.Close()
				return nil, err
			}
		}
	}
	return c, nil
}

// server listens on loopback, prints its address and serves until killed.
func server() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	fmt.Println(ln.Addr())
	if err := serve(ln); err != nil {
		fail(err)
	}
}

// serve accepts and plays the server's side on a goroutine per connection,
// until ln fails.
func serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 512)
			for i, u := range up {
				if _, err := io.ReadFull(c, buf[:u]); err != nil {
					return
				}
				if i < len(down) {
					if _, err := c.Write(buf[:down[i]]); err != nil {
						return
					}
				}
			}
			io.Copy(io.Discard, c) // until the client closes
		}()
	}
}

func sizes(s string) []int {
	var v []int
	for _, f := range strings.Split(s, ",") {
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 || n > 512 {
			fail(fmt.Errorf("bad size %q", f))
		}
		v = append(v, n)
	}
	return v
}

func join(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// cpu is a process's user and system time from /proc/PID/stat.
func cpu(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		fail(err)
	}
	// Fields after the command name (which may hold spaces) start at ") ".
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tcpfloor:", err)
	os.Exit(1)
}
