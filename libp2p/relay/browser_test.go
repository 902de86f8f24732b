package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	golibp2p "github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	"github.com/libp2p/go-libp2p/p2p/transport/websocket"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/libp2p"
)

// browserReady is relay-browser.mjs's first stdout line: the browser node
// holds its reservation.
type browserReady struct {
	PeerID      string `json:"peerId"`
	CircuitAddr string `json:"circuitAddr"`
	RelayConn   struct {
		RemoteAddr  string    `json:"remoteAddr"`
		Encryption  string    `json:"encryption"`
		Multiplexer string    `json:"multiplexer"`
		Limits      *jsLimits `json:"limits"`
	} `json:"relayConn"`
	Reservation *struct {
		Expire  int64    `json:"expire"`
		Addrs   []string `json:"addrs"`
		Voucher bool     `json:"voucher"`
	} `json:"reservation"`
}

// jsLimits is what is left of a js connection's limits: seconds, and
// bytes counting both directions; nil for an unlimited connection.
type jsLimits struct {
	Seconds *int   `json:"seconds"`
	Bytes   *int64 `json:"bytes"`
}

// browserSummary is its last line.
type browserSummary struct {
	browserReady
	OK     bool   `json:"ok"`
	Error  string `json:"error"`
	Served []struct {
		RemotePeer   string    `json:"remotePeer"`
		RemoteAddr   string    `json:"remoteAddr"`
		Direction    string    `json:"direction"`
		Encryption   string    `json:"encryption"`
		Multiplexer  string    `json:"multiplexer"`
		Bytes        int       `json:"bytes"`
		LimitsAtOpen *jsLimits `json:"limitsAtOpen"`
		LimitsAfter  *jsLimits `json:"limitsAfterEcho"`
		Error        string    `json:"error"`
	} `json:"served"`
	Runtime       string   `json:"runtime"`
	ConsoleErrors []string `json:"consoleErrors"`
}

