package main

import (
	"fmt"
	"html"
	"io"
	"math"
	"path/filepath"
	"strings"
)

// The HTML report: one self-contained page (inline CSS and SVG, no script,
// nothing fetched), a section per question a planner asks, each readable
// on one screen: capacity, connection set-up, memory, throughput,
// latency, what Noise costs, then every figure in tables and the profiles.

// chart palette: Noise dark, plaintext light, raw WebSocket grey; /ws blue,
// /tls/ws orange, so "Noise beside plaintext" reads at a glance.
var stackColor = map[string]string{
	"ws+noise": "#1f5fa8", "ws+plaintext": "#8db8e8", "ws": "#6b6b6b",
	"wss+noise": "#b5521b", "wss+plaintext": "#f0b27a", "wss": "#b0b0b0",
}

var phaseColor = map[string]string{
	"tcp": "#8c8c8c", "upgrade": "#e6a23c", "multistream": "#9b59b6", "security": "#1f5fa8", "muxer": "#2ca02c",
}

// chartStacks is the row order of per-stack charts: grouped by transport,
// Noise beside plaintext beside raw WebSocket.
var chartStacks = []string{"ws+noise", "ws+plaintext", "ws", "wss+noise", "wss+plaintext", "wss"}

func transportOf(st string) string {
	t, _, _ := strings.Cut(st, "+")
	return t
}

// seg is one stacked part of a bar.
type seg struct {
	name  string
	color string
	v     float64
}

// bar is one row of a horizontal bar chart.
type bar struct {
	label    string
	segs     []seg
	lo, hi   float64 // whisker (the spread of the total); NaN: none
	text     string  // printed after the bar
	title    string  // tooltip
	gapAbove bool    // a new group starts here
	unknown  bool    // the figure applies but was not measured
}

// hchart is a horizontal bar chart with an axis in unit u.
type hchart struct {
	id, title string
	u         unit
	bars      []bar
	legend    []seg
	note      string
	labelW    int // width of the label column; 0: labelW
}

const (
	chartW   = 590
	labelW   = 140
	valueW   = 124
	rowH     = 22
	barH     = 14
	groupGap = 10
)

// tickDecimals is the decimals an axis step needs (0.5 → 1, 20 → 0).
func tickDecimals(step float64) int {
	d := 0
	for d < 6 && math.Abs(step*math.Pow(10, float64(d))-math.Round(step*math.Pow(10, float64(d)))) > 1e-9 {
		d++
	}
	return d
}

