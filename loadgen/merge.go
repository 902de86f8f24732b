package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

// loadgen merge: the reports of generators that loaded the same server or
// fleet at the same time (a Kubernetes Job of N generator pods) combined
// into one report of the whole load. Per stack and scenario:
//
//   - counts and rates (connections, bytes, messages, requests, cycles and
//     their per-second rates) are summed: the fleet's total;
//   - percentiles are recomputed from the generators' HDR histograms pooled
//     into one distribution (averaging percentiles has no meaning);
//   - the client's CPU per unit is the mean weighted by each generator's
//     work (its connections, bytes, messages, requests or cycles);
//   - the server's cost per unit (CPU per handshake, byte or request, RSS
//     and goroutines per connection, idle CPU) is a server reading divided
//     by one generator's own work: while several generators load the
//     server at once the reading holds everyone's load, so it is kept only
//     when exactly one input carries it and is unknown otherwise;
//   - readings every generator takes of the same server's state
//     (table_entries) are their largest, not their sum.
//
// The merged report lists each input's own headline figures
// (generatorRow) and renders like any report.

// mergeCmd is `loadgen merge [flags] A.json B.json …`.
func mergeCmd(args []string) error {
	fs := flag.NewFlagSet("merge", flag.ContinueOnError)
	var plan planTarget
	plan.register(fs)
	htmlOut := fs.String("html", "", "write the HTML report here")
	csvOut := fs.String("csv", "", "write the CSV here")
	jsonOut := fs.String("json", "", "write the merged JSON report here; - prints it alone on stdout (no Markdown)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: loadgen merge [flags] A.json B.json …\n\nCombines the JSON reports of generators that ran at the same time against the same server or fleet (loadgen run -json, or kubectl logs of a generator pod that ran it with -json -) into one report: counts and rates summed, percentiles from the pooled HDR histograms, a row per generator. The Markdown goes to stdout.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("merge: want the generators' JSON reports, e.g. loadgen merge gen-0.json gen-1.json")
	}
	var ins []mergeInput
	for _, path := range fs.Args() {
		rep, err := readReport(path)
		if err != nil {
			return err
		}
		ins = append(ins, mergeInput{name: path, rep: rep})
	}
	rep, err := mergeReports(ins)
	if err != nil {
		return err
	}
	rep.NoiseCost = noiseCost(rep.Results)
	rep.Capacity = computeCapacity(rep.Results, rep.Machine, plan)
	if *jsonOut != "-" {
		if err := writeMarkdown(os.Stdout, rep); err != nil {
			return err
		}
	}
	return writeFiles(rep, *jsonOut, *csvOut, *htmlOut)
}

// mergeInput is one generator's report and what to call it.
type mergeInput struct {
	name string // the file name given to loadgen merge
	rep  report
}

// generatorRow is one input of a merged report: where and when it ran,
// and its own figures of what the merge sums, with its percentiles.
type generatorRow struct {
	Name    string            `json:"name"`
	Started time.Time         `json:"started"`
	Seconds float64           `json:"seconds"`
	Server  string            `json:"server"`
	Version string            `json:"version,omitempty"`
	Machine machine           `json:"machine"`
	Results []generatorResult `json:"results"`
}

type generatorResult struct {
	Stack    string            `json:"stack"`
	Scenario string            `json:"scenario"`
	Runs     int               `json:"runs"`
	Metrics  Metrics           `json:"metrics"`
	Spread   map[string]Spread `json:"spread,omitempty"`
	Errors   int               `json:"errors"`
}

// result is the row as a Result, for the report's formatting helpers.
func (g *generatorResult) result() *Result {
	if g == nil {
		return nil
	}
	return &Result{Stack: g.Stack, Scenario: g.Scenario, Runs: g.Runs, Metrics: g.Metrics, Spread: g.Spread, Errors: g.Errors}
}

