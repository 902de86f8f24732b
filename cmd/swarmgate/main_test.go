package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/libp2p/go-libp2p/core/peer"
	idpb "github.com/libp2p/go-libp2p/p2p/protocol/identify/pb"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/libp2p"
	"github.com/swarmgate/swarmgate/libp2p/kad"
	"github.com/swarmgate/swarmgate/libp2p/relay"
	"github.com/swarmgate/swarmgate/mux"
	"github.com/swarmgate/swarmgate/simd"
	"github.com/swarmgate/swarmgate/ws"
	"github.com/swarmgate/swarmgate/ws/conformance"
)

// buildSwarmgate compiles this command for a test.
func buildSwarmgate(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "swarmgate")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// The RFC 6455 conformance suite against swarmgate as operators run
// it, then its metrics, then a clean exit on SIGTERM.
func TestServeConformance(t *testing.T) {
	bin := buildSwarmgate(t)
	cmd := exec.Command(bin, "-listen", "/ip4/127.0.0.1/tcp/0/ws", "-ws-echo", "/echo", "-metrics", "127.0.0.1:0")
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

	conformance.Run(t, conformance.Target{Addr: na.String(), Path: "/echo", MaxMessage: ws.DefaultMaxMessageSize, LibP2PFallback: true})

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
	healthz := strings.Replace(url, "/metrics", "/healthz", 1)
	if err := exec.Command(bin, "healthcheck", "-url", healthz).Run(); err != nil {
		t.Errorf("healthcheck of a serving server: %v", err)
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

// startServe runs the built swarmgate with args and returns it with its
// first listen address.
func startServe(t *testing.T, bin string, args ...string) (*exec.Cmd, ma.Multiaddr) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() {
		t.Fatal("serve printed no listen address")
	}
	go io.Copy(io.Discard, stdout)
	return cmd, ma.StringCast(lines.Text())
}

// SIGTERM with 1,000 connected libp2p clients mid-stream: the streams
// finish, every client sees GoAway and an orderly close, and the process
// exits 0 within the drain deadline.
func TestServeDrainOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 connections")
	}
	bin := buildSwarmgate(t)
	// One client identity opens every connection and stream: the per-peer
	// limits are lifted.
	cmd, addr := startServe(t, bin, "-listen", "/ip4/127.0.0.1/tcp/0/ws", "-echo", "-drain-timeout", "20s",
		"-max-conns-per-peer", "-1", "-max-peer-streams", "-1", "-max-protocol-streams", "-1")
	h, err := libp2p.New(libp2p.Config{Engine: engine.Config{Logger: testutil.Quiet}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	const n = 1000
	half := make([]byte, 1000)
	conns, err := openPeers(h, addr, n, 64)
	if err != nil {
		t.Fatal(err)
	}
	type echo struct {
		st  *mux.Stream
		got int
		fin chan error
		pc  *libp2p.PeerConn
	}
	echoes := make([]*echo, n)
	for i, pc := range conns {
		ec := &echo{fin: make(chan error, 1), pc: pc}
		echoes[i] = ec
		var oerr error
		pc.Do(func() {
			ec.st, oerr = pc.OpenStream(libp2p.ProtoEcho, &mux.Funcs{
				Data:  func(_ *mux.Stream, p []byte) int { ec.got += len(p); return len(p) },
				FIN:   func(*mux.Stream) { ec.fin <- nil },
				Reset: func(_ *mux.Stream, err error) { ec.fin <- err },
			})
			if oerr == nil {
				ec.st.Write(half)
			}
		})
		if oerr != nil {
			t.Fatal(oerr)
		}
	}
	// Every stream is live on the server: its first half is echoed back.
	wait := time.Now().Add(20 * time.Second)
	for _, ec := range echoes {
		for {
			var got int
			ec.pc.Do(func() { got = ec.got })
			if got == len(half) {
				break
			}
			if time.Now().After(wait) {
				t.Fatal("first halves not echoed")
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	// Every client hears GoAway while its stream is still open.
	deadline := time.Now().Add(10 * time.Second)
	for _, ec := range echoes {
		for {
			var goaway bool
			ec.pc.Do(func() { goaway = ec.pc.RemoteGoAway() })
			if goaway {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("a client never heard GoAway")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// The streams finish: second half, FIN, the whole echo back.
	for _, ec := range echoes {
		ec.pc.Do(func() {
			ec.st.Write(half)
			ec.st.CloseWrite()
		})
	}
	for i, ec := range echoes {
		select {
		case err := <-ec.fin:
			if err != nil || ec.got != 2*len(half) {
				t.Fatalf("stream %d: %d of %d bytes echoed, %v", i, ec.got, 2*len(half), err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("stream %d did not finish", i)
		}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve exited with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not exit within the drain deadline")
	}
	t.Logf("1,000 connections drained, process exited 0 in %v", time.Since(start).Round(time.Millisecond))
}

// SIGHUP re-reads the -config file: a lower max-conns takes effect for new
// connections (refused at accept, counted), existing ones keep working.
func TestServeSIGHUPReloadsLimits(t *testing.T) {
	bin := buildSwarmgate(t)
	cfgFile := filepath.Join(t.TempDir(), "serve.json")
	write := func(maxConns int) {
		b, _ := json.Marshal(map[string]any{"listen": []string{"/ip4/127.0.0.1/tcp/0/ws"}, "ws-echo": "/echo", "metrics": "127.0.0.1:0", "max-conns": maxConns})
		if err := os.WriteFile(cfgFile, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(100)
	cmd := exec.Command(bin, "-config", cfgFile)
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	murl := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`metrics_url=(\S+)`)
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			if m := re.FindStringSubmatch(s.Text()); m != nil {
				murl <- m[1]
			}
		}
	}()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() {
		t.Fatal("no listen address")
	}
	na, _ := manet.ToNetAddr(ma.StringCast(lines.Text()).Decapsulate(ma.StringCast("/ws")))
	url := <-murl
	dial := func() (*websocket.Conn, error) {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+na.String()+"/echo", nil)
		return c, err
	}
	var held []*websocket.Conn
	for i := 0; i < 3; i++ {
		c, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	// Load across the reload: each held connection echoes continuously.
	stopLoad := make(chan struct{})
	loadErr := make(chan error, len(held))
	for _, c := range held {
		go func() {
			for n := 0; ; n++ {
				select {
				case <-stopLoad:
					loadErr <- nil
					return
				default:
				}
				msg := []byte(strconv.Itoa(n))
				if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
					loadErr <- err
					return
				}
				if _, got, err := c.ReadMessage(); err != nil || string(got) != string(msg) {
					loadErr <- fmt.Errorf("echo %d: %q %v", n, got, err)
					return
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	write(3)
	cmd.Process.Signal(syscall.SIGHUP)
	gauge := func() float64 {
		return testutil.Scrape(t, url)["swarmgate_limit_max_connections"]
	}
	for deadline := time.Now().Add(5 * time.Second); gauge() != 3; {
		if time.Now().After(deadline) {
			t.Fatalf("max connections still %v after SIGHUP", gauge())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c, err := dial(); err == nil {
		c.Close()
		t.Fatal("a fourth connection was admitted under max-conns 3")
	}
	time.Sleep(100 * time.Millisecond)
	close(stopLoad)
	for range held {
		if err := <-loadErr; err != nil {
			t.Fatalf("traffic across the reload: %v", err)
		}
	}
	for i, c := range held {
		if err := c.WriteMessage(websocket.BinaryMessage, []byte("still here")); err != nil {
			t.Fatalf("connection %d after reload: %v", i, err)
		}
		if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "still here" {
			t.Fatalf("connection %d after reload: %q %v", i, msg, err)
		}
	}
}

// openPeers dials n libp2p connections to addr, at most par at a time, and
// waits for all of them.
func openPeers(h *libp2p.Host, addr ma.Multiaddr, n, par int) ([]*libp2p.PeerConn, error) {
	conns := make([]*libp2p.PeerConn, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, par)
	for i := range n {
		sem <- struct{}{}
		h.DialAsync(addr, libp2p.DialOptions{}, func(pc *libp2p.PeerConn, err error) {
			conns[i] = pc
			<-sem
			errs <- err
		})
	}
	for range n {
		select {
		case err := <-errs:
			if err != nil {
				return nil, err
			}
		case <-time.After(60 * time.Second):
			return nil, fmt.Errorf("dials did not finish")
		}
	}
	return conns, nil
}

// keygen writes a key and prints its peer ID; the server run with that key
// announces the same ID; version names the masking path; healthcheck
// reports the server's /healthz.
func TestSubcommands(t *testing.T) {
	bin := buildSwarmgate(t)
	key := filepath.Join(t.TempDir(), "node.key")
	out, err := exec.Command(bin, "keygen", "-o", key).Output()
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(string(out))
	if !strings.HasPrefix(id, "12D3KooW") {
		t.Fatalf("keygen printed %q", out)
	}
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	again, err := exec.Command(bin, "keygen", "-o", key).Output()
	if err != nil || strings.TrimSpace(string(again)) != id {
		t.Fatalf("keygen on an existing key: %q %v, want its ID %s", again, err, id)
	}
	_, addr := startServe(t, bin, "-listen", "/ip4/127.0.0.1/tcp/0/ws", "-key", key)
	if !strings.HasSuffix(addr.String(), "/p2p/"+id) {
		t.Fatalf("server announces %s, keygen printed %s", addr, id)
	}
	v, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.Contains(string(v), "mask="+simd.Impl()) || !strings.Contains(string(v), runtime.Version()) {
		t.Fatalf("version: %q %v", v, err)
	}
	if err := exec.Command(bin, "healthcheck", "-url", "http://127.0.0.1:1/healthz").Run(); err == nil {
		t.Fatal("healthcheck with nothing listening exited 0")
	}
	if out, err := exec.Command(bin, "-h").Output(); err != nil || !strings.Contains(string(out), "Resources a peer may hold") {
		t.Fatalf("-h: %v, exit %v", len(out), err)
	}
	if err := exec.Command(bin, "-no-such-flag").Run(); err == nil {
		t.Fatal("an unknown flag exited 0")
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("an unknown flag: %v, want exit 2", err)
	}
}

// The roles a default swarmgate serves, seen from a peer: identify lists
// Kademlia and the relay hop beside identify and ping, and announces the
// -announce address; a reservation comes back with that address, the
// default limit (2 minutes, 128 KiB) and a voucher.
func TestServeRoles(t *testing.T) {
	bin := buildSwarmgate(t)
	const public = "/dns4/relay.example.org/tcp/443/tls/ws"
	_, addr := startServe(t, bin, "-listen", "/ip4/127.0.0.1/tcp/0/ws", "-announce", public)
	target, id := peerSplit(t, addr)
	h, err := libp2p.New(libp2p.Config{Engine: engine.Config{Logger: testutil.Quiet}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pc, err := h.Dial(ctx, target, libp2p.DialOptions{Expect: id})
	if err != nil {
		t.Fatal(err)
	}
	type idResult struct {
		m   *idpb.Identify
		err error
	}
	idc := make(chan idResult, 1)
	pc.Do(func() { pc.Identify(func(m *idpb.Identify, err error) { idc <- idResult{m, err} }) })
	r := <-idc
	if r.err != nil {
		t.Fatal(r.err)
	}
	for _, p := range []string{libp2p.ProtoIdentify, libp2p.ProtoPing, kad.Protocol, relay.ProtoHop} {
		if !slices.Contains(r.m.Protocols, p) {
			t.Errorf("identify lacks %s: %v", p, r.m.Protocols)
		}
	}
	if len(r.m.ListenAddrs) != 1 || !bytes.Equal(r.m.ListenAddrs[0], ma.StringCast(public).Bytes()) {
		t.Errorf("identify announces %d addresses, want only %s", len(r.m.ListenAddrs), public)
	}
	resc := make(chan *relay.Reservation, 1)
	cli := relay.NewClient(h, time.Now)
	pc.Do(func() {
		cli.Reserve(pc, func(res *relay.Reservation, err error) {
			if err != nil {
				t.Error(err)
			}
			resc <- res
		})
	})
	res := <-resc
	if res == nil {
		t.FailNow()
	}
	want := ma.StringCast(public + "/p2p/" + id.String())
	if len(res.Addrs) != 1 || !res.Addrs[0].Equal(want) || res.Voucher == nil {
		t.Fatalf("reservation addresses %v (want %v), voucher %v", res.Addrs, want, res.Voucher)
	}
	if res.Limit == nil || res.Limit.GetDuration() != 120 || res.Limit.GetData() != 128<<10 {
		t.Fatalf("limit %v", res.Limit)
	}
	if d := time.Until(res.Expire); d < 59*time.Minute || d > 61*time.Minute {
		t.Fatalf("expires in %v", d)
	}
}

// peerSplit splits a printed listen address into transport and peer ID.
func peerSplit(t *testing.T, a ma.Multiaddr) (ma.Multiaddr, peer.ID) {
	t.Helper()
	tr, id := peer.SplitAddr(a)
	if tr == nil || id == "" {
		t.Fatalf("%v has no /p2p/ID", a)
	}
	return tr, id
}
