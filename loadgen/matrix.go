package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/libp2p"
)

// scenarioNames are the scenarios in report order.
var scenarioNames = []string{"connect", "hold", "throughput", "messages", "churn"}

// runFlags are shared by the default run and `loadgen run`.
type runFlags struct {
	stacks, scenarios          string
	jsonPath, csvPath, htmlOut string
	profiles                   string
	quick                      bool
	connectN, holdN, msgConns  int
	duration                   time.Duration
}

func (f *runFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.stacks, "stack", "all", "comma-separated stacks: ws+noise, ws+plaintext, wss+noise, wss+plaintext, ws, wss")
	fs.StringVar(&f.scenarios, "scenario", "all", "comma-separated scenarios: "+strings.Join(scenarioNames, ", "))
	fs.StringVar(&f.jsonPath, "json", "", "write the JSON report here (default: <profiles>/report.json)")
	fs.StringVar(&f.csvPath, "csv", "", "write the results as CSV here")
	fs.StringVar(&f.htmlOut, "html", "", "write an HTML report with charts here (default: <profiles>/report.html)")
	fs.StringVar(&f.profiles, "profiles", "", "directory for pprof profiles (default: profiles/<timestamp>); \"none\" disables")
	fs.BoolVar(&f.quick, "quick", false, "small counts and short durations (tests, smoke runs)")
	fs.IntVar(&f.connectN, "connect-n", 0, "connections the connect scenario opens (default 400)")
	fs.IntVar(&f.holdN, "hold-n", 0, "idle connections the hold scenario holds (default 2000)")
	fs.IntVar(&f.msgConns, "message-conns", 0, "connections of the messages scenario (default 200)")
	fs.DurationVar(&f.duration, "duration", 0, "length of the timed scenarios (default 2s)")
}

// matrix is the default command: an engine child process on loopback, the
// default matrix against it, and the report.
func matrix(args []string) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	var rf runFlags
	rf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	srv, err := startChild()
	if err != nil {
		return err
	}
	defer srv.stop()
	return runMatrix(rf, srv.targets, serverProbe{pid: srv.pid, metricsURL: srv.metricsURL}, srv.metricsURL, "loadgen serve (child process, loopback)")
}

// runCmd drives any libp2p WebSocket server.
func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var rf runFlags
	rf.register(fs)
	var targets multiFlag
	fs.Var(&targets, "target", "server multiaddr (/ws or /tls/ws, optionally /p2p/ID); repeat for a /ws and a /tls/ws address")
	echoPath := fs.String("ws-echo", "/echo", "raw WebSocket echo path for the ws and wss stacks")
	metrics := fs.String("server-metrics", "", "the server's Prometheus /metrics URL (CPU, memory, goroutines)")
	pid := fs.Int("server-pid", 0, "the server's process id, when it runs on this machine (/proc is more precise)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(targets) == 0 {
		return fmt.Errorf("run: -target is required")
	}
	tgs := map[bool]target{}
	for _, t := range targets {
		m, err := ma.NewMultiaddr(t)
		if err != nil {
			return err
		}
		tgs[isTLSAddr(m)] = target{addr: m, echoPath: *echoPath}
	}
	return runMatrix(rf, tgs, serverProbe{pid: *pid, metricsURL: *metrics}, *metrics, strings.Join(targets, " "))
}

func isTLSAddr(m ma.Multiaddr) bool {
	for _, c := range m {
		if c.Protocol().Code == ma.P_TLS || c.Protocol().Code == ma.P_WSS {
			return true
		}
	}
	return false
}

// report is the whole run, the JSON document.
type report struct {
	Schema     int          `json:"schema"`
	Started    time.Time    `json:"started"`
	Seconds    float64      `json:"seconds"`
	Server     string       `json:"server"`
	Machine    machine      `json:"machine"`
	Results    []Result     `json:"results"`
	NoiseCost  []noiseRatio `json:"noise_cost"`
	Profiles   string       `json:"profiles,omitempty"`
	NotRun     []string     `json:"not_run,omitempty"`
	Parameters params       `json:"-"`
}

