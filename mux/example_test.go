package mux_test

import (
	"fmt"
	"time"

	"github.com/swarmgate/swarmgate/mux"
)

// upper is an event-driven protocol handler: it answers each chunk in
// upper case, consuming only what it could write (backpressure), and
// half-closes after the peer's FIN.
type upper struct{}

func (upper) OnData(st *mux.Stream, p []byte) int {
	out := make([]byte, len(p))
	for i, c := range p {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		out[i] = c
	}
	n, _ := st.Write(out) // short on ErrWouldBlock: the rest stays buffered
	return n
}
func (upper) OnWritable(st *mux.Stream) {
	// Resume with what OnData left in the stream's buffer.
	n, _ := st.Write(st.Peek())
	st.Discard(n)
}
func (upper) OnFIN(st *mux.Stream)              { st.CloseWrite() }
func (upper) OnReset(st *mux.Stream, err error) {}

// Example wires a server session (as the engine would) to an in-memory
// client session and moves bytes between them.
func Example() {
	now := time.Now()
	server := mux.NewServer(mux.Config{
		KeepAliveInterval: -1,
		OnStream:          func(st *mux.Stream) { st.Accept(upper{}) },
	}, now)
	client := mux.NewClient(mux.Config{KeepAliveInterval: -1}, now)

	st, _ := client.Open(&mux.Funcs{
		Data: func(st *mux.Stream, p []byte) int { fmt.Printf("client got %q\n", p); return len(p) },
		FIN:  func(st *mux.Stream) { fmt.Println("client got FIN") },
	})
	st.Write([]byte("hello, yamux"))
	st.CloseWrite()

	// The engine's loop: drain one side's output into the other's Input.
	var wire []byte
	for client.HasOutput() || server.HasOutput() {
		wire = client.AppendOutput(wire[:0], 0)
		if _, err := server.Input(wire, now); err != nil {
			panic(err)
		}
		wire = server.AppendOutput(wire[:0], 0)
		if _, err := client.Input(wire, now); err != nil {
			panic(err)
		}
	}
	fmt.Println("streams left:", client.NumStreams(), server.NumStreams())
	// Output:
	// client got "HELLO, YAMUX"
	// client got FIN
	// streams left: 0 0
}
