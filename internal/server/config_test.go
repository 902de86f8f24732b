package server

import (
	"bytes"
	"flag"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/libp2p/relay"
)

func parseServe(t *testing.T, file string, args ...string) (*Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c := Flags(fs)
	if file != "" {
		p := filepath.Join(t.TempDir(), "serve.json")
		if err := os.WriteFile(p, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"-config", p}, args...)
	}
	return c, Parse(fs, c, args)
}

func TestServeConfigDefaults(t *testing.T) {
	c, err := parseServe(t, "", "-listen", "/ip4/127.0.0.1/tcp/0/ws")
	if err != nil {
		t.Fatal(err)
	}
	if c.LogLevel != "info" || c.LogFormat != "text" || c.IdleTimeout != 0 || c.DrainTimeout != 30*time.Second || !c.DHT || c.DHTAddrFilter != "public" ||
		c.LimitLoopback || len(c.TrustedProxies) != 0 {
		t.Fatalf("defaults %+v", c)
	}
	if got, err := c.limits(); err != nil || !reflect.DeepEqual(got, admission.Limits{}) {
		t.Fatalf("limits %+v, want the zero value (engine defaults)", got)
	}
	if tp, err := c.trustedProxies(); tp != nil || err != nil {
		t.Fatalf("trusted proxies without -trusted-proxy: %v %v", tp, err)
	}
}

// Every flag has a config key of the same name; the command line wins.
func TestServeConfigFile(t *testing.T) {
	file := `{
		"listen": ["/ip4/0.0.0.0/tcp/4001/ws", "/ip6/::/tcp/4001/ws"],
		"echo": true,
		"dht": false,
		"dht-addr-filter": "all",
		"dht-seed": ["/ip4/192.0.2.9/tcp/4001/ws/p2p/12D3KooWGzwUCPHfkS2DFmSQSsS1fusmYgJtGDY4WkZdHHxM9V6i"],
		"announce": ["/dns4/node0.example.org/tcp/443/tls/ws", "/ip4/198.51.100.7/tcp/4001/ws"],
		"relay": false,
		"relay-max-reservations": 1000,
		"relay-circuit-duration": "0s",
		"relay-circuit-bytes": "1MiB",
		"conn-memory": "2MiB",
		"peer-memory": "6MiB",
		"source-memory": -1,
		"max-conns-per-peer": 4,
		"max-peer-streams": 100,
		"max-protocol-streams": 10,
		"ws-echo": "/echo",
		"metrics": "127.0.0.1:9464",
		"ws-max-message": 1048576,
		"key": "/var/lib/swarmgate/key",
		"insecure-plaintext": false,
		"profile-rates": true,
		"tls-cert": "/etc/swarmgate/cert.pem",
		"tls-key": "/etc/swarmgate/key.pem",
		"tls-curves": "X25519MLKEM768,X25519",
		"log-level": "debug",
		"log-format": "json",
		"max-conns": 100000,
		"max-conns-per-ip": 16,
		"max-conns-per-subnet": -1,
		"conn-rate-per-ip": 0.5,
		"conn-burst-per-ip": 32,
		"max-streams": 256,
		"memory-budget": "2GiB",
		"limit-loopback": true,
		"limit-exempt": ["100.64.0.0/10", "192.0.2.7"],
		"trusted-proxy": "10.0.0.0/8",
		"idle-timeout": "5m",
		"drain-timeout": "45s",
		"gc-percent": 80
	}`
	c, err := parseServe(t, file, "-max-conns-per-ip", "4", "-log-level", "warn", "-listen", "/ip4/127.0.0.1/tcp/0/ws")
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ConfigFile: c.ConfigFile,
		Listen:     multiFlag{"/ip4/127.0.0.1/tcp/0/ws"}, // the command line replaces the file's list
		Echo:       true,
		DHT:        false, DHTAddrFilter: "all",
		DHTSeeds: multiFlag{"/ip4/192.0.2.9/tcp/4001/ws/p2p/12D3KooWGzwUCPHfkS2DFmSQSsS1fusmYgJtGDY4WkZdHHxM9V6i"},
		Announce: multiFlag{"/dns4/node0.example.org/tcp/443/tls/ws", "/ip4/198.51.100.7/tcp/4001/ws"},
		Relay:    false, RelayMaxResv: 1000, RelayCircuitDur: 0, RelayCircuitBytes: 1 << 20,
		ConnMemory: 2 << 20, PeerMemory: 6 << 20, SourceMemory: -1,
		MaxConnsPerPeer: 4, MaxPeerStreams: 100, MaxProtoStreams: 10,
		WSEcho:       "/echo",
		Metrics:      "127.0.0.1:9464",
		WSMaxMessage: 1 << 20, Key: "/var/lib/swarmgate/key", ProfileRates: true,
		TLSCert: "/etc/swarmgate/cert.pem", TLSKey: "/etc/swarmgate/key.pem", TLSCurves: "X25519MLKEM768,X25519",
		LogLevel: "warn", LogFormat: "json",
		MaxConns: 100000, MaxConnsPerIP: 4, MaxConnsPerSubnet: -1, ConnRatePerIP: 0.5, ConnBurstPerIP: 32,
		MaxStreams: 256, MemoryBudget: 2 << 30, LimitLoopback: true, TrustedProxies: multiFlag{"10.0.0.0/8"},
		LimitExempt: multiFlag{"100.64.0.0/10", "192.0.2.7"},
		IdleTimeout: 5 * time.Minute, DrainTimeout: 45 * time.Second,
		GCPercent: 80,
	}
	if !reflect.DeepEqual(*c, want) {
		t.Fatalf("got  %+v\nwant %+v", *c, want)
	}
	// Every flag but -config is covered by the file above.
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	Flags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "config" && !strings.Contains(file, `"`+f.Name+`"`) {
			t.Errorf("flag -%s missing from the test's config file", f.Name)
		}
	})
	lim, err := c.limits()
	if err != nil || lim.MaxConns != 100000 || lim.MaxConnsPerIP != 4 || lim.MaxConnsPerSubnet != -1 || lim.MemoryBudget != 2<<30 || !lim.LimitLoopback ||
		len(lim.Exempt) != 2 || lim.Exempt[1] != netip.MustParsePrefix("192.0.2.7/32") {
		t.Fatalf("limits %+v", lim)
	}
	tp, err := c.trustedProxies()
	if err != nil || tp == nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := c.logger(&buf)
	log.Info("hidden")
	log.Warn("shown", "k", 1)
	if !strings.Contains(buf.String(), `"msg":"shown"`) || strings.Contains(buf.String(), "hidden") {
		t.Fatalf("log output %q", buf.String())
	}
}

func TestServeConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		file string
		args []string
		want string
	}{
		{`{"max-con": 5}`, nil, `unknown key "max-con"`},
		{`{"config": "other.json"}`, nil, `unknown key "config"`},
		{`{"max-conns": "many"}`, nil, `key "max-conns"`},
		{`{"max-conns": [1]}`, nil, "not repeatable"},
		{`{"listen": [1]}`, nil, "must be strings"},
		{`{"ws-echo": {"a": 1}}`, nil, "want a string"},
		{`{"drain-timeout": 30}`, nil, `key "drain-timeout"`}, // durations need a unit
		{`{"log-level": "loud"}`, nil, "-log-level"},
		{`{"log-format": "xml"}`, nil, "-log-format"},
		{`{"trusted-proxy": ["10.0.0.0/33"]}`, nil, "trusted proxy"},
		{`{"memory-budget": "lots"}`, nil, "memory-budget"},
		{`{"limit-exempt": ["10.0.0.0/40"]}`, nil, "-limit-exempt"},
		{`{"dht-addr-filter": "private"}`, nil, "-dht-addr-filter"},
		{`{"dht-seed": ["/ip4/192.0.2.9/tcp/4001/ws"]}`, nil, "must end in /p2p/ID"},
		{`{"announce": ["/ip4/192.0.2.9/tcp/4001/ws/p2p/12D3KooWGzwUCPHfkS2DFmSQSsS1fusmYgJtGDY4WkZdHHxM9V6i"]}`, nil, "without /p2p/ID"},
		{`{"announce": ["not-a-multiaddr"]}`, nil, "-announce"},
		{`{"relay-circuit-duration": "500ms"}`, nil, "whole seconds"},
		{`{"relay-circuit-bytes": -5}`, nil, "cannot be negative"},
		{`{} {}`, nil, "trailing data"},
		{`[]`, nil, "one JSON object keyed by flag names, not a JSON array"},
		{"{\n  \"max-conns\": 5,\n  \"listen\" [\"x\"]\n}", nil, "line 3, column 12"},
		{`{"max-conns": "many"}`, nil, "want a number"},
		{`{"idle-timeout": 5}`, nil, "a duration with a unit"},
		{"", []string{"-idle-timeout", "-1s"}, "negative"},
	} {
		_, err := parseServe(t, tc.file, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %v: got %v, want %q", tc.file, tc.args, err, tc.want)
		}
	}
	if _, err := parseServe(t, "", "-config", filepath.Join(t.TempDir(), "absent.json")); err == nil {
		t.Error("missing config file accepted")
	}
}

