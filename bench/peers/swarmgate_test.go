package peers

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/websocket"
	ma "github.com/multiformats/go-multiaddr"
)

// The same real clients, pointed at the swarmgate server (cmd/swarmgate):
// the proof that independent libp2p implementations connect to it.

var (
	serverOnce sync.Once
	serverBin  string
	serverErr  error
)

// swarmgate builds the root module's server and starts it on loopback /ws
// with echo on.
func swarmgate(t *testing.T) (*peerProc, peer.AddrInfo) {
	return swarmgateOn(t, "/ip4/127.0.0.1/tcp/0/ws")
}

// swarmgateOn starts the server on listen (a /tls/ws address gets the
// self-signed loopback certificate).
func swarmgateOn(t *testing.T, listen string) (*peerProc, peer.AddrInfo) {
	t.Helper()
	serverOnce.Do(func() {
		dir, err := os.MkdirTemp("", "swarmgate-server-")
		if err != nil {
			serverErr = err
			return
		}
		serverBin = filepath.Join(dir, "swarmgate")
		cmd := exec.Command("go", "build", "-o", serverBin, "./cmd/swarmgate")
		cmd.Dir = filepath.Join("..", "..") // the root module
		out, err := cmd.CombinedOutput()
		if err != nil {
			serverErr = err
			t.Logf("%s", out)
		}
	})
	if serverErr != nil {
		t.Fatal(serverErr)
	}
	p := startPeer(t, serverBin, "-listen", listen, "-echo", "-metrics", "127.0.0.1:0")
	a, err := ma.NewMultiaddr(p.addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	ai, err := peer.AddrInfoFromP2pAddr(a)
	if err != nil {
		t.Fatalf("swarmgate printed %q: %v", p.addrs[0], err)
	}
	return p, *ai
}

// A stock go-libp2p v0.51.0 host (TLS proposed first, then Noise; yamux)
// dials the swarmgate server: identify with our agentVersion and protocols, 10
// pings, 8 echo streams of 4 MiB.
func TestSwarmgateGoClient(t *testing.T) {
	_, target := swarmgate(t)
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
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	connectAndIdentify(ctx, t, client, target)
	agent, _ := client.Peerstore().Get(target.ID, "AgentVersion")
	if s, _ := agent.(string); !strings.HasPrefix(s, "swarmgate/") {
		t.Errorf("agentVersion = %q, want swarmgate/…", agent)
	}
	protos, _ := client.Peerstore().GetProtocols(target.ID)
	for _, want := range []protocol.ID{identify.ID, ping.ID, echoProtocol} {
		if !slices.Contains(protos, want) {
			t.Errorf("identify protocols %v lack %s", protos, want)
		}
	}
	results := ping.Ping(ctx, client, target.ID)
	for i := 0; i < 10; i++ {
		if r := <-results; r.Error != nil {
			t.Fatalf("ping %d: %v", i, r.Error)
		}
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); echo(ctx, t, client, target.ID, 4<<20) }()
	}
	wg.Wait()
}

// js-libp2p in Node dials the swarmgate server: identify, 10 pings, 4 echo
// streams of 1 MiB, then stays connected with the connection monitor
// pinging.
func TestSwarmgateJSNode(t *testing.T) {
	needJS(t)
	_, target := swarmgate(t)
	s := runJS(t, "client.mjs", addrString(target), "--hold", "3", "--monitor-ms", "500")
	checkSummary(t, s, 4<<20)
	if !strings.HasPrefix(s.AgentVersion, "swarmgate/") {
		t.Errorf("agentVersion %q", s.AgentVersion)
	}
}

// js-libp2p in headless Chromium dials the swarmgate server the same way.
func TestSwarmgateJSBrowser(t *testing.T) {
	needJS(t)
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("%s is not installed: run `bash bench/peers/js/setup.sh`", chromium)
	}
	_, target := swarmgate(t)
	s := runJS(t, "browser.mjs", addrString(target), "--hold", "3", "--monitor-ms", "500", "--chromium", chromium)
	checkSummary(t, s, 4<<20)
	if !strings.HasPrefix(s.AgentVersion, "swarmgate/") || !strings.Contains(s.Runtime, "Chrome") {
		t.Errorf("agentVersion %q runtime %q", s.AgentVersion, s.Runtime)
	}
}

// js-libp2p in headless Chromium dials the server over /tls/ws (what a
// browser on an https page must use): the server's TLS 1.3 record layer
// carries the WebSocket, Noise and yamux, and the echo comes back intact.
// The loopback certificate is self-signed, so Chromium is told to accept
// it.
func TestSwarmgateJSBrowserTLS(t *testing.T) {
	needJS(t)
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("%s is not installed: run `bash bench/peers/js/setup.sh`", chromium)
	}
	p, target := swarmgateOn(t, "/ip4/127.0.0.1/tcp/0/tls/ws")
	if !strings.Contains(target.Addrs[0].String(), "/tls/") {
		t.Fatalf("server listens on %s", target.Addrs[0])
	}
	s := runJS(t, "browser.mjs", addrString(target), "--hold", "3", "--monitor-ms", "500", "--chromium", chromium, "--insecure-tls")
	checkSummary(t, s, 4<<20)
	if !strings.HasPrefix(s.AgentVersion, "swarmgate/") || !strings.Contains(s.Runtime, "Chrome") {
		t.Errorf("agentVersion %q runtime %q", s.AgentVersion, s.Runtime)
	}
	// The connection ran on the engine's TLS 1.3 record layer.
	m := httpGet(t, p.metricsURL)
	if !strings.Contains(m, `swarmgate_tls_handovers_total{result="record_layer"} 1`) {
		t.Errorf("no record-layer handover counted:\n%s", grepLines(m, "swarmgate_tls_"))
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func addrString(ai peer.AddrInfo) string {
	return ai.Addrs[0].Encapsulate(ma.StringCast("/p2p/" + ai.ID.String())).String()
}
