package main

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/libp2p"
	"github.com/swarmgate/swarmgate/ws"
)

// pinger is a client stage that sends one message when the connection opens
// and reports when the echo comes back.
type pinger struct {
	msg  []byte
	done chan<- error
	got  int
}

func (p *pinger) Data(c *engine.Conn, op ws.Opcode, b []byte, end bool) error {
	p.got += len(b)
	if end && p.done != nil {
		var err error
		if p.got != len(p.msg) {
			err = fmt.Errorf("echo of %d bytes, sent %d", p.got, len(p.msg))
		}
		p.done <- err
		p.done = nil
	}
	return nil
}

func (p *pinger) Closed(c *engine.Conn, err error) {
	if p.done != nil {
		if err == nil {
			err = fmt.Errorf("closed before the echo")
		}
		p.done <- err
		p.done = nil
	}
}

// openEchoed dials n connections to target/path with at most par dials in
// flight; each echoes one message. It returns the connections once every
// echo has come back.
func openEchoed(e *engine.Engine, target ma.Multiaddr, path string, n, par int, msg []byte) ([]*engine.Conn, error) {
	conns := make([]*engine.Conn, n)
	done := make(chan error, n)
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var dialErr error
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := e.Dial(target, path, func(c *engine.Conn) engine.Stage {
				p := &pinger{msg: msg, done: done}
				c.WriteMessage(ws.OpBinary, msg)
				return p
			})
			if err != nil {
				mu.Lock()
				dialErr = err
				mu.Unlock()
				done <- err
			}
			conns[i] = c
			// Keep at most par handshakes in flight.
			<-sem
		}(i)
	}
	wg.Wait()
	if err := collectOutcomes(done, n, 60*time.Second); err != nil {
		return conns, fmt.Errorf("%w (dial: %v)", err, dialErr)
	}
	return conns, nil
}

// rssBytes reads a process's resident set size from /proc.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// scrapeGauge reads one unlabelled gauge (e.g. go_goroutines) from a
// Prometheus endpoint.
func scrapeGauge(url, name string) (float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, err
	}
	f, ok := fams[name]
	if !ok || len(f.Metric) == 0 {
		return 0, fmt.Errorf("%s: no metric %s", url, name)
	}
	m := f.Metric[0]
	if m.Gauge != nil {
		return m.Gauge.GetValue(), nil
	}
	if m.Counter != nil {
		return m.Counter.GetValue(), nil
	}
	return 0, fmt.Errorf("%s: %s is not a gauge", url, name)
}

// openPeers dials n libp2p connections (WebSocket + Noise + yamux) to
// target with at most par upgrades in flight; on each it does one ping,
// then leaves the connection idle.
func openPeers(h *libp2p.Host, target ma.Multiaddr, n, par int, plaintext bool) ([]*libp2p.PeerConn, error) {
	conns := make([]*libp2p.PeerConn, n)
	done := make(chan error, n)
	sem := make(chan struct{}, par)
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		h.DialAsync(target, libp2p.DialOptions{Plaintext: plaintext}, func(pc *libp2p.PeerConn, err error) {
			if err != nil {
				<-sem
				done <- err
				return
			}
			conns[i] = pc
			// One /ipfs/ping/1.0.0 round trip, as an idle libp2p peer has done.
			pc.Ping(func(_ time.Duration, err error) { <-sem; done <- err })
		})
	}
	return conns, collectOutcomes(done, n, 120*time.Second)
}

// collectOutcomes waits for n outcomes on done, at most d in all, and reports how
// many failed and the first failure.
func collectOutcomes(done <-chan error, n int, d time.Duration) error {
	var failed int
	var first error
	timeout := time.After(d)
	for i := 0; i < n; i++ {
		select {
		case err := <-done:
			if err != nil {
				failed++
				if first == nil {
					first = err
				}
			}
		case <-timeout:
			return fmt.Errorf("%d of %d connections not ready after %v", n-i, n, d)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d connections failed, first: %v", failed, n, first)
	}
	return nil
}