// goHostTrusting is a go-libp2p v0.51 host without listen addresses whose
// /tls/ws dials verify the server against roots.
func goHostTrusting(t *testing.T, roots *x509.CertPool) host.Host {
	t.Helper()
	h, err := golibp2p.New(
		golibp2p.NoListenAddrs,
		golibp2p.Transport(websocket.New, websocket.WithTLSClientConfig(&tls.Config{RootCAs: roots})),
		golibp2p.EnableRelay(),
		golibp2p.DisableMetrics(),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// TestChromiumReservesOverTLS: js-libp2p (@libp2p/circuit-relay-v2 4.2.13)
// inside headless Chromium dials our relay over /tls/ws, reserves a slot
// (it listens on <relay>/p2p-circuit) and is reached through the circuit
// by a go-libp2p v0.51 host, which runs Noise and yamux with it over the
// circuit and echoes bytes byte-exact (bench/peers/js/relay-browser.mjs).
//
// The relay's certificate is self-signed. Chromium accepts it by its key
// alone: --ignore-certificate-errors-spki-list with the SHA-256 of its
// SubjectPublicKeyInfo (base64, as an RFC 7469 pin), rather than
// --ignore-certificate-errors, so the browser still refuses any other
// certificate and the test shows it talked to this listener's key. The
// go host trusts the same certificate as a root.
func TestChromiumReservesOverTLS(t *testing.T) {
	jsDir := testutil.JSDir(t, "@libp2p/circuit-relay-v2", "playwright-core", "esbuild")
	chromium := testutil.Chromium(t)
	for _, tc := range []struct {
		name    string
		cfg     Config
		limited bool
		size    int
	}{
		// The browser counts both directions, Noise and yamux included,
		// against the 128 KiB data limit; our relay counts each direction.
		{"limited", Config{}, true, 40_000},
		{"unlimited", Config{CircuitDuration: -1, CircuitBytes: -1}, false, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert, roots := testutil.SelfSigned(t, engine.SelfSignedCertificate)
			spki := sha256.Sum256(cert.Leaf.RawSubjectPublicKeyInfo)
			hcfg := libp2p.Config{Engine: engine.Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}}
			tr := startRelayWith(t, "/ip4/127.0.0.1/tcp/0/tls/ws", hcfg, tc.cfg, nil)
			relayAddr := tr.addr.Encapsulate(ma.StringCast("/p2p/" + tr.host.ID().String()))
			if !strings.Contains(relayAddr.String(), "/tls/ws/p2p/") {
				t.Fatalf("relay listens on %s", relayAddr)
			}

			b := startBrowser(t, jsDir, chromium, relayAddr, spki[:])
			ctx := b.ctx

			// The browser holds its reservation.
			line := b.next("ready line")
			var r struct {
				Ready *browserReady `json:"ready"`
			}
			if err := json.Unmarshal([]byte(line), &r); err != nil || r.Ready == nil {
				t.Fatalf("first line is not ready: %s (%v)", line, err)
			}
			ready := r.Ready
			browserID, err := peer.Decode(ready.PeerID)
			if err != nil {
				t.Fatal(err)
			}
			if want := relayAddr.String() + "/p2p-circuit/p2p/" + browserID.String(); ready.CircuitAddr != want {
				t.Errorf("browser announces %s, want %s", ready.CircuitAddr, want)
			}
			if rc := ready.RelayConn; !strings.Contains(rc.RemoteAddr, "/tls/ws") || rc.Encryption != "/noise" ||
				rc.Multiplexer != "/yamux/1.0.0" || rc.Limits != nil {
				t.Errorf("browser's connection to the relay: %+v", rc)
			}
			if rsv := ready.Reservation; rsv == nil || !rsv.Voucher || !slices.Contains(rsv.Addrs, relayAddr.String()) ||
				time.Until(time.Unix(rsv.Expire, 0)) < DefaultReservationTTL-time.Minute ||
				time.Until(time.Unix(rsv.Expire, 0)) > DefaultReservationTTL {
				t.Errorf("browser holds reservation %+v", rsv)
			}
			// ... and the relay holds it, on a TLS connection from the browser.
			pc, ok := tr.relay.svc.store.Lookup(browserID, time.Now())
			if !ok {
				t.Fatal("the relay holds no reservation for the browser")
			}
			if pc.RemotePeer() != browserID || !pc.Conn().IsTLS() {
				t.Fatalf("reservation on a connection from %s, TLS %v", pc.RemotePeer(), pc.Conn().IsTLS())
			}
			m := testutil.Gather(t, tr.reg)
			if m["swarmgate_relay_reservations_open"] != 1 || m[`swarmgate_relay_reservations_made_total{kind=new}`] != 1 {
				t.Fatalf("relay metrics: %v reservations open, %v made",
					m["swarmgate_relay_reservations_open"], m[`swarmgate_relay_reservations_made_total{kind=new}`])
			}

			// A go-libp2p host reaches the browser through the circuit.
			dialer := goHostTrusting(t, roots)
			circuit, err := ma.NewMultiaddr(ready.CircuitAddr)
			if err != nil {
				t.Fatal(err)
			}
			if err := dialer.Connect(ctx, peer.AddrInfo{ID: browserID, Addrs: []ma.Multiaddr{circuit}}); err != nil {
				t.Fatal(err)
			}
			conns := dialer.Network().ConnsToPeer(browserID)
			if len(conns) != 1 || conns[0].Stat().Limited != tc.limited {
				t.Fatalf("%d connections to the browser, limited %v", len(conns), len(conns) > 0 && conns[0].Stat().Limited)
			}
			if !strings.Contains(conns[0].RemoteMultiaddr().String(), "/p2p-circuit") {
				t.Fatalf("connection to the browser over %s", conns[0].RemoteMultiaddr())
			}
			s, err := dialer.NewStream(network.WithAllowLimitedConn(ctx, "relay test"), browserID, libp2p.ProtoEcho)
			if err != nil {
				t.Fatal(err)
			}
			s.SetDeadline(time.Now().Add(30 * time.Second))
			data := randomBytes(tc.size)
			werr := make(chan error, 1)
			go func() {
				_, err := s.Write(data)
				if err == nil {
					err = s.CloseWrite()
				}
				werr <- err
			}()
			got, err := io.ReadAll(s)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("echo from the browser: %d of %d bytes, %v", len(got), len(data), err)
			}
			if err := <-werr; err != nil {
				t.Fatal(err)
			}
			s.Close()
			if n := tr.relay.svc.store.Circuits(); n != 1 {
				t.Fatalf("%d circuits open on the relay during the echo", n)
			}
			if made := counterValue(tr.relay.svc.m.made); made != 1 {
				t.Fatalf("%v circuits made", made)
			}
			if ok := counterValue(tr.relay.svc.m.hop[reqConnect][pb.Status_OK]); ok != 1 {
				t.Fatalf("%v CONNECTs answered OK", ok)
			}
			// Both directions, with Noise and yamux framing on top.
			if n := counterValue(tr.relay.svc.m.bytes); n < float64(2*tc.size) {
				t.Fatalf("%v bytes relayed, want at least %d", n, 2*tc.size)
			}

			// The dialer hangs up; then the browser reports what it saw.
			if err := dialer.Network().ClosePeer(browserID); err != nil {
				t.Fatal(err)
			}
			line = b.next("summary")
			t.Logf("browser: %s", line)
			var sum browserSummary
			if err := json.Unmarshal([]byte(line), &sum); err != nil || !sum.OK {
				t.Fatalf("summary: %s (%v)", line, err)
			}
			if !strings.Contains(sum.Runtime, "Chrome") {
				t.Errorf("runtime %q, want a Chrome user agent", sum.Runtime)
			}
			if len(sum.Served) != 1 {
				t.Fatalf("browser served %d echo streams", len(sum.Served))
			}
			sv := sum.Served[0]
			if sv.RemotePeer != dialer.ID().String() || sv.Direction != "inbound" || sv.Bytes != tc.size ||
				sv.RemoteAddr != relayAddr.String()+"/p2p-circuit/p2p/"+dialer.ID().String() ||
				sv.Encryption != "/noise" || sv.Multiplexer != "/yamux/1.0.0" {
				t.Errorf("browser served %+v", sv)
			}
			// The limit our relay announced in STOP (js keeps none from the
			// RESERVE reply), read as seconds, and counted down by the
			// browser from 128 KiB: only the Noise handshake when the
			// connection opened, then both directions of the echo.
			if !tc.limited {
				if sv.LimitsAtOpen != nil || sv.LimitsAfter != nil {
					t.Errorf("unlimited relay, browser saw limits %s, %s", fmtLimits(sv.LimitsAtOpen), fmtLimits(sv.LimitsAfter))
				}
			} else {
				o, a := sv.LimitsAtOpen, sv.LimitsAfter
				const secs = int(DefaultCircuitDuration / time.Second)
				if o == nil || a == nil || o.Seconds == nil || o.Bytes == nil || a.Bytes == nil ||
					*o.Seconds < secs-5 || *o.Seconds > secs ||
					*o.Bytes >= DefaultCircuitBytes || *o.Bytes < DefaultCircuitBytes-4<<10 ||
					*a.Bytes > *o.Bytes-2*int64(tc.size) {
					t.Errorf("browser saw limits %s at open, %s after the echo", fmtLimits(o), fmtLimits(a))
				}
			}
			// The circuit ends with the connection.
			waitFor(t, "the circuit to end", func() bool { return tr.relay.svc.store.Circuits() == 0 })
			if err := b.wait(); err != nil {
				t.Fatalf("relay-browser.mjs: %v", err)
			}
		})
	}
}