func TestByteSize(t *testing.T) {
	for s, want := range map[string]byteSize{
		"0": 0, "1048576": 1 << 20, "64KiB": 64 << 10, "512mib": 512 << 20, "2GiB": 2 << 30, "2 GB": 2 << 30,
		"1T": 1 << 40, "100B": 100, "-1": -1,
	} {
		var b byteSize
		if err := b.Set(s); err != nil || b != want {
			t.Errorf("%q: %v %v", s, int64(b), err)
		}
	}
	for _, s := range []string{"", "GiB", "1.5GiB", "9999999999TiB", "12XB"} {
		var b byteSize
		if err := b.Set(s); err == nil {
			t.Errorf("%q accepted as %d", s, b)
		}
	}
	if s := byteSize(admission.DefaultMemoryBudget).String(); s != "1GiB" {
		t.Errorf("String %q", s)
	}
	if _, err := parseLogLevel("WARNING"); err != nil {
		t.Error(err)
	}
}

// The relay's circuit limits: the defaults are go-libp2p's limited relay;
// 0 on the command line is an unlimited relay (the relay's -1).
func TestRelayConfig(t *testing.T) {
	c, err := parseServe(t, "", "-listen", "/ip4/127.0.0.1/tcp/0/ws")
	if err != nil {
		t.Fatal(err)
	}
	if rc := c.relayConfig(); !c.Relay || rc.CircuitDuration != relay.DefaultCircuitDuration || rc.CircuitBytes != relay.DefaultCircuitBytes || rc.MaxReservations != 0 {
		t.Fatalf("defaults: relay %v, %+v", c.Relay, rc)
	}
	c, err = parseServe(t, "", "-listen", "/ip4/127.0.0.1/tcp/0/ws", "-relay-circuit-duration", "0", "-relay-circuit-bytes", "0", "-relay-max-reservations", "10")
	if err != nil {
		t.Fatal(err)
	}
	if rc := c.relayConfig(); rc.CircuitDuration != -1 || rc.CircuitBytes != -1 || rc.MaxReservations != 10 {
		t.Fatalf("unlimited: %+v", rc)
	}
}

// -gc-percent sets the Go GC target (default DefaultGCPercent), is checked,
// can come from the -config file, and yields to a GOGC the operator set.
func TestServeGCPercent(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	noEnv := func(string) string { return "" }

	c, err := parseServe(t, "", "-listen", "/ip4/127.0.0.1/tcp/0/ws")
	if err != nil {
		t.Fatal(err)
	}
	if c.GCPercent != DefaultGCPercent {
		t.Fatalf("default -gc-percent %d, want %d", c.GCPercent, DefaultGCPercent)
	}
	if p, from := c.applyGCPercent(noEnv); p != strconv.Itoa(DefaultGCPercent) || from != "-gc-percent" {
		t.Fatalf("applied %s from %s", p, from)
	}
	if got := debug.SetGCPercent(100); got != DefaultGCPercent {
		t.Fatalf("runtime GC percent %d after applying, want %d", got, DefaultGCPercent)
	}

	c, err = parseServe(t, `{"gc-percent": 80}`, "-listen", "/ip4/127.0.0.1/tcp/0/ws")
	if err != nil || c.GCPercent != 80 {
		t.Fatalf("-config gc-percent: %d %v", c.GCPercent, err)
	}
	// GOGC in the environment wins: the runtime keeps what it parsed.
	env := func(k string) string {
		if k == "GOGC" {
			return "200"
		}
		return ""
	}
	if p, from := c.applyGCPercent(env); p != "200" || from != "GOGC" {
		t.Fatalf("with GOGC=200 applied %s from %s", p, from)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("runtime GC percent changed to %d though GOGC is set", got)
	}

	if _, err := parseServe(t, "", "-gc-percent", "5"); err == nil || !strings.Contains(err.Error(), "-gc-percent") {
		t.Fatalf("-gc-percent 5 accepted: %v", err)
	}
}
