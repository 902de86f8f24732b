package relay

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/swarmgate/swarmgate/internal/testutil"
)

// TestJSThroughRelay: two js-libp2p nodes in Node use our relay over /ws:
// one reserves (it listens on <relay>/p2p-circuit), the other dials it
// through /p2p-circuit and echoes byte-exact (bench/peers/js/relay.mjs,
// @libp2p/circuit-relay-v2 4.2.13; testutil.JSDir says when it runs).
func TestJSThroughRelay(t *testing.T) {
	jsDir := testutil.JSDir(t, "@libp2p/circuit-relay-v2")
	for _, tc := range []struct {
		name    string
		cfg     Config
		limited bool
		bytes   int
	}{
		// js endpoints count both directions against the data limit.
		{"limited", Config{}, true, 32 << 10},
		{"unlimited", Config{CircuitDuration: -1, CircuitBytes: -1}, false, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := startRelay(t, tc.cfg, nil)
			target := tr.addr.String() + "/p2p/" + tr.host.ID().String()
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "node", "relay.mjs", target, "--bytes", itoa(tc.bytes))
			cmd.Dir = jsDir
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			runErr := cmd.Run()
			t.Logf("stdout: %s\nstderr:\n%s", stdout.String(), stderr.String())
			var s struct {
				OK           bool   `json:"ok"`
				Error        string `json:"error"`
				Limited      bool   `json:"limited"`
				LimitSeconds int    `json:"limitSeconds"`
				LimitBytes   int    `json:"limitBytes"`
				EchoBytes    int    `json:"echoBytes"`
			}
			lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil || !s.OK || runErr != nil {
				t.Fatalf("relay.mjs: exit %v, %+v, %v", runErr, s, err)
			}
			if s.EchoBytes != tc.bytes {
				t.Fatalf("echoed %d of %d bytes", s.EchoBytes, tc.bytes)
			}
			// js reports what is left of the limit: seconds from 120 down,
			// bytes from 128 KiB down by both directions' traffic.
			if s.Limited != tc.limited || (tc.limited && (s.LimitSeconds < 100 || s.LimitSeconds > 120 ||
				s.LimitBytes <= 0 || s.LimitBytes > DefaultCircuitBytes-2*tc.bytes)) {
				t.Fatalf("js saw limits %+v", s)
			}
			if made := counterValue(tr.relay.svc.m.made); made != 1 {
				t.Fatalf("%v circuits made", made)
			}
		})
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
