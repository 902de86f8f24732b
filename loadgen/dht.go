package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgate/swarmgate/internal/wire"
	"github.com/swarmgate/swarmgate/libp2p"
	"github.com/swarmgate/swarmgate/libp2p/kad"
	"github.com/swarmgate/swarmgate/libp2p/kad/pb"
	"github.com/swarmgate/swarmgate/mux"
)

// The dht scenario: N light clients, each a peer of its own, connect and
// present themselves as DHT servers (identify lists /ipfs/kad/1.0.0 and a
// listen address), so the server's routing table holds N entries; then
// they send FIND_NODE for random keys, one request in flight per stream as
// go-libp2p-kad-dht does, for Duration. It reports the table size,
// requests per second, server CPU per request, latency percentiles, and the
// server memory a table entry costs: the same N connections in client mode
// (no entry) against DHT-server mode, in one run.
//
// The server must hand out loopback addresses (-dht-addr-filter all: the
// child server of the default run has it) for the clients to enter its
// table; a server whose table stays empty is reported as such.

// dhtRequests is how many distinct FIND_NODE requests are prebuilt;
// clients cycle through them. dhtChecked replies per run are compared with
// a brute-force sort.
const (
	dhtRequests = 1024
	dhtChecked  = 200
)

// dhtLight is one light client: a host of its own (its own peer ID) on the
// generator's engine, and its connection.
type dhtLight struct {
	h  *libp2p.Host
	pc *libp2p.PeerConn
}

