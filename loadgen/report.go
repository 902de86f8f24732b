package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

// noiseRatio is what Noise costs over plaintext on the same transport:
// (x+noise)/(x+plaintext) for one metric.
type noiseRatio struct {
	Transport string  `json:"transport"` // ws or wss
	Scenario  string  `json:"scenario"`
	Metric    string  `json:"metric"`
	Noise     float64 `json:"noise"`
	Plaintext float64 `json:"plaintext"`
	Ratio     float64 `json:"ratio"`
}

// costMetrics are the figures the Noise-on-TLS question is about.
var costMetrics = []struct{ scenario, metric string }{
	{"connect", "server_cpu_us_per_conn"},
	{"connect", "client_cpu_us_per_conn"},
	{"connect", "latency_p50_ms"},
	{"throughput-1", "server_cpu_ns_per_byte"},
	{"throughput-16", "server_cpu_ns_per_byte"},
	{"hold", "server_rss_bytes_per_conn"},
	{"messages", "rtt_p50_us"},
}

func noiseCost(results []Result) []noiseRatio {
	get := func(stack, scenario, metric string) (float64, bool) {
		for _, r := range results {
			if r.Stack == stack && r.Scenario == scenario {
				v, ok := r.Metrics[metric]
				return v, ok
			}
		}
		return 0, false
	}
	var out []noiseRatio
	for _, tr := range []string{"wss", "ws"} {
		for _, cm := range costMetrics {
			n, ok1 := get(tr+"+noise", cm.scenario, cm.metric)
			p, ok2 := get(tr+"+plaintext", cm.scenario, cm.metric)
			if !ok1 || !ok2 || p == 0 {
				continue
			}
			out = append(out, noiseRatio{Transport: tr, Scenario: cm.scenario, Metric: cm.metric, Noise: n, Plaintext: p, Ratio: n / p})
		}
	}
	return out
}

// tables groups results by scenario: the stacks that ran it and the union
// of their metric names.
func tables(results []Result) (order []string, stacks map[string][]string, metrics map[string][]string) {
	stacks, metrics = map[string][]string{}, map[string][]string{}
	seen := map[string]map[string]bool{}
	for _, r := range results {
		if _, ok := stacks[r.Scenario]; !ok {
			order = append(order, r.Scenario)
			seen[r.Scenario] = map[string]bool{}
		}
		stacks[r.Scenario] = append(stacks[r.Scenario], r.Stack)
		for m := range r.Metrics {
			if !seen[r.Scenario][m] {
				seen[r.Scenario][m] = true
				metrics[r.Scenario] = append(metrics[r.Scenario], m)
			}
		}
	}
	for _, ms := range metrics {
		sort.Strings(ms)
	}
	return order, stacks, metrics
}

func find(results []Result, stack, scenario string) *Result {
	for i := range results {
		if results[i].Stack == stack && results[i].Scenario == scenario {
			return &results[i]
		}
	}
	return nil
}

