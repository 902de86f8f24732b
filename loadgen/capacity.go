package main

import (
	"encoding/json"
	"errors"
	"flag"
	"math"
	"strconv"
	"strings"
)

// planTarget is the fleet an operator plans for (-plan-* flags).
type planTarget struct {
	Peers     float64 `json:"peers"`       // connected at once
	NewPerSec float64 `json:"new_per_sec"` // new connections per second across the fleet
	// Mbps is payload megabits per second across the fleet, each byte
	// received from one peer and sent to one (what the echo scenarios
	// measure, and what a relay does).
	Mbps float64 `json:"mbps"`
	// Headroom is the fraction of each machine's cores and memory the plan
	// may use (the rest absorbs bursts, GC and the OS).
	Headroom float64 `json:"headroom"`
}

func (t *planTarget) register(fs *flag.FlagSet) {
	t.Peers = 1_000_000
	fs.Var(countFlag{&t.Peers}, "plan-peers", "capacity plan: peers connected at once across the fleet")
	fs.Float64Var(&t.NewPerSec, "plan-new-per-sec", 500, "capacity plan: new connections per second across the fleet")
	fs.Float64Var(&t.Mbps, "plan-mbps", 200, "capacity plan: payload Mbit/s across the fleet (each byte in from one peer and out to one)")
	fs.Float64Var(&t.Headroom, "plan-headroom", 0.7, "capacity plan: fraction of each machine's cores and memory to use")
}

// countFlag is a float flag printed as a whole number ("1000000", not
// "1e+06", in -help).
type countFlag struct{ v *float64 }

func (c countFlag) String() string {
	if c.v == nil {
		return "0"
	}
	return strconv.FormatFloat(*c.v, 'f', -1, 64)
}

func (c countFlag) Set(s string) error {
	v, err := strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64)
	if err == nil && v <= 0 {
		err = errors.New("must be positive")
	}
	if err != nil {
		return err
	}
	*c.v = v
	return nil
}

// num is a float that is null in JSON when it is unknown (NaN).
type num float64

func (n num) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(n)) || math.IsInf(float64(n), 0) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(n))
}

func (n *num) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*n = num(unknown)
		return nil
	}
	return json.Unmarshal(b, (*float64)(n))
}

// span is a derived figure: its value from the medians of its inputs, and
// the range it takes between the runs' most and least favourable inputs
// (every input's min, every input's max). Null when unknown.
type span struct {
	Value num `json:"value"`
	Lo    num `json:"lo"`
	Hi    num `json:"hi"`
	// Unmeasurable: the inputs were measured but their spread reaches a
	// value with no meaning (a memory cost of zero or less): the run was
	// too noisy to derive this figure.
	Unmeasurable bool `json:"unmeasurable,omitempty"`
}

func (s span) known() bool { return !math.IsNaN(float64(s.Value)) && !s.Unmeasurable }

func (s span) stat() stat {
	return stat{Median: float64(s.Value), Min: float64(s.Lo), Max: float64(s.Hi), N: 2, Known: s.known()}
}

var unknownSpan = span{num(unknown), num(unknown), num(unknown), false}

// derive evaluates f at the medians, at every input's min and at every
// input's max. f must be monotone in each input in the same direction
// (every derived figure here is: each input is a cost).
func derive(f func(pick func(stat) float64) float64, inputs ...stat) span {
	for _, in := range inputs {
		if !in.Known {
			return unknownSpan
		}
	}
	v := f(func(s stat) float64 { return s.Median })
	a := f(func(s stat) float64 { return s.Min })
	b := f(func(s stat) float64 { return s.Max })
	for _, x := range []float64{v, a, b} {
		if !finite(x) || x < 0 {
			return span{num(unknown), num(unknown), num(unknown), true}
		}
	}
	return span{num(v), num(min(a, b)), num(max(a, b)), false}
}

