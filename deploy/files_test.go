package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// --- systemd ----------------------------------------------------------------

// unit is a systemd unit file: section → key → values in order (a key may
// repeat; an empty assignment resets the list, as systemd does).
type unit map[string]map[string][]string

func parseUnit(t *testing.T, data []byte) unit {
	t.Helper()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("line %d: %q is not Key=Value in a section", n, line)
			}
			if strings.HasSuffix(v, `\`) {
				t.Fatalf("line %d: continuation lines are not parsed here", n)
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if v == "" {
				u[section][k] = []string{""}
				continue
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// unitValue is a key's last value ("" if unset).
func unitValue(t *testing.T, u unit, section, key string) string {
	t.Helper()
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// systemdSeconds reads a systemd time span such as 90, 90s, 1min 30s.
func systemdSeconds(t *testing.T, s string) time.Duration {
	t.Helper()
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second
	}
	r := strings.NewReplacer("min", "m", " ", "")
	d, err := time.ParseDuration(r.Replace(s))
	if err != nil {
		t.Fatalf("time span %q: %v", s, err)
	}
	return d
}

// TestSystemdUnit: the unit runs the server unprivileged and confined,
// keeps its key in the state directory, has a file limit for max-conns and
// a stop timeout past the drain, and restarts only on failure.
func TestSystemdUnit(t *testing.T) {
	u := parseUnit(t, readFile(t, "systemd", "swarmgate.service"))
	get := func(k string) string { return unitValue(t, u, "Service", k) }

	exec := strings.Fields(get("ExecStart"))
	if len(exec) == 0 || exec[0] != "/usr/local/bin/swarmgate" {
		t.Fatalf("ExecStart %q", get("ExecStart"))
	}
	args, pos := parseArgs(exec[1:])
	if len(pos) > 0 {
		t.Errorf("ExecStart: positional arguments %q", pos)
	}
	for _, name := range args.names {
		if !knownFlags[name] {
			t.Errorf("ExecStart: -%s is not a server flag", name)
		}
	}
	cfgPath := args.values["config"]
	if cfgPath == "" {
		t.Fatal("ExecStart has no -config")
	}
	// The unit's -config is /etc/<ConfigurationDirectory>/…; the example
	// config in deploy/ is what the README installs there.
	if cd := get("ConfigurationDirectory"); path.Dir(cfgPath) != "/etc/"+cd {
		t.Errorf("-config %s is not in ConfigurationDirectory=%s", cfgPath, cd)
	}
	cfg := decodeConfig(t, "config.example.json", readFile(t, "config.example.json"))

	// Identity: in the state directory, which only this service can write.
	sd := get("StateDirectory")
	if key := args.values["key"]; sd == "" || path.Dir(key) != "/var/lib/"+sd {
		t.Errorf("-key %q is not in StateDirectory=%s (/var/lib/%s)", key, sd, sd)
	}
	if m := get("StateDirectoryMode"); m != "0700" {
		t.Errorf("StateDirectoryMode %q, want 0700 (the key is secret)", m)
	}

	// Unprivileged.
	if get("DynamicUser") != "yes" && (get("User") == "" || get("User") == "root" || get("User") == "0") {
		t.Error("neither DynamicUser=yes nor a dedicated User=")
	}
	for k, want := range map[string]string{
		"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
		"NoNewPrivileges": "yes", "MemoryDenyWriteExecute": "yes", "RestrictNamespaces": "yes",
		"ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
		"LockPersonality": "yes", "RestrictSUIDSGID": "yes", "SystemCallArchitectures": "native",
		"KillSignal": "SIGTERM", "Restart": "on-failure",
	} {
		if got := get(k); got != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
	if got := get("CapabilityBoundingSet"); got != "" {
		t.Errorf("CapabilityBoundingSet=%q: the default unit needs no capability (CAP_NET_BIND_SERVICE only in the commented variant)", got)
	}
	if got := get("AmbientCapabilities"); got != "" {
		t.Errorf("AmbientCapabilities=%q: only in the commented variant for ports below 1024", got)
	}
	fams := strings.Fields(strings.Join(u["Service"]["RestrictAddressFamilies"], " "))
	if !slices.Contains(fams, "AF_INET") || !slices.Contains(fams, "AF_INET6") {
		t.Errorf("RestrictAddressFamilies %v: TCP over IPv4 and IPv6 needed", fams)
	}
	for _, f := range fams {
		if f != "AF_INET" && f != "AF_INET6" && f != "AF_UNIX" && f != "AF_NETLINK" {
			t.Errorf("RestrictAddressFamilies allows %s", f)
		}
	}
	if filters := u["Service"]["SystemCallFilter"]; !slices.Contains(filters, "@system-service") || !slices.ContainsFunc(filters, func(s string) bool { return strings.HasPrefix(s, "~") && strings.Contains(s, "@privileged") }) {
		t.Errorf("SystemCallFilter %v: want @system-service and ~@privileged", filters)
	}

	// File limit: max-conns plus headroom, within fs.nr_open.
	nofile, err := strconv.ParseInt(get("LimitNOFILE"), 10, 64)
	if err != nil {
		t.Fatalf("LimitNOFILE %q: %v", get("LimitNOFILE"), err)
	}
	conns := maxConns(t, args, cfg)
	if conns+fdHeadroom > nofile {
		t.Errorf("max-conns %d + %d > LimitNOFILE %d", conns, fdHeadroom, nofile)
	}
	if conns < 1_000_000 {
		t.Errorf("the host example is for 1,000,000 connections; config.example.json max-conns is %d", conns)
	}
	if nrOpen := sysctlInt(t, parseSysctl(t), "fs.nr_open"); nofile > nrOpen {
		t.Errorf("LimitNOFILE %d > fs.nr_open %d: the service would fail to start", nofile, nrOpen)
	}

	// Stop: SIGKILL only after the drain and the exit.
	drain := drainTimeout(t, args, cfg)
	stop := systemdSeconds(t, get("TimeoutStopSec"))
	if stop < drain+exitMargin*time.Second {
		t.Errorf("TimeoutStopSec %v < -drain-timeout %v + %d s", stop, drain, exitMargin)
	}
	t.Logf("LimitNOFILE %d for max-conns %d; TimeoutStopSec %v for drain %v", nofile, conns, stop, drain)
}

// TestSystemdAnalyzeVerify runs systemd-analyze verify on the unit (binary
// paths swapped for /bin/true, which exists), where systemd-analyze is
// installed: an unknown or misspelt directive is reported and fails.
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	data := string(readFile(t, "systemd", "swarmgate.service"))
	data = strings.NewReplacer("/usr/local/bin/swarmgate", "/bin/true", "/bin/kill", "/bin/true").Replace(data)
	p := filepath.Join(t.TempDir(), "swarmgate.service")
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", p).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// --- sysctl -----------------------------------------------------------------

type sysctlLine struct {
	key, value string
	optional   bool // "-key = value": skipped where the key does not exist
	line       int
}

// parseSysctl reads deploy/sysctl/99-swarmgate.conf and checks that every
// setting has its reason: the line right above it is a comment.
func parseSysctl(t *testing.T) map[string]sysctlLine {
	t.Helper()
	out := map[string]sysctlLine{}
	lines := strings.Split(string(readFile(t, "sysctl", "99-swarmgate.conf")), "\n")
	reasoned := false
	for i, l := range lines {
		s := strings.TrimSpace(l)
		switch {
		case s == "":
			reasoned = false
		case s[0] == '#' || s[0] == ';':
			reasoned = true
		default:
			k, v, ok := strings.Cut(s, "=")
			if !ok {
				t.Fatalf("99-swarmgate.conf:%d: %q is not key = value", i+1, s)
			}
			sl := sysctlLine{key: strings.TrimSpace(k), value: strings.Join(strings.Fields(v), " "), line: i + 1}
			if strings.HasPrefix(sl.key, "-") {
				sl.key, sl.optional = sl.key[1:], true
			}
			if !reasoned {
				t.Errorf("99-swarmgate.conf:%d: %s has no comment right above it giving its reason", i+1, sl.key)
			}
			reasoned = false
			if _, dup := out[sl.key]; dup {
				t.Errorf("99-swarmgate.conf:%d: %s set twice", i+1, sl.key)
			}
			out[sl.key] = sl
		}
	}
	return out
}

func sysctlInts(t *testing.T, s map[string]sysctlLine, key string) []int64 {
	t.Helper()
	l, ok := s[key]
	if !ok {
		t.Fatalf("99-swarmgate.conf does not set %s", key)
	}
	var out []int64
	for _, f := range strings.FieldsFunc(l.value, func(r rune) bool { return r == ' ' || r == ',' }) {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			t.Fatalf("%s = %q: %v", key, l.value, err)
		}
		out = append(out, n)
	}
	return out
}

func sysctlInt(t *testing.T, s map[string]sysctlLine, key string) int64 {
	t.Helper()
	v := sysctlInts(t, s, key)
	if len(v) != 1 {
		t.Fatalf("%s: want one number, have %v", key, v)
	}
	return v[0]
}

// TestSysctls: the settings a 1M-connection host needs are there, each with
// its reason, sized for 1,000,000 connections, and each names a key this
// kernel has (where /proc/sys is readable).
func TestSysctls(t *testing.T) {
	s := parseSysctl(t)
	const conns = 1_000_000
	nofile, _ := strconv.ParseInt(unitValue(t, parseUnit(t, readFile(t, "systemd", "swarmgate.service")), "Service", "LimitNOFILE"), 10, 64)
	if v := sysctlInt(t, s, "fs.nr_open"); v < nofile || v < conns+fdHeadroom {
		t.Errorf("fs.nr_open %d < LimitNOFILE %d or 1M connections", v, nofile)
	}
	if v := sysctlInt(t, s, "fs.file-max"); v < 2*nofile {
		t.Errorf("fs.file-max %d < a node and a generator at LimitNOFILE %d", v, nofile)
	}
	if v := sysctlInt(t, s, "net.core.somaxconn"); v < 4096 || v > 65535 {
		t.Errorf("net.core.somaxconn %d: want 4096..65535", v)
	}
	if v := sysctlInt(t, s, "net.ipv4.tcp_max_syn_backlog"); v < 4096 {
		t.Errorf("net.ipv4.tcp_max_syn_backlog %d", v)
	}
	// tcp_mem, in 4 KiB pages: min < pressure < max; pressure holds one
	// queued page on every connection (an idle socket holds none, one with
	// unread data one page: docs/capacity.md).
	mem := sysctlInts(t, s, "net.ipv4.tcp_mem")
	if len(mem) != 3 || !(mem[0] < mem[1] && mem[1] < mem[2]) {
		t.Fatalf("net.ipv4.tcp_mem %v: want min < pressure < max", mem)
	}
	if mem[1] < conns {
		t.Errorf("tcp_mem pressure %d pages < one page for each of %d connections", mem[1], conns)
	}
	for _, k := range []string{"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"} {
		v := sysctlInts(t, s, k)
		if len(v) != 3 || !(v[0] <= v[1] && v[1] <= v[2]) {
			t.Errorf("%s %v: want min <= default <= max", k, v)
			continue
		}
		if v[2]/4096 > mem[2]/256 {
			t.Errorf("%s max %d: fewer than 256 sockets fill tcp_mem max (%d pages)", k, v[2], mem[2])
		}
	}
	pr := sysctlInts(t, s, "net.ipv4.ip_local_port_range")
	if len(pr) != 2 || pr[1]-pr[0] < 60000 {
		t.Errorf("ip_local_port_range %v: want about 64k ports for generators", pr)
	}
	reserved := sysctlInts(t, s, "net.ipv4.ip_local_reserved_ports")
	for _, p := range []int64{4001, 9464} {
		if p >= pr[0] && p <= pr[1] && !slices.Contains(reserved, p) {
			t.Errorf("listening port %d is inside ip_local_port_range and not reserved", p)
		}
	}
	if sysctlInt(t, s, "net.ipv4.tcp_tw_reuse") != 1 {
		t.Error("net.ipv4.tcp_tw_reuse != 1")
	}
	if v := sysctlInt(t, s, "net.netfilter.nf_conntrack_max"); v < 2*conns {
		t.Errorf("nf_conntrack_max %d < 2 entries per connection (open and closing)", v)
	}
	if _, err := os.Stat("/proc/sys/net/ipv4"); err != nil {
		t.Log("no /proc/sys: key names not checked against a kernel")
		return
	}
	for _, l := range s {
		p := "/proc/sys/" + strings.ReplaceAll(l.key, ".", "/")
		if _, err := os.Stat(p); err != nil && !l.optional {
			t.Errorf("99-swarmgate.conf:%d: %s does not exist on this kernel (%v)", l.line, l.key, err)
		}
	}
}

// --- Dockerfile -------------------------------------------------------------

type instruction struct {
	cmd  string // upper case
	args string
	line int
}

type stage struct {
	base, name string
	ins        []instruction
}

// parseDockerfile splits deploy/Dockerfile into stages of instructions
// (comments dropped, continuation lines joined).
func parseDockerfile(t *testing.T) []stage {
	t.Helper()
	var stages []stage
	var cur strings.Builder
	start := 0
	flush := func() {
		s := strings.TrimSpace(cur.String())
		cur.Reset()
		if s == "" {
			return
		}
		cmd, args, _ := strings.Cut(s, " ")
		in := instruction{strings.ToUpper(cmd), strings.TrimSpace(args), start}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			var base, name string
			for i := 0; i < len(f); i++ {
				switch {
				case strings.HasPrefix(f[i], "--"):
				case strings.EqualFold(f[i], "AS") && i+1 < len(f):
					name = f[i+1]
					i++
				default:
					base = f[i]
				}
			}
			stages = append(stages, stage{base: base, name: name})
			return
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("Dockerfile:%d: %s before the first FROM", in.line, in.cmd)
			}
			return
		}
		st := &stages[len(stages)-1]
		st.ins = append(st.ins, in)
	}
	for i, l := range strings.Split(string(readFile(t, "Dockerfile")), "\n") {
		s := strings.TrimSpace(l)
		if strings.HasPrefix(s, "#") {
			continue
		}
		if cur.Len() == 0 {
			if s == "" {
				continue
			}
			start = i + 1
		}
		if strings.HasSuffix(s, `\`) {
			cur.WriteString(strings.TrimSuffix(s, `\`) + " ")
			continue
		}
		cur.WriteString(s)
		flush()
	}
	flush()
	return stages
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.ins {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// execForm decodes a JSON-array (exec form) instruction argument.
func execForm(t *testing.T, in instruction) []string {
	t.Helper()
	var a []string
	if err := json.Unmarshal([]byte(in.args), &a); err != nil || len(a) == 0 {
		t.Fatalf("Dockerfile:%d: %s %s is not in exec form (distroless has no shell)", in.line, in.cmd, in.args)
	}
	return a
}

// dockerfileUID is the numeric user of the image's final stage.
func dockerfileUID(t *testing.T) int64 {
	t.Helper()
	st := parseDockerfile(t)
	users := st[len(st)-1].all("USER")
	if len(users) == 0 {
		t.Fatal("Dockerfile: the final stage sets no USER: it would run as root")
	}
	u, _, _ := strings.Cut(users[len(users)-1].args, ":")
	uid, err := strconv.ParseInt(u, 10, 64)
	if err != nil {
		t.Fatalf("Dockerfile: USER %q is not numeric (Kubernetes' runAsNonRoot cannot check a name)", u)
	}
	return uid
}

// TestDockerfile: multi-stage (a Go builder, a minimal runtime as the
// default last stage), a static trimmed version-stamped build of
// ./cmd/swarmgate, a numeric non-root USER, the listen and metrics ports
// exposed, a HEALTHCHECK in exec form on the metrics port, the key in a
// volume the user owns, and no RUN in the runtime stage (no shell there).
func TestDockerfile(t *testing.T) {
	st := parseDockerfile(t)
	if len(st) < 2 {
		t.Fatalf("%d stage(s): want a builder and a runtime stage", len(st))
	}
	final := st[len(st)-1]
	if final.name != "swarmgate" {
		t.Errorf("the last stage (the default target) is %q, want swarmgate", final.name)
	}
	if !strings.Contains(st[0].base, "GO_IMAGE") && !strings.HasPrefix(st[0].base, "golang:") {
		t.Errorf("first stage FROM %s: want the Go toolchain", st[0].base)
	}
	// Resolve ARG defaults for the FROM lines.
	args := map[string]string{}
	for _, l := range strings.Split(string(readFile(t, "Dockerfile")), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "ARG" {
			if k, v, ok := strings.Cut(f[1], "="); ok {
				args[k] = v
			}
		}
	}
	base := os.Expand(final.base, func(k string) string { return args[k] })
	if !strings.HasPrefix(base, "gcr.io/distroless/static") && base != "scratch" {
		t.Errorf("runtime FROM %s: want distroless/static or scratch", base)
	}
	if r := final.all("RUN"); len(r) > 0 {
		t.Errorf("Dockerfile:%d: RUN in the runtime stage (distroless has no shell)", r[0].line)
	}

	// The build.
	var build *instruction
	for _, s := range st {
		for _, in := range s.all("RUN") {
			if strings.Contains(in.args, "go build") && strings.Contains(in.args, "./cmd/swarmgate") {
				build = &in
			}
		}
	}
	if build == nil {
		t.Fatal("no RUN go build … ./cmd/swarmgate")
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X main.version="} {
		if !strings.Contains(build.args, want) {
			t.Errorf("Dockerfile:%d: go build without %s", build.line, want)
		}
	}

	// User, ports, health check, entrypoint.
	uid := dockerfileUID(t)
	if uid == 0 {
		t.Error("USER 0")
	}
	ep := final.all("ENTRYPOINT")
	cmds := final.all("CMD")
	if len(ep) != 1 || len(cmds) != 1 {
		t.Fatalf("want one ENTRYPOINT and one CMD, have %d and %d", len(ep), len(cmds))
	}
	if e := execForm(t, ep[0]); len(e) != 1 || e[0] != "/swarmgate" {
		t.Errorf("ENTRYPOINT %v, want [/swarmgate]", e)
	}
	flags, pos := parseArgs(execForm(t, cmds[0]))
	if len(pos) > 0 {
		t.Errorf("CMD positional arguments %q", pos)
	}
	for _, n := range flags.names {
		if !knownFlags[n] {
			t.Errorf("CMD: -%s is not a server flag", n)
		}
	}
	exposed := map[string]bool{}
	for _, in := range final.all("EXPOSE") {
		for _, p := range strings.Fields(in.args) {
			exposed[strings.TrimSuffix(p, "/tcp")] = true
		}
	}
	listenPort := multiaddrPort(t, flags.values["listen"])
	metricsPort := hostPortPort(t, flags.values["metrics"])
	for _, p := range []int32{listenPort, metricsPort} {
		if !exposed[strconv.Itoa(int(p))] {
			t.Errorf("port %d (CMD) is not EXPOSEd", p)
		}
	}
	hc := final.all("HEALTHCHECK")
	if len(hc) != 1 {
		t.Fatalf("want one HEALTHCHECK, have %d", len(hc))
	}
	_, hcCmd, ok := strings.Cut(hc[0].args, "CMD ")
	if !ok {
		t.Fatalf("HEALTHCHECK %q has no CMD", hc[0].args)
	}
	h := execForm(t, instruction{"HEALTHCHECK", strings.TrimSpace(hcCmd), hc[0].line})
	hf, hpos := parseArgs(h[1:])
	if h[0] != "/swarmgate" || len(hpos) != 1 || hpos[0] != "healthcheck" {
		t.Errorf("HEALTHCHECK %v: want /swarmgate healthcheck -url …", h)
	}
	if u := hf.values["url"]; !strings.HasPrefix(u, "http://127.0.0.1:"+strconv.Itoa(int(metricsPort))+"/") {
		t.Errorf("HEALTHCHECK -url %q is not this container's metrics port %d", u, metricsPort)
	}

	// The key: in a volume, in a directory the user owns.
	keyDir := path.Dir(flags.values["key"])
	vols := final.all("VOLUME")
	if len(vols) == 0 || !slices.Contains(execForm(t, vols[0]), keyDir) {
		t.Errorf("the key's directory %s is not a VOLUME: with a read-only root the key could not be created", keyDir)
	}
	owned := false
	for _, in := range final.all("COPY") {
		f := strings.Fields(in.args)
		if len(f) > 0 && f[len(f)-1] == keyDir && strings.Contains(in.args, "--chown="+strconv.FormatInt(uid, 10)) {
			owned = true
		}
	}
	if !owned {
		t.Errorf("%s is not created owned by uid %d: a fresh volume there would be root's", keyDir, uid)
	}
}

// TestDockerignore: the build context leaves out what the image never
// needs (VCS data, profiles, nested modules, deploy itself) and keeps
// go.mod, go.sum and the sources.
func TestDockerignore(t *testing.T) {
	var pats []string
	for _, l := range strings.Split(string(readFile(t, repoRoot, ".dockerignore")), "\n") {
		if s := strings.TrimSpace(l); s != "" && !strings.HasPrefix(s, "#") {
			pats = append(pats, s)
		}
	}
	for _, want := range []string{".git", "profiles", "bench/peers", "deploy"} {
		if !slices.Contains(pats, want) {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
	for _, p := range pats {
		if matched, _ := filepath.Match(p, "go.mod"); matched || p == "*" || p == "*.go" || p == "**/*.go" {
			t.Errorf(".dockerignore pattern %q excludes sources the build needs", p)
		}
	}
}