// dht runs the scenario on a libp2p stack.
func (r *runner) dht() Result {
	res := Result{Stack: r.st.Name, Scenario: "dht", Runs: 1, Metrics: Metrics{}}
	if !r.st.LibP2P || r.st.Plaintext {
		res.Note = "not applicable: the DHT scenario runs on the Noise stacks"
		return res
	}
	m := res.Metrics
	n := r.p.DHTN
	m["table_entries"] = unknown
	// Client mode first: what the N connections cost without entries.
	time.Sleep(r.p.Settle / 2)
	r.serverGC()
	s0, err := r.probe.sample()
	if err != nil {
		res.Note = err.Error()
		return res
	}
	clients, failed, err := r.openLight(n, false)
	res.Errors += failed
	if err == nil {
		time.Sleep(r.p.Settle)
		r.serverGC()
	}
	s1, serr := r.probe.sample()
	closeLight(clients)
	if err == nil {
		err = serr
	}
	if err != nil {
		res.Note = err.Error()
		return res
	}
	// Then as DHT servers: each enters the table through identify.
	time.Sleep(r.p.Settle)
	r.serverGC()
	s2, err := r.probe.sample()
	if err != nil {
		res.Note = err.Error()
		return res
	}
	servers, failed, err := r.openLight(n, true)
	defer closeLight(servers)
	res.Errors += failed
	if err != nil && len(servers) == 0 {
		res.Note = err.Error()
		return res
	}
	entries := r.waitTable(len(servers), 30*time.Second)
	m["table_entries"] = entries
	time.Sleep(r.p.Settle)
	r.serverGC()
	s3, err := r.probe.sample()
	if err != nil {
		res.Note = err.Error()
		return res
	}
	// An entry's cost is the difference between the same connections as
	// DHT servers and as clients: Go heap after GC when the server exports
	// it (small differences drown in RSS), RSS otherwise.
	m["server_bytes_per_table_entry"] = unknown
	if entries > 0 && len(clients) > 0 {
		perConn := func(a, b serverSample, n int) (float64, bool) {
			switch {
			case a.HasHeap && b.HasHeap:
				return float64(b.Heap-a.Heap) / float64(n), true
			case a.HasRSS && b.HasRSS:
				return float64(b.inUse()-a.inUse()) / float64(n), true
			}
			return 0, false
		}
		client, ok1 := perConn(s0, s1, len(clients))
		server, ok2 := perConn(s2, s3, len(servers))
		if ok1 && ok2 {
			m["server_bytes_per_table_entry"] = (server - client) * float64(len(servers)) / entries
		}
	}
	if s2.HasRSS && s3.HasRSS {
		m["server_rss_bytes_per_conn"] = float64(s3.inUse()-s2.inUse()) / float64(len(servers))
	}
	if entries == 0 {
		res.Note = "the server's table stayed empty (does it run the DHT role with -dht-addr-filter all?)"
		return res
	}
	// FIND_NODE load.
	reqs := make([][]byte, dhtRequests)
	for i := range reqs {
		key := make([]byte, 32)
		for j := range key {
			key[j] = byte(rand.Uint32())
		}
		body, _ := proto.Marshal(&pb.Message{Type: pb.Message_FIND_NODE, Key: key, ClusterLevelRaw: 1})
		reqs[i] = wire.AppendDelimited(nil, body)
	}
	// The first replies are checked against a brute-force sort of the
	// light clients by XOR distance: the table must answer exactly.
	bf := newBruteForce(servers)
	// Alone: the table holds this generator's clients only (no other
	// generator loads the server: every peer named must be ours).
	tableSize := int(entries)
	alone := tableSize == len(servers)
	var checked, wrong atomic.Int64
	lat := newHist()
	var latMu sync.Mutex
	var done, closer atomic.Int64
	var stop atomic.Bool
	var ferr atomic.Value
	// Requests in flight: inflight tokens go round the clients. A client
	// sends one FIND_NODE on its kad stream (opened on its first turn) and,
	// on the reply, posts the token to the client inflight places on: every
	// client's turn comes round, each one's request rate stays far below
	// the server's per-peer limit (as a fleet's peers do), and the
	// latency is the service time plus a queue inflight deep.
	nc := len(servers)
	inflight := nc
	if k := r.p.DHTInflight; k > 0 && k < inflight {
		inflight = k
	}
	m["requests_in_flight"] = float64(inflight)
	var reqSeq atomic.Int64
	finders := make([]*finder, nc)
	streams := make([]*mux.Stream, nc) // each touched under its client's lock only
	var turn func(i int)               // runs under client i's lock
	turn = func(i int) {
		if stop.Load() {
			return
		}
		f := finders[i]
		if streams[i] == nil {
			st, err := servers[i].pc.OpenStream(kad.Protocol, f)
			if err != nil {
				f.onErr(err)
				return
			}
			streams[i] = st
		}
		f.send(streams[i], int(reqSeq.Add(1)), time.Now())
	}
	for i := range servers {
		self := servers[i].h.ID()
		next := (i + inflight) % nc
		finders[i] = &finder{reqs: reqs, stop: &stop, check: func(key []byte, reply *pb.Message) {
			if checked.Add(1) > dhtChecked {
				return
			}
			if !bf.exact(key, self, reply, alone, tableSize) {
				wrong.Add(1)
			}
		}, onReply: func(d time.Duration, peers int) {
			latMu.Lock()
			lat.RecordValue(d.Microseconds())
			latMu.Unlock()
			done.Add(1)
			closer.Add(int64(peers))
			servers[next].pc.Post(func() { turn(next) })
		}, onErr: func(err error) { ferr.CompareAndSwap(nil, err) }}
	}
	s4, s5, ccpu, elapsed, err := r.measured("dht", func() error {
		for i := range inflight {
			servers[i].pc.Do(func() { turn(i) })
		}
		time.Sleep(r.p.Duration)
		stop.Store(true)
		return nil
	})
	_ = ccpu
	if err == nil {
		if e, ok := ferr.Load().(error); ok {
			err = e
		}
	}
	k := float64(done.Load())
	m["requests"] = k
	m["requests_per_sec"] = k / elapsed.Seconds()
	latMu.Lock()
	res.setPercentiles("latency", snapshot(lat), pctUs, 50, 99)
	latMu.Unlock()
	m["server_cpu_us_per_request"] = cpuPer(s4, s5, k, time.Microsecond)
	if k > 0 {
		m["closer_peers_per_reply"] = float64(closer.Load()) / k
	}
	m["replies_checked"] = float64(min(checked.Load(), dhtChecked))
	if w := wrong.Load(); w > 0 && err == nil {
		err = fmt.Errorf("%d of %d replies checked are not the exact 20 closest", w, min(checked.Load(), dhtChecked))
		res.Errors += int(w)
	}
	if err != nil {
		res.Note = err.Error()
	}
	return res
}

