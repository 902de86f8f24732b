package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// procCPU is the CPU time a process has used, to the nanosecond: the sum
// over its threads of the first field of /proc/PID/task/TID/schedstat (time
// on CPU as the scheduler accounts it, in ns). /proc/PID/stat's utime and
// stime are in clock ticks (10 ms): at 400 handshakes a tick is 25 µs per
// handshake of resolution, which is why the report does not use them.
//
// A thread that exits takes its time out of the sum; Go's runtime keeps its
// threads for the life of the process, so a Go server's sum only grows.
func procCPU(pid int) (time.Duration, error) {
	tasks, err := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/schedstat")
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("no /proc/%d/task/*/schedstat: %w", pid, errNoSchedstat)
	}
	var sum int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited between the glob and the read
		}
		f, _, _ := strings.Cut(string(b), " ")
		ns, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %w", t, b, err)
		}
		sum += ns
	}
	return time.Duration(sum), nil
}

var errNoSchedstat = errors.New("loadgen: schedstat not available (kernel without CONFIG_SCHED_INFO?)")

// tickCPU is user + system time from /proc/PID/stat, in clock ticks: the
// fallback where schedstat is missing.
func tickCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clkTck, nil
}

// clkTck is the kernel's clock tick for /proc/PID/stat times; Linux
// reports it as 100 per second on every platform Go runs on.
const clkTck = 100

// cpuOf is procCPU with the tick fallback; source says which was used.
func cpuOf(pid int) (d time.Duration, source string, err error) {
	if d, err = procCPU(pid); err == nil {
		return d, "schedstat", nil
	}
	d, err = tickCPU(pid)
	return d, "ticks", err
}

// selfCPU is the generator's own CPU time, measured like the server's.
func selfCPU() time.Duration {
	d, _, _ := cpuOf(os.Getpid())
	return d
}

// machineBusy is the CPU time all cores of this machine have spent busy
// (user, nice, system, irq, softirq, steal) from /proc/stat's cpu line, in
// clock ticks.
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("loadgen: /proc/stat starts with %q", line)
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system [idle iowait] irq softirq steal
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clkTck, nil
}

// otherLoad measures the CPU other processes take from this machine while
// loadgen runs: the machine's busy time less the generator's and, when the
// server is local, the server's. Every figure in the report shares the
// cores with that work, so the report states it.
type otherLoad struct {
	start time.Time
	busy  time.Duration // machineBusy at start
	ours  time.Duration // ourCPU at start
	probe serverProbe
	ok    bool
}

func startOtherLoad(probe serverProbe) *otherLoad {
	o := &otherLoad{start: time.Now(), probe: probe}
	var err error
	o.busy, err = machineBusy()
	o.ok = err == nil
	o.ours = o.ourCPU()
	return o
}

// ourCPU is the generator's CPU plus a local server's.
func (o *otherLoad) ourCPU() time.Duration {
	d := selfCPU()
	if o.probe.pid > 0 {
		if c, ok := o.probe.cpu(); ok {
			d += c
		}
	}
	return d
}

// pct is the other processes' share of the machine's CPU since start, in
// % of all its cores (unknown without /proc/stat).
func (o *otherLoad) pct(cores int) float64 {
	busy, err := machineBusy()
	if !o.ok || err != nil || cores <= 0 {
		return unknown
	}
	other := (busy - o.busy) - (o.ourCPU() - o.ours)
	return max(0, 100*other.Seconds()/time.Since(o.start).Seconds()/float64(cores))
}

// sockstatTCPPages is the "mem" field of /proc/net/sockstat's TCP line:
// pages of memory charged to TCP socket buffers in this network namespace
// (both ends of a loopback connection).
func sockstatTCPPages() (int64, error) {
	f, err := os.Open("/proc/net/sockstat")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fs := strings.Fields(s.Text())
		if len(fs) == 0 || fs[0] != "TCP:" {
			continue
		}
		for i := 1; i+1 < len(fs); i += 2 {
			if fs[i] == "mem" {
				return strconv.ParseInt(fs[i+1], 10, 64)
			}
		}
	}
	return 0, errors.New("loadgen: no TCP mem in /proc/net/sockstat")
}

// socketObjectCaches are the slab caches one accepted, epoll-registered TCP
// socket allocates from, whatever its buffers hold: the socket itself, its
// inode, its open file and dentry, and its epoll entry.
var socketObjectCaches = []string{"TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi"}

// socketObjectsFallback is their sum on Linux 6.x amd64 (TCP 2,368 B,
// sock_inode_cache 832, filp 192, dentry 192, eventpoll_epi 128), used when
// /proc/slabinfo is not readable (it is root-only).
const socketObjectsFallback = 3712

// socketObjectBytes estimates the kernel memory of one idle TCP socket
// outside its buffers: the object sizes of socketObjectCaches from
// /proc/slabinfo, or socketObjectsFallback. It is an estimate (slab pages
// hold a few objects' slack), stated as one in the report.
func socketObjectBytes() (bytes float64, source string) {
	b, err := os.ReadFile("/proc/slabinfo")
	if err != nil {
		return socketObjectsFallback, "estimate: slab object sizes of Linux 6.x amd64 (/proc/slabinfo not readable)"
	}
	size := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 {
			if v, err := strconv.ParseFloat(f[3], 64); err == nil {
				size[f[0]] = v
			}
		}
	}
	var sum float64
	for _, c := range socketObjectCaches {
		v, ok := size[c]
		if !ok {
			return socketObjectsFallback, "estimate: slab object sizes of Linux 6.x amd64 (/proc/slabinfo lacks " + c + ")"
		}
		sum += v
	}
	return sum, "estimate: slab object sizes from /proc/slabinfo (" + strings.Join(socketObjectCaches, " + ") + ")"
}

// thisMachine describes where the run happened.
func thisMachine() machine {
	m := machine{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, CPUs: runtime.NumCPU(), Go: runtime.Version(), PageSize: os.Getpagesize()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				m.MemoryBytes = kb << 10
			}
		}
	}
	m.SocketObjectBytes, m.SocketObjectSource = socketObjectBytes()
	return m
}

// swarmgateVersion names the code that ran: the module version and VCS
// revision stamped into the binary, else `git describe` of the working
// directory (go run does not stamp the revision).
func swarmgateVersion() string {
	var rev, modified string
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = " (modified)"
				}
			}
		}
		if rev == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
	}
	if rev != "" {
		return shortRev(rev) + modified
	}
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func shortRev(r string) string {
	if len(r) > 12 {
		return r[:12]
	}
	return r
}
