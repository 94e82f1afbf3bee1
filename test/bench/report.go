package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// report collects the results of one run.
type report struct {
	cfg      *config
	command  string
	started  time.Time
	finished time.Time
	machine  machine
	rows     []row
	raw      []section
	profiles []section
	failures []string
}

type row struct {
	scenario, metric, value, target string
	verdict                         string // "met", "MISSED (...)", "" (no target)
}

type section struct{ title, body string }

func newReport(c *config, args []string) *report {
	cmd := "go run ./test/bench"
	if len(args) > 1 {
		cmd += " " + strings.Join(args[1:], " ")
	}
	return &report{cfg: c, command: cmd, started: time.Now()}
}

// add records a figure; verdict is "" for figures without a target.
func (r *report) add(scenario, metric, value, target, verdict string) {
	r.rows = append(r.rows, row{scenario, metric, value, target, verdict})
}

func (r *report) addRaw(title, body string) { r.raw = append(r.raw, section{title, body}) }

func (r *report) fail(scenario string, err error) {
	r.failures = append(r.failures, fmt.Sprintf("%s: %v", scenario, err))
	r.add(scenario, "scenario", "FAILED: "+err.Error(), "", "")
}

// missed reports whether any target of the scenarios was missed.
func (r *report) missed(scenarios ...string) bool {
	for _, x := range r.rows {
		for _, s := range scenarios {
			if x.scenario == s && strings.HasPrefix(x.verdict, "MISSED") {
				return true
			}
		}
	}
	return false
}

// verdictAtMost: value ≤ limit is met; otherwise by how much it is over.
func verdictAtMost(value, limit float64, unit string) string {
	if value <= limit {
		return "met"
	}
	return fmt.Sprintf("MISSED (+%s%s, %.0f%% over)", trimFloat(value-limit), unit, 100*(value-limit)/limit)
}

// verdictAtLeast: value ≥ limit is met.
func verdictAtLeast(value, limit float64, unit string) string {
	if value >= limit {
		return "met"
	}
	return fmt.Sprintf("MISSED (−%s%s, %.0f%% under)", trimFloat(limit-value), unit, 100*(limit-value)/limit)
}

func trimFloat(f float64) string {
	s := fmt.Sprintf("%.3f", f)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

// table is the plain-text summary printed at the end.
func (r *report) table() string {
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tMETRIC\tVALUE\tTARGET\tVERDICT")
	for _, x := range r.rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", x.scenario, x.metric, x.value, x.target, x.verdict)
	}
	_ = tw.Flush()
	return sb.String()
}

const (
	analysisBegin = "<!-- analysis:begin -->"
	analysisEnd   = "<!-- analysis:end -->"
)

