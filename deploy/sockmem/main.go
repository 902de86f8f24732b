// Command sockmem measures what the kernel holds for an idle TCP connection:
// it opens N connections on loopback (listener and dialer in this process),
// does one 64-byte echo on each so every socket has carried data and its
// queues are empty again (the state of an idle libp2p connection between
// keepalives), then reads the kernel's own accounting before and after:
//
//   - /proc/meminfo Slab (all slab caches: tcp_sock, socket inode, file,
//     dentry, epoll item, kmalloc'd parts),
//   - /proc/slabinfo, per cache (active objects × object size),
//   - /proc/net/sockstat "TCP … mem" (pages charged to net.ipv4.tcp_mem:
//     socket buffers, not the sockets themselves).
//
// On loopback every connection is two sockets on this host (the dialer's
// and the accepted one), so per-socket figures are deltas ÷ 2N; a server
// host holds one socket per connection. Every socket is registered with the
// Go runtime's epoll, as a netpoll server registers its connections.
//
// With -unread, the server side leaves one 64-byte message unread in each
// socket's receive queue: what a burst of keepalives costs while the
// event loop is behind.
//
// Run it alone on the machine (the slab caches are shared with everything
// else): flock /tmp/swarmgate-bench.lock go run ./sockmem -n 5000 -rounds 3
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

type snapshot struct {
	slabKB   int64            // /proc/meminfo Slab
	caches   map[string]int64 // bytes per slab cache (active objects × size)
	tcpPages int64            // /proc/net/sockstat TCP mem
	tcpInuse int64
}

func main() {
	n := flag.Int("n", 5000, "connections to open")
	rounds := flag.Int("rounds", 3, "rounds (each opens and closes n connections)")
	unread := flag.Bool("unread", false, "leave one 64-byte message unread in each server socket's receive queue")
	settle := flag.Duration("settle", 2*time.Second, "wait before each reading (lets RCU-freed slab objects go)")
	flag.Parse()
	for r := 1; r <= *rounds; r++ {
		if err := round(r, *n, *unread, *settle); err != nil {
			fmt.Fprintln(os.Stderr, "sockmem:", err)
			os.Exit(1)
		}
	}
}

func round(r, n int, unread bool, settle time.Duration) error {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	accepted := make(chan net.Conn, n)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	runtime.GC()
	time.Sleep(settle)
	before, err := read()
	if err != nil {
		return err
	}
	msg := bytes.Repeat([]byte{'x'}, 64)
	buf := make([]byte, 64)
	var clients, servers []net.Conn
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			return fmt.Errorf("dial %d: %w", i, err)
		}
		s := <-accepted
		// One echo: client → server → client, all bytes read, queues empty.
		if _, err := c.Write(msg); err != nil {
			return err
		}
		if _, err := io.ReadFull(s, buf); err != nil {
			return err
		}
		if _, err := s.Write(buf); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if unread {
			if _, err := c.Write(msg); err != nil {
				return err
			}
		}
		clients = append(clients, c)
		servers = append(servers, s)
	}
	runtime.GC()
	time.Sleep(settle)
	after, err := read()
	if err != nil {
		return err
	}
	sockets := float64(2 * n)
	fmt.Printf("round %d: %d connections (%d sockets), tcp inuse +%d\n", r, n, 2*n, after.tcpInuse-before.tcpInuse)
	fmt.Printf("  slab (meminfo Slab)      %8.0f B per socket\n", float64(after.slabKB-before.slabKB)*1024/sockets)
	fmt.Printf("  tcp_mem (sockstat mem)   %8.0f B per socket (%d pages)\n", float64(after.tcpPages-before.tcpPages)*4096/sockets, after.tcpPages-before.tcpPages)
	type row struct {
		name  string
		bytes int64
	}
	var rows []row
	for name, b := range after.caches {
		if d := b - before.caches[name]; d > 0 {
			rows = append(rows, row{name, d})
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].bytes > rows[j].bytes })
	var sum int64
	for _, rw := range rows {
		sum += rw.bytes
		if float64(rw.bytes)/sockets >= 8 {
			fmt.Printf("    %-24s %8.0f B per socket\n", rw.name, float64(rw.bytes)/sockets)
		}
	}
	fmt.Printf("  slab caches, sum         %8.0f B per socket\n", float64(sum)/sockets)
	for i := range clients {
		clients[i].Close()
		servers[i].Close()
	}
	ln.Close()
	for range accepted {
	}
	// Closed loopback sockets linger in TIME_WAIT; let the next round start
	// from a quieter table.
	time.Sleep(settle)
	return nil
}

func read() (snapshot, error) {
	s := snapshot{caches: map[string]int64{}}
	mi, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Slab:" {
			s.slabKB, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	if f, err := os.Open("/proc/slabinfo"); err == nil { // root only
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fl := strings.Fields(sc.Text())
			if len(fl) < 4 || fl[0] == "slabinfo" || fl[0] == "#" {
				continue
			}
			active, _ := strconv.ParseInt(fl[1], 10, 64)
			size, _ := strconv.ParseInt(fl[3], 10, 64)
			s.caches[fl[0]] = active * size
		}
		f.Close()
	}
	ss, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(ss), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "TCP:" {
			continue
		}
		for i := 1; i+1 < len(f); i += 2 {
			v, _ := strconv.ParseInt(f[i+1], 10, 64)
			switch f[i] {
			case "mem":
				s.tcpPages = v
			case "inuse":
				s.tcpInuse = v
			}
		}
	}
	return s, nil
}