// TestChromiumRefusesOtherCertificate: with another key pinned, Chromium
// refuses the relay's self-signed certificate, so the pin (not a blanket
// exemption) is what lets the browser in above.
func TestChromiumRefusesOtherCertificate(t *testing.T) {
	jsDir := testutil.JSDir(t, "@libp2p/circuit-relay-v2", "playwright-core", "esbuild")
	chromium := testutil.Chromium(t)
	cert, _ := testutil.SelfSigned(t, engine.SelfSignedCertificate)
	other, _ := testutil.SelfSigned(t, engine.SelfSignedCertificate)
	spki := sha256.Sum256(other.Leaf.RawSubjectPublicKeyInfo)
	hcfg := libp2p.Config{Engine: engine.Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}}
	tr := startRelayWith(t, "/ip4/127.0.0.1/tcp/0/tls/ws", hcfg, Config{}, nil)
	relayAddr := tr.addr.Encapsulate(ma.StringCast("/p2p/" + tr.host.ID().String()))
	b := startBrowser(t, jsDir, chromium, relayAddr, spki[:])
	line := b.next("summary")
	var sum browserSummary
	if err := json.Unmarshal([]byte(line), &sum); err != nil || sum.OK || sum.Error == "" || sum.PeerID != "" {
		t.Fatalf("want a failure before any reservation, got %s (%v)", line, err)
	}
	if !slices.ContainsFunc(sum.ConsoleErrors, func(e string) bool { return strings.Contains(e, "net::ERR_CERT_AUTHORITY_INVALID") }) {
		t.Fatalf("want Chromium to refuse the certificate, console errors: %q", sum.ConsoleErrors)
	}
	if err := b.wait(); err == nil {
		t.Fatal("relay-browser.mjs exited 0")
	}
	if n := tr.relay.svc.store.Len(); n != 0 || tr.host.NumPeers() != 0 {
		t.Fatalf("%d reservations, %d peers", n, tr.host.NumPeers())
	}
}

