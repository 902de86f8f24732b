package main

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
)

// Metrics maps a metric name (README "loadgen JSON") to its value. Three
// states, kept apart everywhere the report shows a figure:
//   - a number: measured (after aggregation, the median of the runs);
//   - NaN: applies to this stack and scenario but could not be measured
//     (server CPU without -server-pid or -server-metrics): "unknown", null
//     in the JSON;
//   - absent: does not apply (phase timings of a raw WebSocket): "–".
type Metrics map[string]float64

// unknown is the value of a metric that applies but was not measured.
var unknown = math.NaN()

func (m Metrics) MarshalJSON() ([]byte, error) {
	out := make(map[string]*float64, len(m))
	for k, v := range m {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			out[k] = nil
			continue
		}
		out[k] = &v
	}
	return json.Marshal(out)
}

func (m *Metrics) UnmarshalJSON(b []byte) error {
	var in map[string]*float64
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	*m = make(Metrics, len(in))
	for k, v := range in {
		if v == nil {
			(*m)[k] = unknown
		} else {
			(*m)[k] = *v
		}
	}
	return nil
}

// Spread is how a metric varied over the -repeat runs: the smallest and
// largest run (the report's "min–max"; with three runs an interquartile
// range would be the median itself) and every run's value in run order.
type Spread struct {
	Min  float64   `json:"min"`
	Max  float64   `json:"max"`
	Runs []float64 `json:"runs"`
}

// stat is one figure with its spread: what the report formats and the
// capacity arithmetic consumes.
type stat struct {
	Median, Min, Max float64
	N                int  // runs behind it; 1 has no spread to show
	Known            bool // false: the metric applies but was not measured
}

// get returns the metric as a stat; ok is false when it does not apply.
func (r *Result) get(name string) (s stat, ok bool) {
	if r == nil {
		return s, false
	}
	v, ok := r.Metrics[name]
	if !ok {
		return s, false
	}
	if math.IsNaN(v) {
		return stat{Median: v, Min: v, Max: v}, true
	}
	s = stat{Median: v, Min: v, Max: v, N: max(1, r.Runs), Known: true}
	if sp, ok := r.Spread[name]; ok {
		s.Min, s.Max = sp.Min, sp.Max
		if sp.Runs != nil { // a merged report's spread lists no runs (merge.go)
			s.N = len(sp.Runs)
		}
	}
	return s, true
}

// median of xs (not modified); the mean of the middle two for an even count.
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return unknown
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// aggregate folds the runs of one stack and scenario into one Result: each
// metric's median and spread over the runs that measured it, errors summed,
// distinct notes kept, histograms pooled. A metric unknown in every run
// stays unknown.
func aggregate(runs []Result) Result {
	out := Result{Stack: runs[0].Stack, Scenario: runs[0].Scenario, Metrics: Metrics{}, Spread: map[string]Spread{}, Runs: len(runs)}
	var names []string
	seen := map[string]bool{}
	var notes []string
	for _, r := range runs {
		out.Errors += r.Errors
		if r.Note != "" && !slices.Contains(notes, r.Note) {
			notes = append(notes, r.Note)
		}
		for k := range r.Metrics {
			if !seen[k] {
				seen[k] = true
				names = append(names, k)
			}
		}
	}
	out.Note = strings.Join(notes, "; ")
	hists := make([]Histograms, len(runs))
	for i, r := range runs {
		hists[i] = r.Hists
	}
	out.Hists, _ = mergeHists(hists) // one shape: newHist
	for _, k := range names {
		var vals []float64
		for _, r := range runs {
			if v, ok := r.Metrics[k]; ok && !math.IsNaN(v) {
				vals = append(vals, v)
			}
		}
		if len(vals) == 0 {
			out.Metrics[k] = unknown
			continue
		}
		out.Metrics[k] = median(vals)
		out.Spread[k] = Spread{Min: slices.Min(vals), Max: slices.Max(vals), Runs: vals}
	}
	return out
}
