package deploy

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Container builds are opt-in beyond Docker: CI must not depend on one.
//
//	SWARMGATE_CONTAINER_BUILDER      the CLI, e.g. "podman --runtime runc" (default: docker, when `docker info` succeeds)
//	SWARMGATE_CONTAINER_BUILD_FLAGS  extra build flags, e.g. "--network host --pull=never"
//	SWARMGATE_CONTAINER_RUN_FLAGS    extra run flags, e.g. "--ulimit nofile=20000:20000"
const (
	envBuilder    = "SWARMGATE_CONTAINER_BUILDER"
	envBuildFlags = "SWARMGATE_CONTAINER_BUILD_FLAGS"
	envRunFlags   = "SWARMGATE_CONTAINER_RUN_FLAGS"
)

// containerCLI finds a container builder, or skips with the reason.
func containerCLI(t *testing.T) []string {
	t.Helper()
	if s := os.Getenv(envBuilder); s != "" {
		return strings.Fields(s)
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skipf("no container builder: docker is not installed; set %s (e.g. podman or buildah's podman) to build the image", envBuilder)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info").CombinedOutput(); err != nil {
		t.Skipf("no container builder: `docker info` failed (%v: %s); set %s=podman to use podman", err, lastLine(out), envBuilder)
	}
	return []string{"docker"}
}

// lastLine is the last non-blank line of a command's output (docker info
// ends with the reason the daemon cannot be reached).
func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// TestImage builds deploy/Dockerfile where a container builder is available
// and runs the image as an operator would: non-root with a read-only root
// file system and the key in a named volume. The stamped version prints;
// the HEALTHCHECK command passes against the running server; the server
// prints its /p2p/ address, drains and exits 0 on stop, and after a restart
// has the same peer ID (the key persisted in the volume, created by the
// non-root user).
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no image build")
	}
	if _, err := os.Stat(filepath.Join(repoRoot, "cmd", "swarmgate")); err != nil {
		t.Skipf("cmd/swarmgate is not in this tree yet: %v", err)
	}
	cli := containerCLI(t)
	podman := strings.Contains(cli[0], "podman") || strings.Contains(cli[0], "buildah")
	run := func(timeout time.Duration, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, cli[0], append(cli[1:], args...)...)
		cmd.Dir = repoRoot
		out, err := cmd.Output()
		if ee, ok := err.(*exec.ExitError); ok {
			err = fmt.Errorf("%s %s: %v: %s", cli[0], strings.Join(args, " "), err, ee.Stderr)
		}
		return string(out), err
	}

	// Base images: present, or pulled; else the build cannot run here.
	args := map[string]string{}
	for _, l := range strings.Split(string(readFile(t, "Dockerfile")), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "ARG" {
			if k, v, ok := strings.Cut(f[1], "="); ok {
				args[k] = v
			}
		}
	}
	for _, k := range []string{"GO_IMAGE", "RUNTIME_IMAGE"} {
		img := args[k]
		if _, err := run(time.Minute, "image", "inspect", img); err == nil {
			continue
		}
		if _, err := run(5*time.Minute, "pull", img); err != nil {
			t.Skipf("base image %s is not available here: %v", img, err)
		}
	}

	tag := fmt.Sprintf("localhost/swarmgate:deploy-test-%d", time.Now().UnixNano())
	build := []string{"build", "-f", "deploy/Dockerfile", "--build-arg", "VERSION=" + stampedVersion, "-t", tag}
	if podman {
		build = append(build, "--format", "docker") // OCI images drop HEALTHCHECK
	}
	build = append(build, strings.Fields(os.Getenv(envBuildFlags))...)
	if out, err := run(20*time.Minute, append(build, ".")...); err != nil {
		t.Fatalf("image build: %v\n%s", err, out)
	}
	t.Cleanup(func() { run(time.Minute, "rmi", "-f", tag) })

	out, err := run(time.Minute, "image", "inspect", "-f", "{{.Config.User}} {{json .Config.Healthcheck}}", tag)
	if err != nil {
		t.Fatal(err)
	}
	if uid := dockerfileUID(t); !strings.HasPrefix(out, fmt.Sprintf("%d:", uid)) {
		t.Errorf("image user %q, want %d", out, uid)
	}
	if !strings.Contains(out, "healthcheck") {
		t.Errorf("image has no HEALTHCHECK: %s", out)
	}

	runFlags := strings.Fields(os.Getenv(envRunFlags))
	if out, err := run(time.Minute, append(append([]string{"run", "--rm"}, runFlags...), tag, "version")...); err != nil || !strings.Contains(out, stampedVersion) {
		t.Errorf("version in the image: %q, %v; want %s", out, err, stampedVersion)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metrics := l.Addr().String()
	l.Close()
	name := fmt.Sprintf("swarmgate-deploy-test-%d", time.Now().UnixNano())
	vol := name + "-state"
	t.Cleanup(func() {
		run(time.Minute, "rm", "-f", name)
		run(time.Minute, "volume", "rm", "-f", vol)
	})
	server := append([]string{"run", "-d", "--name", name, "--read-only", "--network", "host", "-v", vol + ":/var/lib/swarmgate"}, runFlags...)
	server = append(server, tag, "-listen", "/ip4/127.0.0.1/tcp/0/ws", "-key", "/var/lib/swarmgate/node.key",
		"-metrics", metrics, "-drain-timeout", "5s")
	if _, err := run(time.Minute, server...); err != nil {
		t.Fatal(err)
	}
	peerID := regexp.MustCompile(`/ws/p2p/(12D3KooW\w+)`)
	waitUp := func(n int) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, herr := run(time.Minute, "exec", name, "/swarmgate", "healthcheck", "-url", "http://"+metrics+"/metrics")
			logs, _ := run(time.Minute, "logs", name)
			ids := peerID.FindAllStringSubmatch(logs, -1)
			if herr == nil && len(ids) >= n {
				return ids[n-1][1]
			}
			if time.Now().After(deadline) {
				t.Fatalf("server not up (start %d): healthcheck %v; stdout %q", n, herr, logs)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	id1 := waitUp(1)
	stop := func() {
		t.Helper()
		if _, err := run(2*time.Minute, "stop", "-t", "30", name); err != nil {
			t.Fatal(err)
		}
		if code, err := run(time.Minute, "inspect", "-f", "{{.State.ExitCode}}", name); err != nil || strings.TrimSpace(code) != "0" {
			t.Errorf("exit code after stop (drain): %q, %v; want 0", code, err)
		}
	}
	stop()
	if _, err := run(time.Minute, "start", name); err != nil {
		t.Fatal(err)
	}
	if id2 := waitUp(2); id2 != id1 {
		t.Errorf("peer ID %s after a restart, %s before: the key did not persist in the volume", id2, id1)
	}
	stop()
	t.Logf("image %s: user, HEALTHCHECK, version, read-only run, drain exit 0, identity %s kept across restarts", tag, id1)
}
