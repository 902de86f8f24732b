// Package testutil holds the helpers the packages' tests share: a quiet
// logger, polling for a condition, reading one series from a Prometheus
// registry, a loopback host:port from a WebSocket multiaddr, and a
// self-signed certificate with a pool that trusts it. Tests only.
package testutil

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Quiet is a logger that discards everything.
var Quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// WaitFor polls cond every 10 ms until it holds, failing t after d.
func WaitFor(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not reached in %v", d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// HostPort is the host:port of a /ip4|ip6/…/tcp/N/… multiaddr.
func HostPort(t testing.TB, m ma.Multiaddr) string {
	t.Helper()
	na, err := manet.ToNetAddr(m.Decapsulate(ma.StringCast("/ws")).Decapsulate(ma.StringCast("/tls")))
	if err != nil {
		t.Fatal(err)
	}
	return na.(*net.TCPAddr).String()
}

// CounterValue reads the first series of family name whose labels include
// labels (a counter's or gauge's value, a histogram's sample count); 0 when
// there is none.
func CounterValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k {
						found = lp.GetValue() == v
						break
					}
				}
				if !found {
					continue next
				}
			}
			return MetricValue(m)
		}
	}
	return 0
}

// MetricValue is a counter's or gauge's value, or a histogram's sample
// count.
func MetricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

// SelfSigned returns a certificate made by gen (engine.SelfSignedCertificate)
// for hosts (default localhost and 127.0.0.1) and a pool that trusts it.
func SelfSigned(t testing.TB, gen func(...string) (tls.Certificate, error), hosts ...string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1"}
	}
	cert, err := gen(hosts...)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	return cert, pool
}

// Gather reads every counter and gauge of reg into a map keyed
// name{label=value,…} (labels in the registry's order, by name), or just
// name for a series without labels.
func Gather(t testing.TB, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return flatten(mfs)
}

// Scrape fetches a Prometheus text exposition from url and returns its
// counters and gauges keyed as Gather keys them.
func Scrape(t testing.TB, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	mfs := make([]*dto.MetricFamily, 0, len(fams))
	for _, f := range fams {
		mfs = append(mfs, f)
	}
	return flatten(mfs)
}

func flatten(mfs []*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			k := mf.GetName()
			if len(m.Label) > 0 {
				var ls []string
				for _, l := range m.Label {
					ls = append(ls, l.GetName()+"="+l.GetValue())
				}
				k += "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[k] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[k] = m.Gauge.GetValue()
			}
		}
	}
	return out
}

// JSDir returns the directory of the js-libp2p interop peers
// (bench/peers/js) once node and the packages a test needs are installed
// (`bash bench/peers/js/setup.sh`). Without them the test skips, unless
// SWARMGATE_REQUIRE_JS is set (CI sets it after running setup.sh): then a
// missing piece fails the test instead of hiding it.
func JSDir(t testing.TB, packages ...string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "bench", "peers", "js")
	if _, err := exec.LookPath("node"); err != nil {
		missingJS(t, "node is not installed")
	}
	for _, p := range packages {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", filepath.FromSlash(p))); err != nil {
			missingJS(t, fmt.Sprintf("js package %s is not installed", p))
		}
	}
	return dir
}

// Chromium returns the browser binary the js harnesses drive ($CHROMIUM,
// else Debian's /usr/bin/chromium, which setup.sh installs). When it is
// missing the test skips, or fails under SWARMGATE_REQUIRE_JS, as JSDir.
func Chromium(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("CHROMIUM")
	if bin == "" {
		bin = "/usr/bin/chromium"
	}
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		missingJS(t, bin+" is not installed")
	}
	return bin
}

// missingJS skips t for a missing js piece, or fails it when
// SWARMGATE_REQUIRE_JS is set.
func missingJS(t testing.TB, msg string) {
	t.Helper()
	msg += ": run `bash bench/peers/js/setup.sh`"
	if os.Getenv("SWARMGATE_REQUIRE_JS") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}
