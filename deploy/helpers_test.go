package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// repoRoot is the main module's root, seen from this package's directory.
const repoRoot = ".."

// Defaults of the server's flags that the deployment files rely on when
// they leave a flag unset (README "Serving", the flag table).
const (
	defaultDrainTimeout = 30 * time.Second
	defaultMaxConns     = 262_144
	defaultMemoryBudget = 1 << 30
)

// knownFlags are the server's flags (README "Serving", plus the -dht and
// -relay roles): a key in a -config file or a flag on a command line in
// these files that is not here is a typo that would stop the server.
// TestBinaryFlags checks the same names against the real binary's -h.
var knownFlags = map[string]bool{
	"config": true, "listen": true, "key": true, "ws-echo": true, "ws-max-message": true,
	"insecure-plaintext": true, "tls-cert": true, "tls-key": true, "tls-curves": true,
	"metrics": true, "profile-rates": true, "log-level": true, "log-format": true,
	"max-conns": true, "max-conns-per-ip": true, "max-conns-per-subnet": true,
	"conn-rate-per-ip": true, "conn-burst-per-ip": true, "max-streams": true,
	"memory-budget": true, "limit-loopback": true, "limit-exempt": true,
	"trusted-proxy": true, "idle-timeout": true, "drain-timeout": true,
	"dht": true, "relay": true, "echo": true,
}

// cmdFlags is a parsed command line: the value of each flag (the last one
// for a flag given twice; "true" for a bare boolean) and the order seen.
type cmdFlags struct {
	values map[string]string
	names  []string
}

// parseArgs reads Go flag-package arguments: -name=value, --name=value,
// -name value, and bare -name for booleans (a bare flag followed by another
// flag or nothing). Positional arguments are returned separately.
func parseArgs(args []string) (cmdFlags, []string) {
	f := cmdFlags{values: map[string]string{}}
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		name := strings.TrimLeft(a, "-")
		val := "true"
		if k, v, ok := strings.Cut(name, "="); ok {
			name, val = k, v
		} else if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			val = args[i+1]
			i++
		}
		f.values[name] = val
		f.names = append(f.names, name)
	}
	return f, pos
}

// serverConfig is a -config file: flag names to values.
type serverConfig map[string]any

func decodeConfig(t *testing.T, what string, data []byte) serverConfig {
	t.Helper()
	var c serverConfig
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	for k := range c {
		if !knownFlags[k] {
			t.Errorf("%s: %q is not a server flag", what, k)
		}
	}
	return c
}

// effective is a flag's value as the server sees it: the command line
// wins over the -config file, which wins over the default ("" if none).
func effective(args cmdFlags, cfg serverConfig, name string) string {
	if v, ok := args.values[name]; ok {
		return v
	}
	switch v := cfg[name].(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	}
	return ""
}

func drainTimeout(t *testing.T, args cmdFlags, cfg serverConfig) time.Duration {
	t.Helper()
	s := effective(args, cfg, "drain-timeout")
	if s == "" {
		return defaultDrainTimeout
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("drain-timeout %q: %v", s, err)
	}
	return d
}

func maxConns(t *testing.T, args cmdFlags, cfg serverConfig) int64 {
	t.Helper()
	s := effective(args, cfg, "max-conns")
	if s == "" || s == "0" {
		return defaultMaxConns
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("max-conns %q: %v", s, err)
	}
	if n < 0 {
		t.Fatalf("max-conns %d: unlimited; a deployment must bound connections by its file and memory limits", n)
	}
	return n
}

func memoryBudget(t *testing.T, args cmdFlags, cfg serverConfig) int64 {
	t.Helper()
	s := effective(args, cfg, "memory-budget")
	if s == "" || s == "0" {
		return defaultMemoryBudget
	}
	n, err := parseBytes(s)
	if err != nil {
		t.Fatalf("memory-budget: %v", err)
	}
	return n
}

// parseBytes reads a size as the server's -memory-budget and GOMEMLIMIT
// write it: a number with an optional B, KiB, MiB, GiB or TiB suffix.
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	mult := int64(1)
	num := s
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %v", s, err)
	}
	return n * mult, nil
}

// tcpPort is the port of a /ip4|ip6|dns…/…/tcp/N/… multiaddr.
var tcpPort = regexp.MustCompile(`/tcp/(\d+)(/|$)`)

func multiaddrPort(t *testing.T, m string) int32 {
	t.Helper()
	s := tcpPort.FindStringSubmatch(m)
	if s == nil {
		t.Fatalf("%q: no /tcp/ port", m)
	}
	p, _ := strconv.Atoi(s[1])
	return int32(p)
}

// hostPortPort is the port of HOST:PORT (the -metrics flag).
func hostPortPort(t *testing.T, hp string) int32 {
	t.Helper()
	i := strings.LastIndexByte(hp, ':')
	p, err := strconv.Atoi(hp[i+1:])
	if i < 0 || err != nil {
		t.Fatalf("%q: not HOST:PORT", hp)
	}
	return int32(p)
}

func readFile(t *testing.T, path ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(path...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
