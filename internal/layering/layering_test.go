// Package layering holds the test that keeps swarmgate's packages in their
// layers: a lower layer never imports a higher one. The README's layout
// table and ARCHITECTURE.md describe the layers; this test enforces them.
package layering

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/swarmgate/swarmgate"

// allowed lists, for each package of the module, the module's packages it
// may import directly. A package missing here fails the test: a new
// package must take a place in the layers.
var allowed = map[string][]string{
	"internal/wire":     nil,
	"internal/bufpool":  nil,
	"internal/testutil": nil, // tests only
	// tests only: a hand-driven libp2p client for the adversarial tests
	"internal/adversary": {"internal/testutil", "multistream", "mux", "security"},
	"simd":               nil,
	"ws":                 {"internal/wire", "simd"},
	"ws/conformance":     {"ws"},
	"multistream":        {"internal/wire"},
	"admission":          nil,
	"security":           {"internal/wire"},
	"mux":                {"internal/wire", "internal/bufpool"},
	"engine/tls13":       {"internal/wire"},
	"engine":             {"admission", "engine/tls13", "internal/bufpool", "internal/wire", "simd", "ws"},
	"libp2p":             {"engine", "admission", "internal/bufpool", "internal/wire", "multistream", "mux", "security", "ws"},
	"libp2p/kad/pb":      nil, // generated protobuf types
	"libp2p/kad":         {"libp2p", "libp2p/kad/pb", "engine", "admission", "internal/bufpool", "internal/wire", "mux"},
	"libp2p/relay":       {"libp2p", "engine", "admission", "internal/bufpool", "internal/wire", "mux"},
	"internal/server":    {"libp2p", "libp2p/kad", "libp2p/relay", "engine", "admission", "security"},
	"cmd/swarmgate":      {"internal/server", "libp2p", "security", "simd"},
	"loadgen":            {"internal/server", "libp2p", "libp2p/kad", "libp2p/kad/pb", "libp2p/relay", "engine", "admission", "mux", "simd", "ws", "internal/bufpool", "internal/wire"},
	"examples/node":      {"libp2p", "mux"},
	"bench":              {"engine", "libp2p", "mux", "security", "simd", "ws", "multistream", "internal/bufpool", "internal/wire"},
	"internal/layering":  nil,
}

// forbiddenDeps are transitive rules the README promises in so many words.
var forbiddenDeps = map[string][]string{
	// The WebSocket event loop knows nothing of libp2p.
	"engine": {"mux", "security", "multistream", "libp2p"},
	// Policy parses no wire format.
	"admission": {"ws", "mux", "multistream", "security", "engine"},
}

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func TestLayers(t *testing.T) {
	cmd := exec.Command("go", "list", "-json", module+"/...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		seen++
		name := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		allow, ok := allowed[name]
		if !ok {
			t.Errorf("package %s has no place in the layers: add it to allowed", name)
			continue
		}
		for _, imp := range p.Imports {
			own, isOwn := strings.CutPrefix(imp, module+"/")
			if !isOwn {
				continue
			}
			if !slices.Contains(allow, own) {
				t.Errorf("%s imports %s: a lower layer must not import a higher one (allowed: %v)", name, own, allow)
			}
		}
		for _, bad := range forbiddenDeps[name] {
			for _, d := range p.Deps {
				if d == module+"/"+bad || strings.HasPrefix(d, module+"/"+bad+"/") {
					t.Errorf("%s depends on %s (through its imports)", name, d)
				}
			}
		}
	}
	if seen < 10 {
		t.Fatalf("go list found only %d packages", seen)
	}
}
