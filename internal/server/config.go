package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/swarmgate/swarmgate/admission"
	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/libp2p/kad"
	"github.com/swarmgate/swarmgate/libp2p/relay"
)

// Config is what the server runs with. Every field is a flag, and every
// flag can be given in the -config file under its own name: flags on the
// command line win over the file, the file over the defaults.
type Config struct {
	ConfigFile string

	// What to serve.
	Listen            multiFlag
	Announce          multiFlag
	DHT               bool
	DHTAddrFilter     string
	DHTSeeds          multiFlag
	Relay             bool
	RelayMaxResv      int
	RelayCircuitDur   time.Duration
	RelayCircuitBytes byteSize
	Echo              bool
	WSEcho            string
	Metrics           string
	WSMaxMessage      int64
	Key               string
	InsecurePlaintext bool
	ProfileRates      bool
	TLSCert           string
	TLSKey            string
	TLSCurves         string

	// Logging.
	LogLevel  string
	LogFormat string

	// Admission limits (admission.Limits): 0 selects the default,
	// a negative value disables the limit.
	MaxConns          int
	MaxConnsPerIP     int
	MaxConnsPerSubnet int
	ConnRatePerIP     float64
	ConnBurstPerIP    int
	MaxStreams        int
	MemoryBudget      byteSize
	ConnMemory        byteSize
	PeerMemory        byteSize
	SourceMemory      byteSize
	MaxConnsPerPeer   int
	MaxPeerStreams    int
	MaxProtoStreams   int
	LimitLoopback     bool
	LimitExempt       multiFlag
	TrustedProxies    multiFlag

	// Lifecycle.
	IdleTimeout  time.Duration
	DrainTimeout time.Duration

	// Go runtime.
	GCPercent int
}

// DefaultGCPercent is the server's Go GC target (GOGC): how far the heap
// may grow over the live heap before the next collection. The server's
// memory is mostly small long-lived per-connection state, and its hot
// paths allocate little, so the default GOGC of 100 buys little CPU and
// lets a handshake storm's garbage leave the process at twice its live
// heap for good: the runtime returns memory to the OS only above the
// heap goal (about 2.2× the live heap at 100). At 50 the ceiling is
// about 1.65×. Measured (bench/RESULTS.md, "Go GC target"): 5,000 idle
// /tls/ws connections 6.8–7.8 KB of RSS each against 7.2–10.5 KB at
// 100; setup CPU per connection within the run-to-run spread.
const DefaultGCPercent = 50

// flagGroups orders the flags in -h output: a heading, then the flags.
var flagGroups = []struct {
	title string
	names []string
}{
	{"Serving", []string{"listen", "announce", "key", "config"}},
	{"Kademlia (DHT server role)", []string{"dht", "dht-addr-filter", "dht-seed"}},
	{"Circuit relay v2 (hop)", []string{"relay", "relay-max-reservations", "relay-circuit-duration", "relay-circuit-bytes"}},
	{"Protocols", []string{"echo", "ws-echo", "ws-max-message", "insecure-plaintext"}},
	{"TLS (/tls/ws, /wss)", []string{"tls-cert", "tls-key", "tls-curves"}},
	{"Limits (per source: IPv4 address or IPv6 /56; loopback exempt unless -limit-loopback)", []string{"max-conns", "max-conns-per-ip", "max-conns-per-subnet", "conn-rate-per-ip", "conn-burst-per-ip", "limit-loopback", "limit-exempt", "trusted-proxy"}},
	{"Resources a peer may hold (connection, peer ID, source, server)", []string{"conn-memory", "peer-memory", "source-memory", "memory-budget", "max-conns-per-peer", "max-streams", "max-peer-streams", "max-protocol-streams"}},
	{"Lifecycle", []string{"idle-timeout", "drain-timeout"}},
	{"Observability", []string{"metrics", "profile-rates", "log-level", "log-format"}},
	{"Go runtime", []string{"gc-percent"}},
}

