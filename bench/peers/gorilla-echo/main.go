// Command gorilla-echo is the comparison peer a Go developer would write
// first: gorilla/websocket with a goroutine per connection echoing every
// message. It prints its WebSocket multiaddr on stdout and serves
// /metrics (go_goroutines) and /debug/pprof on the same port.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:0", "TCP address")
	flag.Parse()
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	http.Handle("/metrics", promhttp.Handler())
	http.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			op, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(op, msg); err != nil {
				return
			}
		}
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	a := ln.Addr().(*net.TCPAddr)
	fmt.Printf("/ip4/%s/tcp/%d/ws\n", a.IP, a.Port)
	log.Fatal(http.Serve(ln, nil))
}
