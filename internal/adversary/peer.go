// Package adversary is a hand-driven libp2p client for the adversarial
// tests: a gorilla WebSocket, our Noise initiator, and yamux frames built
// by hand with mux.AppendHeader, so a test can send what no well-behaved
// client sends, stop reading whenever it likes, and see exactly what the
// server answers. It uses only the codecs' public APIs (never the libp2p
// package, whose own tests use it). Tests only.
package adversary

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/multistream"
	"github.com/swarmgate/swarmgate/mux"
	"github.com/swarmgate/swarmgate/security"
)

// Protocol ids of the upgrade (libp2p's ProtoNoise and ProtoYamux).
const (
	ProtoNoise = security.NoiseID
	ProtoYamux = "/yamux/1.0.0"
)

// Peer is one hand-driven connection, upgraded through Noise with yamux
// agreed inside the handshake. Send and WriteRaw may be called from any
// goroutine; the reader (StartReader) records what the server sends.
type Peer struct {
	t   testing.TB
	WS  *websocket.Conn
	Key crypto.PrivKey
	ID  peer.ID
	sec security.Session // by value, copied from the handshake before use

	wmu sync.Mutex // one writer: the cipher's nonce and gorilla's writer

	// rest is transport bytes that arrived behind the handshake; the
	// reader starts with them.
	rest []byte

	mu          sync.Mutex // the reader's findings and settings, below
	streams     map[uint32]*Stream
	pings       int  // pings the server sent us
	goaway      int  // the GoAway code the server sent, -1 for none
	answerPings bool // answer the server's pings (keepalive)
	keepData    bool // keep the data of every stream (Stream.Data)
	ended       error
	done        chan struct{} // closed when the reader stops
}

// Stream is what the reader saw of one stream.
type Stream struct {
	Got    int    // data bytes received
	Data   []byte // the bytes themselves, with SetKeepData
	Window uint32 // send credit the server granted beyond the initial window
	ACK    bool
	FIN    bool
	RST    bool
}

// DialWS opens a WebSocket to a libp2p WebSocket listener (closed when the
// test ends).
func DialWS(t testing.TB, addr ma.Multiaddr) *websocket.Conn {
	t.Helper()
	wc, _, err := websocket.DefaultDialer.Dial("ws://"+testutil.HostPort(t, addr)+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wc.Close() })
	return wc
}

// Dial connects, negotiates /noise and runs the Noise handshake with key
// (nil: a fresh identity), yamux agreed inside it as go-libp2p does. The
// reader is not started: a peer that never reads leaves it so.
func Dial(t testing.TB, addr ma.Multiaddr, key crypto.PrivKey) *Peer {
	t.Helper()
	if key == nil {
		var err error
		if key, _, err = crypto.GenerateEd25519Key(nil); err != nil {
			t.Fatal(err)
		}
	}
	p := &Peer{t: t, WS: DialWS(t, addr), Key: key, goaway: -1, answerPings: true, streams: map[uint32]*Stream{}, done: make(chan struct{})}
	p.ID, _ = peer.IDFromPrivateKey(key)
	n, err := security.NewNoise(key, ProtoYamux)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := multistream.NewDialer(ProtoNoise)
	p.WriteRaw(d.Start(nil))
	var in []byte
	for !d.Done() {
		in = append(in, p.readRaw()...)
		_, k, err := d.Input(nil, in)
		if err != nil {
			t.Fatal(err)
		}
		in = in[k:]
	}
	hs := n.NewInitiator("")
	out, _ := hs.Start(nil)
	p.WriteRaw(out)
	for !hs.Done() {
		out, k, err := hs.Input(nil, in)
		if err != nil {
			t.Fatal(err)
		}
		in = in[k:]
		p.WriteRaw(out)
		if !hs.Done() {
			in = append(in, p.readRaw()...)
		}
	}
	if m := hs.Result().Muxer; m != ProtoYamux {
		t.Fatalf("muxer %q agreed inside Noise", m)
	}
	p.sec = *hs.Session()
	p.rest = in
	return p
}

// readRaw reads one WebSocket message during the handshake.
func (p *Peer) readRaw() []byte {
	p.t.Helper()
	p.WS.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := p.WS.ReadMessage()
	if err != nil {
		p.t.Fatal(err)
	}
	return b
}

// WriteRaw sends bytes as one WebSocket message, unencrypted.
func (p *Peer) WriteRaw(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.WS.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return p.WS.WriteMessage(websocket.BinaryMessage, b)
}

// Send seals yamux bytes into Noise frames, up to 1 MiB of frames per
// WebSocket message. It fails once the server has closed.
func (p *Peer) Send(frames ...[]byte) error {
	var pt []byte
	for _, f := range frames {
		pt = append(pt, f...)
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	for len(pt) > 0 {
		k := min(len(pt), 1<<20)
		msg, err := p.sec.AppendSeal(nil, pt[:k])
		if err != nil {
			return err
		}
		p.WS.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := p.WS.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			return err
		}
		pt = pt[k:]
	}
	return nil
}

