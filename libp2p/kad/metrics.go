package kad

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swarmgate/swarmgate/libp2p/kad/pb"
)

// metrics are the Kademlia server's, registered on Config.Registerer. Label
// values are stable tokens: message types in lower case, RefusedError
// reasons, table change reasons.
type metrics struct {
	requests *prometheus.CounterVec   // type, result ("ok" or a refusal reason)
	latency  *prometheus.HistogramVec // type
	resets   *prometheus.CounterVec   // reason
	delayed  prometheus.Counter
	changes  *prometheus.CounterVec // change (added, removed, refused), reason
	// ok[type] caches the hot counters, indexed by message type.
	ok       [numTypes]prometheus.Counter
	duration [numTypes]prometheus.Observer
}

// numTypes is the number of message types, plus one slot for unknown ones.
const numTypes = 7

// typeLabel is the metrics label of a message type.
func typeLabel(t pb.Message_MessageType) string {
	switch t {
	case pb.Message_PUT_VALUE:
		return "put_value"
	case pb.Message_GET_VALUE:
		return "get_value"
	case pb.Message_ADD_PROVIDER:
		return "add_provider"
	case pb.Message_GET_PROVIDERS:
		return "get_providers"
	case pb.Message_FIND_NODE:
		return "find_node"
	case pb.Message_PING:
		return "ping"
	}
	return "unknown"
}

func typeIndex(t pb.Message_MessageType) int {
	if t >= 0 && int(t) < numTypes-1 {
		return int(t)
	}
	return numTypes - 1
}

// Table change reasons.
const (
	reasonIdentify = "identify"      // added: identify lists the protocol
	reasonPush     = "push"          // added or removed by an identify push
	reasonAPI      = "api"           // the embedding API
	reasonExpired  = "grace_expired" // removed: disconnected past the grace period
	reasonNotDHT   = "not_dht"       // removed: the protocol is no longer listed
	reasonNoAddrs  = "no_addrs"      // refused or removed: no usable address
)

func newMetrics(reg prometheus.Registerer, t *Table) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swarmgate_kad_requests_total", Help: "Kademlia requests by message type and result (ok, or why the stream was reset)."}, []string{"type", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "swarmgate_kad_request_duration_seconds", Help: "Time from a complete request to its response queued on the stream, by message type.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 2, 18)}, []string{"type"}),
		resets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swarmgate_kad_stream_resets_total", Help: "Kademlia streams we reset, by reason."}, []string{"reason"}),
		delayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swarmgate_kad_requests_delayed_total", Help: "Kademlia requests held back until the peer's request rate allowed them."}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swarmgate_kad_table_changes_total", Help: "Routing table entries added, removed, or refused, by reason."}, []string{"change", "reason"}),
	}
	for i := range numTypes {
		label := typeLabel(pb.Message_MessageType(i))
		m.ok[i] = m.requests.WithLabelValues(label, "ok")
		m.duration[i] = m.latency.WithLabelValues(label)
	}
	if reg != nil {
		entries := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "swarmgate_kad_table_entries", Help: "DHT servers in the routing table (connected, in their grace period, or static)."},
			func() float64 { return float64(t.Len()) })
		connected := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "swarmgate_kad_table_connected", Help: "Routing table entries with a live connection."},
			func() float64 { _, c := t.Counts(); return float64(c) })
		for _, c := range []prometheus.Collector{m.requests, m.latency, m.resets, m.delayed, m.changes, entries, connected} {
			reg.MustRegister(c)
		}
	}
	return m
}

// request counts one request of type t: ok when err is nil, else refused
// with err's reason.
func (m *metrics) request(t pb.Message_MessageType, err *RefusedError, d time.Duration) {
	i := typeIndex(t)
	if err != nil {
		m.requests.WithLabelValues(typeLabel(t), err.Reason).Inc()
		return
	}
	m.ok[i].Inc()
	m.duration[i].Observe(d.Seconds())
}

func (m *metrics) change(change, reason string, n int) {
	if n > 0 {
		m.changes.WithLabelValues(change, reason).Add(float64(n))
	}
}
