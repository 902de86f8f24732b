package main

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latency histograms: every percentile metric of a Result comes from an HDR
// histogram of microseconds, and the report carries the histogram beside
// the percentiles (schema 3), so that reports of generators that ran at
// once can be merged into one distribution (loadgen merge) instead of
// averaging percentiles, which has no meaning.
//
// A histogram named base+"_us" is behind every metric named
// base+"_p"+Q+"_us" or base+"_p"+Q+"_ms" of the same Result, Q the
// percentile without its point: latency_us is behind latency_p50_ms and
// latency_p999_ms (99.9), rtt_us behind rtt_p99_us.

// The shape of the histograms loadgen records: 1 µs to 60 s at three
// significant digits (a value is known to within 0.1 %). 60 s is the
// longest any wait of a scenario lasts before it is an error.
const (
	histLowest  = 1
	histHighest = 60_000_000
	histDigits  = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histLowest, histHighest, histDigits) }

// Limits on a histogram read from a report, checked before anything is
// allocated for it (a report is a file from another machine). loadgen's
// own histograms have 17,408 counters, at most 9 bytes each once
// encoded: about 157 KB before compression, far less after.
const (
	// maxHistEncoded is the longest base64 text accepted for one histogram.
	maxHistEncoded = 1 << 20
	// maxHistDecompressed bounds the zlib stream's output (a small
	// compressed input can expand without limit).
	maxHistDecompressed = 1 << 20
	// maxHistHighest (1 hour in µs) and maxHistDigits bound the counters a
	// decoded header makes the decoder allocate: 23,552 at most, 184 KiB.
	// Each further significant digit would multiply them by about 8.
	maxHistHighest = 3_600_000_000
	maxHistDigits  = 3
)

// The HdrHistogram V2 encoding (as hdrhistogram-go's Encode writes it): a
// base64 text of an 8-byte envelope (cookie, length of the zlib stream)
// and the zlib stream, which holds a 40-byte header and the counters.
const (
	histEnvelopeLen = 8
	histHeaderLen   = 40
	// Cookies, the low nibble's flag bits cleared as the library does.
	histCompressedCookie = hdrhistogram.V2CompressedEncodingCookieBase
	histPlainCookie      = hdrhistogram.V2EncodingCookieBase
	// zigZagMaxLen is the longest counter: LEB128 of 7 bits a byte, the
	// ninth byte carrying the last 8 bits of 64.
	zigZagMaxLen = 9
)

var (
	errHistFormat    = errors.New("loadgen: not an HdrHistogram V2 compressed histogram")
	errHistLimit     = errors.New("loadgen: histogram beyond loadgen's limits")
	errHistTruncated = errors.New("loadgen: histogram counters end inside a value")
	errHistCounters  = errors.New("loadgen: histogram counters do not fit its header's range")
)

// encodeHist is h in the V2 compressed encoding, base64 (what the JSON
// carries).
func encodeHist(h *hdrhistogram.Histogram) (string, error) {
	b, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	return string(b), err
}

// decodeHist reads one histogram of a report. hdrhistogram-go's Decode
// trusts its input (it slices and indexes by the lengths it reads, and
// allocates what the header asks for), so checkHist validates the whole
// encoding against the limits above first; Decode then builds the
// histogram from bytes known to be well formed.
func decodeHist(s string) (*hdrhistogram.Histogram, error) {
	if err := checkHist(s); err != nil {
		return nil, err
	}
	return hdrhistogram.Decode([]byte(s))
}

