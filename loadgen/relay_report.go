package main

import (
	"fmt"
	"html"
	"io"
)

// The relay scenario in the reports: its section line, and its part of the
// capacity summary (what a reservation costs a machine, and what relaying
// a byte costs against serving it).

// relayCapacityRow is the relay's capacity on one stack.
type relayCapacityRow struct {
	Stack string `json:"stack"`
	// RSSPerReservation is the server RSS a reservation adds to its
	// connection; RSSPerReservedPeer both together, and
	// ReservedPeersPerGiB how many such peers a GiB of RSS holds.
	RSSPerReservation   span `json:"rss_bytes_per_reservation"`
	RSSPerReservedPeer  span `json:"rss_bytes_per_reserved_peer"`
	ReservedPeersPerGiB span `json:"reserved_peers_per_gib"`
	// RelayedBytesPerCoreSec is relayed payload one core carries per
	// second (each byte in from one peer and out to another), from the
	// server's CPU per relayed byte; RelayToEcho is that CPU over the CPU
	// per echoed byte of the same run.
	RelayedBytesPerCoreSec span `json:"relayed_bytes_per_core_sec"`
	RelayToEcho            span `json:"relay_to_echo_cpu"`
}

// relayCapacity derives the relay rows from the relay results.
func relayCapacity(results []Result) []relayCapacityRow {
	var out []relayCapacityRow
	for _, st := range stackOrder(results) {
		r := find(results, st, "relay")
		rsv, ok := r.get("server_rss_bytes_per_reservation")
		if !ok {
			continue // not run, or not applicable on this stack
		}
		conn, _ := r.get("server_rss_bytes_per_conn")
		perByte, _ := r.get("server_cpu_ns_per_relayed_byte")
		ratio, _ := r.get("server_relay_to_echo_cpu_ratio")
		row := relayCapacityRow{Stack: st}
		row.RSSPerReservation = derive(func(p func(stat) float64) float64 { return p(rsv) }, rsv)
		row.RSSPerReservedPeer = derive(func(p func(stat) float64) float64 { return p(conn) + p(rsv) }, conn, rsv)
		row.ReservedPeersPerGiB = derive(func(p func(stat) float64) float64 { return (1 << 30) / (p(conn) + p(rsv)) }, conn, rsv)
		row.RelayedBytesPerCoreSec = derive(func(p func(stat) float64) float64 { return 1e9 / p(perByte) }, perByte)
		row.RelayToEcho = derive(func(p func(stat) float64) float64 { return p(ratio) }, ratio)
		out = append(out, row)
	}
	return out
}

// relaySectionLine says what the relay scenario was given; first reads a
// metric of the section's first result.
func relaySectionLine(first func(string) float64) string {
	return fmt.Sprintf("%s reservations from as many light clients, each a peer of its own, measured after two GCs against the same connections before they reserved; "+
		"then %s circuits at once from %s more light clients, each carrying %s each way to a reserving client that echoes (at most %s un-echoed per circuit), every byte checked; "+
		"setup latency: CONNECT written to STATUS OK read, %d in flight; relayed bytes count both directions; "+
		"the echo baseline: the same sources echo as much on a plain echo stream each, just before",
		number(first("reservations"), 0), number(first("circuits"), 0), number(first("circuits"), 0),
		fmtUnit(uBytes, first("bytes_per_circuit")), fmtUnit(uBytes, relayAhead), relayPar)
}

// relayCapacityNote explains the relay rows.
const relayCapacityNote = "A reserved peer is its connection plus its reservation (RSS beyond the connection, from the same connections before and after they reserved). Relayed bytes per core: 10⁹ ns ÷ the server's CPU per relayed byte, a byte received from one peer and sent to another; relayed ÷ echoed: the same over the CPU per byte of plain echo streams of the same run."

func writeRelayCapacityMarkdown(w io.Writer, rows []relayCapacityRow) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "Circuit relay:\n\n| stack | RSS per reservation beyond its connection | RSS per reserved peer | reserved peers per GiB of RSS | relayed payload per core | CPU per byte, relayed ÷ echoed |\n|---|---:|---:|---:|---:|---:|\n")
	for _, row := range rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", stackLabel(row.Stack), fmtSpan(uBytes, row.RSSPerReservation), fmtSpan(uBytes, row.RSSPerReservedPeer),
			fmtCount(row.ReservedPeersPerGiB), fmtSpan(uBytesPerSec, row.RelayedBytesPerCoreSec), fmtSpan(uCount, row.RelayToEcho))
	}
	fmt.Fprintf(w, "\n%s\n\n", relayCapacityNote)
}

func writeRelayCapacityHTML(w io.Writer, rows []relayCapacityRow) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprint(w, "<div><p><b>Circuit relay</b></p><table><tr><th>stack<th>RSS per reservation beyond its connection<th>RSS per reserved peer<th>reserved peers per GiB of RSS<th>relayed payload per core<th>CPU per byte, relayed ÷ echoed\n")
	for _, row := range rows {
		fmt.Fprintf(w, "<tr><td>%s<td>%s<td>%s<td>%s<td>%s<td>%s\n", html.EscapeString(stackLabel(row.Stack)), fmtSpan(uBytes, row.RSSPerReservation), fmtSpan(uBytes, row.RSSPerReservedPeer),
			fmtCount(row.ReservedPeersPerGiB), fmtSpan(uBytesPerSec, row.RelayedBytesPerCoreSec), fmtSpan(uCount, row.RelayToEcho))
	}
	fmt.Fprintf(w, "</table><p class=note>%s</p></div>\n", html.EscapeString(relayCapacityNote))
}
