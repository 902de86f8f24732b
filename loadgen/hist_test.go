package main

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// sampleHist is a histogram of n latencies around median µs (log-normal,
// so it spans several HDR buckets), from a fixed seed.
func sampleHist(seed uint64, n int, median float64) (*hdrhistogram.Histogram, []int64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	h := newHist()
	vals := make([]int64, n)
	for i := range vals {
		v := int64(median * math.Exp(rng.NormFloat64()*0.8))
		vals[i] = max(1, min(v, histHighest))
		h.RecordValue(vals[i])
	}
	return h, vals
}

// envelope wraps plain (an uncompressed V2 histogram: header and counters)
// as the V2 compressed encoding does, for crafting inputs.
func envelope(plain []byte) string {
	var z bytes.Buffer
	w := zlib.NewWriter(&z)
	w.Write(plain)
	w.Close()
	b := binary.BigEndian.AppendUint32(nil, uint32(histCompressedCookie|0x10))
	b = binary.BigEndian.AppendUint32(b, uint32(z.Len()))
	return base64.StdEncoding.EncodeToString(append(b, z.Bytes()...))
}

// plainOf undoes envelope on a real encoding.
func plainOf(t *testing.T, s string) []byte {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	z, err := zlib.NewReader(bytes.NewReader(raw[8:]))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	out.ReadFrom(z)
	return out.Bytes()
}

// header is a V2 header for counters of n bytes.
func header(n int, digits int32, lowest, highest int64) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(histPlainCookie|0x10))
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(digits))
	b = binary.BigEndian.AppendUint64(b, uint64(lowest))
	b = binary.BigEndian.AppendUint64(b, uint64(highest))
	return binary.BigEndian.AppendUint64(b, math.Float64bits(1))
}

// appendZigZag is the V2 counter encoding, written from the format's
// description, as a reference for parseZigZag.
func appendZigZag(b []byte, v int64) []byte {
	u := uint64(v<<1) ^ uint64(v>>63)
	for i := 0; i < 8; i++ {
		if u < 0x80 {
			return append(b, byte(u))
		}
		b = append(b, byte(u)|0x80)
		u >>= 7
	}
	return append(b, byte(u))
}

func TestHistogramsJSONRoundTrip(t *testing.T) {
	h, _ := sampleHist(1, 5000, 800)
	in := Histograms{"latency_us": h, "empty_us": newHist()}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Histograms
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	for k, h := range in {
		if !out[k].Equals(h) {
			t.Errorf("%s: decoded histogram differs", k)
		}
	}
	// A broken histogram names itself.
	if err := json.Unmarshal([]byte(`{"rtt_us":"HISTFAAAAB"}`), &out); err == nil || !bytes.Contains([]byte(err.Error()), []byte("rtt_us")) {
		t.Errorf("broken histogram: %v", err)
	}
}

func TestParseZigZag(t *testing.T) {
	vals := []int64{0, 1, -1, 63, -64, 64, 127, 128, 1 << 20, -(1 << 40), math.MaxInt64, math.MinInt64, math.MaxInt64 - 1}
	rng := rand.New(rand.NewPCG(2, 2))
	for i := 0; i < 2000; i++ {
		vals = append(vals, int64(rng.Uint64())>>rng.IntN(64))
	}
	for _, v := range vals {
		b := appendZigZag(nil, v)
		got, n, err := parseZigZag(append(b, 0xff)) // a following byte is not read
		if err != nil || got != v || n != len(b) {
			t.Fatalf("parseZigZag(%x) = %d, %d, %v; want %d, %d", b, got, n, err, v, len(b))
		}
		for i := 0; i < len(b); i++ {
			if _, _, err := parseZigZag(b[:i]); !errors.Is(err, errHistTruncated) {
				t.Fatalf("%d of the %d bytes of %d: %v, want errHistTruncated", i, len(b), v, err)
			}
		}
	}
}