// Flags defines the server's flags on fs and returns the config they
// fill. Call Parse(fs, cfg, args) to parse the command line and merge the
// -config file.
func Flags(fs *flag.FlagSet) *Config {
	c := &Config{LogLevel: "info", LogFormat: "text", DrainTimeout: engine.DefaultDrainTimeout, DHT: true, DHTAddrFilter: "public", Relay: true,
		RelayCircuitDur: relay.DefaultCircuitDuration, RelayCircuitBytes: relay.DefaultCircuitBytes, GCPercent: DefaultGCPercent}
	fs.StringVar(&c.ConfigFile, "config", "", "read flags from this JSON file: an object whose keys are flag names (repeatable flags take an array); flags on the command line win")

	fs.Var(&c.Listen, "listen", "listen multiaddr, e.g. /ip4/127.0.0.1/tcp/0/ws, /ip4/0.0.0.0/tcp/443/tls/ws, /dns/H/tcp/443/tls/sni/H/ws (repeatable; /ws and /tls/ws may share a port)")
	fs.Var(&c.Announce, "announce", "address to announce instead of the listen addresses (identify, DHT answers, relay reservations): the node's public /ip4|ip6|dns…/tcp/N/ws or /tls/ws address behind NAT or a load balancer, without /p2p (repeatable; default: the listen addresses, each interface's for 0.0.0.0 or ::)")
	fs.BoolVar(&c.Relay, "relay", c.Relay, "serve circuit relay v2 (/libp2p/circuit/relay/0.2.0/hop) so peers that cannot listen (browsers) can be reached through this node; -relay=false turns the role off")
	fs.IntVar(&c.RelayMaxResv, "relay-max-reservations", 0, fmt.Sprintf("most relay reservations held at once (0: %d; each keeps its connection open)", relay.DefaultMaxReservations))
	fs.DurationVar(&c.RelayCircuitDur, "relay-circuit-duration", c.RelayCircuitDur, "how long one relayed connection may last, announced to peers (0: unlimited)")
	fs.Var(&c.RelayCircuitBytes, "relay-circuit-bytes", "bytes one relayed connection may carry in each direction, announced to peers, e.g. 128KiB (0: unlimited)")
	fs.BoolVar(&c.DHT, "dht", c.DHT, "answer Kademlia (/ipfs/kad/1.0.0) as a DHT server from a table of every connected DHT server; -dht=false turns the role off")
	fs.StringVar(&c.DHTAddrFilter, "dht-addr-filter", c.DHTAddrFilter, "which addresses of peers (and ours) the DHT hands out: public (only addresses others can dial) or all (loopback and private too: tests, LANs)")
	fs.Var(&c.DHTSeeds, "dht-seed", "a fleet member to dial at start and keep connected with backoff, /ws or /tls/ws multiaddr ending in /p2p/ID (repeatable)")
	fs.BoolVar(&c.Echo, "echo", false, "also serve /echo/1.0.0 (every byte written back): for load generation and tests; off on a public node, where it lets any peer make the server move bytes for it")
	fs.StringVar(&c.WSEcho, "ws-echo", "", "serve a raw WebSocket echo on this request path, beside libp2p on every other")
	fs.StringVar(&c.Metrics, "metrics", "", "serve Prometheus /metrics and /debug/pprof/ on HOST:PORT")
	fs.Int64Var(&c.WSMaxMessage, "ws-max-message", 0, "largest WebSocket message accepted (0: codec default, 16 MiB)")
	fs.StringVar(&c.Key, "key", "", "identity key file (libp2p protobuf encoding); created with a new Ed25519 key when absent; empty: a fresh key each run")
	fs.BoolVar(&c.InsecurePlaintext, "insecure-plaintext", false, "also offer /plaintext/2.0.0 (no authentication, no encryption): for measuring what Noise costs only")
	fs.BoolVar(&c.ProfileRates, "profile-rates", false, "enable mutex and block profiling (1 in 100 events) for /debug/pprof")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "TLS certificate chain (PEM) for /tls/ws listeners; reloaded when the file changes and on SIGHUP. Empty on loopback: a self-signed certificate")
	fs.StringVar(&c.TLSKey, "tls-key", "", "TLS private key (PEM) matching -tls-cert")
	fs.StringVar(&c.TLSCurves, "tls-curves", "", "TLS key exchange preference, e.g. X25519MLKEM768,X25519,P256 (empty: Go's defaults, X25519MLKEM768 first)")

	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format on stderr: text (logfmt) or json")

	fs.IntVar(&c.MaxConns, "max-conns", 0, fmt.Sprintf("most connections open at once (0: %d; -1: unlimited)", admission.DefaultMaxConns))
	fs.IntVar(&c.MaxConnsPerIP, "max-conns-per-ip", 0, fmt.Sprintf("most connections per IPv4 address and per IPv6 /56 (0: %d, as go-libp2p; -1: unlimited)", admission.DefaultMaxConnsPerIP))
	fs.IntVar(&c.MaxConnsPerSubnet, "max-conns-per-subnet", 0, fmt.Sprintf("most connections per IPv6 /48 (0: %d, as go-libp2p; -1: unlimited)", admission.DefaultMaxConnsPerSubnet))
	fs.Float64Var(&c.ConnRatePerIP, "conn-rate-per-ip", 0, fmt.Sprintf("new connections per second per IPv4 address or IPv6 /56 once the burst is spent (0: %g, as go-libp2p; -1: unlimited)", admission.DefaultConnRatePerIP))
	fs.IntVar(&c.ConnBurstPerIP, "conn-burst-per-ip", 0, fmt.Sprintf("new connections a source may open at once (0: %d)", admission.DefaultConnBurstPerIP))
	fs.IntVar(&c.MaxStreams, "max-streams", 0, fmt.Sprintf("most yamux streams per connection and direction (0: %d, as go-yamux)", admission.DefaultMaxStreams))
	fs.Var(&c.MemoryBudget, "memory-budget", fmt.Sprintf("byte budget for connection buffers, e.g. 512MiB, 2GiB (0: %s; -1: unlimited); new connections are refused beyond it", byteSize(admission.DefaultMemoryBudget)))
	fs.Var(&c.ConnMemory, "conn-memory", fmt.Sprintf("most bytes one connection may hold: stream buffers, queued output, partial frames (0: %s; -1: unlimited); near it windows stop growing and new streams are refused", byteSize(admission.DefaultConnMemory)))
	fs.Var(&c.PeerMemory, "peer-memory", fmt.Sprintf("most bytes one peer ID may hold across its connections (0: %s; -1: unlimited)", byteSize(admission.DefaultPeerMemory)))
	fs.Var(&c.SourceMemory, "source-memory", fmt.Sprintf("most bytes one IPv4 address or IPv6 /56 may hold (0: %s; -1: unlimited)", byteSize(admission.DefaultSourceMemory)))
	fs.IntVar(&c.MaxConnsPerPeer, "max-conns-per-peer", 0, fmt.Sprintf("most connections of one peer ID (0: %d, as go-libp2p; -1: unlimited)", admission.DefaultMaxConnsPerPeer))
	fs.IntVar(&c.MaxPeerStreams, "max-peer-streams", 0, fmt.Sprintf("most streams one peer may have open towards us (0: %d; -1: unlimited)", admission.DefaultMaxPeerStreams))
	fs.IntVar(&c.MaxProtoStreams, "max-protocol-streams", 0, fmt.Sprintf("most streams of one protocol one peer may have open (0: %d; -1: unlimited)", admission.DefaultMaxProtocolStreams))
	fs.BoolVar(&c.LimitLoopback, "limit-loopback", false, "apply the per-IP, per-subnet and rate limits to loopback clients too (default: loopback is exempt, as go-libp2p)")
	fs.Var(&c.LimitExempt, "limit-exempt", "CIDR or address free of the per-IP, per-subnet and rate limits, e.g. a carrier-grade NAT or a monitoring host (repeatable)")
	fs.Var(&c.TrustedProxies, "trusted-proxy", "CIDR or address of a proxy, optionally =HEADER naming the one header it sets (x-forwarded-for, the default; forwarded; x-real-ip): only that header is believed, only from that proxy (repeatable; default: none, headers ignored)")

	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 0, "close a libp2p connection after this long without a stream (GoAway, then close 1000; 0: idle connections are kept)")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", c.DrainTimeout, "on SIGTERM/SIGINT, how long open connections get to finish (GoAway, close 1001) before they are cut")

	fs.IntVar(&c.GCPercent, "gc-percent", c.GCPercent, "Go GC target as GOGC: the heap may grow this many percent over the live heap before a collection; lower holds less memory per idle connection for a little more CPU. The GOGC environment variable, when set, wins")
	return c
}