// openLight connects n light clients, each with its own identity; as DHT
// servers their identify lists kad and a listen address of their own.
func (r *runner) openLight(n int, server bool) ([]dhtLight, int, error) {
	out := make([]dhtLight, 0, n)
	var mu sync.Mutex
	var failed int
	var first error
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		key, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			return out, failed, err
		}
		h, err := libp2p.NewOn(r.cl.eng, libp2p.Config{Key: key, InsecurePlaintext: r.st.Plaintext})
		if err != nil {
			return out, failed, err
		}
		if server {
			// Listed by identify, never asked: the server only answers.
			h.Handle(kad.Protocol, func(_ *libp2p.PeerConn, st *mux.Stream) mux.Handler {
				st.Reset()
				return &mux.Funcs{}
			})
			h.SetListenAddrs([]ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/" + strconv.Itoa(10000+i%50000) + "/ws")})
		}
		sem <- struct{}{}
		wg.Add(1)
		h.DialAsync(r.tg.addr, libp2p.DialOptions{Plaintext: r.st.Plaintext}, func(pc *libp2p.PeerConn, err error) {
			mu.Lock()
			if err != nil {
				failed++
				if first == nil {
					first = err
				}
			} else {
				out = append(out, dhtLight{h: h, pc: pc})
			}
			mu.Unlock()
			<-sem
			wg.Done()
		})
	}
	if !waitTimeout(&wg, 120*time.Second) {
		return out, failed, errors.New("light clients still connecting after 120 s")
	}
	return out, failed, first
}

func closeLight(cs []dhtLight) {
	for _, c := range cs {
		c.pc.Do(c.pc.Close)
	}
}

