package main

import (
	"os"
	"time"
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
	CPU           time.Duration // on CPU, all threads
	RSS           int64
	Goroutines    float64
	HasCPU        bool
	HasRSS        bool
	HasGoroutines bool
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

func (p serverProbe) sample() (serverSample, error) {
	var s serverSample
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
	} else if p.metricsURL != "" {
		cpu, err := scrapeGauge(p.metricsURL, "process_cpu_seconds_total")
		if err != nil {
			return s, err
		}
		s.CPU, s.HasCPU = time.Duration(cpu*float64(time.Second)), true
		rss, err := scrapeGauge(p.metricsURL, "process_resident_memory_bytes")
		if err != nil {
			return s, err
		}
		s.RSS, s.HasRSS = int64(rss), true
	}
	if p.metricsURL != "" {
		g, err := scrapeGauge(p.metricsURL, "go_goroutines")
		if err != nil {
			return s, err
		}
		s.Goroutines, s.HasGoroutines = g, true
	}
	return s, nil
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
