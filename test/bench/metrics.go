package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// sample is one line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

type samples []sample

// parseProm parses the Prometheus text exposition format (enough of it for
// counters and histograms).
func parseProm(r io.Reader) (samples, error) {
	var out samples
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		s := sample{labels: map[string]string{}}
		rest := line
		if i := strings.IndexAny(line, "{ "); i >= 0 && line[i] == '{' {
			s.name = line[:i]
			rest = line[i+1:]
			for {
				rest = strings.TrimLeft(rest, ", ")
				if strings.HasPrefix(rest, "}") {
					rest = rest[1:]
					break
				}
				eq := strings.Index(rest, "=\"")
				if eq < 0 {
					return nil, fmt.Errorf("bad metric line %q", line)
				}
				key := rest[:eq]
				rest = rest[eq+2:]
				var val strings.Builder
				j := 0
				for ; j < len(rest); j++ {
					if rest[j] == '\\' && j+1 < len(rest) {
						j++
						switch rest[j] {
						case 'n':
							val.WriteByte('\n')
						default:
							val.WriteByte(rest[j])
						}
						continue
					}
					if rest[j] == '"' {
						break
					}
					val.WriteByte(rest[j])
				}
				s.labels[key] = val.String()
				rest = rest[j+1:]
			}
		} else {
			f := strings.Fields(line)
			s.name = f[0]
			rest = strings.Join(f[1:], " ")
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("bad metric line %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("bad metric value in %q", line)
		}
		s.value = v
		out = append(out, s)
	}
	return out, sc.Err()
}

// sum adds the samples named name whose labels include match.
func (ss samples) sum(name string, match map[string]string) float64 {
	var t float64
	for _, s := range ss {
		if s.name != name {
			continue
		}
		ok := true
		for k, v := range match {
			if s.labels[k] != v {
				ok = false
				break
			}
		}
		if ok {
			t += s.value
		}
	}
	return t
}

// histogram returns the cumulative buckets (le → count) of name, summed
// over the label sets that include match.
func (ss samples) histogram(name string, match map[string]string) map[float64]float64 {
	h := map[float64]float64{}
next:
	for _, s := range ss {
		if s.name != name+"_bucket" {
			continue
		}
		for k, v := range match {
			if s.labels[k] != v {
				continue next
			}
		}
		le, err := strconv.ParseFloat(s.labels["le"], 64)
		if err != nil {
			continue
		}
		h[le] += s.value
	}
	return h
}

// histDelta is the histogram of the observations between two scrapes.
type histDelta struct {
	bounds []float64 // sorted, +Inf last
	counts []float64 // cumulative
}

func deltaHistogram(before, after samples, name string, match map[string]string) histDelta {
	a, b := after.histogram(name, match), before.histogram(name, match)
	var d histDelta
	for le := range a {
		d.bounds = append(d.bounds, le)
	}
	sort.Float64s(d.bounds)
	for _, le := range d.bounds {
		d.counts = append(d.counts, a[le]-b[le])
	}
	return d
}

func (h histDelta) total() float64 {
	if len(h.counts) == 0 {
		return 0
	}
	return h.counts[len(h.counts)-1]
}

// quantile returns the upper bound of the bucket holding quantile q.
func (h histDelta) quantile(q float64) float64 {
	n := h.total()
	if n == 0 {
		return math.NaN()
	}
	for i, c := range h.counts {
		if c >= q*n {
			return h.bounds[i]
		}
	}
	return math.Inf(1)
}

// fractionAtMost is the share of observations at most le (a bucket bound).
func (h histDelta) fractionAtMost(le float64) float64 {
	for i, b := range h.bounds {
		if b == le {
			return h.counts[i] / h.total()
		}
	}
	return math.NaN()
}

func (h histDelta) String() string {
	var parts []string
	prev := 0.0
	for i, b := range h.bounds {
		n := h.counts[i] - prev
		prev = h.counts[i]
		if n == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("≤%gs: %.0f", b, n))
	}
	return strings.Join(parts, ", ")
}

// scrapeURL reads a Prometheus endpoint over plain HTTP.
func scrapeURL(ctx context.Context, url string) (samples, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return parseProm(resp.Body)
}

// apiserverMetrics reads kube-apiserver's /metrics with the admin client.
func (b *bench) apiserverMetrics(ctx context.Context) (samples, error) {
	raw, err := b.cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	if f := os.Getenv("BENCH_DUMP_APISERVER_METRICS"); f != "" {
		_ = os.WriteFile(f, raw, 0o644)
	}
	return parseProm(strings.NewReader(string(raw)))
}

// statusWrites counts updates of creditaccounts/status by outcome.
type statusWrites struct{ total, conflicts float64 }

func accountStatusWrites(ss samples) statusWrites {
	// apiserver_request_total names an update PUT (the REST verb).
	m := map[string]string{"verb": "PUT", "resource": "creditaccounts", "subresource": "status"}
	w := statusWrites{total: ss.sum("apiserver_request_total", m)}
	m["code"] = "409"
	w.conflicts = ss.sum("apiserver_request_total", m)
	return w
}

func (b *bench) accountWrites(ctx context.Context) (statusWrites, error) {
	ss, err := b.apiserverMetrics(ctx)
	if err != nil {
		return statusWrites{}, err
	}
	return accountStatusWrites(ss), nil
}

// reservationConflicts reads hubcredits_reservation_conflicts_total from
// controller-runtime's registry in this process (the webhook runs here).
func reservationConflicts() float64 {
	fams, err := metrics.Registry.Gather()
	if err != nil {
		return math.NaN()
	}
	for _, f := range fams {
		if f.GetName() != "hubcredits_reservation_conflicts_total" {
			continue
		}
		var t float64
		for _, m := range f.GetMetric() {
			t += m.GetCounter().GetValue()
		}
		return t
	}
	return 0
}

// procStat is a process's CPU time and memory, from /proc.
type procStat struct {
	cpu     time.Duration // user + system
	rss     int64         // bytes
	hwm     int64         // peak RSS, bytes
	threads int
}

func readProc(pid int) (procStat, error) {
	var ps procStat
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ps, err
	}
	// The command name (field 2) may hold spaces; fields after ")" are fixed.
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// f[0] is field 3 (state); utime is field 14, stime 15.
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	ps.cpu = time.Duration(utime+stime) * time.Second / clockTicks
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ps, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(fields[0], 10, 64)
		switch k {
		case "VmRSS":
			ps.rss = n * 1024
		case "VmHWM":
			ps.hwm = n * 1024
		case "Threads":
			ps.threads = int(n)
		}
	}
	return ps, nil
}

// cpuOf returns a process's CPU time (0 when unknown).
func cpuOf(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	ps, err := readProc(pid)
	if err != nil {
		return 0
	}
	return ps.cpu
}

// clockTicks is USER_HZ, 100 on every Linux platform Go supports.
const clockTicks = 100

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// machine describes where the numbers were taken.
type machine struct {
	nproc              int
	cpuModel           string
	memTotal           string
	kernel             string
	goVersion          string
	loadStart, loadEnd string
}

func machineInfo() machine {
	m := machine{nproc: runtime.NumCPU(), goVersion: runtime.Version(), loadStart: loadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpuModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && k == "MemTotal" {
				kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
				m.memTotal = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	return m
}

func (m machine) oneLine() string {
	return fmt.Sprintf("%d CPUs (%s), %s RAM, Linux %s, %s, load average %s", m.nproc, m.cpuModel, m.memTotal, m.kernel, m.goVersion, m.loadStart)
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