func (g generatorRow) find(stack, scenario string) *generatorResult {
	for i := range g.Results {
		if g.Results[i].Stack == stack && g.Results[i].Scenario == scenario {
			return &g.Results[i]
		}
	}
	return nil
}

// mergeRule is how loadgen merge combines one metric of its inputs.
type mergeRule int

const (
	ruleNone       mergeRule = iota // no rule: unknown in the merged report
	ruleSum                         // counts and rates: the fleet's total
	ruleMax                         // a reading of the server's state that every generator took
	rulePercentile                  // from the pooled histograms
	ruleWeighted                    // a per-unit cost of the generator's own work: weighted mean
	ruleServer                      // a server cost per unit: only from a generator alone
)

// summedCounts are the counts among the metrics; every *_per_sec rate is
// summed too.
var summedCounts = []string{"conns", "streams", "cycles", "requests", "replies_checked", "requests_in_flight", "reservations", "circuits", "relayed_bytes"}

// ruleOf is the rule for a metric, by its name, so that a scenario added
// later merges by the same naming conventions.
func ruleOf(metric string) mergeRule {
	if _, _, _, ok := parsePctMetric(metric); ok {
		return rulePercentile
	}
	switch {
	case metric == "table_entries", metric == "bytes_per_circuit":
		return ruleMax
	case strings.HasPrefix(metric, "server_"), strings.HasPrefix(metric, "kernel_"):
		return ruleServer
	case strings.HasPrefix(metric, "client_"), strings.HasSuffix(metric, "_per_reply"):
		return ruleWeighted
	case strings.HasSuffix(metric, "_per_sec"), slices.Contains(summedCounts, metric):
		return ruleSum
	}
	return ruleNone
}

// workMetrics weigh the per-unit means: the first a result has is its
// generator's work (dht: requests; throughput: bytes; messages: messages;
// churn: cycles; connect and hold: connections; relay: bytes relayed).
var workMetrics = []string{"requests", "bytes_per_sec", "msgs_per_sec", "cycles", "conns", "relayed_bytes"}

func workOf(r *Result) float64 {
	for _, m := range workMetrics {
		if v, ok := r.Metrics[m]; ok {
			return v
		}
	}
	return 1
}

