package main

import (
	"math"
	"strconv"
	"strings"
)

// unit is how a metric's value is scaled and printed.
type unit int

const (
	uCount       unit = iota // a plain quantity, two decimals (goroutines per connection)
	uRate                    // events per second
	uMs                      // a duration, the value in milliseconds
	uUs                      // a duration, the value in microseconds
	uNsPerByte               // CPU nanoseconds per payload byte
	uBytes                   // bytes, printed in B, KiB or MiB
	uBytesPerSec             // payload bytes per second, printed in MB/s (10⁶)
	uPct                     // percent of one core
	uPeers                   // a large count, printed in k or M (chart axes)
)

// metricInfo describes one metric of the catalog.
type metricInfo struct {
	name  string // JSON name, carries its unit
	label string // what the report calls it
	unit  unit
	param bool // a size the run was given (conns, streams): in the section's heading, not its table
}

// scenarioInfo is one scenario's metrics in report order.
type scenarioInfo struct {
	title   string // what the section measures, for people
	metrics []metricInfo
}

// catalog is the fixed order of the report: scenarios, then within each the
// figure a planner asks for first, then its breakdown, then CPU. A metric
// a Result carries that the catalog lacks is listed after these, by name.
func catalog(scenario string) scenarioInfo {
	switch {
	case scenario == "connect":
		m := []metricInfo{
			{"conns", "connections", uCount, true},
			{"conn_per_sec", "connections per second", uRate, false},
			{"latency_p50_ms", "connect latency p50", uMs, false},
			{"latency_p90_ms", "connect latency p90", uMs, false},
			{"latency_p99_ms", "connect latency p99", uMs, false},
			{"latency_p999_ms", "connect latency p99.9", uMs, false},
		}
		for _, ph := range phases {
			m = append(m, metricInfo{"phase_" + ph.name + "_p50_ms", ph.label + " p50", uMs, false})
		}
		for _, ph := range phases {
			m = append(m, metricInfo{"phase_" + ph.name + "_p99_ms", ph.label + " p99", uMs, false})
		}
		m = append(m,
			metricInfo{"server_cpu_us_per_conn", "server CPU per handshake", uUs, false},
			metricInfo{"client_cpu_us_per_conn", "client CPU per handshake", uUs, false})
		return scenarioInfo{"connection set-up: rate, latency by phase, CPU per handshake", m}
	case scenario == "dht":
		return scenarioInfo{"Kademlia FIND_NODE from light clients that are DHT servers: the bootstrap node's job", []metricInfo{
			{"table_entries", "routing table entries", uCount, true},
			{"requests_in_flight", "requests in flight (one per client)", uCount, true},
			{"requests_per_sec", "FIND_NODE requests per second", uRate, false},
			{"latency_p50_us", "request latency p50", uUs, false},
			{"latency_p99_us", "request latency p99", uUs, false},
			{"server_cpu_us_per_request", "server CPU per request", uUs, false},
			{"server_bytes_per_table_entry", "server memory per table entry", uBytes, false},
			{"server_rss_bytes_per_conn", "server RSS per DHT-server connection", uBytes, false},
			{"closer_peers_per_reply", "closer peers per reply", uCount, false},
			{"replies_checked", "replies checked against a brute-force sort (exact)", uCount, false},
			{"requests", "requests", uCount, true},
		}}
	case scenario == "relay":
		return scenarioInfo{"circuit relay v2: reservations held, then circuits moving echoed bytes", []metricInfo{
			{"reservations", "reservations", uCount, true},
			{"circuits", "circuits", uCount, true},
			{"bytes_per_circuit", "bytes per circuit each way", uBytes, true},
			{"server_rss_bytes_per_reservation", "server RSS per reservation, beyond its connection", uBytes, false},
			{"server_heap_bytes_per_reservation", "server Go heap per reservation, beyond its connection", uBytes, false},
			{"server_rss_bytes_per_conn", "server RSS per connection, before reserving", uBytes, false},
			{"server_cpu_us_per_reservation", "server CPU per reservation", uUs, false},
			{"reserve_p50_us", "reserve latency p50", uUs, false},
			{"reserve_p99_us", "reserve latency p99", uUs, false},
			{"setup_p50_us", "circuit setup latency p50", uUs, false},
			{"setup_p99_us", "circuit setup latency p99", uUs, false},
			{"relayed_bytes_per_sec", "relayed throughput", uBytesPerSec, false},
			{"server_cpu_ns_per_relayed_byte", "server CPU per relayed byte", uNsPerByte, false},
			{"server_cpu_ns_per_echo_byte", "server CPU per echoed byte, same streams without the relay", uNsPerByte, false},
			{"server_relay_to_echo_cpu_ratio", "server CPU per byte, relayed ÷ echoed", uCount, false},
			{"client_cpu_ns_per_relayed_byte", "client CPU per relayed byte (both ends)", uNsPerByte, false},
			{"relayed_bytes", "bytes relayed and checked", uBytes, false},
		}}
	case scenario == "hold":
		return scenarioInfo{"idle connections after one echo each: what holding a peer costs", []metricInfo{
			{"conns", "connections", uCount, true},
			{"server_rss_bytes_per_conn", "server RSS per connection", uBytes, false},
			{"kernel_sockbuf_bytes_per_conn", "kernel socket buffers per connection", uBytes, false},
			{"server_goroutines_per_conn", "server goroutines per connection", uCount, false},
			{"server_idle_cpu_pct_per_1k_conns", "server CPU per 1,000 idle connections", uPct, false},
			{"server_idle_cpu_pct", "server CPU while they idle", uPct, false},
			{"server_idle_cpu_pct_before", "server CPU idle, before they opened", uPct, false},
		}}
	case strings.HasPrefix(scenario, "throughput-"):
		return scenarioInfo{"bulk echo: bytes per second and CPU per byte", []metricInfo{
			{"streams", "streams", uCount, true},
			{"bytes_per_sec", "echo throughput", uBytesPerSec, false},
			{"server_cpu_ns_per_byte", "server CPU per byte", uNsPerByte, false},
			{"client_cpu_ns_per_byte", "client CPU per byte", uNsPerByte, false},
		}}
	case scenario == "messages":
		return scenarioInfo{"small-message echo, one outstanding per connection", []metricInfo{
			{"conns", "connections", uCount, true},
			{"msgs_per_sec", "messages per second", uRate, false},
			{"rtt_p50_us", "round trip p50", uUs, false},
			{"rtt_p90_us", "round trip p90", uUs, false},
			{"rtt_p99_us", "round trip p99", uUs, false},
			{"rtt_p999_us", "round trip p99.9", uUs, false},
		}}
	case scenario == "churn":
		return scenarioInfo{"connect, echo, close, continuously", []metricInfo{
			{"cycles", "cycles", uCount, true},
			{"cycles_per_sec", "cycles per second", uRate, false},
		}}
	}
	return scenarioInfo{}
}