func fmtValue(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

// writeMarkdown prints the stack-by-scenario report.
func writeMarkdown(w io.Writer, rep report) {
	fmt.Fprintf(w, "# swarmgate loadgen report\n\n")
	fmt.Fprintf(w, "Server: %s. Generator: %s/%s, %d CPUs, %s. Run took %.0f s.\n\n", rep.Server, rep.Machine.GOOS, rep.Machine.GOARCH, rep.Machine.CPUs, rep.Machine.Go, rep.Seconds)
	order, stacks, metrics := tables(rep.Results)
	for _, sc := range order {
		fmt.Fprintf(w, "## %s\n\n| metric | %s |\n|---|%s\n", sc, strings.Join(stacks[sc], " | "), strings.Repeat("---:|", len(stacks[sc])))
		for _, m := range metrics[sc] {
			fmt.Fprintf(w, "| %s |", m)
			for _, st := range stacks[sc] {
				r := find(rep.Results, st, sc)
				if v, ok := r.Metrics[m]; ok {
					fmt.Fprintf(w, " %s |", fmtValue(v))
				} else {
					fmt.Fprint(w, " – |")
				}
			}
			fmt.Fprintln(w)
		}
		fmt.Fprint(w, "| errors |")
		for _, st := range stacks[sc] {
			fmt.Fprintf(w, " %d |", find(rep.Results, st, sc).Errors)
		}
		fmt.Fprintln(w)
		for _, st := range stacks[sc] {
			if r := find(rep.Results, st, sc); r.Note != "" {
				fmt.Fprintf(w, "\n%s: %s\n", st, r.Note)
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "## Cost of Noise on top of the transport\n\n(x+noise)/(x+plaintext), same run:\n\n| transport | scenario | metric | noise | plaintext | ratio |\n|---|---|---|---:|---:|---:|\n")
	for _, nr := range rep.NoiseCost {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %.2f× |\n", nr.Transport, nr.Scenario, nr.Metric, fmtValue(nr.Noise), fmtValue(nr.Plaintext), nr.Ratio)
	}
	if len(rep.NotRun) > 0 {
		fmt.Fprintf(w, "\nNot run: %s.\n", strings.Join(rep.NotRun, "; "))
	}
	if rep.Profiles != "" {
		fmt.Fprintf(w, "\nProfiles and the JSON/HTML reports: %s (see profiles/README.md).\n", rep.Profiles)
	}
}

func writeFiles(rep report, rf runFlags) error {
	if rf.jsonPath != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(rf.jsonPath, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if rf.csvPath != "" {
		f, err := os.Create(rf.csvPath)
		if err != nil {
			return err
		}
		cw := csv.NewWriter(f)
		cw.Write([]string{"stack", "scenario", "metric", "value"})
		for _, r := range rep.Results {
			keys := make([]string, 0, len(r.Metrics))
			for k := range r.Metrics {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				cw.Write([]string{r.Stack, r.Scenario, k, strconv.FormatFloat(r.Metrics[k], 'g', -1, 64)})
			}
			cw.Write([]string{r.Stack, r.Scenario, "errors", strconv.Itoa(r.Errors)})
		}
		cw.Flush()
		f.Close()
		if err := cw.Error(); err != nil {
			return err
		}
	}
	if rf.htmlOut != "" {
		f, err := os.Create(rf.htmlOut)
		if err != nil {
			return err
		}
		defer f.Close()
		writeHTML(f, rep)
	}
	return nil
}

// writeHTML renders every metric as a bar chart across stacks (inline SVG,
// no scripts, works offline).
func writeHTML(w io.Writer, rep report) {
	fmt.Fprintf(w, "<!doctype html><meta charset=utf-8><title>swarmgate loadgen</title><style>body{font:14px sans-serif;margin:2em}svg{margin:0 2em 1em 0}h2{margin-top:2em}</style>\n")
	fmt.Fprintf(w, "<h1>swarmgate loadgen</h1><p>%s — %s/%s, %d CPUs, %s</p>\n", html.EscapeString(rep.Server), rep.Machine.GOOS, rep.Machine.GOARCH, rep.Machine.CPUs, rep.Machine.Go)
	order, stacks, metrics := tables(rep.Results)
	for _, sc := range order {
		fmt.Fprintf(w, "<h2>%s</h2>\n", html.EscapeString(sc))
		for _, m := range metrics[sc] {
			var vals []float64
			peak := 0.0
			for _, st := range stacks[sc] {
				v := find(rep.Results, st, sc).Metrics[m]
				vals = append(vals, v)
				peak = max(peak, v)
			}
			const barW, gap, h = 70, 12, 160
			width := len(vals)*(barW+gap) + gap
			fmt.Fprintf(w, "<svg width=%d height=%d role=img aria-label=%q><text x=4 y=14>%s</text>", width, h+50, m, html.EscapeString(m))
			for i, v := range vals {
				bh := 0.0
				if peak > 0 {
					bh = v / peak * (h - 30)
				}
				x := gap + i*(barW+gap)
				fmt.Fprintf(w, "<rect x=%d y=%.0f width=%d height=%.0f fill=#4a7bd0></rect>", x, float64(h)-bh, barW, bh)
				fmt.Fprintf(w, "<text x=%d y=%.0f font-size=11>%s</text>", x, float64(h)-bh-3, fmtValue(v))
				fmt.Fprintf(w, "<text x=%d y=%d font-size=11>%s</text>", x, h+15, html.EscapeString(stacks[sc][i]))
			}
			fmt.Fprint(w, "</svg>\n")
		}
	}
	fmt.Fprint(w, "<h2>Cost of Noise on top of the transport</h2><table border=1 cellpadding=4><tr><th>transport<th>scenario<th>metric<th>noise<th>plaintext<th>ratio\n")
	for _, nr := range rep.NoiseCost {
		fmt.Fprintf(w, "<tr><td>%s<td>%s<td>%s<td>%s<td>%s<td>%.2f×\n", nr.Transport, nr.Scenario, nr.Metric, fmtValue(nr.Noise), fmtValue(nr.Plaintext), nr.Ratio)
	}
	fmt.Fprint(w, "</table>\n")
}
