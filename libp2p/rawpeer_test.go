package libp2p

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

// rawPeer is a hand-driven libp2p client for the adversarial tests: a
// gorilla WebSocket, our Noise initiator, and yamux frames built by hand
// with mux.AppendHeader, so a test can send what no well-behaved client
// sends, stop reading whenever it likes, and see exactly what the server
// answers.
type rawPeer struct {
	t   testing.TB
	wc  *websocket.Conn
	key crypto.PrivKey
	id  peer.ID
	sec security.Session // by value, copied from the handshake before use

	wmu sync.Mutex // one writer: the cipher's nonce and gorilla's writer

	// rest is transport bytes that arrived behind the handshake; the
	// reader starts with them.
	rest []byte

	mu          sync.Mutex // the reader's findings, below
	streams     map[uint32]*rawStream
	pings       int  // pings the server sent us
	goaway      int  // the GoAway code the server sent, -1 for none
	answerPings bool // answer the server's pings (keepalive; set by dialRaw)
	keepData    bool // keep the data of every stream (rawStream.data)
	ended       error
	done        chan struct{} // closed when the reader stops
}

// rawStream is what the reader saw of one stream.
type rawStream struct {
	got    int    // data bytes received
	data   []byte // the bytes themselves, with rawPeer.keepData
	window uint32 // send credit the server granted beyond the initial window
	acked  bool
	fin    bool
	rst    bool
}

// wsDialRaw opens a WebSocket to a host's libp2p listener.
func wsDialRaw(t testing.TB, addr ma.Multiaddr) *websocket.Conn {
	t.Helper()
	wc, _, err := websocket.DefaultDialer.Dial("ws://"+testutil.HostPort(t, addr)+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wc.Close() })
	return wc
}

// dialRaw connects, negotiates /noise and runs the Noise handshake with
// key (nil: a fresh identity), yamux agreed inside it as go-libp2p does.
// The reader is not started: a test that never reads leaves it so.
func dialRaw(t testing.TB, addr ma.Multiaddr, key crypto.PrivKey) *rawPeer {
	t.Helper()
	if key == nil {
		var err error
		if key, _, err = crypto.GenerateEd25519Key(nil); err != nil {
			t.Fatal(err)
		}
	}
	p := &rawPeer{t: t, wc: wsDialRaw(t, addr), key: key, goaway: -1, answerPings: true, streams: map[uint32]*rawStream{}, done: make(chan struct{})}
	p.id, _ = peer.IDFromPrivateKey(key)
	n, err := security.NewNoise(key, ProtoYamux)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := multistream.NewDialer(ProtoNoise)
	p.writeRaw(d.Start(nil))
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
	p.writeRaw(out)
	for !hs.Done() {
		out, k, err := hs.Input(nil, in)
		if err != nil {
			t.Fatal(err)
		}
		in = in[k:]
		p.writeRaw(out)
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
func (p *rawPeer) readRaw() []byte {
	p.t.Helper()
	p.wc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := p.wc.ReadMessage()
	if err != nil {
		p.t.Fatal(err)
	}
	return b
}

// writeRaw sends bytes as one WebSocket message, unencrypted.
func (p *rawPeer) writeRaw(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.wc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return p.wc.WriteMessage(websocket.BinaryMessage, b)
}

// send seals yamux bytes into Noise frames, up to 1 MiB of frames per
// WebSocket message. It fails once the server has closed.
func (p *rawPeer) send(frames ...[]byte) error {
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
		p.wc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := p.wc.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			return err
		}
		pt = pt[k:]
	}
	return nil
}

// yframe builds one yamux frame; a Data frame carries payload.
func yframe(typ mux.FrameType, flags mux.Flags, id, length uint32, payload []byte) []byte {
	return append(mux.AppendHeader(nil, mux.Header{Type: typ, Flags: flags, StreamID: id, Length: length}), payload...)
}

// ydata is a Data frame carrying payload.
func ydata(flags mux.Flags, id uint32, payload []byte) []byte {
	return yframe(mux.TypeData, flags, id, uint32(len(payload)), payload)
}

// propose is the dialer's side of a stream's multistream-select, sent at
// once (lazy negotiation, as go-libp2p does): our header and the protocol.
func propose(proto string) []byte {
	return multistream.AppendMessage(multistream.AppendMessage(nil, multistream.ProtocolID), proto)
}

// openStream is a SYN carrying a proposal of proto followed by data.
func openStream(id uint32, proto string, data []byte) []byte {
	return ydata(mux.FlagSYN, id, append(propose(proto), data...))
}