// checkHist validates an encoded histogram without building it.
func checkHist(s string) error {
	if len(s) > maxHistEncoded {
		return fmt.Errorf("%w: %d bytes of base64, more than %d", errHistLimit, len(s), maxHistEncoded)
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return fmt.Errorf("%w: %v", errHistFormat, err)
	}
	if len(raw) < histEnvelopeLen {
		return fmt.Errorf("%w: %d bytes, shorter than its envelope", errHistFormat, len(raw))
	}
	if int32(binary.BigEndian.Uint32(raw))&^0xf0 != histCompressedCookie {
		return fmt.Errorf("%w: cookie %#x", errHistFormat, binary.BigEndian.Uint32(raw))
	}
	n := int64(int32(binary.BigEndian.Uint32(raw[4:])))
	if n < 0 || n > int64(len(raw)-histEnvelopeLen) {
		return fmt.Errorf("%w: zlib stream of %d bytes in %d", errHistFormat, n, len(raw)-histEnvelopeLen)
	}
	z, err := zlib.NewReader(bytes.NewReader(raw[histEnvelopeLen : histEnvelopeLen+n]))
	if err != nil {
		return fmt.Errorf("%w: %v", errHistFormat, err)
	}
	defer z.Close()
	plain, err := io.ReadAll(io.LimitReader(z, maxHistDecompressed+1))
	if err != nil {
		return fmt.Errorf("%w: %v", errHistFormat, err)
	}
	if len(plain) > maxHistDecompressed {
		return fmt.Errorf("%w: decompresses to more than %d bytes", errHistLimit, maxHistDecompressed)
	}
	if len(plain) < histHeaderLen {
		return fmt.Errorf("%w: %d bytes, shorter than its header", errHistFormat, len(plain))
	}
	if int32(binary.BigEndian.Uint32(plain))&^0xf0 != histPlainCookie {
		return fmt.Errorf("%w: inner cookie %#x", errHistFormat, binary.BigEndian.Uint32(plain))
	}
	if got := int64(int32(binary.BigEndian.Uint32(plain[4:]))); got != int64(len(plain)-histHeaderLen) {
		return fmt.Errorf("%w: counters of %d bytes, header says %d", errHistFormat, len(plain)-histHeaderLen, got)
	}
	digits := int32(binary.BigEndian.Uint32(plain[12:]))
	lowest := int64(binary.BigEndian.Uint64(plain[16:]))
	highest := int64(binary.BigEndian.Uint64(plain[24:]))
	if digits < 1 || digits > maxHistDigits || lowest < 1 || highest < 2*lowest || highest > maxHistHighest {
		return fmt.Errorf("%w: %d significant digits, range %d–%d", errHistLimit, digits, lowest, highest)
	}
	// The counters: LEB128 ZigZag numbers, a count when positive or zero,
	// a run of that many empty counters when negative. Each must land
	// inside the counter array the header's range makes.
	counters := int64(len(hdrhistogram.New(lowest, highest, int(digits)).Export().Counts))
	var idx, total int64
	for b := plain[histHeaderLen:]; len(b) > 0; {
		v, m, err := parseZigZag(b)
		if err != nil {
			return err
		}
		b = b[m:]
		switch {
		case v == math.MinInt64 || (v < 0 && -v > counters-idx):
			return fmt.Errorf("%w: a run of %d empty counters from %d of %d", errHistCounters, v, idx, counters)
		case v < 0:
			idx += -v
		case idx >= counters:
			return fmt.Errorf("%w: counter %d of %d", errHistCounters, idx, counters)
		case v > math.MaxInt64-total:
			return fmt.Errorf("%w: the counts overflow", errHistCounters)
		default:
			total += v
			idx++
		}
	}
	return nil
}

// parseZigZag reads one LEB128 ZigZag number of the V2 encoding: seven bits
// a byte, least significant first, the high bit set on every byte but the
// last; the ninth byte, if reached, carries eight.
func parseZigZag(b []byte) (v int64, n int, err error) {
	var u uint64
	for i := 0; i < zigZagMaxLen; i++ {
		if i >= len(b) {
			return 0, 0, errHistTruncated
		}
		if i == zigZagMaxLen-1 {
			u |= uint64(b[i]) << 56
			return int64(u>>1) ^ -int64(u&1), i + 1, nil
		}
		u |= uint64(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			return int64(u>>1) ^ -int64(u&1), i + 1, nil
		}
	}
	panic("unreachable")
}