// write renders the Markdown report. The hand-written analysis between the
// markers of an existing file is kept.
func (r *report) write(path string) error {
	analysis := "_No analysis written yet._\n"
	if old, err := os.ReadFile(path); err == nil {
		s := string(old)
		if i := strings.Index(s, analysisBegin); i >= 0 {
			if j := strings.Index(s[i:], analysisEnd); j >= 0 {
				analysis = strings.TrimLeft(s[i+len(analysisBegin):i+j], "\n")
			}
		}
	}
	var b strings.Builder
	m := r.machine
	fmt.Fprintf(&b, "# Benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `make bench` (`%s`). Everything but the analysis between the\n", "go run ./test/bench")
	fmt.Fprintf(&b, "`analysis` markers is regenerated on every run. Every figure is a ratio\n")
	fmt.Fprintf(&b, "measured within one run on one API server, or a count; none is a timed test.\n\n")
	fmt.Fprintf(&b, "## Run\n\n")
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| date | %s (%s) |\n", r.started.UTC().Format("2006-01-02 15:04 MST"), r.finished.Sub(r.started).Round(time.Second))
	fmt.Fprintf(&b, "| command | `%s` |\n", r.command)
	fmt.Fprintf(&b, "| CPUs (nproc) | %d |\n", m.nproc)
	fmt.Fprintf(&b, "| CPU model | %s |\n", m.cpuModel)
	fmt.Fprintf(&b, "| memory | %s |\n", m.memTotal)
	fmt.Fprintf(&b, "| kernel, Go | Linux %s, %s |\n", m.kernel, m.goVersion)
	fmt.Fprintf(&b, "| load average (1/5/15 min) at start, at end | %s; %s |\n", m.loadStart, m.loadEnd)
	fmt.Fprintf(&b, "\nThe machine is shared: other jobs ran at the same time (see the load\naverage), so absolute times are noisy; the ratios compare variants run\ninterleaved on the same API server.\n\n")

	fmt.Fprintf(&b, "## Results\n\n| scenario | metric | value | target | verdict |\n|---|---|---|---|---|\n")
	for _, x := range r.rows {
		v := x.verdict
		if strings.HasPrefix(v, "MISSED") {
			v = "**" + v + "**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", x.scenario, x.metric, escapeCell(x.value), escapeCell(x.target), v)
	}
	if len(r.failures) > 0 {
		fmt.Fprintf(&b, "\nFailures:\n\n")
		for _, f := range r.failures {
			fmt.Fprintf(&b, "- %s\n", f)
		}
	}
	fmt.Fprintf(&b, "\n## Analysis\n\n%s\n%s%s\n\n", analysisBegin, analysis, analysisEnd)
	if len(r.profiles) > 0 {
		fmt.Fprintf(&b, "## Profiles\n\n")
		for _, p := range r.profiles {
			fmt.Fprintf(&b, "### %s\n\n%s\n\n", p.title, p.body)
		}
	}
	fmt.Fprintf(&b, "## Raw numbers\n\n")
	for _, s := range r.raw {
		fmt.Fprintf(&b, "### %s\n\n%s\n\n", s.title, strings.TrimSpace(s.body))
	}
	fmt.Fprintf(&b, "## Method\n\n%s\n", method)
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func escapeCell(s string) string { return strings.ReplaceAll(s, "|", "\\|") }

const method = `- **Control plane**: kube-apiserver and etcd from ` + "`bin/k8s`" + `, started by
  ` + "`internal/localcp`" + ` with the CRDs and webhook configurations, as the integration tests
  do. The pod webhook (failurePolicy Fail, timeout 2 s) is served by a webhook-only
  manager in the harness process (` + "`operator.Setup`" + ` with DisableControllers).
  Clients have no client-side rate limit (QPS -1, as ` + "`ctrl.GetConfig`" + `).
- **admission**: three namespaces of one API server: (a) excluded from the pod webhook by
  its namespaceSelector, (b) excluded too, with a ResourceQuota on ` + "`pods`" + ` (the API
  server's own check-and-write gate; its status is set by the harness, as there is no
  kube-controller-manager), (c) hubcredits' webhook: a BillingPolicy and one wallet per
  user, so every create reserves on its own account. The same KubeSpawner-shaped pod
  (distinct users) is created in all three. Variants run in blocks of 25 creates per
  worker, rotating a→b→c, b→c→a, c→a→b, so the three share the machine's noise.
  Latency is the client's CREATE round trip; throughput is creates per second of block
  wall time. A warm-up block per variant is discarded.
- **contention**: (i) all at once, N goroutines released together create named servers of
  one user whose wallet pays for exactly M periods; (ii) 1,000 spawns, 200 in flight,
  each on its own wallet holding exactly one period. The admitted count is checked
  against the account status (balance, server entries) and the pods that exist.
  Conflicts come from ` + "`hubcredits_reservation_conflicts_total`" + ` in the harness'
  controller-runtime registry; writes from the API server's
  ` + "`apiserver_request_total{verb=\"PUT\",resource=\"creditaccounts\",subresource=\"status\"}`" + `.
- **handler**: ` + "`go test -run '^$' -bench BenchmarkPodAdmission -benchmem ./webhooks/`" + `
  (webhooks/pod_webhook_bench_test.go): one AdmissionRequest (a KubeSpawner pod priced at
  0 by a free BillingPolicy, so no reservation write), handled by PodAdmitter wrapped in
  ` + "`admission.Webhook`" + ` as in production, and by ` + "`admission.WithValidator`" + ` with a
  validator that returns nil. PodAdmitter reads from an in-memory stand-in for the
  informer cache (deep copies on Get/List, index lookups), 3 policies and 1,000 wallets;
  a variant on controller-runtime's fake client is shown for reference only. The
  median of -count runs is used.
- **billing**: servers are created through the webhook (one reservation each, policy 1
  credit per interval) and set Running through the status subresource with start times
  an outage (default 1 h) in the past, spread over one interval in whole seconds. Then
  the operator binary (` + "`go build -o <tmp>/manager .`" + `, run with ` + "`--namespace`" + `,
  ` + "`--enable-webhooks=false`" + `, KUBECONFIG pointing at an admin kubeconfig; it does not
  take --kubeconfig) starts: **catch-up** is the time from its start until every boundary
  before its start is charged (watched on the accounts' status). Then two windows of
  -intervals intervals each: before and after adding the unrelated pods (no singleuser
  label, same namespace, so only the label selector keeps them out of the cache), and a
  third with the operator restarted with GOMEMLIMIT=180MiB (-memory-limit): in a
  container the operator sets GOMEMLIMIT itself to 90 % of the memory limit
  (automemlimit), so this is the operator in a container limited to 200Mi
  (-more-workers adds a window with another --workers, for comparison). The harness' webhook manager is stopped once the servers run, so the
  only other watcher of the accounts is the harness' own ledger watch.
  **Lag** is computed for every boundary inside a window: the time the harness' watch saw
  the account's periodsPaid cover it, minus the boundary (start + k·interval); it
  includes the write and the watch delivery. The operator's own
  ` + "`hubcredits_billing_lag_seconds`" + ` histogram (scraped from its /metrics) is shown
  next to it (bucket upper bounds). **CPU** is utime+stime from /proc/<pid>/stat over the
  window; **RSS** is VmRSS sampled every second (max) and VmHWM. **Writes per charge**
  is the API server's count of creditaccounts/status updates (` + "`apiserver_request_total`" + ` labels an
  update verb="PUT") over the window divided by the
  periods charged in it.
- **writecost**: sequential writes of each kind, kinds interleaved in rounds (the first a
  warm-up); kube-apiserver's CPU from /proc. Then (unless -profile=never) kube-apiserver's
  CPU profile (` + "`/debug/pprof/profile`" + `, admin credentials) over 15 s of CreditAccount
  status updates only, for a wallet and for a pool funding 300 servers, split with
  ` + "`go tool pprof -traces`" + ` into the parts the stacks show (CEL rules, schema
  validation and ratcheting, coercion, managed fields, JSON, conversion, GC…). The shares
  are inclusive: a sample counts in every part on its stack.
- **pool** (P6): one CreditAccount lists -pool-named users (spec.users holds at most 1,000)
  and one group; every pod carries the group in ` + "`hubcredits.io/groups`" + `, so the
  other users are members by group. -pool-clients goroutines create KubeSpawner-shaped
  pods through the webhook toward -pool-servers. The storm stops at the target, at
  -pool-limit, when fewer than -pool-min-rate spawns a second were admitted over 30 s, or
  after 10 failed spawns (e.g. the pool object's size limit), and the report says which.
  **Spawns/s at the end** is the last 500 admitted (half of them when fewer) over the
  time they took; the **object size** is the pool as the API server serves it (JSON,
  managedFields included). Then every admitted server is set Running from one second,
  the operator binary starts, and the pool is read once a second until the first
  boundary (one -pool-interval later) is charged or the second one nears: every server
  must show exactly 2 periods paid, and the pool's totals must add up.
- **profile**: when a billing target is missed, the same controllers (` + "`operator.Setup`" + `
  with the binary's defaults) run in a child process of the harness with runtime/pprof
  on the same namespace for two intervals; ` + "`go tool pprof -top`" + ` of that profile
  is shown.
`
