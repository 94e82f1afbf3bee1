package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// benchLine matches `BenchmarkPodAdmission/free-price/cache-2  12345  91813 ns/op  13122 B/op  192 allocs/op`.
var benchLine = regexp.MustCompile(`^BenchmarkPodAdmission/(\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op\s+([\d.]+) B/op\s+([\d.]+) allocs/op`)

type benchRuns struct{ ns, bytes, allocs []float64 }

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// handler runs the Go benchmark of the admission decision (webhooks/
// pod_webhook_bench_test.go) and compares PodAdmitter with controller-
// runtime's allow-all validator.
func (b *bench) handler(ctx context.Context) error {
	args := []string{"test", "-run", "^$", "-bench", "^BenchmarkPodAdmission$", "-benchmem",
		"-count", strconv.Itoa(b.cfg.benchCount), "-benchtime", b.cfg.benchTime, "./webhooks/"}
	logf("bench: handler: go %s", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = b.root
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go test -bench: %w\n%s", err, tail(out.String(), 2000))
	}
	runs := map[string]*benchRuns{}
	var order []string
	var lines []string
	for _, line := range strings.Split(out.String(), "\n") {
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			if strings.HasPrefix(line, "goos") || strings.HasPrefix(line, "goarch") || strings.HasPrefix(line, "cpu") || strings.HasPrefix(line, "pkg") {
				lines = append(lines, line)
			}
			continue
		}
		lines = append(lines, strings.Join(strings.Fields(line), " "))
		r := runs[m[1]]
		if r == nil {
			r = &benchRuns{}
			runs[m[1]] = r
			order = append(order, m[1])
		}
		f := func(s string) float64 { v, _ := strconv.ParseFloat(s, 64); return v }
		r.ns = append(r.ns, f(m[2]))
		r.bytes = append(r.bytes, f(m[3]))
		r.allocs = append(r.allocs, f(m[4]))
	}
	base, mine := runs["allow-all-validator"], runs["free-price/cache"]
	if base == nil || mine == nil {
		return fmt.Errorf("benchmark output not understood:\n%s", tail(out.String(), 2000))
	}
	sc := "handler"
	for _, name := range order {
		r := runs[name]
		b.rep.add(sc, name+": ns/op, B/op, allocs/op", fmt.Sprintf("%.0f, %.0f, %.0f", median(r.ns), median(r.bytes), median(r.allocs)), "", "")
	}
	ratio := median(base.ns) / median(mine.ns)
	b.rep.add(sc, "PodAdmitter rate / allow-all rate", fmt.Sprintf("%.0f%% (%.0f vs %.0f decisions/s per core)", 100*ratio, 1e9/median(mine.ns), 1e9/median(base.ns)),
		"≥ 50%", verdictAtLeast(round2(ratio)*100, 50, " points"))
	var t strings.Builder
	fmt.Fprintf(&t, "`go %s` (median of %d runs):\n\n", strings.Join(args, " "), b.cfg.benchCount)
	fmt.Fprintf(&t, "| benchmark | ns/op | B/op | allocs/op | runs (ns/op) |\n|---|---|---|---|---|\n")
	for _, name := range order {
		r := runs[name]
		var each []string
		for _, v := range r.ns {
			each = append(each, fmt.Sprintf("%.0f", v))
		}
		fmt.Fprintf(&t, "| %s | %.0f | %.0f | %.0f | %s |\n", name, median(r.ns), median(r.bytes), median(r.allocs), strings.Join(each, ", "))
	}
	fmt.Fprintf(&t, "\nRate ratio PodAdmitter (cache) / allow-all: %.2f; allocations %.0f vs %.0f.\n", ratio, median(mine.allocs), median(base.allocs))
	fmt.Fprintf(&t, "\n```\n%s\n```\n", strings.Join(lines, "\n"))
	b.rep.addRaw("decision handler (Go benchmark)", t.String())
	return nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
