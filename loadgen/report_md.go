package main

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// sig3 rounds v to three significant digits: a planning figure carries no
// more precision than that.
func sig3(v float64) float64 {
	if v == 0 || !finite(v) {
		return v
	}
	p := math.Pow(10, math.Floor(math.Log10(math.Abs(v)))-2)
	return math.Round(v/p) * p
}

// fmtCount prints a count with its spread, rounded to three significant
// digits with thousands separators: "262,000 (255,000–270,000)".
func fmtCount(s span) string {
	if s.Unmeasurable {
		return "not measurable"
	}
	if !s.known() {
		return "unknown"
	}
	out := number(sig3(float64(s.Value)), 0)
	if s.Lo != s.Hi {
		out += " (" + number(sig3(float64(s.Lo)), 0) + "–" + number(sig3(float64(s.Hi)), 0) + ")"
	}
	return out
}

// fmtSpan prints a derived figure in unit u with its range.
func fmtSpan(u unit, s span) string {
	if s.Unmeasurable {
		return "not measurable"
	}
	st := s.stat()
	if s.Lo == s.Hi {
		st.N = 1
	}
	return fmtStat(u, st)
}

// header lines shared by the Markdown and HTML reports.
func runLine(rep report) string {
	parts := []string{rep.Started.UTC().Format("2006-01-02 15:04 UTC")}
	if rep.Seconds > 0 {
		parts = append(parts, "took "+clock(time.Duration(rep.Seconds*float64(time.Second))))
	}
	parts = append(parts, "server: "+rep.Server)
	if rep.Version != "" {
		parts = append(parts, "swarmgate "+rep.Version)
	}
	return strings.Join(parts, " · ")
}

func machineLine(m machine) string {
	parts := []string{}
	if m.CPUModel != "" {
		parts = append(parts, m.CPUModel)
	}
	parts = append(parts, fmt.Sprintf("%d cores", m.CPUs))
	if m.MemoryBytes > 0 {
		parts = append(parts, fmtUnit(uBytes, float64(m.MemoryBytes))+" memory")
	}
	if m.Kernel != "" {
		parts = append(parts, m.Kernel)
	}
	parts = append(parts, m.Go, m.GOOS+"/"+m.GOARCH)
	return strings.Join(parts, ", ")
}

func methodLine(rep report) string {
	me := rep.Method
	runs := "one run per figure (no spread)"
	if me.Repeat > 1 {
		runs = fmt.Sprintf("each figure is the median of %d runs (min–max)", me.Repeat)
	}
	cpu := map[string]string{
		"schedstat": "/proc/PID/schedstat (ns)",
		"ticks":     "/proc/PID/stat (10 ms ticks)",
		"metrics":   "the server's process_cpu_seconds_total (10 ms ticks)",
		"unknown":   "unknown (no -server-pid or -server-metrics)",
		"":          "/proc/PID/stat (10 ms ticks)", // schema 1
	}
	out := fmt.Sprintf("%s; server CPU from %s, generator CPU from %s; both share this machine's cores", runs, cpu[me.ServerCPU], cpu[me.ClientCPU])
	if l := float64(me.OtherLoad); finite(l) && me.Repeat > 0 {
		out += fmt.Sprintf("; other processes used %s of the machine's CPU during the run", fmtUnit(uPct, l))
		if l >= busyMachine {
			out += " (a busy machine: rates are low and CPU costs high against an idle one)"
		}
	}
	return out
}

// busyMachine is the other processes' share of the CPU (%) from which the
// report warns that its figures are pessimistic.
const busyMachine = 10

// planLine states the plan's target.
func planLine(p planTarget) string {
	return fmt.Sprintf("%s peers, %s new connections/s, %s Mbit/s of payload, each machine used to %s of its cores and memory",
		number(p.Peers, 0), number(p.NewPerSec, 0), number(p.Mbps, 0), number(p.Headroom*100, 0)+" %")
}