// mergeReports combines the inputs (see the top of this file).
func mergeReports(ins []mergeInput) (report, error) {
	var out report
	for _, in := range ins {
		switch {
		case in.rep.Schema > reportSchema:
			return out, fmt.Errorf("%s: schema %d, newer than this loadgen's %d", in.name, in.rep.Schema, reportSchema)
		case len(in.rep.Generators) > 0:
			return out, fmt.Errorf("%s is itself a merged report: merge the generators' own reports", in.name)
		case len(in.rep.Results) == 0:
			return out, fmt.Errorf("%s: no results", in.name)
		}
	}
	first := ins[0].rep
	out = report{Schema: reportSchema, Started: first.Started, Machine: first.Machine, Method: first.Method, Parameters: first.Parameters}
	end := first.Started
	var servers, versions []string
	for i, in := range ins {
		r := in.rep
		if r.Started.Before(out.Started) {
			out.Started = r.Started
		}
		if e := runEnd(r); e.After(end) {
			end = e
		}
		if !slices.Contains(servers, r.Server) {
			servers = append(servers, r.Server)
		}
		if r.Version != "" && !slices.Contains(versions, r.Version) {
			versions = append(versions, r.Version)
		}
		for _, nr := range r.NotRun {
			if !slices.Contains(out.NotRun, nr) {
				out.NotRun = append(out.NotRun, nr)
			}
		}
		out.Method.Repeat = max(out.Method.Repeat, r.Method.Repeat)
		if l := float64(r.Method.OtherLoad); finite(l) && !(float64(out.Method.OtherLoad) >= l) {
			out.Method.OtherLoad = r.Method.OtherLoad
		}
		if i > 0 {
			p, q := &out.Parameters, r.Parameters
			p.ConnectN += q.ConnectN
			p.ConnectPar += q.ConnectPar
			p.HoldN += q.HoldN
			p.DHTN += q.DHTN
			p.DHTInflight += q.DHTInflight
			p.MessageConns += q.MessageConns
			p.ChurnPar += q.ChurnPar
		}
		out.Generators = append(out.Generators, generatorOf(in))
	}
	out.Seconds = end.Sub(out.Started).Seconds()
	out.Server = strings.Join(servers, "; ")
	out.Version = strings.Join(versions, ", ")
	if len(servers) > 1 {
		out.Notes = append(out.Notes, "the generators loaded different targets; the sums are the fleet's load")
	}
	if n := notAtOnce(ins); n != "" {
		out.Notes = append(out.Notes, n)
	}

	// One merged result per stack and scenario, in the order they first
	// appear.
	type key struct{ stack, scenario string }
	var keys []key
	parts := map[key][]mergePart{}
	for _, in := range ins {
		for i := range in.rep.Results {
			r := &in.rep.Results[i]
			k := key{r.Stack, r.Scenario}
			if _, ok := parts[k]; !ok {
				keys = append(keys, k)
			}
			parts[k] = append(parts[k], mergePart{gen: in.name, r: r})
		}
	}
	serverMany := false
	for _, k := range keys {
		res, many := mergeResults(parts[k])
		serverMany = serverMany || many
		if n := len(parts[k]); n < len(ins) {
			res.Note = joinNotes(res.Note, fmt.Sprintf("ran on %d of the %d generators", n, len(ins)))
		}
		out.Results = append(out.Results, res)
	}
	if serverMany {
		out.Notes = append(out.Notes, "the server's cost per unit (CPU per handshake, byte or request; memory, goroutines and idle CPU per connection) is unknown where several generators measured it: each divided a reading of the server that held every generator's load by its own work alone; a generator that loads the server alone measures it")
	}
	return out, nil
}

// runEnd is when a report's run ended.
func runEnd(r report) time.Time {
	return r.Started.Add(time.Duration(r.Seconds * float64(time.Second)))
}

// notAtOnce says which inputs did not run at the same time as the others,
// or "" when every run overlaps every other.
func notAtOnce(ins []mergeInput) string {
	late, early := 0, 0 // the last to start, the first to end
	for i, in := range ins {
		if in.rep.Started.After(ins[late].rep.Started) {
			late = i
		}
		if runEnd(in.rep).Before(runEnd(ins[early].rep)) {
			early = i
		}
	}
	if !ins[late].rep.Started.After(runEnd(ins[early].rep)) {
		return ""
	}
	return fmt.Sprintf("the inputs did not all run at the same time (%s started %s after %s ended): their sums are not one simultaneous load",
		ins[late].name, clock(ins[late].rep.Started.Sub(runEnd(ins[early].rep))), ins[early].name)
}

// generatorOf is an input's row: its own figures of what the merge sums,
// and its percentiles.
func generatorOf(in mergeInput) generatorRow {
	r := in.rep
	g := generatorRow{Name: in.name, Started: r.Started, Seconds: r.Seconds, Server: r.Server, Version: r.Version, Machine: r.Machine}
	for _, res := range r.Results {
		gr := generatorResult{Stack: res.Stack, Scenario: res.Scenario, Runs: res.Runs, Metrics: Metrics{}, Errors: res.Errors}
		for k, v := range res.Metrics {
			if rule := ruleOf(k); rule == ruleSum || rule == rulePercentile {
				gr.Metrics[k] = v
				if sp, ok := res.Spread[k]; ok {
					if gr.Spread == nil {
						gr.Spread = map[string]Spread{}
					}
					gr.Spread[k] = sp
				}
			}
		}
		g.Results = append(g.Results, gr)
	}
	return g
}

// mergePart is one input's result for a stack and scenario.
type mergePart struct {
	gen string
	r   *Result
}