// waitTable waits until the server's table holds want entries (or d
// passes) and returns what it holds (unknown without its metrics).
func (r *runner) waitTable(want int, d time.Duration) float64 {
	if r.probe.metricsURL == "" {
		return unknown
	}
	deadline := time.Now().Add(d)
	for {
		g, err := scrapeGauges(r.probe.metricsURL)
		if err != nil {
			return unknown
		}
		v := g["swarmgate_kad_table_entries"]
		if v >= float64(want) || time.Now().After(deadline) {
			return v
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// finder sends FIND_NODE requests on one client's kad stream, one at a
// time: a request when the client's turn comes (send), and onReply when
// its answer has arrived, which passes the turn on.
type finder struct {
	check func(key []byte, reply *pb.Message)
	reqs  [][]byte
	// inFlight are the requests sent and not yet answered, oldest first
	// (two turns can meet on one client: the stream pipelines them).
	inFlight []sentReq
	stop     *atomic.Bool
	onReply  func(time.Duration, int)
	onErr    func(error)
	dead     bool
}

type sentReq struct {
	idx int // in reqs
	at  time.Time
}

// send writes request seq (reqs cycled) on st.
func (f *finder) send(st *mux.Stream, seq int, now time.Time) {
	if f.dead {
		return
	}
	idx := seq % len(f.reqs)
	req := f.reqs[idx]
	f.inFlight = append(f.inFlight, sentReq{idx, now})
	if n, err := st.Write(req); n != len(req) {
		f.fail(st, fmt.Errorf("kad request write: %d of %d bytes: %v", n, len(req), err))
	}
}

func (f *finder) fail(st *mux.Stream, err error) {
	if !f.dead {
		f.dead = true
		st.Reset()
		f.onErr(err)
	}
}

func (f *finder) OnData(st *mux.Stream, p []byte) int {
	used := 0
	for !f.dead {
		body, n, err := wire.ParseDelimited(p[used:], 1<<20)
		if err == wire.ErrNeedMore {
			break
		}
		if err != nil {
			f.fail(st, err)
			return len(p)
		}
		used += n
		var reply pb.Message
		if err := proto.Unmarshal(body, &reply); err != nil || reply.Type != pb.Message_FIND_NODE {
			f.fail(st, fmt.Errorf("kad reply: %v (type %v)", err, reply.Type))
			return len(p)
		}
		now := time.Now()
		if len(f.inFlight) == 0 {
			f.fail(st, fmt.Errorf("kad reply without a request"))
			return len(p)
		}
		sent := f.inFlight[0]
		f.inFlight = f.inFlight[1:]
		if f.check != nil {
			var req pb.Message
			if body, _, err := wire.ParseDelimited(f.reqs[sent.idx], 1<<20); err == nil && proto.Unmarshal(body, &req) == nil {
				f.check(req.Key, &reply)
			}
		}
		f.onReply(now.Sub(sent.at), len(reply.CloserPeers))
	}
	return used
}

func (f *finder) OnWritable(*mux.Stream) {}
func (f *finder) OnFIN(st *mux.Stream)   {}
func (f *finder) OnReset(_ *mux.Stream, err error) {
	if !f.dead && !f.stop.Load() {
		f.dead = true
		f.onErr(fmt.Errorf("kad stream reset: %w", err))
	}
}

// bruteForce knows every light client's position (SHA-256 of its binary
// peer ID) and finds the 20 closest to a key by sorting them all by XOR
// distance: independent of the server's trie.
type bruteForce struct {
	ids  []string
	keys [][32]byte
}

func newBruteForce(cs []dhtLight) *bruteForce {
	b := &bruteForce{}
	for _, c := range cs {
		id := c.h.ID()
		b.ids = append(b.ids, string(id))
		b.keys = append(b.keys, sha256.Sum256([]byte(id)))
	}
	return b
}

// exact reports whether reply's closer peers are the 20 peers closest to
// SHA-256(key) among those the table holds, the requester excluded, in any
// order. This generator knows only its own clients: when it is the
// server's only one (alone: the table holds just them) the reply must be
// exactly the 20 of them closest; when other generators' clients are in
// the table too (a fleet-wide run, loadgen merge), the reply must still
// hold 20 distinct peers (tableSize permitting), and every client of ours
// closer to the key than the farthest peer named must be among them:
// strangers are checked by their distance, computed from their IDs.
func (b *bruteForce) exact(key []byte, requester peer.ID, reply *pb.Message, alone bool, tableSize int) bool {
	target := sha256.Sum256(key)
	dist := func(k [32]byte) [32]byte {
		for j := range k {
			k[j] ^= target[j]
		}
		return k
	}
	own := make(map[string]bool, len(b.ids))
	for _, id := range b.ids {
		own[id] = true
	}
	want := min(20, tableSize-1) // the requester is in the table too
	if len(reply.CloserPeers) != want {
		return false
	}
	var far [32]byte
	seen := map[string]bool{}
	for _, p := range reply.CloserPeers {
		id := string(p.Id)
		if seen[id] || id == string(requester) || (alone && !own[id]) {
			return false
		}
		seen[id] = true
		if d := dist(sha256.Sum256(p.Id)); bytes.Compare(d[:], far[:]) > 0 {
			far = d
		}
	}
	for i, id := range b.ids {
		if id == string(requester) || seen[id] {
			continue
		}
		if d := dist(b.keys[i]); bytes.Compare(d[:], far[:]) < 0 {
			return false // a closer client of ours was left out
		}
	}
	return true
}