// browserProc is a running relay-browser.mjs.
type browserProc struct {
	t       *testing.T
	ctx     context.Context
	cmd     *exec.Cmd
	lines   chan string
	stderr  bytes.Buffer
	exited  bool
	exitErr error
}

// startBrowser runs relay-browser.mjs against relayAddr with spki pinned
// (SHA-256 of the accepted key's SubjectPublicKeyInfo). It is stopped, and
// its stderr logged, when the test ends.
func startBrowser(t *testing.T, jsDir, chromium string, relayAddr ma.Multiaddr, spki []byte) *browserProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	b := &browserProc{t: t, ctx: ctx, lines: make(chan string, 4)}
	b.cmd = exec.CommandContext(ctx, "node", "relay-browser.mjs", relayAddr.String(),
		"--spki", base64.StdEncoding.EncodeToString(spki),
		"--timeout-ms", "60000", "--chromium", chromium)
	b.cmd.Dir = jsDir
	// SIGTERM: playwright closes the browser it launched on the way out
	// (SIGKILL would orphan Chromium); SIGKILL 5 s later.
	b.cmd.Cancel = func() error { return b.cmd.Process.Signal(syscall.SIGTERM) }
	b.cmd.WaitDelay = 5 * time.Second
	b.cmd.Stderr = &b.stderr
	stdout, err := b.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			b.lines <- sc.Text()
		}
		close(b.lines)
	}()
	t.Cleanup(func() {
		cancel()
		err := b.wait()
		t.Logf("relay-browser.mjs: exit %v; stderr:\n%s", err, b.stderr.String())
	})
	return b
}

// next returns the next stdout line.
func (b *browserProc) next(what string) string {
	b.t.Helper()
	select {
	case l, ok := <-b.lines:
		if !ok {
			b.t.Fatalf("relay-browser.mjs ended before %s", what)
		}
		return l
	case <-b.ctx.Done():
		b.t.Fatalf("no %s: %v", what, b.ctx.Err())
	}
	return ""
}

// wait reads the rest of stdout and waits for the exit.
func (b *browserProc) wait() error {
	if !b.exited {
		for range b.lines {
		}
		b.exitErr, b.exited = b.cmd.Wait(), true
	}
	return b.exitErr
}

func fmtLimits(l *jsLimits) string {
	b, _ := json.Marshal(l)
	return string(b)
}
