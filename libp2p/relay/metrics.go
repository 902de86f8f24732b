package relay

import (
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	"github.com/prometheus/client_golang/prometheus"
)

// Circuit end reasons, the label values of swarmgate_relay_circuits_ended_total.
const (
	EndClosed     = "closed"            // both sides closed their write side
	EndReset      = "reset"             // a side reset its stream, or its connection ended
	EndDataLimit  = "data_limit"        // a direction went past Limit.Data
	EndDuration   = "duration"          // Limit.Duration passed
	EndStopFailed = "connection_failed" // the stop exchange failed: never spliced
)

var endReasons = []string{EndClosed, EndReset, EndDataLimit, EndDuration, EndStopFailed}

// hopTypes are the request types counted in swarmgate_relay_hop_requests_total.
var hopTypes = []string{"reserve", "connect", "other"}

// metrics are the relay's Prometheus series. Every child is resolved at
// construction, so counting on the hot path is one atomic add.
type metrics struct {
	// hop[type][status]: hop requests answered, by request type and status.
	hop [3]map[pb.Status]prometheus.Counter
	// reserved counts reservations granted: [0] new, [1] refreshed.
	reserved [2]prometheus.Counter
	refused  map[string]prometheus.Counter
	made     prometheus.Counter
	ended    map[string]prometheus.Counter
	bytes    prometheus.Counter
}

// hopStatuses are the statuses a hop reply can carry.
var hopStatuses = []pb.Status{
	pb.Status_OK,
	pb.Status_RESERVATION_REFUSED,
	pb.Status_RESOURCE_LIMIT_EXCEEDED,
	pb.Status_PERMISSION_DENIED,
	pb.Status_CONNECTION_FAILED,
	pb.Status_NO_RESERVATION,
	pb.Status_MALFORMED_MESSAGE,
	pb.Status_UNEXPECTED_MESSAGE,
}

func newMetrics(reg prometheus.Registerer, reservations, circuits func() float64) *metrics {
	hop := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "swarmgate_relay_hop_requests_total",
		Help: "Circuit relay hop requests answered, by request type (reserve, connect, other) and the status sent.",
	}, []string{"type", "status"})
	reserved := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "swarmgate_relay_reservations_made_total",
		Help: "Reservations granted: new ones, and refreshes of a live one.",
	}, []string{"kind"})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "swarmgate_relay_reservations_refused_total",
		Help: "Reservations refused, by reason (total, per_source, no_address, permission).",
	}, []string{"reason"})
	made := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "swarmgate_relay_circuits_made_total",
		Help: "Circuits spliced (both the stop and the hop OK exchanged).",
	})
	ended := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "swarmgate_relay_circuits_ended_total",
		Help: "Circuits ended, by reason (closed, reset, data_limit, duration, connection_failed).",
	}, []string{"reason"})
	bytes := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "swarmgate_relay_bytes_total",
		Help: "Bytes relayed through circuits, both directions.",
	})
	open := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "swarmgate_relay_reservations_open",
		Help: "Reservations held (expired ones until the next sweep included).",
	}, reservations)
	circ := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "swarmgate_relay_circuits_open",
		Help: "Circuits counted against the limits: from an accepted CONNECT to the circuit's end.",
	}, circuits)
	if reg != nil {
		for _, c := range []prometheus.Collector{hop, reserved, refused, made, ended, bytes, open, circ} {
			reg.MustRegister(c)
		}
	}
	m := &metrics{made: made, bytes: bytes, refused: map[string]prometheus.Counter{}, ended: map[string]prometheus.Counter{}}
	for i, t := range hopTypes {
		m.hop[i] = map[pb.Status]prometheus.Counter{}
		for _, s := range hopStatuses {
			m.hop[i][s] = hop.WithLabelValues(t, s.String())
		}
	}
	m.reserved[0] = reserved.WithLabelValues("new")
	m.reserved[1] = reserved.WithLabelValues("refresh")
	for _, r := range []string{ReasonTotal, ReasonPerSource, ReasonNoAddress, ReasonPermission} {
		m.refused[r] = refused.WithLabelValues(r)
	}
	for _, r := range endReasons {
		m.ended[r] = ended.WithLabelValues(r)
	}
	return m
}

// Request types, indexes of metrics.hop.
const (
	reqReserve = iota
	reqConnect
	reqOther
)

// answered counts a hop reply.
func (m *metrics) answered(req int, s pb.Status) {
	if c, ok := m.hop[req][s]; ok {
		c.Inc()
	}
}