// Parse parses args into c, then applies the -config file to every flag
// the command line did not set, then checks the result.
func Parse(fs *flag.FlagSet, c *Config, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (flags only)", fs.Arg(0))
	}
	if c.ConfigFile != "" {
		data, err := os.ReadFile(c.ConfigFile)
		if err != nil {
			return fmt.Errorf("-config: %w", err)
		}
		if err := applyConfigFile(fs, data); err != nil {
			return fmt.Errorf("%s: %w", c.ConfigFile, err)
		}
	}
	return c.validate()
}

// jsonError adds the line and column of a JSON syntax or type error in data.
func jsonError(data []byte, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	var off int64
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
	default:
		return err
	}
	// The offset counts the bytes read, the offending one included.
	line, col := 1, 1
	for _, b := range data[:max(min(int(off)-1, len(data)), 0)] {
		if b == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return fmt.Errorf("line %d, column %d: %w", line, col, err)
}

// applyConfigFile sets, from a JSON object keyed by flag name, every flag
// not set on the command line. Values are what the flag would take as
// text: strings, numbers, booleans, and for repeatable flags an array of
// strings (or one string). Unknown keys are errors, so a typo does not pass
// silently.
func applyConfigFile(fs *flag.FlagSet, data []byte) error {
	var file map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&file); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return jsonError(data, fmt.Errorf("the file must hold one JSON object keyed by flag names, not a JSON %s", te.Value))
		}
		return jsonError(data, err)
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the JSON object")
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	keys := make([]string, 0, len(file))
	for k := range file {
		keys = append(keys, k)
	}
	sort.Strings(keys) // errors in a stable order
	for _, k := range keys {
		f := fs.Lookup(k)
		if f == nil || k == "config" {
			return fmt.Errorf("unknown key %q (keys are the flag names; see -h)", k)
		}
		if onCommandLine[k] {
			continue
		}
		vals, err := configValues(f, file[k])
		if err != nil {
			return fmt.Errorf("key %q: %w", k, err)
		}
		for _, v := range vals {
			if err := fs.Set(k, v); err != nil {
				return fmt.Errorf("key %q: %s (want %s)", k, err, flagKind(f))
			}
		}
	}
	return nil
}

