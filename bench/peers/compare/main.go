// Command compare runs swarmgate side by side with the peers an operator
// would pick instead (go-libp2p, nbio, gorilla), with loadgen as the common
// client, alternating targets so drift hits all of them alike, and writes
// the comparison section of bench/RESULTS.md and its charts.
//
//	bash bench/run.sh            # what it is for
//	go run ./compare -root ../.. -quick
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"
)

func main() {
	root := flag.String("root", "../..", "the swarmgate repository")
	quick := flag.Bool("quick", false, "small counts (a smoke run; results are not written to RESULTS.md)")
	counts := flag.String("idle", "1000,5000,15000", "idle connection counts")
	flag.Parse()
	if err := run(*root, *quick, *counts); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

type tools struct {
	dir                                  string
	loadgen, host, nbio, gorilla, gobulk string
}

func build(root string) (tools, error) {
	dir, err := os.MkdirTemp("", "swarmgate-compare-")
	if err != nil {
		return tools{}, err
	}
	t := tools{dir: dir, loadgen: filepath.Join(dir, "loadgen"), host: filepath.Join(dir, "libp2p-host"), nbio: filepath.Join(dir, "nbio-echo"), gorilla: filepath.Join(dir, "gorilla-echo"), gobulk: filepath.Join(dir, "gobulk")}
	cmds := []*exec.Cmd{
		exec.Command("go", "build", "-o", t.loadgen, "./loadgen"),
		exec.Command("go", "build", "-o", dir+"/", "./libp2p-host", "./nbio-echo", "./gorilla-echo", "./gobulk"),
	}
	cmds[0].Dir = root
	cmds[1].Dir = filepath.Join(root, "bench", "peers")
	for _, c := range cmds {
		if out, err := c.CombinedOutput(); err != nil {
			return t, fmt.Errorf("%s: %v\n%s", strings.Join(c.Args, " "), err, out)
		}
	}
	return t, nil
}

// server is a started target.
type server struct {
	name, addr, metrics string
	cmd                 *exec.Cmd
}

var metricsRE = regexp.MustCompile(`metrics_url=(\S+)`)

func start(name string, argv ...string) (*server, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{name: name, cmd: cmd}
	murl := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := metricsRE.FindStringSubmatch(sc.Text()); m != nil {
				murl <- m[1]
			}
		}
	}()
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() {
		cmd.Process.Kill()
		return nil, fmt.Errorf("%s printed no address", name)
	}
	s.addr = sc.Text()
	go func() {
		for sc.Scan() {
		}
	}()
	select {
	case s.metrics = <-murl:
	case <-time.After(3 * time.Second):
		// gorilla-echo serves /metrics on its WebSocket port.
		port := s.addr[strings.Index(s.addr, "/tcp/")+5:]
		port = port[:strings.IndexByte(port, '/')]
		s.metrics = "http://127.0.0.1:" + port + "/metrics"
	}
	return s, nil
}

func (s *server) stop() {
	s.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
}

func (s *server) gcURL() string {
	return strings.Replace(s.metrics, "/metrics", "/debug/pprof/heap?gc=1", 1)
}

// peers returns the start command of each target.
func (t tools) peer(name string) []string {
	switch name {
	case "swarmgate":
		// loadgen is one peer identity for every connection: per-peer limits lifted.
		return []string{t.loadgen, "serve", "-listen", "/ip4/127.0.0.1/tcp/0/ws", "-echo", "-ws-echo", "/echo", "-metrics", "127.0.0.1:0",
			"-max-conns-per-peer", "-1", "-max-peer-streams", "-1", "-max-protocol-streams", "-1"}
	case "go-libp2p":
		return []string{t.host, "-listen", "/ip4/127.0.0.1/tcp/0/ws", "-metrics", "127.0.0.1:0"}
	case "nbio":
		return []string{t.nbio}
	case "gorilla":
		return []string{t.gorilla}
	}
	panic(name)
}

type idleResult struct {
	Server         string  `json:"server"`
	Stack          string  `json:"stack"`
	Conns          int     `json:"conns"`
	RSSPerConn     float64 `json:"rss_bytes_per_conn"`
	GoroutinesPer  float64 `json:"goroutines_per_conn"`
	ConnectSeconds float64 `json:"connect_seconds"`
}

type runResult struct {
	Server  string `json:"-"`
	Results []struct {
		Stack    string             `json:"stack"`
		Scenario string             `json:"scenario"`
		Metrics  map[string]float64 `json:"metrics"`
		Errors   int                `json:"errors"`
		Note     string             `json:"note"`
	} `json:"results"`
}

func (r runResult) metric(scenario, name string) float64 {
	for _, x := range r.Results {
		if x.Scenario == scenario {
			return x.Metrics[name]
		}
	}
	return 0
}

func (r runResult) errors() int {
	n := 0
	for _, x := range r.Results {
		n += x.Errors
	}
	return n
}

// commands records every command for the report.
var commands []string

func runJSON(out any, argv ...string) error {
	commands = append(commands, strings.Join(argv[1:], " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, stderr.String())
	}
	return json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), out)
}

// idle measures n idle connections of a stack on a fresh server.
func idle(t tools, name, stack string, n int) (idleResult, error) {
	s, err := start(name, t.peer(name)...)
	if err != nil {
		return idleResult{}, err
	}
	defer s.stop()
	var r idleResult
	err = runJSON(&r, t.loadgen, "idle", "-json", "-stack", stack, "-n", fmt.Sprint(n), "-par", "64",
		"-target", s.addr, "-path", "/echo", "-server-pid", fmt.Sprint(s.cmd.Process.Pid),
		"-server-metrics", s.metrics, "-server-gc", s.gcURL(), "-name", name)
	return r, err
}