// mergeResults combines the inputs' results for one stack and scenario.
// Summed figures keep a spread from the sum of the inputs' smallest runs
// to the sum of their largest; the others from the smallest of any input
// to the largest. A merged spread lists no runs: the runs of different
// generators are not paired. serverMany reports a server figure left
// unknown because several inputs carried it.
func mergeResults(parts []mergePart) (_ Result, serverMany bool) {
	r0 := parts[0].r
	out := Result{Stack: r0.Stack, Scenario: r0.Scenario, Metrics: Metrics{}, Spread: map[string]Spread{}}
	var note string
	hists := make([]Histograms, len(parts))
	var names []string
	for i, p := range parts {
		out.Runs = max(out.Runs, p.r.Runs)
		out.Errors += p.r.Errors
		if p.r.Note != "" {
			note = joinNotes(note, p.gen+": "+p.r.Note)
		}
		hists[i] = p.r.Hists
		for k := range p.r.Metrics {
			if !slices.Contains(names, k) {
				names = append(names, k)
			}
		}
	}
	slices.Sort(names)
	var dropped int64
	out.Hists, dropped = mergeHists(hists)
	if dropped > 0 {
		note = joinNotes(note, fmt.Sprintf("%d latency values beyond the first histogram's range were left out", dropped))
	}

	var noHist, noRule []string
	serverFrom := map[string]bool{} // the inputs a server figure was taken from
	for _, k := range names {
		var have []mergePart // the inputs the metric applies to
		var stats []stat
		for _, p := range parts {
			if s, ok := p.r.get(k); ok {
				have = append(have, p)
				stats = append(stats, s)
			}
		}
		known := 0
		for _, s := range stats {
			if s.Known {
				known++
			}
		}
		set := func(v, lo, hi float64) {
			out.Metrics[k] = v
			out.Spread[k] = Spread{Min: lo, Max: hi}
		}
		out.Metrics[k] = unknown
		switch ruleOf(k) {
		case ruleSum:
			if known < len(stats) {
				break // an unknown part makes the total unknown
			}
			var v, lo, hi float64
			for _, s := range stats {
				v, lo, hi = v+s.Median, lo+s.Min, hi+s.Max
			}
			set(v, lo, hi)
		case ruleMax:
			if known == 0 {
				break
			}
			v, lo, hi := math.Inf(-1), math.Inf(-1), math.Inf(-1)
			for _, s := range stats {
				if s.Known {
					v, lo, hi = max(v, s.Median), max(lo, s.Min), max(hi, s.Max)
				}
			}
			set(v, lo, hi)
		case rulePercentile:
			base, q, unit, _ := parsePctMetric(k)
			h := out.Hists[histOf(base)]
			all := h != nil
			for _, p := range have {
				all = all && p.r.Hists[histOf(base)] != nil
			}
			if !all {
				noHist = append(noHist, k)
				break
			}
			lo, hi := spanOf(stats)
			set(pctValue(h, q, unit), lo, hi)
		case ruleWeighted:
			var sum, weight float64
			for i, s := range stats {
				if w := workOf(have[i].r); s.Known && finite(w) && w > 0 {
					sum += s.Median * w
					weight += w
				}
			}
			if weight == 0 || known < len(stats) {
				break
			}
			lo, hi := spanOf(stats)
			set(sum/weight, lo, hi)
		case ruleServer:
			for i, s := range stats {
				if !s.Known {
					continue
				}
				if known > 1 {
					serverMany = true
					break
				}
				serverFrom[have[i].gen] = true
				out.Metrics[k] = s.Median
				if sp, ok := have[i].r.Spread[k]; ok {
					out.Spread[k] = sp
				}
			}
		default:
			noRule = append(noRule, k)
		}
		if !finite(out.Metrics[k]) {
			delete(out.Spread, k)
		}
	}
	if serverMany {
		note = joinNotes(note, fmt.Sprintf("server figures per unit unknown: %d generators loaded the server at once", len(parts)))
	}
	if len(serverFrom) > 0 && len(parts) > 1 {
		from := mapKeys(serverFrom)
		note = joinNotes(note, "server figures from "+strings.Join(from, ", ")+" alone, the only input that measured the server")
	}
	if len(noHist) > 0 {
		note = joinNotes(note, "unknown without every input's histograms (a report before schema 3?): "+strings.Join(noHist, ", "))
	}
	if len(noRule) > 0 {
		note = joinNotes(note, "loadgen merge has no rule for "+strings.Join(noRule, ", "))
	}
	out.Note = note
	return out, serverMany
}