// startReader reads and decrypts everything the server sends, recording
// per-stream data, windows, FIN and RST, pings and GoAway, until the
// connection ends.
func (p *rawPeer) startReader() {
	go func() {
		defer close(p.done)
		buf := p.rest
		var pt []byte
		for {
			p.wc.SetReadDeadline(time.Time{})
			_, msg, err := p.wc.ReadMessage()
			if err != nil {
				p.mu.Lock()
				p.ended = err
				p.mu.Unlock()
				return
			}
			buf = append(buf, msg...)
			for {
				plain, n, err := p.sec.ReadFrame(buf)
				if err == security.ErrNeedMore {
					break
				}
				if err != nil {
					p.mu.Lock()
					p.ended = err
					p.mu.Unlock()
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

// parse records the complete yamux frames at the front of b and returns
// the rest.
func (p *rawPeer) parse(b []byte) []byte {
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
					pongs = append(pongs, yframe(mux.TypePing, mux.FlagACK, 0, h.Length, nil))
				}
			}
		case mux.TypeGoAway:
			p.goaway = int(h.Length)
		default:
			st := p.streams[h.StreamID]
			if st == nil {
				st = &rawStream{}
				p.streams[h.StreamID] = st
			}
			st.acked = st.acked || h.Flags&mux.FlagACK != 0
			st.fin = st.fin || h.Flags&mux.FlagFIN != 0
			st.rst = st.rst || h.Flags&mux.FlagRST != 0
			if h.Type == mux.TypeData {
				st.got += int(h.Length)
				if p.keepData {
					st.data = append(st.data, b[:h.Length]...)
				}
				b = b[h.Length:]
			} else if h.Flags&mux.FlagRST == 0 {
				st.window += h.Length
			}
		}
	}
	p.mu.Unlock()
	for _, f := range pongs {
		p.send(f)
	}
	return append([]byte(nil), b...)
}

// stream returns a copy of what the reader saw of stream id.
func (p *rawPeer) stream(id uint32) rawStream {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.streams[id]; st != nil {
		c := *st
		c.data = append([]byte(nil), st.data...)
		return c
	}
	return rawStream{}
}

// resets counts the streams the server reset.
func (p *rawPeer) resets() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, st := range p.streams {
		if st.rst {
			n++
		}
	}
	return n
}

// waitEnd waits for the reader to stop and returns why; a close from the
// server is a *websocket.CloseError.
func (p *rawPeer) waitEnd(d time.Duration) error {
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

// closeCode is the WebSocket close code err carries, 0 for none.
func closeCode(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}

// serverConn is the server's connection to peer id, nil when there is
// none (not muxed yet, or gone).
func serverConn(h *Host, id peer.ID) *PeerConn {
	if cs := h.ConnsToPeer(id); len(cs) > 0 {
		return cs[0]
	}
	return nil
}

// connUsed is what a server connection's share holds now.
func connUsed(pc *PeerConn) int64 {
	var used int64
	pc.Do(func() { used = pc.c.Memory().Used() })
	return used
}

// peakMeter samples, every millisecond while an attack runs, the
// server's accounted memory (the system budget) and, for each watched
// connection, what its share holds and the read-ahead it allows
// (InboundAllowance). Each connection has a sampler of its own: a
// connection whose flush waits for a peer that does not read holds its
// lock meanwhile, and must not stall the others' samples.
type peakMeter struct {
	stop      chan struct{}
	wg        sync.WaitGroup
	system    int64
	conn      []int64
	allowance []int
}

func meterPeaks(h *Host, pcs ...*PeerConn) *peakMeter {
	m := &peakMeter{stop: make(chan struct{}), conn: make([]int64, len(pcs)), allowance: make([]int, len(pcs))}
	sample := func(f func()) {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for {
				f()
				select {
				case <-m.stop:
					return
				case <-tick.C:
				}
			}
		}()
	}
	sample(func() { m.system = max(m.system, h.Engine().Memory().Used()) })
	for i, pc := range pcs {
		sample(func() {
			pc.Do(func() {
				m.conn[i] = max(m.conn[i], pc.c.Memory().Used())
				m.allowance[i] = max(m.allowance[i], pc.InboundAllowance())
			})
		})
	}
	return m
}

// finish stops sampling; the peaks are then in system, conn and allowance.
func (m *peakMeter) finish() {
	close(m.stop)
	m.wg.Wait()
}