// sectionLine says what a scenario was given (its parameters).
func sectionLine(rep report, sc string) string {
	p := rep.Parameters
	first := func(metric string) float64 {
		for _, r := range rep.Results {
			if r.Scenario == sc {
				if v, ok := r.Metrics[metric]; ok && finite(v) {
					return v
				}
			}
		}
		return 0
	}
	dur := ""
	if rep.Method.Duration > 0 {
		dur = fmt.Sprintf(", %s each run", fmtUnit(uMs, rep.Method.Duration*1000))
	}
	switch {
	case sc == "connect":
		s := number(first("conns"), 0) + " connections"
		if p.ConnectPar > 0 {
			s += fmt.Sprintf(", %d in flight", p.ConnectPar)
		}
		return s + "; each does one echo"
	case sc == "hold":
		return number(first("conns"), 0) + " idle connections, one echo each, then measured after two GCs; CPU in % of one core"
	case strings.HasPrefix(sc, "throughput-"):
		k := strings.TrimPrefix(sc, "throughput-")
		if k == "1" {
			return "1 echo stream on one libp2p connection (raw: 1 connection), 32 KiB writes" + dur
		}
		return fmt.Sprintf("%s echo streams on one libp2p connection (raw: %s connections), 32 KiB writes%s", k, k, dur)
	case sc == "messages":
		s := number(first("conns"), 0) + " connections"
		if p.MessageSize > 0 {
			s += fmt.Sprintf(", %d-byte messages", p.MessageSize)
		}
		return s + dur
	case sc == "relay":
		return relaySectionLine(first)
	case sc == "churn":
		s := "connect, one echo, close"
		if p.ChurnPar > 0 {
			s += fmt.Sprintf(", %d in flight", p.ChurnPar)
		}
		return s + dur
	}
	return ""
}

// noiseFigure prints a Noise/plaintext ratio, or says there is no
// measurable difference when its range includes 1.
func noiseFigure(nr noiseRatio) string {
	if nr.Runs > 1 && !nr.Measurable {
		return fmt.Sprintf("no measurable difference (%.2f–%.2f×)", nr.RatioMin, nr.RatioMax)
	}
	if nr.Runs <= 1 {
		return fmt.Sprintf("%.2f× (one run: no spread)", nr.Ratio)
	}
	return fmt.Sprintf("%.2f× (%.2f–%.2f)", nr.Ratio, nr.RatioMin, nr.RatioMax)
}

// metricByName finds a metric's catalog entry.
func metricByName(sc, name string) metricInfo {
	for _, mi := range catalog(sc).metrics {
		if mi.name == name {
			return mi
		}
	}
	return metricInfo{name: name, label: name}
}

// transportLabel names ws / wss for people.
func transportLabel(tr string) string {
	if tr == "wss" {
		return "/tls/ws"
	}
	return "/" + tr
}

// writeMarkdown prints the report: the capacity summary first, then every
// scenario's figures per stack, then what Noise costs.
func writeMarkdown(w io.Writer, rep report) error {
	fmt.Fprintf(w, "# swarmgate loadgen report\n\n")
	fmt.Fprintf(w, "%s  \nMachine: %s  \nMethod: %s.\n\n", runLine(rep), machineLine(rep.Machine), methodLine(rep))
	writeMergedMarkdown(w, rep)

	writeCapacityMarkdown(w, rep)

	for _, sc := range scenarioOrder(rep.Results) {
		stacks := stacksOf(rep.Results, sc)
		fmt.Fprintf(w, "## %s: %s\n\n", sc, catalog(sc).title)
		if l := sectionLine(rep, sc); l != "" {
			fmt.Fprintf(w, "%s.\n\n", l)
		}
		fmt.Fprint(w, "| metric |")
		for _, st := range stacks {
			fmt.Fprintf(w, " %s |", stackLabel(st))
		}
		fmt.Fprintf(w, "\n|---|%s\n", strings.Repeat("---:|", len(stacks)))
		for _, mi := range metricsOf(rep.Results, sc, false) {
			fmt.Fprintf(w, "| %s |", mi.label)
			for _, st := range stacks {
				fmt.Fprintf(w, " %s |", cell(find(rep.Results, st, sc), mi))
			}
			fmt.Fprintln(w)
		}
		fmt.Fprint(w, "| errors (all runs) |")
		for _, st := range stacks {
			fmt.Fprintf(w, " %d |", find(rep.Results, st, sc).Errors)
		}
		fmt.Fprintln(w)
		for _, st := range stacks {
			if r := find(rep.Results, st, sc); r.Note != "" {
				fmt.Fprintf(w, "\n%s: %s\n", stackLabel(st), r.Note)
			}
		}
		if sc == "connect" {
			fmt.Fprintf(w, "\nPhases: – where a stack has none (raw WebSocket: no libp2p phases; Noise: yamux is negotiated inside the handshake).\n")
		}
		writeGeneratorRowsMarkdown(w, rep, sc)
		fmt.Fprintln(w)
	}

	if len(rep.NoiseCost) > 0 {
		fmt.Fprintf(w, "## What Noise costs on top of the transport\n\n(x+Noise)/(x+plaintext), medians of the same runs; the range is Noise's min over plaintext's max to Noise's max over plaintext's min, and a range that includes 1 is no measurable difference.\n\n")
		fmt.Fprintf(w, "| transport | scenario | figure | Noise | plaintext | Noise / plaintext |\n|---|---|---|---:|---:|---|\n")
		for _, nr := range rep.NoiseCost {
			mi := metricByName(nr.Scenario, nr.Metric)
			n, _ := find(rep.Results, nr.Transport+"+noise", nr.Scenario).get(nr.Metric)
			p, _ := find(rep.Results, nr.Transport+"+plaintext", nr.Scenario).get(nr.Metric)
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", transportLabel(nr.Transport), nr.Scenario, mi.label, fmtStat(mi.unit, n), fmtStat(mi.unit, p), noiseFigure(nr))
		}
		fmt.Fprintln(w)
	}
	writeGeneratorsMarkdown(w, rep)
	if len(rep.NotRun) > 0 {
		fmt.Fprintf(w, "Not run: %s.\n\n", strings.Join(rep.NotRun, "; "))
	}
	if rep.Profiles != "" {
		fmt.Fprintf(w, "Profiles: %s/<stack>/<scenario>/server-*.pprof (see profiles/README.md).\n", rep.Profiles)
	}
	return nil
}