// Every truncation of a histogram fails to decode, without a panic: of the
// base64 text, of the envelope, and of the counters inside the zlib stream.
func TestDecodeHistTruncated(t *testing.T) {
	h, _ := sampleHist(3, 200, 3000)
	s, err := encodeHist(h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeHist(s); err != nil {
		t.Fatalf("the whole histogram: %v", err)
	}
	for i := 0; i < len(s); i++ {
		if _, err := decodeHist(s[:i]); err == nil {
			t.Fatalf("base64 prefix of %d of %d chars decoded", i, len(s))
		}
	}
	raw, _ := base64.StdEncoding.DecodeString(s)
	for i := 0; i < len(raw); i++ {
		if _, err := decodeHist(base64.StdEncoding.EncodeToString(raw[:i])); err == nil {
			t.Fatalf("envelope prefix of %d of %d bytes decoded", i, len(raw))
		}
	}
	plain := plainOf(t, s)
	for i := 0; i < len(plain); i++ {
		if _, err := decodeHist(envelope(plain[:i])); err == nil {
			t.Fatalf("plain prefix of %d of %d bytes decoded", i, len(plain))
		}
	}
	// The same counters cut short but with a header that agrees: a value
	// cut in the middle is errHistTruncated.
	counters := plain[histHeaderLen:]
	for i := 0; i < len(counters); i++ {
		p := append(header(i, histDigits, histLowest, histHighest), counters[:i]...)
		_, err := decodeHist(envelope(p))
		if err != nil && !errors.Is(err, errHistTruncated) {
			t.Fatalf("counters cut at %d: %v", i, err)
		}
	}
}

// The limits are checked before the library allocates or indexes.
func TestDecodeHistLimits(t *testing.T) {
	one := appendZigZag(nil, 1)
	for _, c := range []struct {
		name  string
		plain []byte
		want  error
	}{
		{"five digits", append(header(1, 5, 1, histHighest), one...), errHistLimit},
		{"a range past an hour", append(header(1, 3, 1, 1<<40), one...), errHistLimit},
		{"lowest 0", append(header(1, 3, 0, histHighest), one...), errHistLimit},
		{"a count past the counters", append(header(len(appendZigZag(appendZigZag(nil, -17408), 5)), 3, 1, histHighest), appendZigZag(appendZigZag(nil, -17408), 5)...), errHistCounters},
		{"a run of empty counters past the end", append(header(len(appendZigZag(nil, -17409)), 3, 1, histHighest), appendZigZag(nil, -17409)...), errHistCounters},
		{"the most negative run", append(header(len(appendZigZag(nil, math.MinInt64)), 3, 1, histHighest), appendZigZag(nil, math.MinInt64)...), errHistCounters},
		{"counts that overflow", func() []byte {
			c := appendZigZag(appendZigZag(nil, math.MaxInt64), 1)
			return append(header(len(c), 3, 1, histHighest), c...)
		}(), errHistCounters},
		{"a length that disagrees", append(header(2, 3, 1, histHighest), one...), errHistFormat},
		{"a zlib bomb", append(header(2<<20, 3, 1, histHighest), make([]byte, 2<<20)...), errHistLimit},
	} {
		if _, err := decodeHist(envelope(c.plain)); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// The last counter of loadgen's shape is accepted.
	last := appendZigZag(appendZigZag(nil, -17407), 5)
	if h, err := decodeHist(envelope(append(header(len(last), 3, 1, histHighest), last...))); err != nil || h.TotalCount() != 5 {
		t.Errorf("the last counter: %v", err)
	}
	if _, err := decodeHist(string(make([]byte, maxHistEncoded+4))); !errors.Is(err, errHistLimit) {
		t.Errorf("over-long text: %v", err)
	}
}

func FuzzDecodeHist(f *testing.F) {
	for i, n := range []int{0, 1, 100, 5000} {
		h, _ := sampleHist(uint64(i), n, 500)
		s, _ := encodeHist(h)
		f.Add(s)
	}
	f.Add(envelope(header(0, 3, 1, histHighest)))
	f.Fuzz(func(t *testing.T, s string) {
		h, err := decodeHist(s)
		if err != nil {
			return
		}
		again, err := encodeHist(h)
		if err != nil {
			t.Fatal(err)
		}
		h2, err := decodeHist(again)
		if err != nil || !h2.Equals(h) {
			t.Fatalf("re-encoded histogram: %v", err)
		}
	})
}

func TestPercentileNames(t *testing.T) {
	for _, c := range []struct {
		base string
		q    float64
		unit string
		name string
	}{
		{"latency", 50, pctMs, "latency_p50_ms"},
		{"latency", 99.9, pctMs, "latency_p999_ms"},
		{"phase_tcp", 99, pctMs, "phase_tcp_p99_ms"},
		{"rtt", 90, pctUs, "rtt_p90_us"},
		{"rtt", 99.99, pctUs, "rtt_p9999_us"},
	} {
		if got := pctMetric(c.base, c.q, c.unit); got != c.name {
			t.Errorf("pctMetric(%s, %v, %s) = %s, want %s", c.base, c.q, c.unit, got, c.name)
		}
		b, q, u, ok := parsePctMetric(c.name)
		if !ok || b != c.base || q != c.q || u != c.unit {
			t.Errorf("parsePctMetric(%s) = %s, %v, %s, %v", c.name, b, q, u, ok)
		}
	}
	for _, name := range []string{"conn_per_sec", "server_cpu_us_per_conn", "latency_p5_ms", "bytes_per_sec", "rtt_p50_s"} {
		if _, _, _, ok := parsePctMetric(name); ok {
			t.Errorf("%s parsed as a percentile", name)
		}
	}
}

// aggregate pools the runs' histograms; the metrics stay the runs' medians.
func TestAggregateHistograms(t *testing.T) {
	var runs []Result
	var total int64
	for i := range 3 {
		h, _ := sampleHist(uint64(10+i), 1000*(i+1), 400*float64(i+1))
		r := Result{Stack: "ws+noise", Scenario: "messages", Metrics: Metrics{}}
		r.setPercentiles("rtt", h, pctUs, 50, 99)
		runs = append(runs, r)
		total += h.TotalCount()
	}
	a := aggregate(runs)
	if got := a.Hists["rtt_us"].TotalCount(); got != total {
		t.Errorf("pooled histogram holds %d values, the runs %d", got, total)
	}
	if a.Metrics["rtt_p50_us"] != runs[1].Metrics["rtt_p50_us"] {
		t.Errorf("p50 %v, want the median run's %v", a.Metrics["rtt_p50_us"], runs[1].Metrics["rtt_p50_us"])
	}
	if runs[0].Hists["rtt_us"].TotalCount() != 1000 {
		t.Error("aggregate changed a run's histogram")
	}
}

// The fixture's histograms (testdata/README.md) are behind its percentiles:
// every percentile has its histogram, connect's holds every connection of
// every run, and each percentile of the pooled runs lies within the runs'
// own min–max (a percentile of a mixture lies between its parts').
func TestFixtureHistograms(t *testing.T) {
	rep, err := readReport("testdata/report.json")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Schema != 3 {
		t.Errorf("fixture schema %d", rep.Schema)
	}
	n := 0
	for _, r := range rep.Results {
		if h := r.Hists["latency_us"]; r.Scenario == "connect" && (h == nil || h.TotalCount() != int64(r.Metrics["conns"])*int64(r.Runs)) {
			t.Errorf("%s connect: latency histogram %v for %v connections × %d runs", r.Stack, h, r.Metrics["conns"], r.Runs)
		}
		for k := range r.Metrics {
			base, q, unit, ok := parsePctMetric(k)
			if !ok {
				continue
			}
			h := r.Hists[histOf(base)]
			if h == nil {
				t.Errorf("%s/%s %s has no histogram", r.Stack, r.Scenario, k)
				continue
			}
			n++
			us := func(v float64) int64 {
				if unit == pctMs {
					v *= 1000
				}
				return int64(math.Round(v))
			}
			v, sp := pctValue(h, q, unit), r.Spread[k]
			if (v < sp.Min && !h.ValuesAreEquivalent(us(v), us(sp.Min))) || (v > sp.Max && !h.ValuesAreEquivalent(us(v), us(sp.Max))) {
				t.Errorf("%s/%s %s: %v from the pooled runs, outside the runs' %v–%v", r.Stack, r.Scenario, k, v, sp.Min, sp.Max)
			}
		}
	}
	if n < 50 {
		t.Errorf("%d percentiles with histograms in the fixture", n)
	}
}