// Frame builds one yamux frame; a Data frame carries payload.
func Frame(typ mux.FrameType, flags mux.Flags, id, length uint32, payload []byte) []byte {
	return append(mux.AppendHeader(nil, mux.Header{Type: typ, Flags: flags, StreamID: id, Length: length}), payload...)
}

// Data is a Data frame carrying payload.
func Data(flags mux.Flags, id uint32, payload []byte) []byte {
	return Frame(mux.TypeData, flags, id, uint32(len(payload)), payload)
}

// Propose is the dialer's side of a stream's multistream-select, sent at
// once (lazy negotiation, as go-libp2p does): our header and the protocol.
func Propose(proto string) []byte {
	return multistream.AppendMessage(multistream.AppendMessage(nil, multistream.ProtocolID), proto)
}

// OpenStream is a SYN carrying a proposal of proto followed by data.
func OpenStream(id uint32, proto string, data []byte) []byte {
	return Data(mux.FlagSYN, id, append(Propose(proto), data...))
}

// SetAnswerPings sets whether the reader answers the server's pings
// (keepalive); it does by default.
func (p *Peer) SetAnswerPings(on bool) {
	p.mu.Lock()
	p.answerPings = on
	p.mu.Unlock()
}

// SetKeepData makes the reader keep every stream's data (Stream.Data).
func (p *Peer) SetKeepData(on bool) {
	p.mu.Lock()
	p.keepData = on
	p.mu.Unlock()
}

// StartReader reads and decrypts everything the server sends, recording
// per-stream data, windows, FIN and RST, pings and GoAway, until the
// connection ends.
func (p *Peer) StartReader() {
	go func() {
		defer close(p.done)
		buf := p.rest
		var pt []byte
		for {
			p.WS.SetReadDeadline(time.Time{})
			_, msg, err := p.WS.ReadMessage()
			if err != nil {
				p.end(err)
				return
			}
			buf = append(buf, msg...)
			for {
				plain, n, err := p.sec.ReadFrame(buf)
				if err == security.ErrNeedMore {
					break
				}
				if err != nil {
					p.end(err)
					return
				}
				pt = append(pt, plain...)
				buf = buf[n:]
			}
			buf = append([]byte(nil), buf...)
			pt = p.parse(pt)
		}
	}()
}

func (p *Peer) end(err error) {
	p.mu.Lock()
	p.ended = err
	p.mu.Unlock()
}

// parse records the complete yamux frames at the front of b and returns
// the rest.
func (p *Peer) parse(b []byte) []byte {
	var pongs [][]byte
	p.mu.Lock()
	for {
		h, n, err := mux.ParseHeader(b)
		if err != nil {
			break
		}
		if h.Type == mux.TypeData && len(b) < n+int(h.Length) {
			break
		}
		b = b[n:]
		switch h.Type {
		case mux.TypePing:
			if h.Flags&mux.FlagSYN != 0 {
				p.pings++
				if p.answerPings {
					pongs = append(pongs, Frame(mux.TypePing, mux.FlagACK, 0, h.Length, nil))
				}
			}
		case mux.TypeGoAway:
			p.goaway = int(h.Length)
		default:
			st := p.streams[h.StreamID]
			if st == nil {
				st = &Stream{}
				p.streams[h.StreamID] = st
			}
			st.ACK = st.ACK || h.Flags&mux.FlagACK != 0
			st.FIN = st.FIN || h.Flags&mux.FlagFIN != 0
			st.RST = st.RST || h.Flags&mux.FlagRST != 0
			if h.Type == mux.TypeData {
				st.Got += int(h.Length)
				if p.keepData {
					st.Data = append(st.Data, b[:h.Length]...)
				}
				b = b[h.Length:]
			} else if h.Flags&mux.FlagRST == 0 {
				st.Window += h.Length
			}
		}
	}
	p.mu.Unlock()
	for _, f := range pongs {
		p.Send(f)
	}
	return append([]byte(nil), b...)
}

// Stream returns a copy of what the reader saw of stream id.
func (p *Peer) Stream(id uint32) Stream {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.streams[id]; st != nil {
		c := *st
		c.Data = append([]byte(nil), st.Data...)
		return c
	}
	return Stream{}
}

// Resets counts the streams the server reset.
func (p *Peer) Resets() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, st := range p.streams {
		if st.RST {
			n++
		}
	}
	return n
}

// Pings is how many pings the server sent.
func (p *Peer) Pings() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pings
}

// GoAway is the code of the GoAway the server sent, -1 for none.
func (p *Peer) GoAway() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.goaway
}

// Done is closed when the reader has stopped: the connection ended.
func (p *Peer) Done() <-chan struct{} { return p.done }

// Ended reports whether the connection has ended, and why.
func (p *Peer) Ended() (bool, error) {
	select {
	case <-p.done:
	default:
		return false, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return true, p.ended
}

// WaitEnd waits for the reader to stop and returns why; a close from the
// server is a *websocket.CloseError.
func (p *Peer) WaitEnd(d time.Duration) error {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		p.t.Fatalf("the server did not end the connection within %v", d)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ended
}

// CloseCode is the WebSocket close code err carries, 0 for none.
func CloseCode(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}
