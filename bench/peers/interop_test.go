// Package peers holds the interop tests of the comparison and reference peers
// in this nested module. The tests build the peers' binaries, start them as
// a user would, and drive them with independent clients:
//
//   - a plain go-libp2p host (proves libp2p-host is a correct reference),
//   - js/client.mjs in Node and js/browser.mjs in headless Chromium,
//   - a gorilla/websocket client against nbio-echo.
//
// The JS tests need `bash js/setup.sh` first (npm ci, Debian chromium); they
// skip only when node or chromium is not installed at all.
//
// SWARMGATE_INTEROP_TARGET=<multiaddr with /p2p/> points the JS tests at an
// already running server (e.g. `swarmgate -echo`) instead of libp2p-host.
package peers

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gws "github.com/gorilla/websocket"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	"github.com/libp2p/go-libp2p/p2p/security/insecure"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/websocket"
	ma "github.com/multiformats/go-multiaddr"
)

const echoProtocol = "/echo/1.0.0"

// binDir holds the peers built once per test binary run.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func peerBinary(t *testing.T, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "swarmgate-bench-peers-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+string(os.PathSeparator), "./libp2p-host", "./nbio-echo")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, name)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// peerProc is a started peer: the addresses it printed on stdout and the
// metrics URL it logged on stderr.
type peerProc struct {
	addrs      []string
	metricsURL string
}

// startPeer runs bin with args, waits for its first stdout line and its
// metrics_url log line, and on cleanup sends SIGINT and requires exit 0.
func startPeer(t *testing.T, bin string, args ...string) *peerProc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		errLog strings.Builder
	)
	addrCh := make(chan string, 16)
	metricsCh := make(chan string, 1)
	var pipes sync.WaitGroup
	pipes.Add(2)
	go func() {
		defer pipes.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case addrCh <- sc.Text():
			default:
			}
		}
		close(addrCh)
	}()
	go func() {
		defer pipes.Done()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			mu.Lock()
			errLog.WriteString(line + "\n")
			mu.Unlock()
			if _, url, ok := strings.Cut(line, "metrics_url="); ok {
				select {
				case metricsCh <- strings.TrimSpace(url):
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { pipes.Wait(); done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				mu.Lock()
				t.Errorf("%s did not exit cleanly on SIGINT: %v\nstderr:\n%s", filepath.Base(bin), err, errLog.String())
				mu.Unlock()
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("%s still running 10 s after SIGINT", filepath.Base(bin))
		}
	})

	p := &peerProc{}
	deadline := time.After(30 * time.Second)
	select {
	case a, ok := <-addrCh:
		if !ok {
			t.Fatalf("%s exited before printing an address", filepath.Base(bin))
		}
		p.addrs = append(p.addrs, a)
	case <-deadline:
		t.Fatalf("%s printed no address within 30 s", filepath.Base(bin))
	}
	// Further addresses follow immediately if the peer listens on several.
	for drained := false; !drained; {
		select {
		case a, ok := <-addrCh:
			if ok {
				p.addrs = append(p.addrs, a)
			} else {
				drained = true
			}
		case <-time.After(100 * time.Millisecond):
			drained = true
		}
	}
	select {
	case p.metricsURL = <-metricsCh:
	case <-deadline:
		t.Fatalf("%s logged no metrics_url within 30 s", filepath.Base(bin))
	}
	return p
}

func startHost(t *testing.T, args ...string) (*peerProc, peer.AddrInfo) {
	t.Helper()
	p := startPeer(t, peerBinary(t, "libp2p-host"), args...)
	a, err := ma.NewMultiaddr(p.addrs[0])
	if err != nil {
		t.Fatalf("libp2p-host printed %q: %v", p.addrs[0], err)
	}
	ai, err := peer.AddrInfoFromP2pAddr(a)
	if err != nil {
		t.Fatalf("libp2p-host printed %q without a usable /p2p part: %v", p.addrs[0], err)
	}
	return p, *ai
}