// phases of a libp2p connect, in the order they happen (engine.Trace).
var phases = []struct{ name, label string }{
	{"tcp", "TCP connect"},
	{"upgrade", "WebSocket upgrade (incl. TLS)"},
	{"multistream", "security negotiation"},
	{"security", "Noise / plaintext handshake"},
	{"muxer", "yamux negotiation"},
}

// stackLabel is how the report names a stack for people.
func stackLabel(name string) string {
	switch name {
	case "ws+noise":
		return "/ws + Noise"
	case "ws+plaintext":
		return "/ws + plaintext"
	case "wss+noise":
		return "/tls/ws + Noise"
	case "wss+plaintext":
		return "/tls/ws + plaintext"
	case "ws":
		return "raw /ws"
	case "wss":
		return "raw /tls/ws"
	}
	return name
}

// scale picks how to print values of a unit whose typical size is v: a
// divisor and a suffix. The same scale is used for a median and its spread.
func scale(u unit, v float64) (div float64, suffix string) {
	a := math.Abs(v)
	switch u {
	case uMs, uUs:
		perSec := 1e3 // value units in a second
		if u == uUs {
			perSec = 1e6
		}
		switch sec := a / perSec; {
		case sec >= 1:
			return perSec, " s"
		case sec >= 1e-3:
			return perSec / 1e3, " ms"
		case sec >= 1e-6 || sec == 0:
			return perSec / 1e6, " µs"
		}
		return perSec / 1e9, " ns"
	case uBytes:
		switch {
		case a >= 1<<30:
			return 1 << 30, " GiB"
		case a >= 1<<20:
			return 1 << 20, " MiB"
		case a >= 1<<10:
			return 1 << 10, " KiB"
		}
		return 1, " B"
	case uBytesPerSec:
		if a >= 1e9 {
			return 1e9, " GB/s"
		}
		return 1e6, " MB/s"
	case uNsPerByte:
		return 1, " ns/B"
	case uRate:
		return 1, "/s"
	case uPct:
		return 1, " %"
	case uPeers:
		switch {
		case a >= 1e6:
			return 1e6, " M"
		case a >= 1e3:
			return 1e3, " k"
		}
	}
	return 1, ""
}

// digits is how many decimals a scaled value v gets: three significant
// digits, none past the units once v reaches 100.
func digits(v float64) int {
	a := math.Abs(v)
	switch {
	case a >= 100 || a == 0:
		return 0
	case a >= 10:
		return 1
	case a >= 1:
		return 2
	}
	return 3
}

// number formats v with d decimals and thousands separators, never "-0".
func number(v float64, d int) string {
	s := strconv.FormatFloat(v, 'f', d, 64)
	if strings.Trim(s, "-0.") == "" {
		s = strings.TrimPrefix(s, "-")
	}
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	intPart, frac, _ := strings.Cut(s, ".")
	var b strings.Builder
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if frac != "" {
		b.WriteByte('.')
		b.WriteString(frac)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// decimals is the precision for a unit at scaled size v.
func decimals(u unit, v float64) int {
	switch u {
	case uCount:
		if math.Abs(v) >= 100 {
			return 0
		}
		return 2
	case uNsPerByte:
		return 2
	}
	return digits(v)
}

// fmtUnit prints one value with its unit at its own scale: "4.11 ms".
func fmtUnit(u unit, v float64) string {
	if math.IsNaN(v) {
		return "unknown"
	}
	div, suf := scale(u, v)
	return number(v/div, decimals(u, v/div)) + suf
}

// fmtStat prints a figure and, when it has more than one run, its spread
// at the median's scale: "4.11 ms (3.98–4.25)". Unknown prints "unknown".
func fmtStat(u unit, s stat) string {
	if !s.Known {
		return "unknown"
	}
	div, suf := scale(u, s.Median)
	d := decimals(u, s.Median/div)
	out := number(s.Median/div, d) + suf
	if s.N > 1 {
		out += " (" + number(s.Min/div, d) + "–" + number(s.Max/div, d) + ")"
	}
	return out
}

// na is what every report prints for a figure that does not apply.
const na = "–"