// capacityRow is what one machine like this one does with one stack.
type capacityRow struct {
	Stack string `json:"stack"`
	// Memory per idle peer: the server's RSS, and the kernel's memory
	// for its socket (buffers measured, objects estimated; see Machine).
	RSSPerPeer    span `json:"rss_bytes_per_peer"`
	KernelPerPeer span `json:"kernel_bytes_per_peer"`
	PeersPerGiB   span `json:"peers_per_gib"` // of server RSS, kernel memory excluded
	// CPU: new connections and payload bytes one core of this machine
	// serves per second, from server CPU per handshake and per byte, and
	// the share of a core an idle peer costs (keepalives).
	HandshakesPerCoreSec span   `json:"handshakes_per_core_sec"`
	BytesPerCoreSec      span   `json:"bytes_per_core_sec"`
	BytesFrom            string `json:"bytes_from"` // the throughput scenario with the highest CPU per byte
	IdleCoresPerPeer     span   `json:"idle_cores_per_peer"`
	// At the plan's mix (its new connections and bytes per peer), within
	// the plan's headroom: how many peers one machine takes before its
	// memory or its CPU runs out, and the fleet size that follows.
	PeersByMemory   span   `json:"peers_per_machine_by_memory"`
	PeersByCPU      span   `json:"peers_per_machine_by_cpu"`
	PeersPerMachine span   `json:"peers_per_machine"`
	Machines        span   `json:"machines"`
	RunsOutFirst    string `json:"runs_out_first"` // "memory", "CPU", "memory or CPU" (spreads overlap), "" (unknown)
}

// capacity is the answer to "how many peers per machine, and what runs
// out first", per libp2p stack, for the machine the run measured.
type capacity struct {
	Plan   planTarget    `json:"plan"`
	Stacks []capacityRow `json:"stacks"`
	// Relay: the relay scenario's stacks (relay_report.go).
	Relay []relayCapacityRow `json:"relay,omitempty"`
}

// capacityStacks are the stacks a planner deploys (the raw WebSocket
// stacks are a baseline, not libp2p peers).
var capacityStacks = []string{"ws+noise", "ws+plaintext", "wss+noise", "wss+plaintext"}