// flagKind says what a flag's value must look like, for error messages.
func flagKind(f *flag.Flag) string {
	switch f.Value.(type) {
	case *multiFlag:
		return "a string or an array of strings"
	case *byteSize:
		return "bytes: a number, optionally with KiB, MiB or GiB, as a string"
	}
	switch f.DefValue {
	case "true", "false":
		return "true or false"
	}
	if _, err := time.ParseDuration(f.DefValue); err == nil && f.DefValue != "0" {
		return `a duration with a unit, as a string: "30s", "2m"`
	}
	if strings.HasSuffix(f.Name, "-timeout") {
		return `a duration with a unit, as a string: "30s", "2m"`
	}
	if _, err := strconv.ParseFloat(f.DefValue, 64); err == nil {
		return "a number"
	}
	return "a string"
}

// configValues turns a JSON value into the flag's text form(s).
func configValues(f *flag.Flag, raw json.RawMessage) ([]string, error) {
	_, repeatable := f.Value.(*multiFlag)
	var arr []json.RawMessage
	if err := json.Unmarshal(raw, &arr); err == nil {
		if !repeatable {
			return nil, fmt.Errorf("an array, but the flag is not repeatable (want %s)", flagKind(f))
		}
		out := make([]string, 0, len(arr))
		for _, r := range arr {
			var s string
			if err := json.Unmarshal(r, &s); err != nil {
				return nil, fmt.Errorf("array elements must be strings")
			}
			out = append(out, s)
		}
		return out, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	switch v := v.(type) {
	case string:
		return []string{v}, nil
	case json.Number:
		return []string{v.String()}, nil
	case bool:
		return []string{strconv.FormatBool(v)}, nil
	}
	return nil, fmt.Errorf("want %s", flagKind(f))
}

// validate checks values the flag package cannot.
func (c *Config) validate() error {
	if _, err := parseLogLevel(c.LogLevel); err != nil {
		return err
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("-log-format %q: want text or json", c.LogFormat)
	}
	if c.GCPercent < minGCPercent {
		return fmt.Errorf("-gc-percent %d: give at least %d (GOGC=off, in the environment, turns the collector off)", c.GCPercent, minGCPercent)
	}
	if c.IdleTimeout < 0 || c.DrainTimeout < 0 {
		return fmt.Errorf("-idle-timeout and -drain-timeout cannot be negative")
	}
	if _, err := c.trustedProxies(); err != nil {
		return err
	}
	if _, err := kad.ParseAddrFilter(c.DHTAddrFilter); err != nil {
		return fmt.Errorf("-dht-addr-filter: %w", err)
	}
	for _, s := range c.DHTSeeds {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return fmt.Errorf("-dht-seed %q: %w", s, err)
		}
		if _, err := peer.IDFromP2PAddr(a); err != nil {
			return fmt.Errorf("-dht-seed %q: the address must end in /p2p/ID", s)
		}
	}
	for _, s := range c.Announce {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return fmt.Errorf("-announce %q: %w", s, err)
		}
		if _, last := ma.SplitLast(a); last != nil && last.Code() == ma.P_P2P {
			return fmt.Errorf("-announce %q: give the address without /p2p/ID", s)
		}
	}
	if c.RelayMaxResv < 0 || c.RelayCircuitDur < 0 || c.RelayCircuitBytes < 0 {
		return fmt.Errorf("-relay-max-reservations, -relay-circuit-duration and -relay-circuit-bytes cannot be negative")
	}
	if d := c.RelayCircuitDur; d > 0 && d < time.Second {
		return fmt.Errorf("-relay-circuit-duration %v: peers are told whole seconds; give at least 1s, or 0 for unlimited", d)
	}
	if _, err := c.limits(); err != nil {
		return err
	}
	return nil
}

