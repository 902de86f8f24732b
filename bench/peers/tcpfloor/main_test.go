package main

import (
	"net"
	"testing"
)

// The client and the server play the same exchange, every answer whole:
// sizes that disagree leave one side waiting and the client failing at its
// deadline.
func TestExchange(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go serve(ln)
	for i := 0; i < 20; i++ {
		c, err := client(ln.Addr().String())
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		c.Close()
	}

}

func TestSizes(t *testing.T) {
	if got := join(sizes("154,34,,40")); got != "154,34,40" {
		t.Fatalf("sizes round trip: %q", got)
	}
}