// computeCapacity derives the capacity summary from aggregated results and
// the machine (cores, memory, socket objects) they were measured on.
func computeCapacity(results []Result, m machine, plan planTarget) capacity {
	c := capacity{Plan: plan}
	cores, mem := float64(m.CPUs), float64(m.MemoryBytes)
	h := plan.Headroom
	if h <= 0 || h > 1 {
		h = 1
	}
	for _, st := range capacityStacks {
		if !ranStack(results, st) {
			continue
		}
		row := capacityRow{Stack: st}
		rss, okR := find(results, st, "hold").get("server_rss_bytes_per_conn")
		sockbuf, okB := find(results, st, "hold").get("kernel_sockbuf_bytes_per_conn")
		hs, okH := find(results, st, "connect").get("server_cpu_us_per_conn")
		idlePer1k, okI := find(results, st, "hold").get("server_idle_cpu_pct_per_1k_conns")
		if !okI { // schema 1: idle CPU of the whole server over the connections
			if pct, ok := find(results, st, "hold").get("server_idle_cpu_pct"); ok {
				held, _ := find(results, st, "hold").get("conns")
				if pct.Known && held.Median > 0 {
					k := 1000 / held.Median
					pct.Median, pct.Min, pct.Max = pct.Median*k, pct.Min*k, pct.Max*k
				}
				idlePer1k, okI = pct, true
			}
		}
		// The dearest throughput run: planning on the cheaper one would
		// promise what a different stream mix does not deliver.
		var perByte stat
		var okP bool
		for _, r := range results {
			if r.Stack == st && strings.HasPrefix(r.Scenario, "throughput-") {
				if s, ok := r.get("server_cpu_ns_per_byte"); ok && s.Known && (!okP || s.Median > perByte.Median) {
					perByte, okP, row.BytesFrom = s, true, r.Scenario
				}
			}
		}
		if !okR {
			rss = stat{Median: unknown}
		}
		if !okH {
			hs = stat{Median: unknown}
		}
		if !okP {
			perByte = stat{Median: unknown}
		}
		kernel := stat{Median: m.SocketObjectBytes, Min: m.SocketObjectBytes, Max: m.SocketObjectBytes, N: 1, Known: m.SocketObjectBytes > 0}
		if okB && sockbuf.Known {
			kernel.Median += max(0, sockbuf.Median)
			kernel.Min += max(0, sockbuf.Min)
			kernel.Max += max(0, sockbuf.Max)
		}
		// Cores per idle peer; below zero is noise around nothing.
		idle := stat{Known: true, N: 1} // no hold run: no idle cost to add
		if okI && idlePer1k.Known {
			c := func(v float64) float64 { return max(0, v) / 100 / 1000 }
			idle = stat{Median: c(idlePer1k.Median), Min: c(idlePer1k.Min), Max: c(idlePer1k.Max), N: idlePer1k.N, Known: true}
		} else if okI {
			idle = stat{Median: unknown}
		}

		row.RSSPerPeer = derive(func(p func(stat) float64) float64 { return p(rss) }, rss)
		row.KernelPerPeer = derive(func(p func(stat) float64) float64 { return p(kernel) }, kernel)
		row.PeersPerGiB = derive(func(p func(stat) float64) float64 { return (1 << 30) / p(rss) }, rss)
		row.HandshakesPerCoreSec = derive(func(p func(stat) float64) float64 { return 1e6 / p(hs) }, hs)
		row.BytesPerCoreSec = derive(func(p func(stat) float64) float64 { return 1e9 / p(perByte) }, perByte)
		row.IdleCoresPerPeer = derive(func(p func(stat) float64) float64 { return p(idle) }, idle)

		// Per peer at the plan's mix: memory, and cores (its share of the
		// handshakes and bytes, plus its idle cost).
		var newPerPeer, bytesPerPeer float64
		if plan.Peers > 0 {
			newPerPeer = plan.NewPerSec / plan.Peers
			bytesPerPeer = plan.Mbps * 1e6 / 8 / plan.Peers
		}
		row.PeersByMemory, row.PeersByCPU = unknownSpan, unknownSpan
		if mem > 0 { // a schema-1 report does not say
			row.PeersByMemory = derive(func(p func(stat) float64) float64 {
				if p(rss) <= 0 { // a run whose RSS fell: noise, not a cost
					return unknown
				}
				return mem * h / (p(rss) + p(kernel))
			}, rss, kernel)
		}
		if cores > 0 {
			row.PeersByCPU = derive(func(p func(stat) float64) float64 {
				corePerPeer := newPerPeer*p(hs)*1e-6 + bytesPerPeer*p(perByte)*1e-9 + p(idle)
				return cores * h / corePerPeer
			}, hs, perByte, idle)
		}
		row.PeersPerMachine, row.RunsOutFirst = limitOf(row.PeersByMemory, row.PeersByCPU)
		if row.PeersPerMachine.known() && plan.Peers > 0 {
			f := func(v num) num { return num(math.Ceil(plan.Peers / float64(v))) }
			pm := row.PeersPerMachine
			row.Machines = span{f(pm.Value), f(pm.Hi), f(pm.Lo), false}
		} else {
			row.Machines = unknownSpan
		}
		c.Stacks = append(c.Stacks, row)
	}
	c.Relay = relayCapacity(results)
	return c
}

// limitOf is the smaller of the memory and CPU limits and its name; when
// their ranges overlap, which runs out first is within the noise.
func limitOf(memory, cpu span) (span, string) {
	why := func(s span) string {
		if s.Unmeasurable {
			return "not measurable"
		}
		return "unknown"
	}
	switch {
	case !memory.known() && !cpu.known():
		return unknownSpan, ""
	case !cpu.known():
		return memory, "memory (CPU " + why(cpu) + ")"
	case !memory.known():
		return cpu, "CPU (memory " + why(memory) + ")"
	}
	lim, name := memory, "memory"
	if cpu.Value < memory.Value {
		lim, name = cpu, "CPU"
	}
	if memory.Lo <= cpu.Hi && cpu.Lo <= memory.Hi {
		name = "memory or CPU (within the spread)"
	}
	// The fleet needs as many machines as the tighter limit at each end.
	return span{lim.Value, min(memory.Lo, cpu.Lo), min(memory.Hi, cpu.Hi), false}, name
}

func ranStack(results []Result, st string) bool {
	for _, r := range results {
		if r.Stack == st {
			return true
		}
	}
	return false
}