// niceStep is a 1, 2 or 5 × 10ⁿ step that divides max into about n parts.
func niceStep(max float64, n int) float64 {
	if max <= 0 || !finite(max) {
		return 1
	}
	raw := max / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func (c hchart) write(w io.Writer) {
	if len(c.bars) == 0 {
		return
	}
	peak := 0.0
	for _, b := range c.bars {
		t := 0.0
		for _, s := range b.segs {
			t += max(0, s.v)
		}
		peak = max(peak, t)
		if finite(b.hi) {
			peak = max(peak, b.hi)
		}
	}
	// Ticks at 1, 2 or 5 × 10ⁿ of the unit the axis is printed in.
	div, suf := scale(c.u, peak)
	step := niceStep(peak/div, 4) * div
	top := math.Ceil(peak/step) * step
	if top <= 0 {
		top = 1
	}
	lw := c.labelW
	if lw == 0 {
		lw = labelW
	}
	plotW := float64(chartW - lw - valueW)
	x := func(v float64) float64 { return float64(lw) + max(0, v)/top*plotW }
	// The legend wraps onto as many rows as it needs (11 px text is
	// about 6.5 px a character).
	type placed struct{ x, y int }
	var at []placed
	lx, ly := lw, 4
	for _, l := range c.legend {
		wd := 22 + int(6.5*float64(len([]rune(l.name))))
		if lx > lw && lx+wd > chartW {
			lx, ly = lw, ly+18
		}
		at = append(at, placed{lx, ly})
		lx += wd
	}
	legendH := 0
	if len(c.legend) > 0 {
		legendH = ly + 16
	}
	y0 := legendH + 4
	h := y0
	for _, b := range c.bars {
		if b.gapAbove {
			h += groupGap
		}
		h += rowH
	}
	axisY := h + 2
	h += 22
	fmt.Fprintf(w, "<figure><figcaption>%s</figcaption>\n<svg class=chart data-chart=%q width=%d height=%d viewBox=\"0 0 %d %d\" role=img aria-label=%q>\n",
		html.EscapeString(c.title), c.id, chartW, h, chartW, h, c.title)
	for i, l := range c.legend {
		fmt.Fprintf(w, "<rect x=%d y=%d width=10 height=10 fill=%q></rect><text x=%d y=%d class=lg>%s</text>", at[i].x, at[i].y, l.color, at[i].x+14, at[i].y+9, html.EscapeString(l.name))
	}
	// Grid and axis.
	for v := 0.0; v <= top*1.0001; v += step {
		gx := x(v)
		fmt.Fprintf(w, "<line x1=%.1f x2=%.1f y1=%d y2=%d class=grid></line>", gx, gx, y0, axisY)
		fmt.Fprintf(w, "<text x=%.1f y=%d class=ax text-anchor=middle>%s</text>", gx, axisY+14, number(v/div, tickDecimals(step/div)))
	}
	fmt.Fprintf(w, "<text x=%d y=%d class=ax text-anchor=end>%s</text>\n", chartW-4, axisY+14, strings.TrimSpace(suf))
	y := y0
	for _, b := range c.bars {
		if b.gapAbove {
			y += groupGap
		}
		by := y + (rowH-barH)/2
		fmt.Fprintf(w, "<g><title>%s</title><text x=%d y=%d class=lb text-anchor=end>%s</text>", html.EscapeString(b.title), lw-6, by+barH-3, html.EscapeString(b.label))
		cx := float64(lw)
		for _, s := range b.segs {
			if s.v <= 0 || !finite(s.v) {
				continue
			}
			wd := s.v / top * plotW
			fmt.Fprintf(w, "<rect class=bar x=%.1f y=%d width=%.1f height=%d fill=%q><title>%s</title></rect>", cx, by, wd, barH, s.color, html.EscapeString(s.name+": "+fmtUnit(c.u, s.v)))
			cx += wd
		}
		end := cx
		if finite(b.lo) && finite(b.hi) && b.hi > b.lo {
			l, r := x(b.lo), x(b.hi)
			my := by + barH/2
			fmt.Fprintf(w, "<path class=wh d=\"M%.1f %dH%.1fM%.1f %dV%dM%.1f %dV%d\"></path>", l, my, r, l, my-4, my+4, r, my-4, my+4)
			end = max(end, r)
		}
		fmt.Fprintf(w, "<text x=%.1f y=%d class=val>%s</text></g>\n", end+5, by+barH-3, html.EscapeString(b.text))
		y += rowH
	}
	fmt.Fprint(w, "</svg>")
	if c.note != "" {
		fmt.Fprintf(w, "<p class=note>%s</p>", html.EscapeString(c.note))
	}
	fmt.Fprint(w, "</figure>\n")
}

// stackBars is one bar per stack that ran sc, grouped by transport: the
// metric's median with its spread as a whisker.
func stackBars(rep report, sc, metric string) []bar {
	mi := metricByName(sc, metric)
	var out []bar
	last := ""
	for _, st := range chartStacks {
		r := find(rep.Results, st, sc)
		s, ok := r.get(metric)
		if !ok {
			continue
		}
		b := bar{label: stackLabel(st), lo: math.NaN(), hi: math.NaN(), title: stackLabel(st) + ": " + fmtStat(mi.unit, s)}
		b.gapAbove = last != "" && transportOf(st) != last
		last = transportOf(st)
		if !s.Known {
			b.unknown, b.text = true, "unknown"
		} else {
			b.segs = []seg{{stackLabel(st), stackColor[st], s.Median}}
			b.text = fmtUnit(mi.unit, s.Median)
			if s.N > 1 {
				b.lo, b.hi = s.Min, s.Max
			}
		}
		out = append(out, b)
	}
	return out
}

// percentile plot: latency against percentile on a "nines" axis (p50, p90,
// p99, p99.9 evenly spaced) with a logarithmic time axis.
type pctSeries struct {
	name, color string
	pts         []float64 // at pctQuantiles; NaN: missing
}

var pctQuantiles = []struct {
	label string
	nines float64 // log10(1/(1-q))
}{{"p50", math.Log10(2)}, {"p90", 1}, {"p99", 2}, {"p99.9", 3}}

func writePercentilePlot(w io.Writer, id, title string, u unit, series []pctSeries) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for _, v := range s.pts {
			if finite(v) && v > 0 {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
	}
	if !finite(lo) || !finite(hi) {
		return
	}
	dlo, dhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dhi <= dlo {
		dhi = dlo + 1
	}
	const left, right, top, plotH = 64, 150, 10, 200
	plotW := float64(chartW - left - right)
	h := top + plotH + 36
	x := func(n float64) float64 { return left + (n-pctQuantiles[0].nines)/(3-pctQuantiles[0].nines)*plotW }
	y := func(v float64) float64 { return top + plotH - (math.Log10(v)-dlo)/(dhi-dlo)*plotH }
	fmt.Fprintf(w, "<figure><figcaption>%s</figcaption>\n<svg class=chart data-chart=%q width=%d height=%d viewBox=\"0 0 %d %d\" role=img aria-label=%q>\n",
		html.EscapeString(title), id, chartW, h, chartW, h, title)
	for d := dlo; d <= dhi; d++ {
		v := math.Pow(10, d)
		fmt.Fprintf(w, "<line x1=%d x2=%.1f y1=%.1f y2=%.1f class=grid></line><text x=%d y=%.1f class=ax text-anchor=end>%s</text>",
			left, left+plotW, y(v), y(v), left-6, y(v)+4, fmtUnit(u, v))
	}
	for _, q := range pctQuantiles {
		fmt.Fprintf(w, "<line x1=%.1f x2=%.1f y1=%d y2=%d class=grid></line><text x=%.1f y=%d class=ax text-anchor=middle>%s</text>",
			x(q.nines), x(q.nines), top, top+plotH, x(q.nines), top+plotH+16, q.label)
	}
	fmt.Fprintf(w, "<text x=%.1f y=%d class=ax text-anchor=middle>percentile</text>\n", left+plotW/2, top+plotH+32)
	for i, s := range series {
		var d strings.Builder
		for j, v := range s.pts {
			if !finite(v) || v <= 0 {
				continue
			}
			if d.Len() == 0 {
				d.WriteString("M")
			} else {
				d.WriteString("L")
			}
			fmt.Fprintf(&d, "%.1f %.1f", x(pctQuantiles[j].nines), y(v))
		}
		fmt.Fprintf(w, "<g><path class=line d=%q stroke=%q></path>", d.String(), s.color)
		for j, v := range s.pts {
			if finite(v) && v > 0 {
				fmt.Fprintf(w, "<circle cx=%.1f cy=%.1f r=3 fill=%q><title>%s %s: %s</title></circle>", x(pctQuantiles[j].nines), y(v), s.color,
					html.EscapeString(s.name), pctQuantiles[j].label, fmtUnit(u, v))
			}
		}
		ly := top + 8 + i*18
		fmt.Fprintf(w, "<line x1=%d x2=%d y1=%d y2=%d stroke=%q class=line></line><text x=%d y=%d class=lg>%s</text></g>\n",
			chartW-right+12, chartW-right+30, ly, ly, s.color, chartW-right+36, ly+4, html.EscapeString(s.name))
	}
	fmt.Fprint(w, "</svg></figure>\n")
}

// percentileSeries reads a latency curve per stack from metrics
// prefix + "50"/"90"/"99"/"999" + suffix.
func percentileSeries(rep report, sc, prefix, suffix string) []pctSeries {
	var out []pctSeries
	for _, st := range chartStacks {
		r := find(rep.Results, st, sc)
		if r == nil {
			continue
		}
		s := pctSeries{name: stackLabel(st), color: stackColor[st]}
		n := 0
		for _, q := range []string{"50", "90", "99", "999"} {
			v, ok := r.Metrics[prefix+q+suffix]
			if !ok {
				v = math.NaN()
			} else {
				n++
			}
			s.pts = append(s.pts, v)
		}
		if n > 0 {
			out = append(out, s)
		}
	}
	return out
}

const pageCSS = `body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:16px 28px;max-width:1240px;color:#1d1d1d}
h1{font-size:21px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px;padding-bottom:3px;border-bottom:1px solid #ccc}
.meta{color:#444;margin:4px 0}nav a{margin-right:14px}
.tw{overflow-x:auto;max-width:100%}table{border-collapse:collapse;font-size:12.5px;margin:6px 0 10px}
td,th{padding:3px 7px;border-bottom:1px solid #e2e2e2;text-align:right;white-space:nowrap}
td:first-child,th:first-child{text-align:left}th{background:#f4f4f4}table.noise td:nth-child(-n+3),table.noise th:nth-child(-n+3){text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:10px 36px}figure{margin:0}figcaption{font-weight:600;font-size:13px;margin-bottom:2px}
svg text{font:11px system-ui,sans-serif;fill:#333}svg .lb{font-size:12px}svg .val{font-size:11px;fill:#111}svg .lg{font-size:11px}
svg .grid{stroke:#e6e6e6}svg .ax{fill:#666}svg .wh{stroke:#222;stroke-width:1.2;fill:none}svg .line{fill:none;stroke-width:2}
.note{color:#555;font-size:12px;margin:2px 0 0;max-width:580px}.lim-memory{color:#0b7a75}.lim-CPU{color:#b0241b}
details summary{cursor:pointer;font-weight:600;margin:8px 0}`

// writeHTML renders the report page.
func writeHTML(w io.Writer, rep report) error {
	title := "swarmgate loadgen report, " + rep.Started.UTC().Format("2006-01-02 15:04 UTC")
	fmt.Fprintf(w, "<!doctype html>\n<html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width\"><title>%s</title><style>%s</style></head><body>\n", html.EscapeString(title), pageCSS)
	fmt.Fprintf(w, "<h1>swarmgate loadgen report</h1>\n<p class=meta>%s<br>Machine: %s<br>Method: %s.</p>\n",
		html.EscapeString(runLine(rep)), html.EscapeString(machineLine(rep.Machine)), html.EscapeString(methodLine(rep)))
	fmt.Fprint(w, "<nav><a href=#capacity>Capacity</a><a href=#connect>Connection set-up</a><a href=#memory>Memory</a><a href=#throughput>Throughput</a><a href=#latency>Messages and churn</a><a href=#noise>Cost of Noise</a><a href=#figures>All figures</a>")
	if len(rep.Generators) > 0 {
		fmt.Fprint(w, "<a href=#generators>Generators</a>")
	}
	if rep.Profiles != "" {
		fmt.Fprint(w, "<a href=#profiles>Profiles</a>")
	}
	fmt.Fprint(w, "</nav>\n")

	writeCapacityHTML(w, rep)
	writeConnectHTML(w, rep)
	writeMemoryHTML(w, rep)
	writeThroughputHTML(w, rep)
	writeLatencyHTML(w, rep)
	writeNoiseHTML(w, rep)
	writeTablesHTML(w, rep)
	writeGeneratorsHTML(w, rep)
	writeProfilesHTML(w, rep)
	if len(rep.NotRun) > 0 {
		fmt.Fprintf(w, "<p class=note>Not run: %s.</p>\n", html.EscapeString(strings.Join(rep.NotRun, "; ")))
	}
	fmt.Fprint(w, "</body></html>\n")
	return nil
}

func writeCapacityHTML(w io.Writer, rep report) {
	fmt.Fprint(w, "<section id=capacity><h2>Capacity: peers per machine, and what runs out first</h2>\n")
	c := rep.Capacity
	if len(c.Stacks) == 0 {
		fmt.Fprint(w, "<p>No libp2p stack ran: no capacity to report.</p></section>\n")
		return
	}
	m := rep.Machine
	fmt.Fprintf(w, "<p class=note>One machine like this one (%s). Per core: server CPU time per handshake and per byte as a rate. Memory: server RSS per idle peer; kernel: socket buffers (measured, /proc/net/sockstat) + %s of socket objects (%s).</p>\n",
		html.EscapeString(machineSize(m)), html.EscapeString(fmtUnit(uBytes, m.SocketObjectBytes)), html.EscapeString(m.SocketObjectSource))
	fmt.Fprint(w, "<div class=charts><div><table><tr><th>stack<th>RSS per peer<th>peers per GiB of RSS<th>kernel per peer<th>new conns/s per core<th>payload per core\n")
	for _, row := range c.Stacks {
		fmt.Fprintf(w, "<tr><td>%s<td>%s<td>%s<td>%s<td>%s<td>%s\n", html.EscapeString(stackLabel(row.Stack)), fmtSpan(uBytes, row.RSSPerPeer), fmtCount(row.PeersPerGiB),
			fmtSpan(uBytes, row.KernelPerPeer), fmtCount(row.HandshakesPerCoreSec), fmtSpan(uBytesPerSec, row.BytesPerCoreSec))
	}
	fmt.Fprintf(w, "</table>\n<p><b>Plan:</b> %s.</p>\n", html.EscapeString(planLine(c.Plan)))
	fmt.Fprint(w, "<table><tr><th>stack<th>peers per machine<th>memory allows<th>CPU allows<th>runs out first<th>machines\n")
	for _, row := range c.Stacks {
		cls := strings.Fields(row.RunsOutFirst + " x")[0]
		fmt.Fprintf(w, "<tr><td>%s<td>%s<td>%s<td>%s<td class=lim-%s>%s<td><b>%s</b>\n", html.EscapeString(stackLabel(row.Stack)), fmtCount(row.PeersPerMachine),
			fmtCount(row.PeersByMemory), fmtCount(row.PeersByCPU), cls, html.EscapeString(orNA(row.RunsOutFirst)), fmtCount(row.Machines))
	}
	fmt.Fprintf(w, "</table><p class=note>%s</p></div>\n", html.EscapeString(notModelled))
	ch := hchart{id: "capacity-limits", title: "Peers one machine takes at the plan's mix, by resource", u: uPeers,
		legend: []seg{{"memory allows", "#0b7a75", 0}, {"CPU allows", "#b0241b", 0}},
		note:   "The shorter bar runs out first. Whiskers: best to worst run of every input.", labelW: 190}
	for i, row := range c.Stacks {
		for j, lim := range []struct {
			name, color string
			s           span
		}{{"memory", "#0b7a75", row.PeersByMemory}, {"CPU", "#b0241b", row.PeersByCPU}} {
			b := bar{label: stackLabel(row.Stack) + " · " + lim.name, lo: math.NaN(), hi: math.NaN(), gapAbove: i > 0 && j == 0, title: lim.name + " allows " + fmtCount(lim.s)}
			if lim.s.known() {
				b.segs = []seg{{lim.name, lim.color, float64(lim.s.Value)}}
				b.lo, b.hi = float64(lim.s.Lo), float64(lim.s.Hi)
				b.text = fmtUnit(uPeers, float64(lim.s.Value))
			} else {
				b.text = fmtCount(lim.s) // unknown, or not measurable
			}
			ch.bars = append(ch.bars, b)
		}
	}
	ch.write(w)
	writeRelayCapacityHTML(w, c.Relay)
	fmt.Fprint(w, "</div></section>\n")
}

func writeConnectHTML(w io.Writer, rep report) {
	if len(stacksOf(rep.Results, "connect")) == 0 {
		return
	}
	fmt.Fprintf(w, "<section id=connect><h2>Connection set-up</h2><p class=note>%s.</p><div class=charts>\n", html.EscapeString(sectionLine(rep, "connect")))
	ph := hchart{id: "connect-phases", title: "Connect latency by phase (median of each phase, stacked)", u: uMs,
		note: "Raw WebSocket: the whole connect (no libp2p phases). With Noise, yamux is negotiated inside the handshake."}
	for _, p := range phases {
		ph.legend = append(ph.legend, seg{p.label, phaseColor[p.name], 0})
	}
	last := ""
	for _, st := range chartStacks {
		r := find(rep.Results, st, "connect")
		if r == nil {
			continue
		}
		b := bar{label: stackLabel(st), lo: math.NaN(), hi: math.NaN(), gapAbove: last != "" && transportOf(st) != last}
		last = transportOf(st)
		total := 0.0
		var parts []string
		for _, p := range phases {
			if v, ok := r.Metrics["phase_"+p.name+"_p50_ms"]; ok && finite(v) {
				b.segs = append(b.segs, seg{p.label, phaseColor[p.name], v})
				total += v
				parts = append(parts, p.label+" "+fmtUnit(uMs, v))
			}
		}
		if len(b.segs) == 0 {
			if v, ok := r.Metrics["latency_p50_ms"]; ok && finite(v) {
				b.segs = []seg{{"whole connect", stackColor[st], v}}
				total = v
			}
		}
		b.text = fmtUnit(uMs, total)
		b.title = stackLabel(st) + ": " + strings.Join(parts, ", ")
		ph.bars = append(ph.bars, b)
	}
	ph.write(w)
	hchart{id: "connect-server-cpu", title: "Server CPU per handshake (Noise beside plaintext)", u: uUs, bars: stackBars(rep, "connect", "server_cpu_us_per_conn"),
		note: "Whiskers: min–max of the runs."}.write(w)
	hchart{id: "connect-client-cpu", title: "Client CPU per handshake", u: uUs, bars: stackBars(rep, "connect", "client_cpu_us_per_conn")}.write(w)
	writePercentilePlot(w, "connect-latency", "Connect latency percentiles (median run)", uMs, percentileSeries(rep, "connect", "latency_p", "_ms"))
	fmt.Fprint(w, "</div></section>\n")
}

func writeMemoryHTML(w io.Writer, rep report) {
	if len(stacksOf(rep.Results, "hold")) == 0 {
		return
	}
	fmt.Fprintf(w, "<section id=memory><h2>Memory per idle connection</h2><p class=note>%s.</p><div class=charts>\n", html.EscapeString(sectionLine(rep, "hold")))
	ch := hchart{id: "memory-per-conn", title: "Memory per idle connection: server RSS + kernel", u: uBytes,
		legend: []seg{{"server RSS", "#1f5fa8", 0}, {"kernel socket buffers", "#8c8c8c", 0}, {"kernel socket objects (estimate)", "#c9c9c9", 0}},
		note:   "Whiskers: min–max of the RSS runs. Kernel memory is outside the process: it counts against the machine, not the RSS."}
	last := ""
	for _, st := range chartStacks {
		r := find(rep.Results, st, "hold")
		if r == nil {
			continue
		}
		rss, _ := r.get("server_rss_bytes_per_conn")
		buf, _ := r.get("kernel_sockbuf_bytes_per_conn")
		b := bar{label: stackLabel(st), lo: math.NaN(), hi: math.NaN(), gapAbove: last != "" && transportOf(st) != last}
		last = transportOf(st)
		if !rss.Known {
			b.text, b.unknown = "unknown", true
			ch.bars = append(ch.bars, b)
			continue
		}
		b.segs = []seg{{"server RSS", "#1f5fa8", rss.Median}}
		extra := 0.0
		if buf.Known {
			b.segs = append(b.segs, seg{"kernel socket buffers", "#8c8c8c", max(0, buf.Median)})
			extra += max(0, buf.Median)
		}
		if o := rep.Machine.SocketObjectBytes; o > 0 {
			b.segs = append(b.segs, seg{"kernel socket objects", "#c9c9c9", o})
			extra += o
		}
		if rss.N > 1 {
			b.lo, b.hi = rss.Min, rss.Max
		}
		b.text = fmtUnit(uBytes, rss.Median)
		if len(b.segs) > 1 {
			b.text += " + " + fmtUnit(uBytes, extra)
		}
		b.title = stackLabel(st) + ": RSS " + fmtStat(uBytes, rss) + ", kernel " + fmtUnit(uBytes, extra)
		ch.bars = append(ch.bars, b)
	}
	ch.write(w)
	fmt.Fprint(w, "</div></section>\n")
}

func writeThroughputHTML(w io.Writer, rep report) {
	var scs []string
	for _, sc := range scenarioOrder(rep.Results) {
		if strings.HasPrefix(sc, "throughput-") {
			scs = append(scs, sc)
		}
	}
	if len(scs) == 0 {
		return
	}
	dur := ""
	if rep.Method.Duration > 0 {
		dur = "; " + fmtUnit(uMs, rep.Method.Duration*1000) + " of echo per run"
	}
	fmt.Fprintf(w, "<section id=throughput><h2>Throughput: CPU per byte and bytes per second</h2><p class=note>Bulk echo: k streams on one libp2p connection, or k raw WebSocket connections%s. Whiskers: min–max of the runs.</p><div class=charts>\n", dur)
	for _, sc := range scs {
		k := strings.TrimPrefix(sc, "throughput-")
		hchart{id: sc + "-server-cpu", title: "Server CPU per byte, " + k + " stream(s) (Noise beside plaintext)", u: uNsPerByte, bars: stackBars(rep, sc, "server_cpu_ns_per_byte")}.write(w)
	}
	for _, sc := range scs {
		k := strings.TrimPrefix(sc, "throughput-")
		hchart{id: sc + "-rate", title: "Echo throughput, " + k + " stream(s)", u: uBytesPerSec, bars: stackBars(rep, sc, "bytes_per_sec")}.write(w)
	}
	fmt.Fprint(w, "</div></section>\n")
}

func writeLatencyHTML(w io.Writer, rep report) {
	if len(stacksOf(rep.Results, "messages")) == 0 && len(stacksOf(rep.Results, "churn")) == 0 {
		return
	}
	fmt.Fprintf(w, "<section id=latency><h2>Messages and churn</h2><p class=note>Messages: %s. Churn: %s.</p><div class=charts>\n",
		html.EscapeString(sectionLine(rep, "messages")), html.EscapeString(sectionLine(rep, "churn")))
	writePercentilePlot(w, "messages-rtt", "Message round trip percentiles (median run)", uUs, percentileSeries(rep, "messages", "rtt_p", "_us"))
	hchart{id: "messages-rate", title: "Messages per second", u: uRate, bars: stackBars(rep, "messages", "msgs_per_sec")}.write(w)
	hchart{id: "churn-rate", title: "Churn: connect, echo, close cycles per second", u: uRate, bars: stackBars(rep, "churn", "cycles_per_sec")}.write(w)
	fmt.Fprint(w, "</div></section>\n")
}

func writeNoiseHTML(w io.Writer, rep report) {
	if len(rep.NoiseCost) == 0 {
		return
	}
	fmt.Fprint(w, "<section id=noise><h2>What Noise costs on top of the transport</h2><p class=note>(x+Noise)/(x+plaintext), medians of the same runs; the range is Noise's min over plaintext's max to Noise's max over plaintext's min. A range that includes 1 is no measurable difference.</p>\n")
	fmt.Fprint(w, "<div class=tw><table class=noise><tr><th>transport<th>scenario<th>figure<th>Noise<th>plaintext<th>Noise / plaintext\n")
	for _, nr := range rep.NoiseCost {
		mi := metricByName(nr.Scenario, nr.Metric)
		n, _ := find(rep.Results, nr.Transport+"+noise", nr.Scenario).get(nr.Metric)
		p, _ := find(rep.Results, nr.Transport+"+plaintext", nr.Scenario).get(nr.Metric)
		fmt.Fprintf(w, "<tr><td>%s<td>%s<td>%s<td>%s<td>%s<td>%s\n", transportLabel(nr.Transport), nr.Scenario, html.EscapeString(mi.label),
			fmtStat(mi.unit, n), fmtStat(mi.unit, p), html.EscapeString(noiseFigure(nr)))
	}
	fmt.Fprint(w, "</table></div></section>\n")
}

// writeTableHTML is one scenario's figures per stack, as in the Markdown.
func writeTableHTML(w io.Writer, rep report, sc string) {
	stacks := stacksOf(rep.Results, sc)
	fmt.Fprint(w, "<div class=tw><table><tr><th>metric")
	for _, st := range stacks {
		fmt.Fprintf(w, "<th>%s", html.EscapeString(stackLabel(st)))
	}
	fmt.Fprintln(w)
	for _, mi := range metricsOf(rep.Results, sc, false) {
		fmt.Fprintf(w, "<tr><td>%s", html.EscapeString(mi.label))
		for _, st := range stacks {
			fmt.Fprintf(w, "<td>%s", html.EscapeString(cell(find(rep.Results, st, sc), mi)))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprint(w, "<tr><td>errors (all runs)")
	for _, st := range stacks {
		fmt.Fprintf(w, "<td>%d", find(rep.Results, st, sc).Errors)
	}
	fmt.Fprint(w, "\n</table></div>\n")
}

func writeTablesHTML(w io.Writer, rep report) {
	fmt.Fprint(w, "<section id=figures><h2>All figures</h2><p class=note>Median (min–max) of the runs; – does not apply to the stack; unknown: applies, not measured.</p>\n")
	for _, sc := range scenarioOrder(rep.Results) {
		fmt.Fprintf(w, "<details open><summary>%s: %s</summary><p class=note>%s.</p>\n", html.EscapeString(sc), html.EscapeString(catalog(sc).title), html.EscapeString(sectionLine(rep, sc)))
		writeTableHTML(w, rep, sc)
		for _, st := range stacksOf(rep.Results, sc) {
			if r := find(rep.Results, st, sc); r.Note != "" {
				fmt.Fprintf(w, "<p class=note>%s: %s</p>\n", html.EscapeString(stackLabel(st)), html.EscapeString(r.Note))
			}
		}
		fmt.Fprint(w, "</details>\n")
	}
	fmt.Fprint(w, "</section>\n")
}

// writeProfilesHTML links the server's profiles of each stack and
// scenario, relative to the report's folder (profilesHref).
func writeProfilesHTML(w io.Writer, rep report) {
	if rep.Profiles == "" {
		return
	}
	base := rep.profilesHref
	if base == "" {
		base = "."
	}
	fmt.Fprintf(w, "<section id=profiles><h2>Profiles</h2><p class=note>The server's pprof profiles of each scenario (first run): <code>go tool pprof -http=127.0.0.1:8080 FILE</code>; see profiles/README.md. Generator: <a href=\"%s\">CPU</a>, <a href=\"%s\">heap</a>.</p>\n",
		html.EscapeString(filepath.ToSlash(filepath.Join(base, "generator-cpu.pprof"))), html.EscapeString(filepath.ToSlash(filepath.Join(base, "generator-heap.pprof"))))
	scs := scenarioOrder(rep.Results)
	fmt.Fprint(w, "<table><tr><th>stack")
	for _, sc := range scs {
		fmt.Fprintf(w, "<th>%s", html.EscapeString(sc))
	}
	fmt.Fprintln(w)
	for _, st := range stackOrder(rep.Results) {
		fmt.Fprintf(w, "<tr><td>%s", html.EscapeString(stackLabel(st)))
		for _, sc := range scs {
			if find(rep.Results, st, sc) == nil {
				fmt.Fprintf(w, "<td>%s", na)
				continue
			}
			d := html.EscapeString(filepath.ToSlash(filepath.Join(base, strings.ReplaceAll(st, "+", "_"), sc)))
			if sc == "hold" { // heap and goroutines with the connections open; no CPU to profile
				fmt.Fprintf(w, "<td><a href=\"%s/server-heap.pprof\">heap</a> · <a href=\"%s/server-goroutine.pprof\">goroutine</a>", d, d)
			} else {
				fmt.Fprintf(w, "<td><a href=\"%s/server-cpu.pprof\">cpu</a> · <a href=\"%s/server-heap.pprof\">heap</a>", d, d)
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprint(w, "</table></section>\n")
}
