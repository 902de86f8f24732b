package engine

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
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
	peers     prometheus.Gauge

	// connState[state][transport]: connections by lifecycle state
	// (handshake, open, closing) and transport (ws, wss).
	connState [3][2]prometheus.Gauge
	// frames and payload bytes per layer and direction: [layer][dir],
	// layer 0 WebSocket data frames, 1 Noise transport frames; dir 0 in, 1 out.
	frames     [2][2]prometheus.Counter
	layerBytes [2][2]prometheus.Counter
	// upgradePhase times the server side of each libp2p upgrade phase;
	// upgradeResult counts upgrades by outcome.
	upgradePhase  *prometheus.HistogramVec
	upgradeResult *prometheus.CounterVec
	// goaway[dir][code]: yamux GoAway frames by direction (0 sent,
	// 1 received) and code (0 normal, 1 protocol error, 2 internal error,
	// 3 any other code a peer sends).
	goaway      [2][4]prometheus.Counter
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
		peers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "swarmgate_libp2p_sessions_open", Help: "libp2p connections past the upgrade (yamux running)."}),
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
	frames := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "swarmgate_frames_total", Help: "Frames by layer (ws data frames, noise transport frames) and direction."}, []string{"layer", "dir"})
	layerBytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "swarmgate_layer_bytes_total", Help: "Payload bytes by layer (ws: WebSocket data payload; noise: plaintext) and direction."}, []string{"layer", "dir"})
	for i, layer := range []string{"ws", "noise"} {
		for j, dir := range []string{"in", "out"} {
			m.frames[i][j] = frames.WithLabelValues(layer, dir)
			m.layerBytes[i][j] = layerBytes.WithLabelValues(layer, dir)
		}
	}
	m.upgradePhase = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "swarmgate_libp2p_upgrade_phase_seconds", Help: "Server-side duration of each libp2p upgrade phase (multistream, security, muxer).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"phase"})
	m.upgradeResult = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "swarmgate_libp2p_upgrades_total", Help: "libp2p upgrades (WebSocket to running yamux) by result: ok, or the failure."}, []string{"result"})
	goaway := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "swarmgate_yamux_goaway_total", Help: "yamux GoAway frames by direction and code (normal, protocol_error, internal_error, other)."}, []string{"dir", "code"})
	for i, dir := range []string{"sent", "received"} {
		for j, code := range []string{"normal", "protocol_error", "internal_error", "other"} {
			m.goaway[i][j] = goaway.WithLabelValues(dir, code)
		}
	}
	pool := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "swarmgate_buffer_pool_borrowed_bytes", Help: "Bytes of pooled buffers currently borrowed by connections (both size classes)."},
			func() float64 { return float64(borrowedBytes()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "swarmgate_buffer_oversize_allocations_total", Help: "Buffers larger than the largest pool class, allocated and dropped."},
			func() float64 { return float64(oversize.Load()) }),
	}
	if reg != nil {
		for _, c := range append(pool, connState, frames, layerBytes, m.upgradePhase, m.upgradeResult, goaway) {
			reg.MustRegister(c)
		}
		for _, c := range []prometheus.Collector{m.connsOpen, m.accepted, m.dialed, m.upgrades, m.closeSent, m.closeRecv, m.failures, m.bytesIn, m.bytesOut, m.simdImpl, m.peers} {
			reg.MustRegister(c)
		}
	}
	return m
}

func codeCounter(cache *sync.Map, vec *prometheus.CounterVec, code uint16) prometheus.Counter {
	if c, ok := cache.Load(code); ok {
		return c.(prometheus.Counter)
	}
	label := "none"
	if code != 0 {
		label = strconv.Itoa(int(code))
	}
	c := vec.WithLabelValues(label)
	cache.Store(code, c)
	return c
}