// Histograms are a Result's latency distributions by name, each in µs
// ("latency_us", "phase_tcp_us", "rtt_us"). In JSON, each is the base64
// text of hdrhistogram-go's V2 compressed encoding.
type Histograms map[string]*hdrhistogram.Histogram

func (hs Histograms) MarshalJSON() ([]byte, error) {
	out := make(map[string]string, len(hs))
	for k, h := range hs {
		s, err := encodeHist(h)
		if err != nil {
			return nil, fmt.Errorf("histogram %s: %w", k, err)
		}
		out[k] = s
	}
	return json.Marshal(out)
}

func (hs *Histograms) UnmarshalJSON(b []byte) error {
	var in map[string]string
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	*hs = make(Histograms, len(in))
	for k, s := range in {
		h, err := decodeHist(s)
		if err != nil {
			return fmt.Errorf("histogram %s: %w", k, err)
		}
		(*hs)[k] = h
	}
	return nil
}

// Percentile metrics are in one of two units, in the metric's name.
const (
	pctMs = "ms"
	pctUs = "us"
)

// histOf is the name of the histogram behind base's percentiles.
func histOf(base string) string { return base + "_us" }

// pctMetric names base's q-th percentile in unit: ("latency", 99.9, "ms")
// is latency_p999_ms.
func pctMetric(base string, q float64, unit string) string {
	return base + "_p" + strings.ReplaceAll(strconv.FormatFloat(q, 'f', -1, 64), ".", "") + "_" + unit
}

var pctName = regexp.MustCompile(`^(.+)_p([0-9]{2,})_(ms|us)$`)

// parsePctMetric is pctMetric's inverse: the first two digits are the
// whole percent, the rest its decimals (p50: 50, p999: 99.9).
func parsePctMetric(name string) (base string, q float64, unit string, ok bool) {
	m := pctName.FindStringSubmatch(name)
	if m == nil {
		return "", 0, "", false
	}
	d := m[2]
	if len(d) > 2 {
		d = d[:2] + "." + d[2:]
	}
	q, err := strconv.ParseFloat(d, 64)
	if err != nil {
		return "", 0, "", false
	}
	return m[1], q, m[3], true
}

// pctValue is h's q-th percentile in unit.
func pctValue(h *hdrhistogram.Histogram, q float64, unit string) float64 {
	v := float64(h.ValueAtQuantile(q))
	if unit == pctMs {
		v /= 1000
	}
	return v
}

// setPercentiles records h as the histogram behind base's percentiles and
// sets the percentiles qs of it, in unit. h must no longer change (pass a
// snapshot of one that is still recorded into).
func (r *Result) setPercentiles(base string, h *hdrhistogram.Histogram, unit string, qs ...float64) {
	if r.Hists == nil {
		r.Hists = Histograms{}
	}
	r.Hists[histOf(base)] = h
	for _, q := range qs {
		r.Metrics[pctMetric(base, q, unit)] = pctValue(h, q, unit)
	}
}

// snapshot copies h, for a histogram other goroutines still record into.
func snapshot(h *hdrhistogram.Histogram) *hdrhistogram.Histogram {
	return hdrhistogram.Import(h.Export())
}

// mergeHists pools histograms of the same name: the runs of one scenario
// (aggregate) or the generators of one fleet load (loadgen merge). dropped
// counts values a histogram of another shape held beyond the first's range.
func mergeHists(sets []Histograms) (out Histograms, dropped int64) {
	var names []string
	for _, hs := range sets {
		for k := range hs {
			if !slices.Contains(names, k) {
				names = append(names, k)
			}
		}
	}
	if len(names) == 0 {
		return nil, 0
	}
	out = Histograms{}
	for _, k := range names {
		var m *hdrhistogram.Histogram
		for _, hs := range sets {
			h, ok := hs[k]
			switch {
			case !ok:
			case m == nil:
				m = snapshot(h)
			default:
				dropped += m.Merge(h)
			}
		}
		out[k] = m
	}
	return out, dropped
}