// spanOf is the smallest min and largest max of the known stats.
func spanOf(stats []stat) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, s := range stats {
		if s.Known {
			lo, hi = min(lo, s.Min), max(hi, s.Max)
		}
	}
	return lo, hi
}

func mapKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func joinNotes(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// headline is the figure a per-generator row shows for a scenario: its
// first summed metric that is not a parameter in catalog order (hold has
// only its connections), else the first summed metric by name.
func headline(rep report, sc string) (metricInfo, bool) {
	for _, params := range []bool{false, true} {
		for _, mi := range metricsOf(rep.Results, sc, true) {
			if ruleOf(mi.name) == ruleSum && mi.param == params {
				return mi, true
			}
		}
	}
	return metricInfo{}, false
}

// mergedLine says how a merged report's figures were made.
func mergedLine(rep report) string {
	return fmt.Sprintf("Merged from %d generators that ran at once (loadgen merge): counts and rates are their sums, with the sums of their smallest and largest runs; percentiles come from their HDR histograms pooled into one; client CPU per unit is the mean weighted by each generator's work; the server's cost per unit is kept only where one generator alone measured the server. Machine and method: the first generator's; each generator's figures are below.",
		len(rep.Generators))
}

// writeMergedMarkdown is the merged report's line and notes under the
// header; nothing for one generator's report.
func writeMergedMarkdown(w io.Writer, rep report) {
	if len(rep.Generators) == 0 {
		return
	}
	fmt.Fprintf(w, "%s\n\n", mergedLine(rep))
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "Note: %s.\n\n", n)
	}
}

// generatorCell is one generator's headline figure for a stack.
func generatorCell(g generatorRow, st, sc string, mi metricInfo) string {
	gr := g.find(st, sc)
	if gr == nil {
		return na
	}
	s := cell(gr.result(), mi)
	if gr.Errors > 0 {
		s += fmt.Sprintf(" (%d errors)", gr.Errors)
	}
	return s
}

// writeGeneratorRowsMarkdown is a scenario's headline figure per generator.
func writeGeneratorRowsMarkdown(w io.Writer, rep report, sc string) {
	mi, ok := headline(rep, sc)
	if len(rep.Generators) == 0 || !ok {
		return
	}
	stacks := stacksOf(rep.Results, sc)
	fmt.Fprintf(w, "\nBy generator, %s:\n\n| generator |", mi.label)
	for _, st := range stacks {
		fmt.Fprintf(w, " %s |", stackLabel(st))
	}
	fmt.Fprintf(w, "\n|---|%s\n", strings.Repeat("---:|", len(stacks)))
	for _, g := range rep.Generators {
		fmt.Fprintf(w, "| %s |", g.Name)
		for _, st := range stacks {
			fmt.Fprintf(w, " %s |", generatorCell(g, st, sc, mi))
		}
		fmt.Fprintln(w)
	}
}

// generatorInfo is an input's row in the generators table.
func generatorInfo(g generatorRow) []string {
	return []string{g.Name, g.Started.UTC().Format("2006-01-02 15:04:05 UTC"), clock(time.Duration(g.Seconds * float64(time.Second))),
		g.Server, machineLine(g.Machine), orNA(g.Version)}
}

var generatorColumns = []string{"generator", "started", "took", "server", "machine", "swarmgate"}

