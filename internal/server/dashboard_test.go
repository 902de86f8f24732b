package server

import (
	"encoding/json"
	"flag"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/internal/testutil"
	"github.com/swarmgate/swarmgate/libp2p"
)

// dashboardPath is the Grafana dashboard operators import.
const dashboardPath = "../../bench/grafana/swarmgate-dashboard.json"

// describedNames records the metric names of every collector registered
// on it, vectors without children included (a Gather would miss them).
type describedNames struct{ names map[string]bool }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (d *describedNames) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		if m := fqName.FindStringSubmatch(desc.String()); m != nil {
			d.names[m[1]] = true
		}
	}
	return nil
}

func (d *describedNames) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		d.Register(c)
	}
}

func (d *describedNames) Unregister(prometheus.Collector) bool { return false }

// servedMetricNames are the families the server exports with its default
// flags: the engine's (admission's and the timer lag among them), the
// libp2p layer's, the roles' (Kademlia, circuit relay), and the Go (with scheduler
// metrics) and process collectors.
func servedMetricNames(t *testing.T) map[string]bool {
	d := &describedNames{names: map[string]bool{}}
	cfg := Flags(flag.NewFlagSet("test", flag.ContinueOnError))
	h, err := libp2p.New(libp2p.Config{Engine: engine.Config{Logger: testutil.Quiet, Registerer: d}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	r, err := attachRoles(cfg, h, d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	if r.kad == nil || r.relay == nil {
		t.Fatal("the default flags attach no Kademlia or no relay role")
	}
	d.MustRegister(
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsScheduler)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return d.names
}

// promqlNames returns the metric names an expression selects: identifiers
// outside label matchers, ranges, grouping clauses and strings that are
// not PromQL functions or keywords.
func promqlNames(expr string) []string {
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`"(?:[^"\\]|\\.)*"`), // strings
		regexp.MustCompile(`\{[^}]*\}`),         // label matchers
		regexp.MustCompile(`\[[^\]]*\]`),        // ranges
		regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`), // label lists
	} {
		expr = re.ReplaceAllString(expr, " ")
	}
	var names []string
	for _, id := range regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`).FindAllString(expr, -1) {
		if !promqlWords[id] {
			names = append(names, id)
		}
	}
	return names
}

var promqlWords = map[string]bool{}

func init() {
	for _, w := range strings.Fields(`sum min max avg count stddev stdvar topk bottomk quantile count_values group
		rate irate increase delta idelta deriv predict_linear histogram_quantile clamp_min clamp_max clamp abs
		time vector scalar label_replace label_join sort sort_desc and or unless bool offset e inf nan
		by without on ignoring group_left group_right
		avg_over_time max_over_time min_over_time sum_over_time count_over_time quantile_over_time last_over_time`) {
		promqlWords[w] = true
	}
}

// known reports whether name is a served family, or a histogram's or
// summary's series of one.
func known(served map[string]bool, name string) bool {
	if served[name] {
		return true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok && served[base] {
			return true
		}
	}
	return false
}

type dashPanel struct {
	Type    string `json:"type"`
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Panels  []dashPanel              `json:"panels"`
}

// Every PromQL expression of the dashboard selects only metrics the server
// exports, and every swarmgate family is on the dashboard, so neither side
// can be renamed without the other.
func TestDashboardMetricNames(t *testing.T) {
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID        string      `json:"uid"`
		Panels     []dashPanel `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	if dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatal("dashboard has no uid or no panels")
	}
	served := servedMetricNames(t)
	used := map[string]bool{}
	exprs := 0
	check := func(where, expr string) {
		names := promqlNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		for _, n := range names {
			if !known(served, n) {
				t.Errorf("%s: %q selects %s, which the server does not export", where, expr, n)
			}
			used[n] = true
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(n, suf); ok {
					used[base] = true
				}
			}
		}
	}
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			if p.Type != "row" && (p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24) {
				t.Errorf("panel %q: bad gridPos %+v", p.Title, p.GridPos)
			}
			for _, tg := range p.Targets {
				exprs++
				check("panel "+p.Title, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			// label_values(SELECTOR, LABEL): the selector part.
			sel, _, _ := strings.Cut(strings.TrimPrefix(v.Definition, "label_values("), ",")
			check("variable", sel)
		}
	}
	// Families deliberately left off the dashboard.
	offDashboard := []string{"swarmgate_connections_dialed_total"} // client role: loadgen's own engine
	for n := range served {
		if strings.HasPrefix(n, "swarmgate_") && !used[n] && !slices.Contains(offDashboard, n) {
			t.Errorf("%s is exported but on no panel", n)
		}
	}
	t.Logf("%d panels, %d expressions checked against %d served families", len(dash.Panels), exprs, len(served))
}

func TestPromQLNames(t *testing.T) {
	got := promqlNames(`histogram_quantile(0.99, sum by (le, instance) (rate(a_bucket{job=~"$job", x="y}"}[$__rate_interval]))) / on (instance) group_left b + clamp_min(c, 1)`)
	if !slices.Equal(got, []string{"a_bucket", "b", "c"}) {
		t.Fatalf("%v", got)
	}
}
