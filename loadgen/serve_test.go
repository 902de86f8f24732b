package main

import (
	"bufio"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/swarmgate/swarmgate/codec"
	"github.com/swarmgate/swarmgate/engine/conformance"
)

// buildLoadgen compiles this command once per test binary.
func buildLoadgen(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "loadgen")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// The RFC 6455 conformance suite against `loadgen serve` as operators run
// it, then its metrics, then a clean exit on SIGTERM.
func TestServeConformance(t *testing.T) {
	bin := buildLoadgen(t)
	cmd := exec.Command(bin, "serve", "-listen", "/ip4/127.0.0.1/tcp/0/ws", "-ws-echo", "/echo", "-metrics", "127.0.0.1:0")
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() {
		t.Fatal("serve printed no listen address")
	}
	listen := lines.Text()
	m, err := ma.NewMultiaddr(listen)
	if err != nil || !strings.Contains(listen, "/ws/p2p/12D3KooW") || strings.Contains(listen, "/tcp/0/") {
		t.Fatalf("listen line %q: %v", listen, err)
	}
	na, err := manet.ToNetAddr(m.Decapsulate(ma.StringCast("/ws")))
	if err != nil {
		t.Fatal(err)
	}
	// The metrics address is logged on stderr.
	metricsURL := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`metrics_url=(\S+)`)
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			if m := re.FindStringSubmatch(s.Text()); m != nil {
				metricsURL <- m[1]
			}
		}
	}()

	conformance.Run(t, conformance.Target{Addr: na.String(), Path: "/echo", MaxMessage: codec.DefaultMaxMessageSize, LibP2PFallback: true})

	var url string
	select {
	case url = <-metricsURL:
	case <-time.After(5 * time.Second):
		t.Fatal("no metrics_url in the log")
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`swarmgate_ws_upgrades_total{result="ok"}`,
		`swarmgate_ws_upgrades_total{result="unsupported_version"}`,
		`swarmgate_ws_close_sent_total{code="1002"}`,
		`swarmgate_ws_close_sent_total{code="1007"}`,
		`swarmgate_connections_open`,
		`swarmgate_bytes_in_total`,
		`swarmgate_simd_impl{impl=`,
		`go_goroutines`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if resp, err := http.Get(strings.Replace(url, "/metrics", "/debug/pprof/", 1)); err != nil || resp.StatusCode != 200 {
		t.Errorf("pprof: %v", err)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not exit after SIGTERM")
	}
}
