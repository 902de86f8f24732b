package engine

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/swarmgate/swarmgate/internal/bufpool"
)

// metrics are the engine's counters, registered on Config.Registerer. Label
// values are stable tokens (codec error tokens, close codes), never messages.
type metrics struct {
	connsOpen prometheus.Gauge
	accepted  prometheus.Counter
	dialed    prometheus.Counter
	upgrades  *prometheus.CounterVec // result: "ok" or a handshake error token
	closeSent *prometheus.CounterVec // code
	closeRecv *prometheus.CounterVec // code
	failures  *prometheus.CounterVec // reason: protocol error token, "timeout", …
	bytesIn   prometheus.Counter
	bytesOut  prometheus.Counter
	simdImpl  *prometheus.GaugeVec

	// connState[state][transport]: connections by lifecycle state
	// (handshake, open, closing) and transport (ws, wss).
	connState [3][2]prometheus.Gauge
	// WebSocket data frames and payload bytes by direction (0 in, 1 out),
	// the "ws" layer of swarmgate_frames_total and
	// swarmgate_layer_bytes_total (the libp2p layer adds "noise").
	frames      [2]prometheus.Counter
	layerBytes  [2]prometheus.Counter
	codeLabels  sync.Map // CloseCode -> prometheus.Counter, for closeSent
	codeLabelsR sync.Map // for closeRecv
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "swarmgate_connections_open", Help: "Connections currently open (both roles, any state)."}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swarmgate_connections_accepted_total", Help: "TCP connections accepted."}),
		dialed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swarmgate_connections_dialed_total", Help: "TCP connections dialed in the client role."}),
		upgrades: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swarmgate_ws_upgrades_total", Help: "WebSocket opening handshakes by result (ok or the refusal reason)."}, []string{"result"}),
		closeSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swarmgate_ws_close_sent_total", Help: "WebSocket Close frames sent, by status code (none = empty Close)."}, []string{"code"}),
		closeRecv: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swarmgate_ws_close_received_total", Help: "WebSocket Close frames received, by status code (none = empty Close)."}, []string{"code"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swarmgate_connection_failures_total", Help: "Connections ended by a failure, by reason."}, []string{"reason"}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swarmgate_bytes_in_total", Help: "Bytes read from TCP."}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swarmgate_bytes_out_total", Help: "Bytes queued to TCP."}),
		simdImpl: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "swarmgate_simd_impl", Help: "The masking implementation chosen for this CPU (1 for the active one)."}, []string{"impl"}),
	}
	states, transports := []string{"handshake", "open", "closing"}, []string{"ws", "wss"}
	connState := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "swarmgate_connections", Help: "Connections by lifecycle state and transport."}, []string{"state", "transport"})
	for i, st := range states {
		for j, tr := range transports {
			m.connState[i][j] = connState.WithLabelValues(st, tr)
		}
	}
	frames := NewLayerCounters(FramesName, FramesHelp, "ws")
	layerBytes := NewLayerCounters(LayerBytesName, LayerBytesHelp, "ws")
	for dir := range 2 {
		m.frames[dir] = frames.Dir(dir)
		m.layerBytes[dir] = layerBytes.Dir(dir)
	}
	// Series every dashboard and alert sees from the start, at zero: the
	// close codes a server sends or receives in practice, the failure
	// reasons of the engine itself (stages add their own tokens), the
	// handshake results.
	for _, code := range []uint16{0, 1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1011, 1013} {
		codeCounter(&m.codeLabels, m.closeSent, code)
		codeCounter(&m.codeLabelsR, m.closeRecv, code)
	}
	for _, r := range []string{"handshake_timeout", "inbound_flood", "write_timeout", "write", "read", "stage_error",
		"tls_handshake_cap", "tls_handshake_flood", "tls_not_tls", "tls_record", "tls_close_notify", "tls_timeout", "panic"} {
		m.failures.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "path_not_found", "origin_refused", "bad_request", "request_too_large", "limit_per_ip", "limit_rate", "limit_total"} {
		m.upgrades.WithLabelValues(r)
	}
	pool := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "swarmgate_buffer_pool_borrowed_bytes", Help: "Bytes of pooled buffers currently borrowed by connections (both size classes)."},
			func() float64 { return float64(bufpool.Borrowed()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "swarmgate_buffer_oversize_allocations_total", Help: "Buffers larger than the largest pool class, allocated and dropped."},
			func() float64 { return float64(bufpool.Oversize()) }),
	}
	if reg != nil {
		for _, c := range append(pool, connState, frames.vec, layerBytes.vec) {
			reg.MustRegister(c)
		}
		for _, c := range []prometheus.Collector{m.connsOpen, m.accepted, m.dialed, m.upgrades, m.closeSent, m.closeRecv, m.failures, m.bytesIn, m.bytesOut, m.simdImpl} {
			reg.MustRegister(c)
		}
	}
	return m
}

// codeCounter is the counter for a close code: its number for the codes
// RFC 6455 and IANA define (1000–1015), "none" for an empty Close, and
// "application" for the 3000–4999 codes libraries and applications choose
// (a peer must not be able to create a series per code it sends).
func codeCounter(cache *sync.Map, vec *prometheus.CounterVec, code uint16) prometheus.Counter {
	if code >= 3000 {
		code = 3000
	}
	if c, ok := cache.Load(code); ok {
		return c.(prometheus.Counter)
	}
	label := "none"
	switch {
	case code >= 3000:
		label = "application"
	case code != 0:
		label = strconv.Itoa(int(code))
	}
	c := vec.WithLabelValues(label)
	cache.Store(code, c)
	return c
}

// Per-layer families shared by the stack's layers: each layer registers its
// own collector with a constant "layer" label (ws here, noise in the libp2p
// layer), which Prometheus accepts as one family.
const (
	FramesName     = "swarmgate_frames_total"
	FramesHelp     = "Frames by layer (ws data frames, noise transport frames) and direction."
	LayerBytesName = "swarmgate_layer_bytes_total"
	LayerBytesHelp = "Payload bytes by layer (ws: WebSocket data payload; noise: plaintext) and direction."
)

// LayerCounters is one layer's series of a per-layer family, by direction.
type LayerCounters struct {
	vec *prometheus.CounterVec
}

// NewLayerCounters creates layer's series of the family name.
func NewLayerCounters(name, help, layer string) LayerCounters {
	return LayerCounters{prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name, Help: help, ConstLabels: prometheus.Labels{"layer": layer}}, []string{"dir"})}
}

// Dir is the counter for direction 0 (in) or 1 (out).
func (l LayerCounters) Dir(dir int) prometheus.Counter {
	return l.vec.WithLabelValues([2]string{"in", "out"}[dir])
}

// Collector is what to register.
func (l LayerCounters) Collector() prometheus.Collector { return l.vec }
