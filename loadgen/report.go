package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// reportSchema is the JSON document's version (README "loadgen JSON").
// 2: metrics are medians over -repeat runs, with spread, runs, capacity,
// method and parameters; null marks a figure that applies but is unknown.
// 3: results carry the HDR histograms behind their percentiles; a merged
// report (loadgen merge) lists its generators.
const reportSchema = 3

// report is the whole run, the JSON document.
type report struct {
	Schema     int          `json:"schema"`
	Started    time.Time    `json:"started"`
	Seconds    float64      `json:"seconds"`
	Server     string       `json:"server"`
	Version    string       `json:"version,omitempty"` // swarmgate revision of the generator (and of a child server)
	Machine    machine      `json:"machine"`
	Method     method       `json:"method"`
	Parameters params       `json:"parameters"`
	Capacity   capacity     `json:"capacity"`
	Results    []Result     `json:"results"`
	NoiseCost  []noiseRatio `json:"noise_cost"`
	Profiles   string       `json:"profiles,omitempty"` // the pprof profiles' directory, relative to the working directory
	NotRun     []string     `json:"not_run,omitempty"`
	// Generators are the inputs of a merged report, one row each
	// (merge.go); Notes say what the merge could not vouch for.
	Generators []generatorRow `json:"generators,omitempty"`
	Notes      []string       `json:"notes,omitempty"`

	profilesHref string // Profiles relative to the HTML report's folder
}

type machine struct {
	GOOS        string `json:"goos"`
	GOARCH      string `json:"goarch"`
	CPUs        int    `json:"cpus"`
	Go          string `json:"go"`
	CPUModel    string `json:"cpu_model,omitempty"`
	Kernel      string `json:"kernel,omitempty"`
	MemoryBytes int64  `json:"memory_bytes,omitempty"`
	PageSize    int    `json:"page_size,omitempty"`
	// The kernel memory of one TCP socket outside its buffers, and how it
	// was estimated (socketObjectBytes).
	SocketObjectBytes  float64 `json:"socket_object_bytes,omitempty"`
	SocketObjectSource string  `json:"socket_object_source,omitempty"`
}

// method says how the figures were taken.
type method struct {
	Repeat    int     `json:"repeat"`
	Spread    string  `json:"spread"`     // "min-max": the smallest and largest of the runs
	ServerCPU string  `json:"server_cpu"` // schedstat, ticks, metrics (Prometheus, ticks) or unknown
	ClientCPU string  `json:"client_cpu"` // schedstat or ticks
	Duration  float64 `json:"duration_s"` // timed scenarios (throughput, messages, churn)
	Settle    float64 `json:"settle_s"`   // hold's settling and idle-CPU window
	// OtherLoad is the CPU other processes used on this machine during the
	// run, in % of all its cores (the machine's busy time from /proc/stat
	// less the generator's and a local server's); null when unknown.
	OtherLoad num `json:"other_load_pct"`
}

// noiseRatio is what Noise costs over plaintext on the same transport:
// (x+noise)/(x+plaintext) for one metric, from the medians, with the range
// the ratio can take within both figures' spreads.
type noiseRatio struct {
	Transport string  `json:"transport"` // ws or wss
	Scenario  string  `json:"scenario"`
	Metric    string  `json:"metric"`
	Noise     float64 `json:"noise"`
	Plaintext float64 `json:"plaintext"`
	Ratio     float64 `json:"ratio"`
	RatioMin  float64 `json:"ratio_min"` // Noise's min over plaintext's max
	RatioMax  float64 `json:"ratio_max"` // Noise's max over plaintext's min
	// Measurable is false when the ratio's range includes 1: the two
	// spreads overlap, and the report says "no measurable difference".
	Measurable bool `json:"measurable"`
	Runs       int  `json:"runs"` // the fewer runs of the two; 1 has no spread to judge by
}