// TestGoClient drives libp2p-host (or SWARMGATE_INTEROP_TARGET) with a plain
// go-libp2p client: identify, ping and a 4 MiB echo. Against libp2p-host it
// also checks the output contract and the metrics endpoint, which proves the
// host is a correct reference for the JS tests.
func TestGoClient(t *testing.T) {
	var (
		p      *peerProc
		target peer.AddrInfo
	)
	if a := os.Getenv("SWARMGATE_INTEROP_TARGET"); a != "" {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			t.Fatalf("SWARMGATE_INTEROP_TARGET=%q: %v", a, err)
		}
		ai, err := peer.AddrInfoFromP2pAddr(m)
		if err != nil {
			t.Fatalf("SWARMGATE_INTEROP_TARGET=%q needs a /p2p/<peer-id> part: %v", a, err)
		}
		target = *ai
	} else {
		p, target = startHost(t)
		if len(p.addrs) != 1 || !strings.HasPrefix(p.addrs[0], "/ip4/127.0.0.1/tcp/") || !strings.Contains(p.addrs[0], "/ws/p2p/") {
			t.Fatalf("addresses = %q, want one /ip4/127.0.0.1/tcp/N/ws/p2p/ID", p.addrs)
		}
	}

	// The client proposes TLS first, as go-libp2p does by default, so the
	// server's multistream "na" path is exercised too.
	client, err := libp2p.New(
		libp2p.NoListenAddrs,
		libp2p.Transport(websocket.New),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn := connectAndIdentify(ctx, t, client, target)
	if got := conn.ConnState().Security; got != noise.ID {
		t.Errorf("security = %s, want %s", got, noise.ID)
	}
	if got := conn.ConnState().StreamMultiplexer; got != yamux.ID {
		t.Errorf("muxer = %s, want %s", got, yamux.ID)
	}

	agent, _ := client.Peerstore().Get(target.ID, "AgentVersion")
	if s, _ := agent.(string); s == "" {
		t.Error("identify: empty agentVersion")
	} else if p != nil && !strings.Contains(s, "go-libp2p@v0.51.0") {
		t.Errorf("agentVersion = %q, want it to name go-libp2p@v0.51.0", s)
	}
	protos, err := client.Peerstore().GetProtocols(target.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []protocol.ID{identify.ID, ping.ID, echoProtocol} {
		if !slices.Contains(protos, want) {
			t.Errorf("identify protocols %v lack %s", protos, want)
		}
	}

	pings := ping.Ping(ctx, client, target.ID)
	for i := range 5 {
		r := <-pings
		if r.Error != nil {
			t.Fatalf("ping %d: %v", i, r.Error)
		}
		if r.RTT <= 0 || r.RTT > 5*time.Second {
			t.Errorf("ping %d: RTT %v", i, r.RTT)
		}
	}

	echo(ctx, t, client, target.ID, 4<<20)
	if p != nil {
		checkMetrics(t, p.metricsURL)
	}
}

// TestLibp2pHostPlaintext checks the measurement-only -insecure-plaintext
// mode: a client that offers only /plaintext/2.0.0 gets through, and Noise
// still works for everyone else (the JS tests use Noise).
func TestLibp2pHostPlaintext(t *testing.T) {
	_, target := startHost(t, "-insecure-plaintext", "-metrics", "127.0.0.1:0")
	client, err := libp2p.New(
		libp2p.NoListenAddrs,
		libp2p.Transport(websocket.New),
		libp2p.Security(insecure.ID, insecure.NewWithIdentity),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := connectAndIdentify(ctx, t, client, target)
	if got := conn.ConnState().Security; got != insecure.ID {
		t.Errorf("security = %s, want %s", got, insecure.ID)
	}
	echo(ctx, t, client, target.ID, 256<<10)
}

func connectAndIdentify(ctx context.Context, t *testing.T, client host.Host, target peer.AddrInfo) network.Conn {
	t.Helper()
	if err := client.Connect(ctx, target); err != nil {
		t.Fatalf("connect to %v: %v", target, err)
	}
	conns := client.Network().ConnsToPeer(target.ID)
	if len(conns) != 1 {
		t.Fatalf("%d connections to the host, want 1", len(conns))
	}
	ids, ok := client.(interface{ IDService() identify.IDService })
	if !ok {
		t.Fatalf("%T has no IDService", client)
	}
	select {
	case <-ids.IDService().IdentifyWait(conns[0]):
	case <-ctx.Done():
		t.Fatal("identify did not complete")
	}
	return conns[0]
}

// echo writes n random bytes on an /echo/1.0.0 stream while reading the echo,
// closes its write side, and requires the same n bytes followed by EOF.
func echo(ctx context.Context, t *testing.T, client host.Host, id peer.ID, n int) {
	t.Helper()
	s, err := client.NewStream(ctx, id, echoProtocol)
	if err != nil {
		t.Fatalf("open %s: %v", echoProtocol, err)
	}
	defer s.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(d)
	}
	sent := make([]byte, n)
	_, _ = rand.Read(sent)
	werr := make(chan error, 1)
	go func() {
		if _, err := s.Write(sent); err != nil {
			werr <- err
			return
		}
		werr <- s.CloseWrite()
	}()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("echo read after %d bytes: %v", len(got), err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("echo write: %v", err)
	}
	if !bytes.Equal(got, sent) {
		t.Fatalf("echo returned %d bytes, differing from the %d sent", len(got), len(sent))
	}
}

func checkMetrics(t *testing.T, url string) {
	t.Helper()
	body := httpGet(t, url)
	for _, m := range []string{"go_goroutines ", "process_resident_memory_bytes "} {
		if !strings.Contains(body, "\n"+m) {
			t.Errorf("%s lacks %s", url, strings.TrimSpace(m))
		}
	}
	httpGet(t, strings.TrimSuffix(url, "/metrics")+"/debug/pprof/goroutine?debug=1")
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d, %v", url, resp.StatusCode, err)
	}
	return string(b)
}

