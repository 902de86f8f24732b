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
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgate/swarmgate/engine"
	"github.com/swarmgate/swarmgate/libp2p"
	"github.com/swarmgate/swarmgate/libp2p/relay"
)

// scenarioNames are the scenarios in report order.
var scenarioNames = []string{"connect", "hold", "throughput", "messages", "churn", "dht", "relay"}

// optInScenarios run only when -scenario names them, not with "all":
// relay holds -relay-n connections of distinct peers and moves hundreds of
// MB through circuits and a baseline echo, which would double the default
// matrix's time (three runs on two stacks), and it needs a relay on the
// target.
var optInScenarios = []string{"relay"}

// runFlags are shared by the default run and `loadgen run`.
type runFlags struct {
	stacks, scenarios          string
	jsonPath, csvPath, htmlOut string
	profiles                   string
	quick                      bool
	connectN, holdN, msgConns  int
	dhtN                       int
	dhtInflight                int
	relayN, relayCircuits      int
	relayBytes                 int64
	duration                   time.Duration
	repeat                     int
	plan                       planTarget
}

func (f *runFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.stacks, "stack", "all", "comma-separated stacks: ws+noise, ws+plaintext, wss+noise, wss+plaintext, ws, wss")
	fs.StringVar(&f.scenarios, "scenario", "all", "comma-separated scenarios: "+strings.Join(scenarioNames, ", ")+"; all: every one but "+strings.Join(optInScenarios, ", "))
	fs.StringVar(&f.jsonPath, "json", "", "write the JSON report here (default: <profiles>/report.json); - prints it alone on stdout, without the Markdown (a generator pod's log, for loadgen merge)")
	fs.StringVar(&f.csvPath, "csv", "", "write the results as CSV here")
	fs.StringVar(&f.htmlOut, "html", "", "write an HTML report with charts here (default: <profiles>/report.html; none with -json -)")
	fs.StringVar(&f.profiles, "profiles", "", "directory for the reports and pprof profiles (default: profiles/<timestamp>); \"none\": the reports in profiles/<timestamp>, no profiles")
	fs.BoolVar(&f.quick, "quick", false, "small counts and short durations (tests, smoke runs)")
	fs.IntVar(&f.connectN, "connect-n", 0, "connections the connect scenario opens (default 400)")
	fs.IntVar(&f.holdN, "hold-n", 0, "idle connections the hold scenario holds (default 2000)")
	fs.IntVar(&f.dhtN, "dht-n", 0, "light clients the dht scenario connects as DHT servers, each a peer of its own (default 300)")
	fs.IntVar(&f.dhtInflight, "dht-inflight", 0, "FIND_NODE requests the dht scenario keeps in flight, each from its own client, one after another (default 64: latency is the service time plus a short queue; -dht-inflight equal to -dht-n loads the server as hard as the clients can)")
	fs.IntVar(&f.msgConns, "message-conns", 0, "connections of the messages scenario (default 200)")
	fs.IntVar(&f.relayN, "relay-n", 0, "light clients the relay scenario connects, each a peer of its own, that reserve a slot on the relay (default 1000, -quick 100); the child server allows at least this many reservations")
	fs.IntVar(&f.relayCircuits, "relay-circuits", 0, "circuits the relay scenario opens at once, each from one more light client to a reserving one that echoes (default 200, -quick 20; at most -relay-n, and the relay's 4,096 circuits)")
	fs.Int64Var(&f.relayBytes, "relay-bytes", 0, "bytes each relay circuit carries each way, every one checked, and each stream of the echo baseline echoes (default 1048576, -quick 65536; capped at the data limit a relay announces: the child relay announces none)")
	fs.DurationVar(&f.duration, "duration", 0, "length of the timed scenarios (default 800ms)")
	fs.IntVar(&f.repeat, "repeat", 0, "runs of the whole matrix; each figure is their median with min–max (default 3, -quick 1)")
	f.plan.register(fs)
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
	srv, err := startChild(childRelayArgs(rf))
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

