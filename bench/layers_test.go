// Package bench holds swarmgate's per-layer micro-benchmarks, each reporting
// bytes per second (b.SetBytes) and allocations, run with
//
//	go test -run '^$' -bench . -benchmem ./bench/
//
// Side-by-side comparisons with other servers are bench/run.sh.
package bench

import (
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/swarmgate/swarmgate/multistream"
	"github.com/swarmgate/swarmgate/mux"
	"github.com/swarmgate/swarmgate/security"
	"github.com/swarmgate/swarmgate/simd"
	"github.com/swarmgate/swarmgate/ws"
)

// BenchmarkFrameParse decodes masked client frames (header, unmask in
// place, UTF-8 not involved) as the server's WebSocket layer does.
func BenchmarkFrameParse(b *testing.B) {
	for _, size := range []int{64, 1024, 16 << 10} {
		frame := ws.AppendFrame(nil, ws.Client, true, ws.OpBinary, make([]byte, size))
		stream := make([]byte, 0, 64<<10)
		for len(stream)+len(frame) <= cap(stream) {
			stream = append(stream, frame...)
		}
		buf := make([]byte, len(stream))
		b.Run(byteSize(size), func(b *testing.B) {
			b.SetBytes(int64(len(stream)))
			d := ws.NewDecoder(ws.Server, 0)
			for b.Loop() {
				copy(buf, stream)
				for p := buf; len(p) > 0; {
					_, n, err := d.Next(p)
					if err != nil {
						b.Fatal(err)
					}
					p = p[n:]
				}
			}
		})
	}
}

// BenchmarkUnmask is the masking kernel the decoder uses, at a libp2p-sized
// message and a full Noise frame.
func BenchmarkUnmask(b *testing.B) {
	key := [4]byte{1, 2, 3, 4}
	for _, size := range []int{64, 16 << 10} {
		p := make([]byte, size)
		b.Run(simd.Impl()+"/"+byteSize(size), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				simd.Mask(key, 1, p)
			}
		})
	}
}

// sessions runs a Noise handshake in memory and returns both transports.
func sessions(b *testing.B) (*security.Session, *security.Session) {
	ka, _, _ := crypto.GenerateEd25519Key(nil)
	kb, _, _ := crypto.GenerateEd25519Key(nil)
	na, _ := security.NewNoise(ka)
	nb, _ := security.NewNoise(kb)
	ini, resp := na.NewInitiator(""), nb.NewResponder("")
	m1, _ := ini.Start(nil)
	m2, _, err := resp.Input(nil, m1)
	if err != nil {
		b.Fatal(err)
	}
	m3, _, err := ini.Input(nil, m2)
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := resp.Input(nil, m3); err != nil || !ini.Done() || !resp.Done() {
		b.Fatal("handshake did not complete", err)
	}
	return ini.Session(), resp.Session()
}

// BenchmarkNoiseSealOpen seals a frame on one side and opens it in place
// on the other.
func BenchmarkNoiseSealOpen(b *testing.B) {
	for _, size := range []int{64, 1024, security.MaxFramePlaintext} {
		b.Run(byteSize(size), func(b *testing.B) {
			a, z := sessions(b)
			pt := make([]byte, size)
			buf := make([]byte, 0, security.SealedLen(size))
			b.SetBytes(int64(size))
			for b.Loop() {
				ct, err := a.AppendFrame(buf[:0], pt)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := z.ReadFrame(ct); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkYamuxHeader parses and appends the 12-byte header.
func BenchmarkYamuxHeader(b *testing.B) {
	h := mux.Header{Type: mux.TypeData, StreamID: 3, Length: 1024}
	buf := mux.AppendHeader(nil, h)
	b.SetBytes(mux.HeaderLen)
	for b.Loop() {
		got, _, err := mux.ParseHeader(buf)
		if err != nil || got != h {
			b.Fatal(err)
		}
		buf = mux.AppendHeader(buf[:0], got)
	}
}

// BenchmarkMultistream parses and appends a protocol proposal.
func BenchmarkMultistream(b *testing.B) {
	msg := multistream.AppendMessage(nil, "/ipfs/id/1.0.0")
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		text, _, err := multistream.ParseMessage(msg)
		if err != nil {
			b.Fatal(err)
		}
		msg = multistream.AppendMessage(msg[:0], string(text))
	}
}

// discard consumes everything a stream delivers.
type discard struct{ n int }

func (d *discard) OnData(_ *mux.Stream, p []byte) int { d.n += len(p); return len(p) }
func (d *discard) OnWritable(*mux.Stream)             {}
func (d *discard) OnFIN(*mux.Stream)                  {}
func (d *discard) OnReset(*mux.Stream, error)         {}

// BenchmarkInboundStack is the server's whole inbound path for one byte of
// stream data: a masked WebSocket frame carrying a Noise frame carrying a
// yamux data frame → unmask in place → open in place → deliver to the
// stream handler (window updates queued and drained). CPU per byte of the
// server's receive side, without the syscalls.
func BenchmarkInboundStack(b *testing.B) {
	for _, size := range []int{1024, 16 << 10} {
		b.Run(byteSize(size), func(b *testing.B) {
			cliSec, srvSec := sessions(b)
			now := time.Now()
			sink := &discard{}
			srv := mux.NewServer(mux.Config{KeepAliveInterval: -1, OnStream: func(st *mux.Stream) { st.Accept(sink) }}, now)
			cli := mux.NewClient(mux.Config{KeepAliveInterval: -1}, now)
			st, err := cli.Open(&discard{})
			if err != nil {
				b.Fatal(err)
			}
			payload := make([]byte, size)
			// One round to open the stream and settle windows.
			var frames []byte
			build := func() []byte {
				if _, err := st.Write(payload); err != nil && !errors.Is(err, mux.ErrWouldBlock) {
					b.Fatal(err)
				}
				pt := cli.AppendOutput(nil, 0)
				ct, err := cliSec.AppendSeal(nil, pt)
				if err != nil {
					b.Fatal(err)
				}
				return ws.AppendFrame(nil, ws.Client, true, ws.OpBinary, ct)
			}
			deliver := func(wire []byte, d *ws.Decoder) {
				for len(wire) > 0 {
					ev, n, err := d.Next(wire)
					if err != nil {
						b.Fatal(err)
					}
					wire = wire[n:]
					for p := ev.Payload; len(p) > 0; {
						pt, k, err := srvSec.ReadFrame(p)
						if err != nil {
							b.Fatal(err)
						}
						p = p[k:]
						if _, err := srv.Input(pt, now); err != nil {
							b.Fatal(err)
						}
					}
				}
				// The server's window updates go back to the client.
				if back := srv.AppendOutput(nil, 0); len(back) > 0 {
					cli.Input(back, now)
				}
			}
			dec := ws.NewDecoder(ws.Server, 0)
			deliver(build(), &dec)
			frames = build()
			wire := make([]byte, len(frames))
			b.SetBytes(int64(size))
			for b.Loop() {
				// Re-seal each round (Noise nonces must advance); only the
				// server's side is timed.
				b.StopTimer()
				frames = build()
				wire = append(wire[:0], frames...)
				b.StartTimer()
				deliver(wire, &dec)
			}
			if sink.n == 0 {
				b.Fatal("nothing delivered")
			}
		})
	}
}

func byteSize(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return itoa(n>>20) + "MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return itoa(n>>10) + "KiB"
	}
	return itoa(n) + "B"
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for ; n > 0; n /= 10 {
		i--
		b[i] = byte('0' + n%10)
	}
	return string(b[i:])
}
