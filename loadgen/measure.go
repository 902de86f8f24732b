package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// serverProbe reads the server's CPU time, resident memory and goroutines:
// from /proc for a local child (pid), from its /metrics otherwise.
type serverProbe struct {
	pid        int
	metricsURL string
}

type serverSample struct {
	CPU        time.Duration // user + system
	RSS        int64
	Goroutines float64
}

// clkTck is the kernel's clock tick for /proc/PID/stat times; Linux
// reports it as 100 per second on every platform Go runs on.
const clkTck = 100

func (p serverProbe) sample() (serverSample, error) {
	var s serverSample
	if p.pid > 0 {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/stat")
		if err != nil {
			return s, err
		}
		// Fields after the command name, which is in parentheses.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		s.CPU = time.Duration(ut+st) * time.Second / clkTck
		if s.RSS, err = rssBytes(p.pid); err != nil {
			return s, err
		}
	} else if p.metricsURL != "" {
		cpu, err := scrapeGauge(p.metricsURL, "process_cpu_seconds_total")
		if err != nil {
			return s, err
		}
		s.CPU = time.Duration(cpu * float64(time.Second))
		rss, err := scrapeGauge(p.metricsURL, "process_resident_memory_bytes")
		if err != nil {
			return s, err
		}
		s.RSS = int64(rss)
	}
	if p.metricsURL != "" {
		g, err := scrapeGauge(p.metricsURL, "go_goroutines")
		if err != nil {
			return s, err
		}
		s.Goroutines = g
	}
	return s, nil
}

// selfCPU is the generator's own CPU time (getrusage).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// isTerminal reports whether f is a terminal (for the live progress line).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progress prints a live status line on stderr when it is a terminal.
type progress struct{ on bool }

func (p progress) printf(format string, args ...any) {
	if p.on {
		fmt.Fprintf(os.Stderr, "\r\033[K"+format, args...)
	}
}

func (p progress) done() {
	if p.on {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
}
