package engine

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestTickLag(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := newTickLag(reg)
	due := time.Now()
	l.observe(due, due.Add(3*time.Millisecond))
	l.observe(due, due.Add(-time.Millisecond)) // clock steps count as on time
	var none *tickLag
	none.observe(due, due)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 {
		t.Fatal(mfs, err)
	}
	h := mfs[0].Metric[0].Histogram
	if mfs[0].GetName() != "swarmgate_timer_lag_seconds" || h.GetSampleCount() != 2 || h.GetSampleSum() < 0.003 || h.GetSampleSum() > 0.0031 {
		t.Fatalf("%v", mfs[0])
	}
}
