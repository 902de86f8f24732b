package main

import (
	"bytes"
	"context"
	"encoding/json"
	"html"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// charts the fixture's page must draw, and the marks (bars, lines, points)
// each must hold at least.
var wantCharts = map[string]int{
	"capacity-limits":         7, // 4 stacks × memory and CPU, less /tls/ws + Noise memory (not measurable in the fixture)
	"connect-phases":          6, // a bar per stack, phases stacked
	"connect-server-cpu":      6,
	"connect-client-cpu":      6,
	"connect-latency":         6, // a line per stack
	"memory-per-conn":         6,
	"throughput-1-server-cpu": 6,
	"throughput-4-server-cpu": 6,
	"throughput-1-rate":       6,
	"throughput-4-rate":       6,
	"messages-rtt":            6,
	"messages-rate":           6,
	"churn-rate":              6,
}

func renderFixtureHTML(t *testing.T) string {
	t.Helper()
	var b bytes.Buffer
	if err := writeHTML(&b, fixture(t, defaultPlan)); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// The page stands alone (no script, nothing fetched: the machines it is
// read on may have no network) and carries every chart, the header and the
// report's conventions.
func TestHTMLSelfContained(t *testing.T) {
	page := renderFixtureHTML(t)
	for _, bad := range []string{"<script", "http://", "https://", "src=", "NaN", "<link"} {
		if strings.Contains(page, bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	for id := range wantCharts {
		if !strings.Contains(page, "data-chart=\""+id+"\"") {
			t.Errorf("chart %s missing", id)
		}
	}
	for _, s := range []string{"2026-12-04 18:29 UTC", "took 1:11", "AMD EPYC", "2 cores", "Linux 6.18", "go1.26.8", "swarmgate 7931c2a",
		"<td>" + na, "<td>unknown", "no measurable difference", "server-cpu.pprof", "Capacity: peers per machine"} {
		if !strings.Contains(page, s) {
			t.Errorf("page lacks %q", s)
		}
	}
	if strings.Count(page, "<svg") > 16 {
		t.Errorf("%d charts: a planner reads a few grouped charts, not one per metric", strings.Count(page, "<svg"))
	}
}

// chromiumFlags keep a headless run off the network and out of the user's
// profile.
var chromiumFlags = []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"}

// chromium finds a Chromium binary ($CHROMIUM, then the PATH), installing
// Debian's package when it is missing and this is a root shell with apt-get
// (as CI's bench/peers/js/setup.sh does); it skips the test only when none
// can be found or installed.
func chromium(t *testing.T) string {
	t.Helper()
	find := func() string {
		if p := os.Getenv("CHROMIUM"); p != "" {
			return p
		}
		for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
			if p, err := exec.LookPath(name); err == nil {
				return p
			}
		}
		return ""
	}
	if p := find(); p != "" {
		return p
	}
	if _, err := exec.LookPath("apt-get"); err == nil && os.Geteuid() == 0 {
		t.Log("Chromium not found: installing Debian's chromium package")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("apt-get install chromium: %v\n%s", err, out)
		}
		if p := find(); p != "" {
			return p
		}
	}
	t.Skip("skipping: Chromium not found and could not be installed (apt-get install chromium, or set CHROMIUM=/path/to/chromium)")
	return ""
}

// runChromium runs it headless on a page with a fresh profile directory.
func runChromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args = append(append(append([]string{}, chromiumFlags...), "--user-data-dir="+t.TempDir()), args...)
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// measureJS, appended to a copy of the page (the report itself has no
// script), measures what Chromium laid out: each chart's box and its
// visible marks, and each section's height.
const measureJS = `<script>
const out = {charts: [], sections: []};
for (const svg of document.querySelectorAll('svg.chart')) {
  const r = svg.getBoundingClientRect();
  let marks = 0, area = 0;
  for (const e of svg.querySelectorAll('rect.bar, path.line')) {
    const b = e.getBBox();
    if (b.width > 0 && b.height > 0) { marks++; area += b.width * b.height; }
  }
  out.charts.push({id: svg.dataset.chart, w: r.width, h: r.height, marks: marks, area: area});
}
for (const s of document.querySelectorAll('section')) out.sections.push({id: s.id, h: s.getBoundingClientRect().height});
const pre = document.createElement('pre');
pre.id = 'measure';
pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>`

// The page in a real browser: every chart laid out at a readable size
// with its bars and lines drawn, each chart section within one screen,
// and a screenshot that is not blank (kept when LOADGEN_SCREENSHOT names
// a file, to look at).
func TestHTMLInChromium(t *testing.T) {
	bin := chromium(t)
	dir := t.TempDir()
	page := renderFixtureHTML(t)
	measured := filepath.Join(dir, "measure.html")
	if err := os.WriteFile(measured, []byte(strings.Replace(page, "</body>", measureJS+"</body>", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	dom := runChromium(t, bin, "--window-size=1280,1000", "--virtual-time-budget=3000", "--dump-dom", "file://"+measured)
	m := regexp.MustCompile(`(?s)<pre id="measure">(.*?)</pre>`).FindSubmatch(dom)
	if m == nil {
		t.Fatalf("no measurements in the DOM Chromium dumped (%d bytes)", len(dom))
	}
	var got struct {
		Charts []struct {
			ID    string
			W, H  float64
			Marks int
			Area  float64
		}
		Sections []struct {
			ID string
			H  float64
		}
	}
	if err := json.Unmarshal([]byte(html.UnescapeString(string(m[1]))), &got); err != nil {
		t.Fatalf("%v: %s", err, m[1])
	}
	seen := map[string]bool{}
	for _, c := range got.Charts {
		seen[c.ID] = true
		want, ok := wantCharts[c.ID]
		if !ok {
			continue
		}
		if c.W < 400 || c.H < 80 {
			t.Errorf("chart %s laid out at %.0f×%.0f px", c.ID, c.W, c.H)
		}
		if c.Marks < want || c.Area < 100 {
			t.Errorf("chart %s: %d visible marks (%.0f px²), want at least %d", c.ID, c.Marks, c.Area, want)
		}
	}
	for id := range wantCharts {
		if !seen[id] {
			t.Errorf("chart %s not in the rendered page", id)
		}
	}
	for _, s := range got.Sections {
		// One screen: a 1280-wide window shows about 1,100 px; the
		// all-figures tables and the profile links are reference, not a
		// section to take in at a glance.
		if s.ID != "figures" && s.ID != "profiles" && s.H > 1100 {
			t.Errorf("section %s is %.0f px tall: more than one screen", s.ID, s.H)
		}
	}

	shot := filepath.Join(dir, "report.png")
	if p := os.Getenv("LOADGEN_SCREENSHOT"); p != "" {
		shot, _ = filepath.Abs(p)
	}
	plain := filepath.Join(dir, "report.html")
	if err := os.WriteFile(plain, []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	runChromium(t, bin, "--window-size=1280,1800", "--screenshot="+shot, "file://"+plain)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	inked := 0
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			if r, g, bl, _ := img.At(x, y).RGBA(); r < 0xe000 || g < 0xe000 || bl < 0xe000 {
				inked++
			}
		}
	}
	total := (b.Dx() / 2) * (b.Dy() / 2)
	if b.Dx() != 1280 || inked < total/50 {
		t.Errorf("screenshot %dx%d with %d of %d sampled pixels inked: blank?", b.Dx(), b.Dy(), inked, total)
	}
	t.Logf("screenshot: %s (%dx%d, %.1f %% inked)", shot, b.Dx(), b.Dy(), 100*float64(inked)/float64(total))
}
