package tls13

// Benchmarks; run them only under the machine-wide lock:
//
//	flock /tmp/swarmgate-bench.lock go test -run x -bench . -benchmem ./engine/tls13/

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
)

const benchRecord = MaxPlaintext // 16 KiB of plaintext per record

// memConn carries a real handshake over net.Pipe, then becomes an
// in-memory pipe shaped like the engine's (engine/tls.go tlsConn): Write
// appends the ciphertext to a buffer, Read hands out at most one record.
type memConn struct {
	net.Conn
	free bool
	buf  *[]byte // written to (client) or read from (server)
	off  int
	left int // rest of the record being read
}

func (c *memConn) Write(p []byte) (int, error) {
	if !c.free {
		return c.Conn.Write(p)
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

func (c *memConn) Read(p []byte) (int, error) {
	if !c.free {
		return c.Conn.Read(p)
	}
	rest := (*c.buf)[c.off:]
	if c.left == 0 {
		if len(rest) < HeaderLen {
			return 0, io.ErrNoProgress // the benchmark always writes first
		}
		c.left = HeaderLen + int(binary.BigEndian.Uint16(rest[3:]))
	}
	n := copy(p, rest[:c.left])
	c.off += n
	c.left -= n
	if c.off == len(*c.buf) {
		*c.buf, c.off = (*c.buf)[:0], 0
	}
	return n, nil
}

// cryptoTLSPair is a crypto/tls client and server after a TLS 1.3
// handshake with suite id (dynamic record sizing off: 16 KiB records),
// joined by an in-memory pipe from client to server.
func cryptoTLSPair(b *testing.B, id uint16) (cli, srv *tls.Conn, pipe *[]byte) {
	srvCfg, cliCfg := testConfigs(b)
	forceSuiteB(b, id)
	a, z := net.Pipe()
	defer a.Close()
	defer z.Close()
	pipe = new([]byte)
	ca, cz := &memConn{Conn: a, buf: pipe}, &memConn{Conn: z, buf: pipe}
	cliCfg.DynamicRecordSizingDisabled = true
	srvCfg.SessionTicketsDisabled = true
	cli, srv = tls.Client(ca, cliCfg), tls.Server(cz, srvCfg)
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		b.Fatal(err)
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	ca.free, cz.free = true, true
	return cli, srv, pipe
}

func forceSuiteB(b *testing.B, id uint16) {
	old1, old2 := defaultCipherSuitesTLS13, defaultCipherSuitesTLS13NoAES
	defaultCipherSuitesTLS13, defaultCipherSuitesTLS13NoAES = []uint16{id}, []uint16{id}
	b.Cleanup(func() { defaultCipherSuitesTLS13, defaultCipherSuitesTLS13NoAES = old1, old2 })
}

// cpuMeter accumulates the benchmark goroutine's CPU time (threadCPU)
// while running; stop and start follow b.StopTimer and b.StartTimer.
type cpuMeter struct {
	b       *testing.B
	t0, sum int64
}

func meterCPU(b *testing.B) *cpuMeter {
	runtime.LockOSThread()
	return &cpuMeter{b: b, t0: threadCPU()}
}

func (m *cpuMeter) stop()  { m.sum += threadCPU() - m.t0 }
func (m *cpuMeter) start() { m.t0 = threadCPU() }

// report ends the measurement: CPU nanoseconds per plaintext byte.
func (m *cpuMeter) report(bytesPerOp int) {
	m.stop()
	runtime.UnlockOSThread()
	if m.b.N > 0 {
		m.b.ReportMetric(float64(m.sum)/float64(m.b.N)/float64(bytesPerOp), "cpu-ns/B")
	}
}

// BenchmarkSeal: one full 16 KiB record per op, sealed into a buffer with
// room. AppendSeal copies the plaintext in, then seals in place;
// SealInPlace finds it there already; crypto-tls is tls.Conn.Write into the
// engine-shaped pipe (seal into its buffer, copy out).
func BenchmarkSeal(b *testing.B) {
	for _, id := range suiteIDs {
		b.Run(tls.CipherSuiteName(id)+"/AppendSeal", func(b *testing.B) {
			_, cli := pair(b, id)
			p := payload(benchRecord, 1)
			out := make([]byte, 0, SealedLen(benchRecord))
			out, _ = cli.AppendSeal(out[:0], p) // builds the AEAD
			b.SetBytes(benchRecord)
			b.ReportAllocs()
			m := meterCPU(b)
			for b.Loop() {
				out, _ = cli.AppendSeal(out[:0], p)
			}
			m.report(benchRecord)
		})
		b.Run(tls.CipherSuiteName(id)+"/SealInPlace", func(b *testing.B) {
			_, cli := pair(b, id)
			out := make([]byte, HeaderLen+benchRecord, SealedLen(benchRecord))
			out, _ = cli.SealInPlace(out[:HeaderLen+benchRecord], 0) // builds the AEAD
			b.SetBytes(benchRecord)
			b.ReportAllocs()
			m := meterCPU(b)
			for b.Loop() {
				out, _ = cli.SealInPlace(out[:HeaderLen+benchRecord], 0)
			}
			m.report(benchRecord)
		})
		b.Run(tls.CipherSuiteName(id)+"/crypto-tls", func(b *testing.B) {
			cli, _, pipe := cryptoTLSPair(b, id)
			p := payload(benchRecord, 1)
			*pipe = make([]byte, 0, SealedLen(benchRecord))
			b.SetBytes(benchRecord)
			b.ReportAllocs()
			m := meterCPU(b)
			for b.Loop() {
				*pipe = (*pipe)[:0]
				if _, err := cli.Write(p); err != nil {
					b.Fatal(err)
				}
			}
			m.report(benchRecord)
		})
	}
}

// openBatch is how many records are sealed, with the timer stopped, for the
// opener to take one per op.
const openBatch = 256

// BenchmarkOpen: one full 16 KiB record per op. tls13 opens in place;
// crypto-tls is tls.Conn.Read from the engine-shaped pipe (copy into its
// buffer, decrypt, copy out), which is how the engine reads today.
func BenchmarkOpen(b *testing.B) {
	for _, id := range suiteIDs {
		b.Run(tls.CipherSuiteName(id)+"/tls13", func(b *testing.B) {
			srv, cli := pair(b, id)
			p := payload(benchRecord, 2)
			in := make([]byte, 0, openBatch*SealedLen(benchRecord))
			b.SetBytes(benchRecord)
			b.ReportAllocs()
			b.ResetTimer()
			m := meterCPU(b)
			defer m.report(benchRecord)
			for i := 0; i < b.N; i++ {
				if len(in) == 0 {
					b.StopTimer()
					m.stop()
					for range openBatch {
						in, _ = cli.AppendSeal(in, p)
					}
					m.start()
					b.StartTimer()
				}
				_, n, _, err := srv.Open(in)
				if err != nil {
					b.Fatal(err)
				}
				in = in[n:]
				if len(in) == 0 {
					in = in[:0:cap(in)]
				}
			}
		})
		b.Run(tls.CipherSuiteName(id)+"/crypto-tls", func(b *testing.B) {
			cli, srv, pipe := cryptoTLSPair(b, id)
			p := payload(benchRecord, 2)
			*pipe = make([]byte, 0, openBatch*SealedLen(benchRecord))
			buf := make([]byte, benchRecord)
			b.SetBytes(benchRecord)
			b.ReportAllocs()
			b.ResetTimer()
			m := meterCPU(b)
			defer m.report(benchRecord)
			for i := 0; i < b.N; i++ {
				if len(*pipe) == 0 {
					b.StopTimer()
					m.stop()
					for range openBatch {
						cli.Write(p)
					}
					m.start()
					b.StartTimer()
				}
				if _, err := io.ReadFull(srv, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkConnMemory measures the heap one connection's record layer
// holds: with both AEAD states built (an active connection), and after
// Release (an idle one).
func BenchmarkConnMemory(b *testing.B) {
	const n = 4000
	for _, id := range suiteIDs {
		b.Run(tls.CipherSuiteName(id), func(b *testing.B) {
			s := suiteByID(id)
			secret := make([]byte, s.hashLen)
			var active, idle float64
			for b.Loop() {
				conns := make([]*Conn, n)
				runtime.GC()
				var m0, m1, m2 runtime.MemStats
				runtime.ReadMemStats(&m0)
				for i := range conns {
					c, _ := New(Server, id, secret, secret)
					c.cipher(&c.r)
					c.cipher(&c.w)
					conns[i] = c
				}
				runtime.GC()
				runtime.ReadMemStats(&m1)
				for _, c := range conns {
					c.Release()
				}
				runtime.GC()
				runtime.ReadMemStats(&m2)
				active = float64(m1.HeapAlloc-m0.HeapAlloc) / n
				idle = float64(m2.HeapAlloc-m0.HeapAlloc) / n
				runtime.KeepAlive(conns)
			}
			b.ReportMetric(active, "B/conn-active")
			b.ReportMetric(idle, "B/conn-idle")
		})
	}
}

// The cost of the secrets route, per handshake.

// BenchmarkKeyLog is what the KeyLogWriter route adds to one TLS 1.3
// handshake, in three parts: crypto/tls formats four lines (it does so only
// when KeyLogWriter is set) and writes them under its global mutex
// (format); KeyLog parses the two it needs (parse); Conn derives the
// traffic IVs (the keys wait for first use) and wipes the capture (conn).
func BenchmarkKeyLog(b *testing.B) {
	r := make([]byte, randomLen)
	secret := make([]byte, 32)
	labels := []string{"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET", labelClientTraffic, labelServerTraffic}
	var mu sync.Mutex
	var lines [][]byte
	for _, l := range labels {
		lines = append(lines, fmt.Appendf(nil, "%s %x %x\n", l, r, secret))
	}
	b.Run("format", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, l := range labels {
				line := fmt.Appendf(nil, "%s %x %x\n", l, r, secret)
				mu.Lock()
				io.Discard.Write(line)
				mu.Unlock()
			}
		}
	})
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		k := new(KeyLog)
		for b.Loop() {
			for _, l := range lines {
				k.Write(l)
			}
		}
	})
	b.Run("conn", func(b *testing.B) {
		b.ReportAllocs()
		k := new(KeyLog)
		for b.Loop() {
			for _, l := range lines[2:] {
				k.Write(l)
			}
			if _, err := k.Conn(Server, tls.TLS_AES_128_GCM_SHA256); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkConfigClone is the per-handshake tls.Config clone that binds a
// KeyLog to one connection.
func BenchmarkConfigClone(b *testing.B) {
	srvCfg, _ := testConfigs(b)
	b.ReportAllocs()
	for b.Loop() {
		c := srvCfg.Clone()
		c.KeyLogWriter = new(KeyLog)
		c.SessionTicketsDisabled = true
	}
}

// BenchmarkHandshake is a whole TLS 1.3 handshake, both ends in this
// process over net.Pipe, without and with the capture (clone, KeyLog,
// Conn), for scale; cpu-µs/op is the CPU time of both ends.
func BenchmarkHandshake(b *testing.B) {
	for _, capture := range []bool{false, true} {
		b.Run(fmt.Sprintf("capture=%v", capture), func(b *testing.B) {
			srvCfg, cliCfg := testConfigs(b)
			srvCfg.SessionTicketsDisabled = true
			b.ReportAllocs()
			cpu0 := processCPU()
			for b.Loop() {
				a, z := net.Pipe()
				cfg := srvCfg
				kl := new(KeyLog)
				if capture {
					cfg = srvCfg.Clone()
					cfg.KeyLogWriter = kl
				}
				cli, srv := tls.Client(a, cliCfg), tls.Server(&recordConn{Conn: z}, cfg)
				errc := make(chan error, 1)
				go func() { errc <- cli.Handshake() }()
				if err := srv.Handshake(); err != nil {
					b.Fatal(err)
				}
				if err := <-errc; err != nil {
					b.Fatal(err)
				}
				if capture {
					if _, err := kl.Conn(Server, srv.ConnectionState().CipherSuite); err != nil {
						b.Fatal(err)
					}
				}
				a.Close()
				z.Close()
			}
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N)/1e3, "cpu-µs/op")
		})
	}
}
