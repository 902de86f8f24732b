package layering

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// clockPackages keep deadlines: a handshake, keepalive, negotiation or
// stream deadline that a wall-clock step moves is dropped or fires at
// once, so they count on time.Time's monotonic reading (Sub, Since,
// Until, Add), which Unix and UnixNano discard.
var clockPackages = []string{"engine", "mux", "libp2p", "security", "multistream", "ws"}

// wallClock are the calls that turn an instant into wall-clock numbers,
// or back.
var wallClock = map[string]bool{"Unix": true, "UnixNano": true, "UnixMilli": true, "UnixMicro": true}

// The issue 13 review found deadlines computed from UnixNano, which a
// wall-clock step moves; none may come back in the packages that keep
// deadlines (admission's source-table sweep, wall time by design, is not
// among them). A call that converts a time the protocol carries as wall
// clock (circuit relay's expiry in Unix seconds) says so on its line with
// a "// wall clock:" comment.
func TestDeadlinesMonotonic(t *testing.T) {
	root := filepath.Join("..", "..")
	for _, dir := range clockPackages {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
			if err != nil {
				return err
			}
			marked := map[int]bool{} // lines with a "wall clock:" comment
			for _, cg := range f.Comments {
				for _, c := range cg.List {
					if strings.Contains(c.Text, "wall clock:") {
						marked[fset.Position(c.Pos()).Line] = true
					}
				}
			}
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				if sel, ok := call.Fun.(*ast.SelectorExpr); ok && wallClock[sel.Sel.Name] && !marked[fset.Position(call.Pos()).Line] {
					t.Errorf("%s: %s drops the monotonic clock; keep deadlines as time.Time or durations since a monotonic epoch", fset.Position(call.Pos()), sel.Sel.Name)
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