// costMetrics are the figures the Noise-on-TLS question is about; every
// throughput-k scenario adds its server CPU per byte after connect.
var costMetrics = []struct{ scenario, metric string }{
	{"connect", "server_cpu_us_per_conn"},
	{"connect", "client_cpu_us_per_conn"},
	{"connect", "latency_p50_ms"},
	{"throughput-*", "server_cpu_ns_per_byte"},
	{"hold", "server_rss_bytes_per_conn"},
	{"messages", "rtt_p50_us"},
}

func noiseCost(results []Result) []noiseRatio {
	var out []noiseRatio
	for _, tr := range []string{"wss", "ws"} {
		for _, cm := range costMetrics {
			scs := []string{cm.scenario}
			if cm.scenario == "throughput-*" {
				scs = nil
				for _, sc := range scenarioOrder(results) {
					if strings.HasPrefix(sc, "throughput-") {
						scs = append(scs, sc)
					}
				}
			}
			for _, sc := range scs {
				n, ok1 := find(results, tr+"+noise", sc).get(cm.metric)
				p, ok2 := find(results, tr+"+plaintext", sc).get(cm.metric)
				if !ok1 || !ok2 || !n.Known || !p.Known || p.Median <= 0 || p.Min <= 0 {
					continue
				}
				nr := noiseRatio{Transport: tr, Scenario: sc, Metric: cm.metric, Noise: n.Median, Plaintext: p.Median,
					Ratio: n.Median / p.Median, RatioMin: max(0, n.Min) / p.Max, RatioMax: n.Max / p.Min, Runs: min(n.N, p.N)}
				nr.Measurable = !(nr.RatioMin <= 1 && 1 <= nr.RatioMax)
				out = append(out, nr)
			}
		}
	}
	return out
}

func find(results []Result, stack, scenario string) *Result {
	for i := range results {
		if results[i].Stack == stack && results[i].Scenario == scenario {
			return &results[i]
		}
	}
	return nil
}

// scenarioOrder is the scenarios of a report in catalog order: connect,
// hold, throughput by stream count, messages, churn, then any other.
func scenarioOrder(results []Result) []string {
	var out []string
	for _, r := range results {
		if !slices.Contains(out, r.Scenario) {
			out = append(out, r.Scenario)
		}
	}
	rank := func(sc string) (int, int) {
		if k, ok := strings.CutPrefix(sc, "throughput-"); ok {
			n, _ := strconv.Atoi(k)
			return 2, n
		}
		if i := slices.Index(scenarioNames, sc); i >= 0 {
			return i, 0
		}
		return len(scenarioNames), 0
	}
	slices.SortStableFunc(out, func(a, b string) int {
		ra, ka := rank(a)
		rb, kb := rank(b)
		if ra != rb {
			return ra - rb
		}
		return ka - kb
	})
	return out
}

// stackOrder is the stacks of a report in allStacks order, then any other.
func stackOrder(results []Result) []string {
	var out []string
	for _, st := range allStacks {
		if ranStack(results, st.Name) {
			out = append(out, st.Name)
		}
	}
	for _, r := range results {
		if !slices.Contains(out, r.Stack) {
			out = append(out, r.Stack)
		}
	}
	return out
}

// stacksOf is the stacks that ran scenario sc, in report order.
func stacksOf(results []Result, sc string) []string {
	var out []string
	for _, st := range stackOrder(results) {
		if find(results, st, sc) != nil {
			out = append(out, st)
		}
	}
	return out
}

// metricsOf is the metrics of scenario sc in catalog order, then any the
// catalog lacks by name. Parameters are included only with params.
func metricsOf(results []Result, sc string, params bool) []metricInfo {
	var out []metricInfo
	known := map[string]bool{}
	present := func(name string) bool {
		for _, r := range results {
			if _, ok := r.Metrics[name]; ok && r.Scenario == sc {
				return true
			}
		}
		return false
	}
	for _, mi := range catalog(sc).metrics {
		known[mi.name] = true
		if present(mi.name) && (params || !mi.param) {
			out = append(out, mi)
		}
	}
	var extra []string
	for _, r := range results {
		if r.Scenario != sc {
			continue
		}
		for k := range r.Metrics {
			if !known[k] && !slices.Contains(extra, k) {
				extra = append(extra, k)
			}
		}
	}
	slices.Sort(extra)
	for _, k := range extra {
		out = append(out, metricInfo{name: k, label: k, unit: uCount})
	}
	return out
}

