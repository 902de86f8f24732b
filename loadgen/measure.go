package main

import (
	"net/http"
	"os"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// serverProbe reads the server's CPU time, resident memory and goroutines:
// from /proc for a local server (pid), from its /metrics otherwise. With
// neither, every server figure is unknown.
type serverProbe struct {
	pid        int
	metricsURL string
}

// serverSample is one reading; the Has fields say which figures the probe
// could read, so that a figure it could not is reported as unknown, not 0.
type serverSample struct {
	CPU        time.Duration // on CPU, all threads
	RSS        int64
	Goroutines float64
	// HeapFree is Go heap memory the server holds free and has not yet
	// returned to the OS (go_memstats_heap_idle_bytes minus
	// go_memstats_heap_released_bytes): resident, but the scavenger
	// returns it over the next seconds at its own pace.
	HeapFree int64
	// Heap is the Go heap's live bytes (go_memstats_alloc_bytes): after a
	// GC, a far steadier reading than RSS for small differences.
	Heap          int64
	HasHeap       bool
	HasCPU        bool
	HasRSS        bool
	HasGoroutines bool
	HasHeapFree   bool
}

// inUse is RSS less the free heap not yet returned: memory the server
// uses, without the noise of how far the scavenger has got (after a burst
// of throughput it returns tens of MB over seconds, which would otherwise
// show as a negative or inflated cost per connection).
func (s serverSample) inUse() int64 {
	if s.HasHeapFree {
		return s.RSS - s.HeapFree
	}
	return s.RSS
}

// cpuSource says where server CPU comes from, for the report's method line.
func (p serverProbe) cpuSource() string {
	switch {
	case p.pid > 0:
		if _, src, err := cpuOf(p.pid); err == nil {
			return src
		}
	case p.metricsURL != "":
		return "metrics" // process_cpu_seconds_total: clock ticks
	}
	return "unknown"
}

// cpu reads only the server's CPU time.
func (p serverProbe) cpu() (time.Duration, bool) {
	if p.pid > 0 {
		d, _, err := cpuOf(p.pid)
		return d, err == nil
	}
	if p.metricsURL != "" {
		g, err := scrapeGauges(p.metricsURL)
		if v, ok := g["process_cpu_seconds_total"]; err == nil && ok {
			return time.Duration(v * float64(time.Second)), true
		}
	}
	return 0, false
}

// sample reads everything the probe can: the server's /metrics first (one
// scrape), then CPU and RSS from /proc, so the scrape's own cost lands
// before the CPU reading rather than inside the next measured interval.
func (p serverProbe) sample() (serverSample, error) {
	var s serverSample
	var g map[string]float64
	if p.metricsURL != "" {
		var err error
		if g, err = scrapeGauges(p.metricsURL); err != nil {
			return s, err
		}
	}
	if p.pid > 0 {
		cpu, _, err := cpuOf(p.pid)
		if err != nil {
			return s, err
		}
		s.CPU, s.HasCPU = cpu, true
		if s.RSS, err = rssBytes(p.pid); err != nil {
			return s, err
		}
		s.HasRSS = true
	} else if g != nil {
		if v, ok := g["process_cpu_seconds_total"]; ok {
			s.CPU, s.HasCPU = time.Duration(v*float64(time.Second)), true
		}
		if v, ok := g["process_resident_memory_bytes"]; ok {
			s.RSS, s.HasRSS = int64(v), true
		}
	}
	if v, ok := g["go_goroutines"]; ok {
		s.Goroutines, s.HasGoroutines = v, true
	}
	if v, ok := g["go_memstats_alloc_bytes"]; ok {
		s.Heap, s.HasHeap = int64(v), true
	}
	idle, ok1 := g["go_memstats_heap_idle_bytes"]
	released, ok2 := g["go_memstats_heap_released_bytes"]
	if ok1 && ok2 {
		s.HeapFree, s.HasHeapFree = int64(idle-released), true
	}
	return s, nil
}

// scrapeGauges reads every unlabelled gauge and counter of a Prometheus
// endpoint in one request.
func scrapeGauges(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	tp := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := tp.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, err
	}
	out := make(map[string]float64, len(fams))
	for name, f := range fams {
		if len(f.Metric) != 1 || len(f.Metric[0].Label) != 0 {
			continue
		}
		switch m := f.Metric[0]; {
		case m.Gauge != nil:
			out[name] = m.Gauge.GetValue()
		case m.Counter != nil:
			out[name] = m.Counter.GetValue()
		}
	}
	return out, nil
}

// cpuPer is the server CPU between two samples divided by n, in units of
// per (time.Microsecond for µs per connection), or unknown.
func cpuPer(s0, s1 serverSample, n float64, per time.Duration) float64 {
	if !s0.HasCPU || !s1.HasCPU || n <= 0 {
		return unknown
	}
	return float64(s1.CPU-s0.CPU) / float64(per) / n
}

// isTerminal reports whether f is a terminal (for the live progress line).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
