package server

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Review item 8: the -metrics HTTP server has timeouts (a client that
// connects and sends nothing, or reads nothing, is cut), and binding it
// to a public address, where anyone could reach /debug/pprof on the same
// listener, is warned about.
func TestMetricsServerTimeouts(t *testing.T) {
	for _, c := range []struct {
		addr string
		warn bool
	}{{"127.0.0.1:0", false}, {"0.0.0.0:0", true}} {
		var logs bytes.Buffer
		srv, url, err := serveMetrics(c.addr, prometheus.NewRegistry(), new(atomic.Bool), slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		srv.Shutdown(context.Background())
		if srv.ReadHeaderTimeout != metricsReadHeaderTimeout || srv.WriteTimeout != metricsWriteTimeout || srv.IdleTimeout != metricsIdleTimeout ||
			srv.ReadHeaderTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 {
			t.Fatalf("%s: timeouts %v %v %v", url, srv.ReadHeaderTimeout, srv.WriteTimeout, srv.IdleTimeout)
		}
		if warned := strings.Contains(logs.String(), "level=WARN"); warned != c.warn {
			t.Fatalf("%s: warned %v: %s", c.addr, warned, logs.String())
		}
	}
}
