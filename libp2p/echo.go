package libp2p

import (
	"github.com/swarmgate/swarmgate/mux"
)

// ProtoEcho is the echo protocol: every byte is written back, and the write
// side closes after the peer's FIN.
const ProtoEcho = "/echo/1.0.0"

// EchoStream serves ProtoEcho. Bytes the peer's window lets through but our
// output queue cannot take stay unconsumed, so an echo never buffers more
// than the stream's window: backpressure reaches the sender through yamux.
func EchoStream(pc *PeerConn, st *mux.Stream) mux.Handler { return echoStream{} }

type echoStream struct{}

func (echoStream) OnData(st *mux.Stream, p []byte) int {
	n, _ := st.Write(p)
	return n
}

// OnWritable: the unconsumed bytes are presented again with the next data
// or FIN; a stream that got everything already needs nothing here.
func (echoStream) OnWritable(st *mux.Stream) {
	if b := st.Peek(); len(b) > 0 {
		n, _ := st.Write(b)
		st.Discard(n)
	}
	if st.Buffered() == 0 && st.State() == mux.StreamRemoteClosed {
		st.CloseWrite()
	}
}

func (echoStream) OnFIN(st *mux.Stream) {
	if st.Buffered() == 0 {
		st.CloseWrite()
	}
}

func (echoStream) OnReset(*mux.Stream, error) {}