// machineSize is "2 cores, 23.5 GiB".
func machineSize(m machine) string {
	mem := "memory unknown"
	if m.MemoryBytes > 0 {
		mem = fmtUnit(uBytes, float64(m.MemoryBytes))
	}
	return fmt.Sprintf("%d cores, %s", m.CPUs, mem)
}

// notModelled is what the capacity arithmetic leaves out.
const notModelled = "Not modelled: the file-descriptor limit (one per peer: raise ulimit -n), the peers' own keepalive and protocol traffic (count it in -plan-mbps and -plan-new-per-sec), and what the client side of a real peer costs the network."

// writeCapacityMarkdown is the summary an operator acts on.
func writeCapacityMarkdown(w io.Writer, rep report) {
	c := rep.Capacity
	if len(c.Stacks) == 0 {
		fmt.Fprintf(w, "## Capacity\n\nNo libp2p stack ran: no capacity to report.\n\n")
		return
	}
	m := rep.Machine
	fmt.Fprintf(w, "## Capacity: peers per machine, and what runs out first\n\n")
	fmt.Fprintf(w, "What one machine like this one (%s) serves per stack. \"Per core\" is the server's CPU time per handshake and per byte, turned into a rate; memory is the server's RSS per idle peer, with the kernel's memory for the peer's socket beside it.\n\n",
		machineSize(m))
	fmt.Fprintf(w, "| stack | RSS per peer | peers per GiB of RSS | kernel per peer | new connections/s per core | payload per core |\n|---|---:|---:|---:|---:|---:|\n")
	for _, row := range c.Stacks {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", stackLabel(row.Stack), fmtSpan(uBytes, row.RSSPerPeer), fmtCount(row.PeersPerGiB),
			fmtSpan(uBytes, row.KernelPerPeer), fmtCount(row.HandshakesPerCoreSec), fmtSpan(uBytesPerSec, row.BytesPerCoreSec))
	}
	fmt.Fprintf(w, "\nKernel per peer: socket buffers measured from /proc/net/sockstat (TCP mem pages, half of the loopback pair's) plus %s of socket objects (%s). Payload per core is from the throughput run with the highest CPU per byte.\n\n",
		fmtUnit(uBytes, m.SocketObjectBytes), m.SocketObjectSource)
	fmt.Fprintf(w, "Plan: %s.\n\n", planLine(c.Plan))
	fmt.Fprintf(w, "| stack | peers per machine | memory allows | CPU allows | runs out first | machines |\n|---|---:|---:|---:|---|---:|\n")
	for _, row := range c.Stacks {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", stackLabel(row.Stack), fmtCount(row.PeersPerMachine), fmtCount(row.PeersByMemory),
			fmtCount(row.PeersByCPU), orNA(row.RunsOutFirst), fmtCount(row.Machines))
	}
	fmt.Fprintf(w, "\nPeers per machine at the plan's mix: each peer brings its memory, its share of the new connections and bytes, and its idle CPU; the machine is full when memory or CPU reaches the headroom. Ranges run from every input's best run to its worst. %s\n\n", notModelled)
	writeRelayCapacityMarkdown(w, c.Relay)
}

func orNA(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
