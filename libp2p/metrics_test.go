package libp2p

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/swarmgate/swarmgate/internal/testutil"
)

// value sums the samples of family name whose labels include all of want.
func value(t *testing.T, reg *prometheus.Registry, name string, want ...string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.Metric {
			if !hasLabels(m, want) {
				continue
			}
			switch {
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, want []string) bool {
	for _, w := range want {
		k, v, _ := strings.Cut(w, "=")
		found := false
		for _, l := range m.Label {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// The families operators scrape move with real traffic: connections by
// state, upgrade phases and results, frames and bytes per layer, and the
// state gauge returns to zero when connections end.
func TestMetricFamiliesCount(t *testing.T) {
	h, addr := startHost(t, Config{})
	e, reg := h.Engine(), regOf(h)
	pc := dialHost(t, h, addr, DialOptions{})
	echoOver(t, pc, make([]byte, 200<<10))
	checks := []struct {
		name string
		want []string
	}{
		{"swarmgate_connections", []string{"state=open", "transport=ws"}},
		{"swarmgate_libp2p_upgrades_total", []string{"result=ok"}},
		{"swarmgate_libp2p_upgrade_phase_seconds", []string{"phase=multistream"}},
		{"swarmgate_libp2p_upgrade_phase_seconds", []string{"phase=security"}},
		{"swarmgate_frames_total", []string{"layer=ws", "dir=in"}},
		{"swarmgate_frames_total", []string{"layer=noise", "dir=out"}},
		{"swarmgate_layer_bytes_total", []string{"layer=noise", "dir=in"}},
	}
	for _, c := range checks {
		if v := value(t, reg, c.name, c.want...); v <= 0 {
			t.Errorf("%s%v = %v after a libp2p echo", c.name, c.want, v)
		}
	}
	if v := value(t, reg, "swarmgate_layer_bytes_total", "layer=noise", "dir=in"); v < 200<<10 {
		t.Errorf("noise plaintext in: %v bytes, want at least the echoed 200 KiB", v)
	}
	pc.Do(func() { pc.Close() })
	testutil.WaitFor(t, 5*time.Second, func() bool { return e.OpenConns() == 0 })
	if v := value(t, reg, "swarmgate_connections"); v != 0 {
		t.Errorf("connections gauge %v after every connection ended", v)
	}
	// The client's Close sent GoAway(normal), which the server received.
	if v := value(t, reg, "swarmgate_yamux_goaway_total", "dir=received", "code=normal"); v != 1 {
		t.Errorf("server received %v normal GoAways, want 1", v)
	}
}

// Counters that would otherwise appear only after their first event are
// exported at zero from the start, so alerts and dashboards see them.
func TestMetricsAtZeroFromStart(t *testing.T) {
	h, _ := startHost(t, Config{})
	got := testutil.Gather(t, regOf(h))
	for _, k := range []string{
		`swarmgate_ws_close_sent_total{code=1000}`,
		`swarmgate_ws_close_received_total{code=1001}`,
		`swarmgate_connection_failures_total{reason=handshake_timeout}`,
		`swarmgate_connection_failures_total{reason=inbound_flood}`,
		`swarmgate_ws_upgrades_total{result=path_not_found}`,
		`swarmgate_tls_handshakes_total{result=over_cap,version=none}`,
		`swarmgate_tls_handshakes_total{result=ok,version=TLS 1.3}`,
		`swarmgate_libp2p_upgrades_total{result=upgrade_cap}`,
		`swarmgate_stream_resets_total{reason=negotiation_timeout}`,
		`swarmgate_stream_resets_total{reason=memory}`,
		`swarmgate_stream_resets_total{reason=memory_reset}`,
		`swarmgate_stream_resets_total{reason=held_data}`,
		`swarmgate_memory_refusals_total{scope=conn}`,
		`swarmgate_limit_rejections_total{reason=per_ip}`,
		`swarmgate_yamux_goaway_total{code=protocol_error,dir=sent}`,
	} {
		if v, ok := got[k]; !ok || v != 0 {
			t.Errorf("%s: %v (present %v), want 0 from the start", k, v, ok)
		}
	}
}