// writeGeneratorsMarkdown lists a merged report's inputs.
func writeGeneratorsMarkdown(w io.Writer, rep report) {
	if len(rep.Generators) == 0 {
		return
	}
	fmt.Fprintf(w, "## Generators\n\n| %s |\n|%s\n", strings.Join(generatorColumns, " | "), strings.Repeat("---|", len(generatorColumns)))
	for _, g := range rep.Generators {
		fmt.Fprintf(w, "| %s |\n", strings.Join(generatorInfo(g), " | "))
	}
	fmt.Fprintln(w)
}

// writeGeneratorsHTML is the merged report's section: how it was made, its
// inputs, and each scenario's headline figure per generator.
func writeGeneratorsHTML(w io.Writer, rep report) {
	if len(rep.Generators) == 0 {
		return
	}
	fmt.Fprintf(w, "<section id=generators><h2>Generators</h2><p class=note>%s</p>\n", html.EscapeString(mergedLine(rep)))
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "<p class=note>Note: %s.</p>\n", html.EscapeString(n))
	}
	fmt.Fprint(w, "<div class=tw><table><tr>")
	for _, c := range generatorColumns {
		fmt.Fprintf(w, "<th>%s", html.EscapeString(c))
	}
	fmt.Fprintln(w)
	for _, g := range rep.Generators {
		fmt.Fprint(w, "<tr>")
		for _, c := range generatorInfo(g) {
			fmt.Fprintf(w, "<td>%s", html.EscapeString(c))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprint(w, "</table></div>\n")
	for _, sc := range scenarioOrder(rep.Results) {
		mi, ok := headline(rep, sc)
		if !ok {
			continue
		}
		stacks := stacksOf(rep.Results, sc)
		fmt.Fprintf(w, "<h3>%s: %s by generator</h3><div class=tw><table><tr><th>generator", html.EscapeString(sc), html.EscapeString(mi.label))
		for _, st := range stacks {
			fmt.Fprintf(w, "<th>%s", html.EscapeString(stackLabel(st)))
		}
		fmt.Fprintln(w)
		for _, g := range rep.Generators {
			fmt.Fprintf(w, "<tr><td>%s", html.EscapeString(g.Name))
			for _, st := range stacks {
				fmt.Fprintf(w, "<td>%s", html.EscapeString(generatorCell(g, st, sc, mi)))
			}
			fmt.Fprintln(w)
		}
		fmt.Fprint(w, "</table></div>\n")
	}
	fmt.Fprint(w, "</section>\n")
}

// reportInLog is the JSON report in b: b itself when it is one JSON
// document, else the document inside a log. `kubectl logs` of a generator
// pod that ran `loadgen run -json -` holds the progress loadgen wrote on
// stderr, then the report json.MarshalIndent wrote on stdout: from a line
// "{" to the next line "}" (every line inside is indented). A line that
// starts with "loadgen: " inside it is stderr that the container runtime
// interleaved, and is left out.
func reportInLog(b []byte) ([]byte, error) {
	if json.Valid(b) {
		return b, nil
	}
	lines := bytes.Split(b, []byte("\n"))
	start := slices.IndexFunc(lines, func(l []byte) bool { return string(bytes.TrimRight(l, "\r")) == "{" })
	if start < 0 {
		last := ""
		for _, l := range lines {
			if t := bytes.TrimSpace(l); len(t) > 0 {
				last = string(t)
			}
		}
		return nil, fmt.Errorf("no JSON report in it (its last line: %q)", last)
	}
	var doc [][]byte
	for _, l := range lines[start:] {
		l = bytes.TrimRight(l, "\r")
		if bytes.HasPrefix(l, []byte("loadgen: ")) {
			continue
		}
		doc = append(doc, l)
		if string(l) == "}" {
			return bytes.Join(doc, []byte("\n")), nil
		}
	}
	return nil, errors.New("the JSON report is cut short (a log's tail only? kubectl logs -l shows 10 lines unless --tail=-1)")
}