func runMatrix(rf runFlags, tgs map[bool]target, probe serverProbe, metricsURL, serverName string) error {
	stacks, err := parseStacks(rf.stacks)
	if err != nil {
		return err
	}
	var scenarios []string
	for _, sc := range scenarioNames {
		if !slices.Contains(optInScenarios, sc) {
			scenarios = append(scenarios, sc)
		}
	}
	if rf.scenarios != "" && rf.scenarios != "all" {
		scenarios = strings.Split(rf.scenarios, ",")
	}
	for _, sc := range scenarios {
		if !slices.Contains(scenarioNames, sc) {
			return fmt.Errorf("unknown scenario %q (have %s)", sc, strings.Join(scenarioNames, ", "))
		}
	}
	p := defaultParams()
	if rf.quick {
		p = params{ConnectN: 40, ConnectPar: 8, HoldN: 100, DHTN: 50, DHTInflight: 16, Duration: 500 * time.Millisecond, MessageConns: 20, MessageSize: 64, ThroughputK: []int{1, 4}, ChurnPar: 4, Repeat: 1, Settle: 200 * time.Millisecond,
			RelayN: 100, RelayCircuits: 20, RelayBytes: 64 << 10}
	}
	if rf.connectN > 0 {
		p.ConnectN = rf.connectN
	}
	if rf.dhtN > 0 {
		p.DHTN = rf.dhtN
	}
	if rf.dhtInflight > 0 {
		p.DHTInflight = rf.dhtInflight
	}
	if rf.holdN > 0 {
		p.HoldN = rf.holdN
	}
	if rf.msgConns > 0 {
		p.MessageConns = rf.msgConns
	}
	if rf.relayN > 0 {
		p.RelayN = rf.relayN
	}
	if rf.relayCircuits > 0 {
		p.RelayCircuits = rf.relayCircuits
	}
	if rf.relayBytes > 0 {
		p.RelayBytes = rf.relayBytes
	}
	if rf.duration > 0 {
		p.Duration = rf.duration
	}
	if rf.repeat > 0 {
		p.Repeat = rf.repeat
	}
	p.BothEndsLocal = probe.pid > 0
	if metricsURL != "" {
		p.SettleGCURL = strings.Replace(metricsURL, "/metrics", "/debug/pprof/heap?gc=1", 1)
	}
	// The reports go to a directory; -profiles none only skips the pprof
	// profiles. With -json - the report is stdout: nothing is written
	// unless asked for (profiles, -html, -csv), since a generator pod's
	// root file system is read-only.
	toStdout := rf.jsonPath == "-"
	dir, profiles := rf.profiles, true
	if dir == "none" {
		dir, profiles = "", false
	}
	if dir == "" {
		dir = filepath.Join("profiles", time.Now().UTC().Format("20060102-150405"))
	}
	if profiles || !toStdout {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if profiles {
		if metricsURL != "" {
			base := strings.TrimSuffix(metricsURL, "/metrics") + "/debug/pprof/"
			p.ProfileServer = serverProfiler(dir, base)
			p.SnapshotServer = serverSnapshot(dir, base)
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
	_, clientCPU, _ := cpuOf(os.Getpid())
	rep := report{Schema: reportSchema, Started: time.Now().UTC(), Server: serverName, Version: swarmgateVersion(), Parameters: p,
		Machine: thisMachine(),
		Method: method{Repeat: p.Repeat, Spread: "min-max", ServerCPU: probe.cpuSource(), ClientCPU: clientCPU,
			Duration: p.Duration.Seconds(), Settle: p.Settle.Seconds()}}
	if profiles && p.ProfileServer != nil {
		rep.Profiles = dir
	}

	// Every run goes through every stack before the next run starts, so
	// a drift in the machine's load (other work on shared cores) spreads
	// over all stacks instead of skewing one.
	var ran []stack
	for _, st := range stacks {
		if _, ok := tgs[st.TLS]; ok {
			ran = append(ran, st)
		} else {
			rep.NotRun = append(rep.NotRun, st.Name+": no "+map[bool]string{false: "/ws", true: "/tls/ws"}[st.TLS]+" target")
		}
	}
	var steps []step
	for run := 1; run <= p.Repeat; run++ {
		for _, st := range ran {
			for _, sc := range scenarios {
				if sc == "throughput" {
					for _, k := range p.ThroughputK {
						steps = append(steps, step{run: run, stack: st, scenario: fmt.Sprintf("throughput-%d", k)})
					}
				} else {
					steps = append(steps, step{run: run, stack: st, scenario: sc})
				}
			}
		}
	}
	load := startOtherLoad(probe)
	prog := newProgress(os.Stderr, isTerminal(os.Stderr), steps, p.Repeat)
	runs := map[string][]Result{}
	for i, s := range steps {
		r := &runner{cl: cl, tg: tgs[s.stack.TLS], st: s.stack, probe: probe, p: p, profile: s.run == 1}
		prog.begin(i)
		var res Result
		switch sc := s.scenario; {
		case sc == "connect":
			res = r.connect()
		case sc == "hold":
			res = r.hold()
		case strings.HasPrefix(sc, "throughput-"):
			k, _ := strconv.Atoi(strings.TrimPrefix(sc, "throughput-"))
			res = r.throughput(k)
		case sc == "messages":
			res = r.messages()
		case sc == "churn":
			res = r.churn()
		case sc == "dht":
			res = r.dht()
		case sc == "relay":
			res = r.relay()
		}
		prog.end(i, stepSummary(res))
		runs[s.key()] = append(runs[s.key()], res)
	}
	prog.finish()
	rep.Method.OtherLoad = num(load.pct(rep.Machine.CPUs))
	for _, s := range steps {
		if rs, ok := runs[s.key()]; ok {
			rep.Results = append(rep.Results, aggregate(rs))
			delete(runs, s.key())
		}
	}
	rep.Seconds = time.Since(rep.Started).Seconds()
	rep.NoiseCost = noiseCost(rep.Results)
	rep.Capacity = computeCapacity(rep.Results, rep.Machine, rf.plan)
	if rf.jsonPath == "" {
		rf.jsonPath = filepath.Join(dir, "report.json")
	}
	if rf.htmlOut == "" && !toStdout {
		rf.htmlOut = filepath.Join(dir, "report.html")
	}
	if profiles {
		if f, err := os.Create(filepath.Join(dir, "generator-heap.pprof")); err == nil {
			pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
	}
	if toStdout {
		// The JSON is the last thing written: nothing on stderr after it
		// can be interleaved into it in a container's log.
		return writeFiles(rep, rf.jsonPath, rf.csvPath, rf.htmlOut)
	}
	writeMarkdown(os.Stdout, rep)
	if err := writeFiles(rep, rf.jsonPath, rf.csvPath, rf.htmlOut); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "loadgen: reports: %s, %s\n", rf.jsonPath, rf.htmlOut)
	return nil
}

// stepSummary is the progress line's figure for a finished step: the
// scenario's headline metric, and errors if any.
func stepSummary(r Result) string {
	var out []string
	for _, mi := range catalog(r.Scenario).metrics {
		if _, ok := r.Metrics[mi.name]; ok && !mi.param {
			out = append(out, mi.label+" "+cell(&r, mi))
			break
		}
	}
	if r.Errors > 0 {
		out = append(out, fmt.Sprintf("%d errors", r.Errors))
	}
	if r.Note != "" {
		out = append(out, r.Note)
	}
	return strings.Join(out, ", ")
}

// getProfile saves one pprof endpoint's answer to path.
func getProfile(url, path string) {
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

// serverProfiler returns the ProfileServer hook: a CPU profile of the
// server for the scenario's duration, then heap, allocs, goroutine, mutex
// and block profiles, into dir/<stack>/<scenario>/.
func serverProfiler(dir, base string) func(string, time.Duration) func() {
	return func(name string, d time.Duration) func() {
		sub := filepath.Join(dir, strings.ReplaceAll(name, "+", "_"))
		os.MkdirAll(sub, 0o755)
		secs := max(1, int(d.Round(time.Second)/time.Second))
		done := make(chan struct{})
		go func() {
			defer close(done)
			getProfile(fmt.Sprintf("%sprofile?seconds=%d", base, secs), filepath.Join(sub, "server-cpu.pprof"))
		}()
		return func() {
			<-done
			for _, p := range []string{"heap", "allocs", "goroutine", "mutex", "block"} {
				getProfile(base+p, filepath.Join(sub, "server-"+p+".pprof"))
			}
		}
	}
}

// serverSnapshot returns the SnapshotServer hook: the server's live heap
// (after a GC) and goroutines at this moment, into dir/<stack>/<scenario>/:
// what holds the memory of idle connections.
func serverSnapshot(dir, base string) func(string) {
	return func(name string) {
		sub := filepath.Join(dir, strings.ReplaceAll(name, "+", "_"))
		os.MkdirAll(sub, 0o755)
		getProfile(base+"heap?gc=1", filepath.Join(sub, "server-heap.pprof"))
		getProfile(base+"goroutine", filepath.Join(sub, "server-goroutine.pprof"))
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
// metrics plus pprof on a free port; extra are more server flags.
func startChild(extra []string) (*child, error) {
	c, err := startChildWith(extra, "/ip4/127.0.0.1/tcp/0/ws", "/ip4/127.0.0.1/tcp/0/tls/ws")
	if err != nil {
		// A build without TLS listeners still measures the /ws stacks.
		c, err = startChildWith(extra, "/ip4/127.0.0.1/tcp/0/ws")
	}
	return c, err
}

// childRelayArgs are the child's relay flags: an unlimited relay (the
// relay scenario measures CPU per byte on bulk circuits, past the default
// 128 KiB per direction), with room for every reservation asked for.
func childRelayArgs(rf runFlags) []string {
	args := []string{"-relay-circuit-bytes", "0", "-relay-circuit-duration", "0"}
	if rf.relayN > relay.DefaultMaxReservations {
		args = append(args, "-relay-max-reservations", strconv.Itoa(rf.relayN))
	}
	return args
}

func startChildWith(extra []string, listens ...string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	// One loadgen identity opens every connection: the per-peer limits are
	// lifted; everything else runs at its default.
	args := []string{"serve", "-echo", "-ws-echo", "/echo", "-insecure-plaintext", "-max-conns-per-peer", "-1", "-max-peer-streams", "-1", "-max-protocol-streams", "-1", "-dht-addr-filter", "all", "-metrics", "127.0.0.1:0", "-profile-rates"}
	args = append(args, extra...)
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