// minGCPercent is the lowest -gc-percent accepted: below it the collector
// runs so often that it costs more than the memory it saves.
const minGCPercent = 10

// applyGCPercent sets the Go GC target from -gc-percent unless the GOGC
// environment variable (getenv's answer) is set, which the operator
// chose over the flag; it returns the target in effect and where it
// came from, for the log.
func (c *Config) applyGCPercent(getenv func(string) string) (percent string, from string) {
	if v := getenv("GOGC"); v != "" {
		return v, "GOGC"
	}
	debug.SetGCPercent(c.GCPercent)
	return strconv.Itoa(c.GCPercent), "-gc-percent"
}

// relayConfig is the relay's configuration from the flags: 0 means
// unlimited for the circuit limits (the relay's own -1).
func (c *Config) relayConfig() relay.Config {
	rc := relay.Config{MaxReservations: c.RelayMaxResv, CircuitDuration: c.RelayCircuitDur, CircuitBytes: int64(c.RelayCircuitBytes)}
	if rc.CircuitDuration == 0 {
		rc.CircuitDuration = -1
	}
	if rc.CircuitBytes == 0 {
		rc.CircuitBytes = -1
	}
	return rc
}

func parseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	switch strings.ToLower(s) {
	case "debug":
		l = slog.LevelDebug
	case "info":
		l = slog.LevelInfo
	case "warn", "warning":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		return 0, fmt.Errorf("-log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// logger builds the slog logger the flags ask for, writing to w.
func (c *Config) logger(w io.Writer) *slog.Logger {
	level, _ := parseLogLevel(c.LogLevel) // validated
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// limits is the admission configuration.
func (c *Config) limits() (admission.Limits, error) {
	var exempt []netip.Prefix
	for _, s := range c.LimitExempt {
		p, err := parsePrefixOrAddr(s)
		if err != nil {
			return admission.Limits{}, fmt.Errorf("-limit-exempt %q: %w", s, err)
		}
		exempt = append(exempt, p)
	}
	return admission.Limits{
		MaxConns:           c.MaxConns,
		MaxConnsPerIP:      c.MaxConnsPerIP,
		MaxConnsPerSubnet:  c.MaxConnsPerSubnet,
		ConnRatePerIP:      c.ConnRatePerIP,
		ConnBurstPerIP:     c.ConnBurstPerIP,
		MaxStreams:         c.MaxStreams,
		MemoryBudget:       int64(c.MemoryBudget),
		ConnMemory:         int64(c.ConnMemory),
		PeerMemory:         int64(c.PeerMemory),
		SourceMemory:       int64(c.SourceMemory),
		MaxConnsPerPeer:    c.MaxConnsPerPeer,
		MaxPeerStreams:     c.MaxPeerStreams,
		MaxProtocolStreams: c.MaxProtoStreams,
		LimitLoopback:      c.LimitLoopback,
		Exempt:             exempt,
	}, nil
}

// parsePrefixOrAddr reads "10.0.0.0/8" or a single address as its /32 or
// /128.
func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// trustedProxies is nil when no -trusted-proxy is given: headers are
// ignored.
func (c *Config) trustedProxies() (*admission.TrustedProxies, error) {
	if len(c.TrustedProxies) == 0 {
		return nil, nil
	}
	return admission.NewTrustedProxies(c.TrustedProxies)
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

// byteSize is a byte count flag: a number with an optional KiB, MiB, GiB
// or TiB suffix (KB, MB, GB are read as the same powers of two, as
// operators mean them for memory); -1 and other negative values pass
// through (unlimited).
type byteSize int64

func (b byteSize) String() string {
	switch {
	case b > 0 && b%(1<<30) == 0:
		return strconv.FormatInt(int64(b)>>30, 10) + "GiB"
	case b > 0 && b%(1<<20) == 0:
		return strconv.FormatInt(int64(b)>>20, 10) + "MiB"
	case b > 0 && b%(1<<10) == 0:
		return strconv.FormatInt(int64(b)>>10, 10) + "KiB"
	}
	return strconv.FormatInt(int64(b), 10)
}

func (b *byteSize) Set(s string) error {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix []string
		mult   int64
	}{
		{[]string{"TiB", "TB", "T"}, 1 << 40},
		{[]string{"GiB", "GB", "G"}, 1 << 30},
		{[]string{"MiB", "MB", "M"}, 1 << 20},
		{[]string{"KiB", "KB", "K"}, 1 << 10},
		{[]string{"B"}, 1},
	} {
		found := false
		for _, suf := range u.suffix {
			if len(t) > len(suf) && strings.EqualFold(t[len(t)-len(suf):], suf) {
				t, mult, found = strings.TrimSpace(t[:len(t)-len(suf)]), u.mult, true
				break
			}
		}
		if found {
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return fmt.Errorf("%q: want bytes, optionally with KiB, MiB, GiB or TiB", s)
	}
	if n > 0 && n > (1<<63-1)/mult {
		return fmt.Errorf("%q: too large", s)
	}
	*b = byteSize(n * mult)
	return nil
}
