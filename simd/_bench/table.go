// Command table turns the output of the simd benchmarks into the Markdown
// tables and floor checks in bench/RESULTS.md. It takes the median ns/op of
// each sub-benchmark over all -count runs.
//
//	go test -run '^$' -bench . -benchtime=100ms -count=5 ./simd > bench.txt
//	go run ./simd/_bench/table.go < bench.txt
package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

var line = regexp.MustCompile(`^BenchmarkMask/op=(\w+)/impl=(\w+)/size=(\d+)/case=(\w+)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op`)

type key struct{ op, impl, size, cas string }

func main() {
	samples := map[key][]float64{}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		ns, _ := strconv.ParseFloat(m[5], 64)
		k := key{m[1], m[2], m[3], m[4]}
		samples[k] = append(samples[k], ns)
	}
	med := func(k key) float64 {
		s := slices.Clone(samples[k])
		if len(s) == 0 {
			return 0
		}
		slices.Sort(s)
		if len(s)%2 == 1 {
			return s[len(s)/2]
		}
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	mbs := func(k key) float64 {
		ns := med(k)
		if ns == 0 {
			return 0
		}
		n, _ := strconv.Atoi(k.size)
		return float64(n) / ns * 1e3
	}
	sizes := []string{"16", "30", "125", "1024", "4096", "16384", "65536", "1048576"}
	human := map[string]string{"16": "16 B", "30": "30 B", "125": "125 B", "1024": "1 KiB", "4096": "4 KiB", "16384": "16 KiB", "65536": "64 KiB", "1048576": "1 MiB"}
	impls := []string{"avx512", "avx2", "sse2", "generic"}
	best := "avx512"
	ff := func(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) }
	fr := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + "×" }

	cases := []struct{ cas, title string }{
		{"pos1", "key offset 1, 64-byte-aligned buffer"},
		{"pos0", "key offset 0, 64-byte-aligned buffer"},
		{"odd", "key offset 1, odd address (64k+1)"},
	}
	for _, c := range cases {
		fmt.Printf("#### Mask, %s (MB/s, median of runs)\n\n", c.title)
		fmt.Printf("| size | %s | gobwas/ws.Cipher | copy() | %s ÷ gobwas | %s ÷ copy | %s ÷ generic | slowest asm ÷ generic |\n", strings.Join(impls, " | "), best, best, best)
		fmt.Printf("|---|%s---|---|---|---|---|---|\n", strings.Repeat("---:|", len(impls)))
		for _, s := range sizes {
			row := []string{human[s]}
			minAsm := 0.0
			for _, im := range impls {
				v := mbs(key{"Mask", im, s, c.cas})
				row = append(row, ff(v))
				if im != "generic" && (minAsm == 0 || v < minAsm) {
					minAsm = v
				}
			}
			b := mbs(key{"Mask", best, s, c.cas})
			g := mbs(key{"Mask", "gobwas", s, c.cas})
			cp := mbs(key{"Mask", "copy", s, c.cas})
			gen := mbs(key{"Mask", "generic", s, c.cas})
			row = append(row, ff(g), ff(cp), fr(b/g), fr(b/cp), fr(b/gen), fr(minAsm/gen))
			fmt.Printf("| %s |\n", strings.Join(row, " | "))
		}
		fmt.Println()
	}
	for _, c := range cases {
		fmt.Printf("#### MaskCopy vs copy()+Mask, %s (MB/s, median of runs)\n\n", c.title)
		fmt.Printf("| size | %s | copy+Mask (%s) | copy+Mask (generic) | MaskCopy ÷ copy+Mask (%s) | MaskCopy generic ÷ copy+Mask generic |\n", best, best, best)
		fmt.Printf("|---|---:|---:|---:|---:|---:|\n")
		for _, s := range sizes {
			mc := mbs(key{"MaskCopy", best, s, c.cas})
			ctm := mbs(key{"CopyThenMask", best, s, c.cas})
			mcg := mbs(key{"MaskCopy", "generic", s, c.cas})
			ctmg := mbs(key{"CopyThenMask", "generic", s, c.cas})
			fmt.Printf("| %s | %s | %s | %s | %s | %s |\n", human[s], ff(mc), ff(ctm), ff(ctmg), fr(mc/ctm), fr(mcg/ctmg))
		}
		fmt.Println()
	}

	// Floors from the issue, key offset 1 on an aligned buffer.
	check := func(name string, got, floor float64) {
		verdict := "PASS"
		if got < floor {
			verdict = "FAIL"
		}
		fmt.Printf("| %s | %s | ≥ %s | %s |\n", name, fr(got), fr(floor), verdict)
	}
	fmt.Printf("#### Floors (key offset 1)\n\n| floor | measured | required | |\n|---|---:|---:|---|\n")
	r := func(op, im, s, c string) float64 { return mbs(key{op, im, s, c}) }
	check(best+" ÷ gobwas/ws.Cipher at 16 B", r("Mask", best, "16", "pos1")/r("Mask", "gobwas", "16", "pos1"), 3)
	check(best+" ÷ gobwas/ws.Cipher at 125 B", r("Mask", best, "125", "pos1")/r("Mask", "gobwas", "125", "pos1"), 2)
	check(best+" ÷ copy() at 16 KiB", r("Mask", best, "16384", "pos1")/r("Mask", "copy", "16384", "pos1"), 0.9)
	check(best+" ÷ gobwas/ws.Cipher at 16 KiB", r("Mask", best, "16384", "pos1")/r("Mask", "gobwas", "16384", "pos1"), 1)
	check("MaskCopy ÷ copy()+Mask at 16 KiB", r("MaskCopy", best, "16384", "pos1")/r("CopyThenMask", best, "16384", "pos1"), 1.3)
	worst, where := 0.0, ""
	for _, c := range cases {
		for _, s := range sizes {
			v := r("Mask", best, s, c.cas) / r("Mask", "generic", s, c.cas)
			if worst == 0 || v < worst {
				worst, where = v, human[s]+" "+c.cas
			}
		}
	}
	check(best+" ÷ generic, worst size/case ("+where+")", worst, 1)
}