// scenarios runs loadgen run on a fresh server.
func scenarios(t tools, name, stack, scen string, extra ...string) (runResult, error) {
	s, err := start(name, t.peer(name)...)
	if err != nil {
		return runResult{}, err
	}
	defer s.stop()
	dir, _ := os.MkdirTemp(t.dir, "run-")
	args := append([]string{t.loadgen, "run", "-target", s.addr, "-stack", stack, "-scenario", scen,
		"-server-pid", fmt.Sprint(s.cmd.Process.Pid), "-server-metrics", s.metrics, "-profiles", dir, "-ws-echo", "/echo",
		"-repeat", "1"}, extra...) // the comparison repeats by alternating fresh servers itself
	commands = append(commands, strings.Join(args[1:], " "))
	cmd := exec.Command(args[0], args[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = nil
	if err := cmd.Run(); err != nil {
		return runResult{}, fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var r runResult
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		return r, err
	}
	err = json.Unmarshal(b, &r)
	r.Server = name
	return r, err
}

// bulkResult is one gobulk run against a server: go-libp2p's own client
// (WebSocket + Noise + yamux) echoing bulk bytes, server CPU from
// /proc/PID/task/*/schedstat around the run.
type bulkResult struct {
	Server  string
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	CPU     time.Duration
}

func (b bulkResult) nsPerByte() float64 {
	if b.Bytes == 0 {
		return 0
	}
	return float64(b.CPU.Nanoseconds()) / float64(b.Bytes)
}

// schedCPU is the CPU time of every thread of pid (nanoseconds, from the
// scheduler's own accounting: finer than /proc/PID/stat's clock ticks).
func schedCPU(pid int) (time.Duration, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("schedstat of %d: %v", pid, err)
	}
	var sum int64
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a thread that just ended
		}
		var ns int64
		fmt.Sscan(string(b), &ns)
		sum += ns
	}
	return time.Duration(sum), nil
}

// gobulkRun runs gobulk (conns × streams × mib) against a fresh server.
func gobulkRun(t tools, name string, conns, streams, mib int) (bulkResult, error) {
	s, err := start(name, t.peer(name)...)
	if err != nil {
		return bulkResult{}, err
	}
	defer s.stop()
	pid := s.cmd.Process.Pid
	c0, err := schedCPU(pid)
	if err != nil {
		return bulkResult{}, err
	}
	r := bulkResult{Server: name}
	argv := []string{t.gobulk, "-target", s.addr, "-conns", fmt.Sprint(conns), "-streams", fmt.Sprint(streams), "-mib", fmt.Sprint(mib)}
	if err := runJSON(&r, argv...); err != nil {
		return r, err
	}
	c1, err := schedCPU(pid)
	r.CPU = c1 - c0
	r.Server = name
	return r, err
}

func run(root string, quick bool, countsFlag string) error {
	t, err := build(root)
	if err != nil {
		return err
	}
	defer os.RemoveAll(t.dir)
	var counts []int
	for _, c := range strings.Split(countsFlag, ",") {
		var n int
		fmt.Sscan(c, &n)
		counts = append(counts, n)
	}
	connectN, msgConns, dur := "2000", "1000", "5s"
	if quick {
		counts, connectN, msgConns, dur = []int{200}, "200", "50", "1s"
	}
	rep := &comparison{started: time.Now().UTC(), counts: counts}
	log := func(f string, a ...any) { fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+f+"\n", a...) }

	// 1. Idle connections, each count alternating the servers.
	for _, n := range counts {
		for _, srv := range []string{"swarmgate", "go-libp2p"} {
			log("idle libp2p %d %s", n, srv)
			r, err := idle(t, srv, "libp2p", n)
			if err != nil {
				return err
			}
			rep.idleP2P = append(rep.idleP2P, r)
		}
		for _, srv := range []string{"swarmgate", "nbio", "gorilla"} {
			log("idle ws %d %s", n, srv)
			r, err := idle(t, srv, "ws", n)
			if err != nil {
				return err
			}
			rep.idleWS = append(rep.idleWS, r)
		}
	}
	// 2–4. Connect, throughput and messages over libp2p, alternating.
	for _, srv := range []string{"swarmgate", "go-libp2p"} {
		log("libp2p scenarios %s", srv)
		r, err := scenarios(t, srv, "ws+noise", "connect,throughput,messages", "-connect-n", connectN, "-message-conns", msgConns, "-duration", dur)
		if err != nil {
			return err
		}
		rep.p2p = append(rep.p2p, r)
	}
	// Bulk echo from go-libp2p's own client, the servers alternated.
	bulkRounds, bulkMiB := 3, 32
	if quick {
		bulkRounds, bulkMiB = 1, 4
	}
	for range bulkRounds {
		for _, srv := range []string{"swarmgate", "go-libp2p"} {
			log("gobulk %s", srv)
			r, err := gobulkRun(t, srv, 4, 4, bulkMiB)
			if err != nil {
				return err
			}
			rep.bulk = append(rep.bulk, r)
		}
	}
	// Raw WebSocket throughput and messages.
	for _, srv := range []string{"swarmgate", "nbio", "gorilla"} {
		log("ws scenarios %s", srv)
		r, err := scenarios(t, srv, "ws", "throughput,messages", "-message-conns", msgConns, "-duration", dur)
		if err != nil {
			return err
		}
		rep.ws = append(rep.ws, r)
	}
	md := rep.markdown(root)
	if quick {
		fmt.Print(md)
		return nil
	}
	return rep.write(root, md)
}

func machineLine() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				model = strings.TrimSpace(l[strings.IndexByte(l, ':')+1:])
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d CPUs, %s/%s, %s", model, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
}
