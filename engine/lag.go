package engine

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Event-loop lag. Connections run on netpoll's pollers and the goroutines
// they hand read events to; when the process is short of CPU, every one of
// them waits in the scheduler's run queue before it runs. The timer wheel's
// goroutine waits in the same queue, and its ticker says when each tick was
// due (Go sends a ticker's due time, not its delivery time), so how late a
// tick is handled is the lag an event on any connection sees, measured once
// per tick (10 samples a second at the default Tick) at no cost per
// connection. The runtime's own view of the same thing is
// go_sched_latencies_seconds, which the Go collector exports when asked
// (collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsScheduler)).

// lagBuckets span 100 µs (an idle machine) to 10 s (a wedged one).
var lagBuckets = prometheus.ExponentialBuckets(100e-6, 4, 9)

// tickLag records how late the timer wheel handles its ticks.
type tickLag struct {
	hist prometheus.Histogram
}

// newTickLag creates swarmgate_timer_lag_seconds and registers it on reg
// (nil: unregistered).
func newTickLag(reg prometheus.Registerer) *tickLag {
	l := &tickLag{hist: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "swarmgate_timer_lag_seconds",
		Help:    "How late the timer wheel handled each tick: scheduler delay, the event-loop lag every connection sees.",
		Buckets: lagBuckets,
	})}
	if reg != nil {
		reg.MustRegister(l.hist)
	}
	return l
}

// observe records a tick that was due at due and is handled at now. A nil
// tickLag records nothing.
func (l *tickLag) observe(due, now time.Time) {
	if l == nil || due.IsZero() {
		return
	}
	l.hist.Observe(max(now.Sub(due), 0).Seconds())
}
