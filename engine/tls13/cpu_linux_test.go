package tls13

import "golang.org/x/sys/unix"

// threadCPU is the calling thread's CPU time in nanoseconds. Benchmarks
// lock their goroutine to its thread and report CPU time per byte next to
// wall time: on a machine shared with other work, wall time counts the time
// the benchmark waited for a core, CPU time does not.
func threadCPU() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts) != nil {
		return 0
	}
	return ts.Nano()
}

// processCPU is the process's CPU time (all threads) in nanoseconds, for
// benchmarks that run on several goroutines.
func processCPU() int64 {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