// cell is one figure as every report prints it: the median with its
// spread, "unknown", or "–" when the metric does not apply.
func cell(r *Result, mi metricInfo) string {
	s, ok := r.get(mi.name)
	if !ok {
		return na
	}
	return fmtStat(mi.unit, s)
}

// readReport loads a JSON report (schema 1 to 3): a file loadgen wrote,
// or a log that holds one (reportInLog).
func readReport(path string) (report, error) {
	var rep report
	b, err := os.ReadFile(path)
	if err != nil {
		return rep, err
	}
	doc, err := reportInLog(b)
	if err != nil {
		return rep, fmt.Errorf("%s: %w", path, err)
	}
	if err := json.Unmarshal(doc, &rep); err != nil {
		return rep, fmt.Errorf("%s: %w", path, err)
	}
	for i := range rep.Results {
		if rep.Results[i].Runs == 0 {
			rep.Results[i].Runs = 1 // schema 1: one run
		}
	}
	return rep, nil
}

func writeJSON(w io.Writer, rep report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// csvUnits is the unit a CSV value is in (that of the metric's JSON name).
var csvUnits = map[unit]string{uCount: "", uRate: "/s", uMs: "ms", uUs: "µs", uNsPerByte: "ns/B", uBytes: "B", uBytesPerSec: "B/s", uPct: "%"}

// writeCSV writes one row per scenario, metric and stack in report order,
// values unscaled in the metric's own unit; "–" where the metric does not
// apply to the stack, "unknown" where it was not measured.
func writeCSV(w io.Writer, rep report) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"stack", "scenario", "metric", "unit", "median", "min", "max", "runs"})
	raw := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	for _, sc := range scenarioOrder(rep.Results) {
		for _, mi := range metricsOf(rep.Results, sc, true) {
			for _, st := range stacksOf(rep.Results, sc) {
				r := find(rep.Results, st, sc)
				row := []string{st, sc, mi.name, csvUnits[mi.unit]}
				s, ok := r.get(mi.name)
				switch {
				case !ok:
					row = append(row, na, na, na, na)
				case !s.Known:
					row = append(row, "unknown", "unknown", "unknown", strconv.Itoa(r.Runs))
				default:
					row = append(row, raw(s.Median), raw(s.Min), raw(s.Max), strconv.Itoa(s.N))
				}
				cw.Write(row)
			}
		}
		for _, st := range stacksOf(rep.Results, sc) {
			r := find(rep.Results, st, sc)
			cw.Write([]string{st, sc, "errors", "", strconv.Itoa(r.Errors), na, na, strconv.Itoa(r.Runs)})
		}
	}
	cw.Flush()
	return cw.Error()
}

// writeFiles writes the JSON, CSV and HTML reports that have a path; "-"
// is stdout.
func writeFiles(rep report, jsonPath, csvPath, htmlPath string) error {
	if htmlPath != "" && rep.Profiles != "" {
		if rel, err := filepath.Rel(filepath.Dir(htmlPath), rep.Profiles); err == nil {
			rep.profilesHref = rel
		}
	}
	for _, out := range []struct {
		path  string
		write func(io.Writer, report) error
	}{{jsonPath, writeJSON}, {csvPath, writeCSV}, {htmlPath, writeHTML}} {
		if out.path == "" {
			continue
		}
		if out.path == "-" {
			if err := out.write(os.Stdout, rep); err != nil {
				return fmt.Errorf("stdout: %w", err)
			}
			continue
		}
		f, err := os.Create(out.path)
		if err != nil {
			return err
		}
		err = out.write(f, rep)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", out.path, err)
		}
	}
	return nil
}

// finite reports a usable number (not NaN, not ±Inf).
func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
