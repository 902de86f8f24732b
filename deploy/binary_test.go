package deploy

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// stampedVersion is what the binaries under test are built with, as the
// Dockerfile stamps its VERSION build argument.
const stampedVersion = "deploy-test-1.2.3"

var (
	buildOnce sync.Map // package path -> *builtBinary
)

type builtBinary struct {
	once sync.Once
	path string
	err  error
	out  []byte
}

// goBinary builds a command of the main module (./cmd/swarmgate, ./loadgen)
// once per test run, stamped as the Dockerfile stamps it, and returns its
// path.
// SWARMGATE_BIN gives a prebuilt swarmgate instead. It skips when the
// package is not in this tree.
func goBinary(t *testing.T, pkg string) string {
	t.Helper()
	if pkg == "./cmd/swarmgate" {
		if p := os.Getenv("SWARMGATE_BIN"); p != "" {
			return p
		}
	}
	if _, err := os.Stat(filepath.Join(repoRoot, filepath.FromSlash(pkg))); err != nil {
		t.Skipf("%s is not in this tree yet (%v): the checks against the real binary run once it is", pkg, err)
	}
	if testing.Short() {
		t.Skip("-short: not building the main module's commands")
	}
	v, _ := buildOnce.LoadOrStore(pkg, &builtBinary{})
	b := v.(*builtBinary)
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "swarmgate-deploy-test-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, filepath.Base(pkg))
		// The same build settings as the main module's tests, so CI's
		// build cache serves the packages and only the link is new; the
		// image's own flags (static, -trimpath) are TestDockerfile's and
		// TestImage's to check.
		cmd := exec.Command("go", "build", "-ldflags=-X main.version="+stampedVersion, "-o", b.path, pkg)
		cmd.Dir = repoRoot
		b.out, b.err = cmd.CombinedOutput()
	})
	if b.err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, b.err, b.out)
	}
	return b.path
}

// helpFlags are the flag names a command's -h output lists.
var helpFlag = regexp.MustCompile(`(?m)^\s*--?([a-z][a-z0-9-]*)\b`)

func helpFlags(t *testing.T, bin string, args ...string) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, append(args, "-h")...).CombinedOutput() // -h exits non-zero with the flag package
	m := map[string]bool{}
	for _, s := range helpFlag.FindAllStringSubmatch(string(out), -1) {
		m[s[1]] = true
	}
	if len(m) == 0 {
		t.Fatalf("%s %v -h listed no flags:\n%s", bin, args, out)
	}
	return m
}

// TestBinaryFlags: every flag the deployment files give the server (the
// StatefulSet's arguments, the ConfigMap's and the example config's keys,
// the unit's ExecStart, the image's CMD) is one `swarmgate -h` lists.
func TestBinaryFlags(t *testing.T) {
	bin := goBinary(t, "./cmd/swarmgate")
	have := helpFlags(t, bin)
	f := loadFleet(t)
	used := map[string]string{}
	for _, n := range f.args(t).names {
		used[n] = "StatefulSet args"
	}
	for k := range f.serverConfig(t) {
		used[k] = "ConfigMap config.json"
	}
	for k := range decodeConfig(t, "config.example.json", readFile(t, "config.example.json")) {
		used[k] = "config.example.json"
	}
	u := parseUnit(t, readFile(t, "systemd", "swarmgate.service"))
	ua, _ := parseArgs(strings.Fields(unitValue(t, u, "Service", "ExecStart"))[1:])
	for _, n := range ua.names {
		used[n] = "swarmgate.service ExecStart"
	}
	st := parseDockerfile(t)
	da, _ := parseArgs(execForm(t, st[len(st)-1].all("CMD")[0]))
	for _, n := range da.names {
		used[n] = "Dockerfile CMD"
	}
	for n, where := range used {
		if !have[n] {
			t.Errorf("%s uses -%s, which swarmgate -h does not list", where, n)
		}
	}
	var stale []string
	for n := range knownFlags {
		if !have[n] {
			stale = append(stale, n)
		}
	}
	if len(stale) > 0 {
		slices.Sort(stale)
		t.Logf("knownFlags in this test that swarmgate -h does not list (update the list): %v", stale)
	}
}

// TestLoadgenJobFlags: every flag the load-test Job gives `loadgen run` is
// one `loadgen run -h` lists.
func TestLoadgenJobFlags(t *testing.T) {
	lg := goBinary(t, "./loadgen")
	have := helpFlags(t, lg, "run")
	f := loadFleet(t)
	args, _ := parseArgs(f.job.Spec.Template.Spec.Containers[0].Args)
	for _, n := range args.names {
		if !have[n] {
			t.Errorf("the loadgen Job uses -%s, which loadgen run -h does not list", n)
		}
	}
}

// TestBinarySubcommands: what the deployment files call besides the server
// itself. `version` prints the version stamped with -X main.version (the
// Dockerfile's VERSION); `keygen -o FILE` writes a key (mode 0600) and
// prints its peer ID, and never replaces an existing key (the Secret and
// the state directory hold identities the bootstrap lists name);
// `healthcheck -url U` exits 0 on HTTP 200 and non-zero otherwise (the
// image's HEALTHCHECK).
func TestBinarySubcommands(t *testing.T) {
	bin := goBinary(t, "./cmd/swarmgate")
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if err != nil {
			t.Logf("%v: %v; stderr: %s", args, err, stderr.String())
		}
		return stdout.String(), err
	}

	t.Run("version", func(t *testing.T) {
		if out, err := run("version"); err != nil || !strings.Contains(out, stampedVersion) {
			t.Errorf("swarmgate version: %q, %v; want the stamped %s", out, err, stampedVersion)
		}
	})

	t.Run("keygen", func(t *testing.T) {
		key := filepath.Join(t.TempDir(), "swarmgate-0.key")
		out, err := run("keygen", "-o", key)
		id := regexp.MustCompile(`12D3KooW[1-9A-HJ-NP-Za-km-z]{44}`).FindString(out)
		if err != nil || id == "" || strings.TrimSpace(out) != id {
			t.Fatalf("swarmgate keygen -o: stdout %q, %v; want the peer ID alone", out, err)
		}
		fi, err := os.Stat(key)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("key file mode %v: want 0600", fi.Mode().Perm())
		}
		before := readFile(t, key)
		out, err = run("keygen", "-o", key)
		if !bytes.Equal(readFile(t, key), before) {
			t.Fatal("keygen replaced an existing key")
		}
		if err == nil && strings.TrimSpace(out) != id {
			t.Errorf("keygen on an existing key printed %q, not its peer ID %s", out, id)
		}
	})

	t.Run("healthcheck", func(t *testing.T) {
		ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		defer ok.Close()
		bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
		defer bad.Close()
		if _, err := run("healthcheck", "-url", ok.URL+"/metrics"); err != nil {
			t.Errorf("healthcheck on an HTTP 200 endpoint: %v", err)
		}
		if _, err := run("healthcheck", "-url", bad.URL+"/metrics"); err == nil {
			t.Error("healthcheck on an HTTP 503 endpoint exited 0")
		}
		closed := bad.URL
		bad.Close()
		if _, err := run("healthcheck", "-url", closed+"/metrics"); err == nil {
			t.Error("healthcheck with nothing listening exited 0")
		}
	})
}