func TestNbioEcho(t *testing.T) {
	p := startPeer(t, peerBinary(t, "nbio-echo"))
	a, err := ma.NewMultiaddr(p.addrs[0])
	if err != nil {
		t.Fatalf("nbio-echo printed %q: %v", p.addrs[0], err)
	}
	ip, _ := a.ValueForProtocol(ma.P_IP4)
	port, _ := a.ValueForProtocol(ma.P_TCP)
	if ip == "" || port == "" || !strings.HasSuffix(p.addrs[0], "/ws") {
		t.Fatalf("nbio-echo printed %q, want /ip4/A/tcp/N/ws", p.addrs[0])
	}
	c, _, err := gws.DefaultDialer.Dial("ws://"+ip+":"+port+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	big := make([]byte, 1<<20)
	_, _ = rand.Read(big)
	for _, m := range []struct {
		op   int
		data []byte
	}{
		{gws.BinaryMessage, []byte{0, 1, 2, 0xff}},
		{gws.TextMessage, []byte("héllo")},
		// No empty message: nbio v1.6.7 never hands an empty data message
		// to OnMessage (see nbio-echo/main.go), so it is not echoed.
		{gws.BinaryMessage, big},
	} {
		if err := c.WriteMessage(m.op, m.data); err != nil {
			t.Fatal(err)
		}
		op, got, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("echo of opcode %d, %d bytes: %v", m.op, len(m.data), err)
		}
		if op != m.op || !bytes.Equal(got, m.data) {
			t.Fatalf("echo of opcode %d, %d bytes: got opcode %d, %d bytes", m.op, len(m.data), op, len(got))
		}
	}
	checkMetrics(t, p.metricsURL)
}

// summary is the JSON line printed by js/client.mjs and js/browser.mjs.
type summary struct {
	OK           bool      `json:"ok"`
	Error        string    `json:"error"`
	AgentVersion string    `json:"agentVersion"`
	Protocols    []string  `json:"protocols"`
	Pings        []float64 `json:"pings"`
	EchoBytes    int       `json:"echoBytes"`
	MonitorPings int       `json:"monitorPings"`
	Runtime      string    `json:"runtime"`
}

// jsTarget starts libp2p-host, unless SWARMGATE_INTEROP_TARGET names a
// server that is already running.
func jsTarget(t *testing.T) string {
	if a := os.Getenv("SWARMGATE_INTEROP_TARGET"); a != "" {
		return a
	}
	p, _ := startHost(t)
	return p.addrs[0]
}

var (
	npmOnce sync.Once
	npmErr  error
)

// skipJS skips a test for a missing js piece, or fails it when
// SWARMGATE_REQUIRE_JS is set (CI sets it after running js/setup.sh).
func skipJS(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("SWARMGATE_REQUIRE_JS") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// needJS skips when node is not installed and otherwise makes sure
// js/node_modules exists, running js/setup.sh (npm ci from the lockfile,
// SKIP_BROWSER=1) once if it does not, so a fresh clone passes without a
// separate step. Chromium is never installed from here: see js/setup.sh.
func needJS(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		skipJS(t, "node is not installed: run `bash bench/peers/js/setup.sh` to test js-libp2p interop")
	}
	npmOnce.Do(func() {
		if _, err := os.Stat(filepath.Join("js", "node_modules", "libp2p")); err == nil {
			return
		}
		cmd := exec.Command("bash", "setup.sh")
		cmd.Dir = "js"
		cmd.Env = append(os.Environ(), "SKIP_BROWSER=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			npmErr = fmt.Errorf("js/setup.sh: %v\n%s", err, out)
		}
	})
	if npmErr != nil {
		t.Fatal(npmErr)
	}
}