type machine struct {
	GOOS   string `json:"goos"`
	GOARCH string `json:"goarch"`
	CPUs   int    `json:"cpus"`
	Go     string `json:"go"`
}

func runMatrix(rf runFlags, tgs map[bool]target, probe serverProbe, metricsURL, serverName string) error {
	stacks, err := parseStacks(rf.stacks)
	if err != nil {
		return err
	}
	scenarios := scenarioNames
	if rf.scenarios != "" && rf.scenarios != "all" {
		scenarios = strings.Split(rf.scenarios, ",")
	}
	p := defaultParams()
	if rf.quick {
		p = params{ConnectN: 40, ConnectPar: 8, HoldN: 100, Duration: 500 * time.Millisecond, MessageConns: 20, MessageSize: 64, ThroughputK: []int{1, 4}, ChurnPar: 4}
	}
	if rf.connectN > 0 {
		p.ConnectN = rf.connectN
	}
	if rf.holdN > 0 {
		p.HoldN = rf.holdN
	}
	if rf.msgConns > 0 {
		p.MessageConns = rf.msgConns
	}
	if rf.duration > 0 {
		p.Duration = rf.duration
	}
	if metricsURL != "" {
		p.SettleGCURL = strings.Replace(metricsURL, "/metrics", "/debug/pprof/heap?gc=1", 1)
	}
	dir := rf.profiles
	if dir == "" {
		dir = filepath.Join("profiles", time.Now().UTC().Format("20060102-150405"))
	}
	if dir == "none" {
		dir = ""
	}
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if metricsURL != "" {
			p.ProfileServer = serverProfiler(dir, strings.TrimSuffix(metricsURL, "/metrics")+"/debug/pprof/")
		}
		f, err := os.Create(filepath.Join(dir, "generator-cpu.pprof"))
		if err == nil {
			pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	// The child's certificate is self-signed on loopback: the generator
	// measures, it does not authenticate the server's TLS (Noise does).
	eng := engine.New(engine.Config{Logger: quiet, TLSClient: &tls.Config{InsecureSkipVerify: true}})
	defer eng.Close()
	host, err := libp2p.NewOn(eng, libp2p.Config{InsecurePlaintext: true})
	if err != nil {
		return err
	}
	cl := &client{eng: eng, host: host}
	rep := report{Schema: 1, Started: time.Now().UTC(), Server: serverName, Parameters: p, Profiles: dir,
		Machine: machine{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, CPUs: runtime.NumCPU(), Go: runtime.Version()}}
	prog := progress{on: isTerminal(os.Stderr)}
	for _, st := range stacks {
		tg, ok := tgs[st.TLS]
		if !ok {
			rep.NotRun = append(rep.NotRun, st.Name+": no "+map[bool]string{false: "/ws", true: "/tls/ws"}[st.TLS]+" target")
			continue
		}
		r := &runner{cl: cl, tg: tg, st: st, probe: probe, p: p, prog: prog}
		for _, sc := range scenarios {
			prog.printf("%s %s …", st.Name, sc)
			switch sc {
			case "connect":
				rep.Results = append(rep.Results, r.connect())
			case "hold":
				rep.Results = append(rep.Results, r.hold())
			case "throughput":
				for _, k := range p.ThroughputK {
					rep.Results = append(rep.Results, r.throughput(k))
				}
			case "messages":
				rep.Results = append(rep.Results, r.messages())
			case "churn":
				rep.Results = append(rep.Results, r.churn())
			default:
				return fmt.Errorf("unknown scenario %q", sc)
			}
		}
	}
	prog.done()
	rep.Seconds = time.Since(rep.Started).Seconds()
	rep.NoiseCost = noiseCost(rep.Results)
	if dir != "" {
		if rf.jsonPath == "" {
			rf.jsonPath = filepath.Join(dir, "report.json")
		}
		if rf.htmlOut == "" {
			rf.htmlOut = filepath.Join(dir, "report.html")
		}
		if f, err := os.Create(filepath.Join(dir, "generator-heap.pprof")); err == nil {
			pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
	}
	writeMarkdown(os.Stdout, rep)
	return writeFiles(rep, rf)
}

// serverProfiler returns the ProfileServer hook: a CPU profile of the
// server for the scenario's duration, then heap, allocs, goroutine, mutex
// and block profiles, into dir/<stack>/<scenario>/.
func serverProfiler(dir, base string) func(string, time.Duration) func() {
	get := func(url, path string) {
		resp, err := http.Get(url)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return
		}
		if f, err := os.Create(path); err == nil {
			io.Copy(f, resp.Body)
			f.Close()
		}
	}
	return func(name string, d time.Duration) func() {
		sub := filepath.Join(dir, strings.ReplaceAll(name, "+", "_"))
		os.MkdirAll(sub, 0o755)
		secs := max(1, int(d.Round(time.Second)/time.Second))
		done := make(chan struct{})
		go func() {
			defer close(done)
			get(fmt.Sprintf("%sprofile?seconds=%d", base, secs), filepath.Join(sub, "server-cpu.pprof"))
		}()
		return func() {
			<-done
			for _, p := range []string{"heap", "allocs", "goroutine", "mutex", "block"} {
				get(base+p, filepath.Join(sub, "server-"+p+".pprof"))
			}
		}
	}
}

// child is a `loadgen serve` process started for the default run.
type child struct {
	cmd        *exec.Cmd
	pid        int
	metricsURL string
	targets    map[bool]target
}

// startChild runs this binary as `loadgen serve` on loopback with a /ws and
// a /tls/ws listener, the raw echo, plaintext enabled for measurement, and
// metrics plus pprof on a free port.
func startChild() (*child, error) {
	c, err := startChildWith("/ip4/127.0.0.1/tcp/0/ws", "/ip4/127.0.0.1/tcp/0/tls/ws")
	if err != nil {
		// A build without TLS listeners still measures the /ws stacks.
		c, err = startChildWith("/ip4/127.0.0.1/tcp/0/ws")
	}
	return c, err
}

func startChildWith(listens ...string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	// One loadgen identity opens every connection: the per-peer limits are
	// lifted; everything else runs at its default.
	args := []string{"serve", "-echo", "-ws-echo", "/echo", "-insecure-plaintext", "-max-conns-per-peer", "-1", "-max-peer-streams", "-1", "-max-protocol-streams", "-1", "-metrics", "127.0.0.1:0", "-profile-rates"}
	for _, l := range listens {
		args = append(args, "-listen", l)
	}
	cmd := exec.Command(exe, args...)
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, pid: cmd.Process.Pid, targets: map[bool]target{}}
	metrics := make(chan string, 1)
	var errLines []string
	go func() {
		re := regexp.MustCompile(`metrics_url=(\S+)`)
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			if m := re.FindStringSubmatch(s.Text()); m != nil {
				metrics <- m[1]
			}
			if len(errLines) < 20 {
				errLines = append(errLines, s.Text())
			}
		}
	}()
	lines := bufio.NewScanner(stdout)
	for i := 0; i < len(listens) && lines.Scan(); i++ {
		m, err := ma.NewMultiaddr(lines.Text())
		if err != nil {
			c.stop()
			return nil, err
		}
		c.targets[isTLSAddr(m)] = target{addr: m, echoPath: "/echo"}
	}
	if len(c.targets) == 0 {
		c.stop()
		return nil, fmt.Errorf("loadgen serve did not start: %s", strings.Join(errLines, "; "))
	}
	select {
	case c.metricsURL = <-metrics:
	case <-time.After(10 * time.Second):
		c.stop()
		return nil, fmt.Errorf("loadgen serve logged no metrics_url")
	}
	go io.Copy(io.Discard, stdout)
	return c, nil
}

func (c *child) stop() {
	c.cmd.Process.Signal(os.Interrupt)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		c.cmd.Process.Kill()
	}
}
