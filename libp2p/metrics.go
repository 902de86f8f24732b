package libp2p

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/mux"
)

// metrics are the libp2p layer's series, registered on the engine's
// registerer. Label values are stable tokens, never messages.
type metrics struct {
	peers prometheus.Gauge
	// Noise transport frames and plaintext bytes by direction (0 in, 1
	// out): the "noise" layer of swarmgate_frames_total and
	// swarmgate_layer_bytes_total.
	frames     [2]prometheus.Counter
	layerBytes [2]prometheus.Counter
	// upgradePhase times the server side of each upgrade phase;
	// upgradeResult counts upgrades by outcome.
	upgradePhase  *prometheus.HistogramVec
	upgradeResult *prometheus.CounterVec
	// goaway[dir][code]: yamux GoAway frames by direction (0 sent,
	// 1 received) and code (0 normal, 1 protocol error, 2 internal error,
	// 3 any other code a peer sends).
	goaway [2][4]prometheus.Counter
	// streamResets counts streams we reset, by reason.
	streamResets *prometheus.CounterVec
	idleCloses   prometheus.Counter
}

// Upgrade results every dashboard sees from the start; failures add their
// own tokens (noise_*, ms_*, yamux_*).
var upgradeResults = []string{"ok", "closed", "upgrade_cap", "upgrade_timeout", "memory_budget"}

// Stream reset reasons.
const (
	resetNegotiationTimeout = "negotiation_timeout"
	resetNoProtocol         = "no_protocol"
	resetNegotiationFailed  = "negotiation_failed"
)

var resetReasons = []string{resetNegotiationTimeout, resetNoProtocol, resetNegotiationFailed,
	"peer_streams", "protocol_streams", "system_streams",
	mux.RefuseStreamLimit, mux.RefuseBacklog, mux.RefuseGoingAway, mux.RefuseNoHandler, mux.RefuseMemory, mux.ResetMemory, mux.ResetHeldData}

// countReset counts a stream the server refused or reset (mux's reasons
// arrive through mux.Config.OnRefuse).
func (m *metrics) countReset(reason string) { m.streamResets.WithLabelValues(reason).Inc() }

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		peers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "swarmgate_libp2p_sessions_open", Help: "libp2p connections past the upgrade (yamux running)."}),
		upgradePhase: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "swarmgate_libp2p_upgrade_phase_seconds", Help: "Server-side duration of each libp2p upgrade phase (multistream, security, muxer).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"phase"}),
		upgradeResult: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swarmgate_libp2p_upgrades_total", Help: "libp2p upgrades (WebSocket to running yamux) by result: ok, or the failure."}, []string{"result"}),
		streamResets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swarmgate_stream_resets_total", Help: "Streams the server reset, by reason."}, []string{"reason"}),
		idleCloses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swarmgate_libp2p_idle_closes_total", Help: "libp2p connections closed after IdleTimeout without a stream."}),
	}
	frames := engine.NewLayerCounters(engine.FramesName, engine.FramesHelp, "noise")
	layerBytes := engine.NewLayerCounters(engine.LayerBytesName, engine.LayerBytesHelp, "noise")
	for dir := range 2 {
		m.frames[dir] = frames.Dir(dir)
		m.layerBytes[dir] = layerBytes.Dir(dir)
	}
	for _, phase := range []string{"multistream", "security", "muxer"} {
		m.upgradePhase.WithLabelValues(phase)
	}
	for _, r := range upgradeResults {
		m.upgradeResult.WithLabelValues(r)
	}
	for _, r := range resetReasons {
		m.streamResets.WithLabelValues(r)
	}
	goaway := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "swarmgate_yamux_goaway_total", Help: "yamux GoAway frames by direction and code (normal, protocol_error, internal_error, other)."}, []string{"dir", "code"})
	for i, dir := range []string{"sent", "received"} {
		for j, code := range []string{"normal", "protocol_error", "internal_error", "other"} {
			m.goaway[i][j] = goaway.WithLabelValues(dir, code)
		}
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.peers, frames.Collector(), layerBytes.Collector(), m.upgradePhase, m.upgradeResult, goaway, m.streamResets, m.idleCloses} {
			reg.MustRegister(c)
		}
	}
	return m
}