// execJS runs a js/ script against target and returns its JSON summary (the
// last stdout line) and its exit error.
func execJS(t *testing.T, script, target string, args ...string) (summary, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{script, target, "--timeout-ms", "60000"}, args...)...)
	cmd.Dir = "js"
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	runErr := cmd.Run()
	t.Logf("node %s: %v\nstdout: %s\nstderr:\n%s", script, time.Since(start).Round(time.Millisecond), stdout.Bytes(), stderr.Bytes())
	var s summary
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil {
		t.Fatalf("node %s: last stdout line is not the JSON summary: %v (exit: %v)", script, err, runErr)
	}
	return s, runErr
}

func runJS(t *testing.T, script, target string, args ...string) summary {
	t.Helper()
	s, err := execJS(t, script, target, args...)
	if err != nil || !s.OK {
		t.Fatalf("node %s: exit %v, ok=%v, error=%q", script, err, s.OK, s.Error)
	}
	return s
}

func checkSummary(t *testing.T, s summary, echoBytes int) {
	t.Helper()
	if s.AgentVersion == "" {
		t.Error("identify: empty agentVersion")
	}
	for _, want := range []string{"/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", echoProtocol} {
		if !slices.Contains(s.Protocols, want) {
			t.Errorf("identify protocols %v lack %s", s.Protocols, want)
		}
	}
	if len(s.Pings) != 10 {
		t.Errorf("%d ping RTTs, want 10", len(s.Pings))
	}
	for i, rtt := range s.Pings {
		if rtt < 0 || rtt > 5000 {
			t.Errorf("ping %d: RTT %v ms", i, rtt)
		}
	}
	if s.EchoBytes != echoBytes {
		t.Errorf("echoBytes = %d, want %d", s.EchoBytes, echoBytes)
	}
	// Held 3 s with a 500 ms monitor interval: the connection monitor's
	// pings must have succeeded (-1: the client could not observe them).
	if s.MonitorPings == 0 {
		t.Error("connection monitor pinged 0 times while the connection was held open")
	}
}

func TestJSNodeClient(t *testing.T) {
	needJS(t)
	target := jsTarget(t)
	s := runJS(t, "client.mjs", target, "--hold", "3", "--monitor-ms", "500")
	checkSummary(t, s, 4<<20)
}

// TestJSNodeClientWrongPeer checks that the client really verifies what it
// is told: a /p2p/ part naming another peer must fail the Noise handshake,
// with exit status 1 and ok=false.
func TestJSNodeClientWrongPeer(t *testing.T) {
	needJS(t)
	target := jsTarget(t)
	base, _, ok := strings.Cut(target, "/p2p/")
	if !ok {
		t.Fatalf("target %q has no /p2p/ part", target)
	}
	other := "12D3KooWEhHJLvfFiMCNsdDc2ountiiQXwtEvMZv1Nc4pSeCDzxH"
	if strings.HasSuffix(target, other) {
		other = "12D3KooWKxmYU9bGSXNWiHgKCbBQGEpjqNSU6ntEWeebCQN5uVnd"
	}
	s, err := execJS(t, "client.mjs", base+"/p2p/"+other, "-q")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit = %v, want status 1", err)
	}
	if s.OK || s.Error == "" {
		t.Fatalf("summary ok=%v error=%q, want ok=false with an error", s.OK, s.Error)
	}
}

func TestJSBrowserClient(t *testing.T) {
	needJS(t)
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		skipJS(t, chromium+" is not installed: run `bash bench/peers/js/setup.sh` (apt-get install chromium) to test js-libp2p in a browser")
	}
	target := jsTarget(t)
	s := runJS(t, "browser.mjs", target, "--hold", "3", "--monitor-ms", "500", "--chromium", chromium)
	checkSummary(t, s, 4<<20)
	if !strings.Contains(s.Runtime, "Chrome") {
		t.Errorf("runtime = %q, want a Chrome user agent", s.Runtime)
	}
}
