package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// server is what the harness knows about one billed server.
type server struct {
	start time.Time
	paid  int64 // periods paid, as last seen on the account (1: the reservation)
	done  bool  // caught up with every boundary before the operator started
}

// charge is one boundary charged, as the harness' watch saw it.
type charge struct {
	boundary time.Time
	lag      time.Duration
}

// ledgerWatch follows the accounts' status and turns every increase of a
// server's periodsPaid into charges with their lag.
type ledgerWatch struct {
	interval time.Duration
	mu       sync.Mutex
	servers  map[string]*server // by pod name
	charges  []charge           // boundaries at or after liveFrom
	liveFrom time.Time          // the operator's start
	caughtUp atomic.Int64
	periods  atomic.Int64 // every period charged (catch-up included)
}

func (w *ledgerWatch) due(s *server, at time.Time) int64 {
	return int64(at.Sub(s.start)/w.interval) + 1
}

func (w *ledgerWatch) update(a *hcv1.CreditAccount) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range a.Status.Servers {
		s := w.servers[e.Pod]
		if s == nil || e.Wallet != a.Name || e.PeriodsPaid <= s.paid {
			continue
		}
		for k := s.paid; k < e.PeriodsPaid; k++ {
			bd := s.start.Add(time.Duration(k) * w.interval)
			if !w.liveFrom.IsZero() && !bd.Before(w.liveFrom) {
				w.charges = append(w.charges, charge{boundary: bd, lag: now.Sub(bd)})
			}
		}
		w.periods.Add(e.PeriodsPaid - s.paid)
		s.paid = e.PeriodsPaid
		if !s.done && !w.liveFrom.IsZero() && s.paid >= w.due(s, w.liveFrom) {
			s.done = true
			w.caughtUp.Add(1)
		}
	}
}

// window returns the lags of the boundaries in [from, to) and how many
// boundaries there were.
func (w *ledgerWatch) window(from, to time.Time) (lags []time.Duration, expected int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.charges {
		if !c.boundary.Before(from) && c.boundary.Before(to) {
			lags = append(lags, c.lag)
		}
	}
	for _, s := range w.servers {
		k := int64(math.Ceil(float64(from.Sub(s.start)) / float64(w.interval)))
		for ; s.start.Add(time.Duration(k) * w.interval).Before(to); k++ {
			expected++
		}
	}
	return lags, expected
}

func (b *bench) billing(ctx context.Context) error {
	c := b.cfg
	ns := nsBilling
	sc := "billing"
	accounts := c.servers / c.perAccount
	// Build the operator binary while the servers are set up.
	bin := filepath.Join(b.tmp, "manager")
	buildErr := make(chan error, 1)
	go func() {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
		cmd.Dir = b.root
		out, err := cmd.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("go build -o %s .: %w\n%s", bin, err, out)
		}
		buildErr <- err
	}()

	if err := b.namespace(ctx, ns); err != nil {
		return err
	}
	if err := b.c.Create(ctx, testutil.MakePolicy(ns, "bench").Value(1).Every(c.interval).Selecting(hcv1.ComponentLabel, hcv1.SingleuserComponent).Obj()); err != nil {
		return err
	}
	if err := b.createAccounts(ctx, ns, accounts, func(i int) *hcv1.CreditAccount {
		return testutil.MakeAccount(ns, user(i), user(i)).Cap(1000).InitialBalance(1000).Obj()
	}); err != nil {
		return err
	}
	serverName := func(j int) string {
		if c.perAccount == 1 {
			return ""
		}
		return fmt.Sprintf("s%d", j)
	}
	// Spawn every server through the webhook (one reservation each).
	pods := make([]*corev1.Pod, c.servers)
	var spawnRetries, otherRetries atomic.Int64
	t0 := time.Now()
	if err := parallel(ctx, c.servers, c.createWorker, func(ctx context.Context, i int) error {
		p, err := b.createRetrying(ctx, kubespawnerPod(ns, user(i/c.perAccount), serverName(i%c.perAccount)), &spawnRetries)
		pods[i] = p
		return err
	}); err != nil {
		return fmt.Errorf("spawning servers: %w", err)
	}
	spawnTime := time.Since(t0)
	logf("bench: billing: %d servers spawned through the webhook in %.1fs", c.servers, spawnTime.Seconds())

	// Running since an outage ago, start times spread over one interval in
	// whole seconds (the API keeps seconds).
	ref := time.Now().Truncate(time.Second)
	secs := int(c.interval / time.Second)
	w := &ledgerWatch{interval: c.interval, servers: map[string]*server{}}
	for i, p := range pods {
		start := ref.Add(-c.outage - time.Duration(i%secs)*time.Second)
		w.servers[p.Name] = &server{start: start, paid: 1}
	}
	t0 = time.Now()
	if err := parallel(ctx, c.servers, c.createWorker, func(ctx context.Context, i int) error {
		return b.setRunning(ctx, pods[i], w.servers[pods[i].Name].start)
	}); err != nil {
		return fmt.Errorf("setting servers running: %w", err)
	}
	logf("bench: billing: %d servers Running (started %s ago) in %.1fs", c.servers, c.outage, time.Since(t0).Seconds())
	pods = nil
	// The webhook is not needed any more (no spawns below; the unrelated
	// pods do not match its selectors). Stop its manager so that its watch
	// of every account does not compete with the operator for the two
	// cores; in production the webhook shares the operator's informers.
	if b.stopWebhook != nil {
		b.stopWebhook()
		b.stopWebhook = func() {}
	}

	// Watch the ledgers.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	wc, err := cache.New(b.rest, cache.Options{
		Scheme:            operator.Scheme(),
		DefaultNamespaces: map[string]cache.Config{ns: {}},
		DefaultTransform:  cache.TransformStripManagedFields(),
	})
	if err != nil {
		return err
	}
	inf, err := wc.GetInformer(wctx, &hcv1.CreditAccount{})
	if err != nil {
		return err
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) {
			if a, ok := obj.(*hcv1.CreditAccount); ok {
				w.update(a)
			}
		},
	}); err != nil {
		return err
	}
	go func() { _ = wc.Start(wctx) }()
	if !wc.WaitForCacheSync(wctx) {
		return fmt.Errorf("the harness' account watch did not sync")
	}
	if err := <-buildErr; err != nil {
		return err
	}

	// Catch-up: the operator starts after the (simulated) outage.
	writes0, err := b.accountWrites(ctx)
	if err != nil {
		return err
	}
	cpu0 := b.cpu()
	w.mu.Lock()
	w.liveFrom = time.Now()
	w.mu.Unlock()
	op, err := b.startOperator(ctx, bin, nil, ns, filepath.Join(b.tmp, "operator.log"))
	if err != nil {
		return err
	}
	defer func() { _ = op.stop() }()
	ready := time.Since(op.started)
	missedBoundaries := int64(0)
	for _, s := range w.servers {
		missedBoundaries += w.due(s, w.liveFrom) - 1
	}
	catchLimit := c.catchupLimit
	var rssCatch int64
	for w.caughtUp.Load() < int64(c.servers) {
		if time.Since(op.started) > catchLimit || ctx.Err() != nil {
			break
		}
		if ps, err := readProc(op.pid); err == nil && ps.rss > rssCatch {
			rssCatch = ps.rss
		}
		time.Sleep(100 * time.Millisecond)
	}
	catchUp := time.Since(w.liveFrom)
	caught := w.caughtUp.Load()
	writes1, err := b.accountWrites(ctx)
	if err != nil {
		return err
	}
	opCatch, _ := scrapeURL(ctx, op.metrics)
	psCatch, _ := readProc(op.pid)
	cpuCatch := b.cpu().coresSince(cpu0)
	if caught < int64(c.servers) {
		b.rep.add(sc, "catch-up: all missed boundaries charged", fmt.Sprintf("NOT DONE after %s: %d of %d servers", catchLimit, caught, c.servers), "≤ 60 s", "MISSED (not done)")
	} else {
		b.rep.add(sc, fmt.Sprintf("catch-up: %d boundaries of %d servers (%s outage)", missedBoundaries, c.servers, c.outage),
			fmt.Sprintf("%.1f s", catchUp.Seconds()), "≤ 60 s", verdictAtMost(round2(catchUp.Seconds()), 60, " s"))
	}
	var t strings.Builder
	workers := "its default --workers"
	if c.opWorkers > 0 {
		workers = fmt.Sprintf("--workers=%d", c.opWorkers)
	}
	fmt.Fprintf(&t, "%d servers on %d accounts (%d per account), 1 credit every %s, started %s before the operator starts (start times spread over one interval); the operator runs with %s.\n",
		c.servers, accounts, c.perAccount, c.interval, c.outage, workers)
	fmt.Fprintf(&t, "Setup: spawned through the webhook in %.1fs (%d concurrent; %d spawns retried after a webhook timeout or 5xx).\n\n",
		spawnTime.Seconds(), c.createWorker, spawnRetries.Load())
	fmt.Fprintf(&t, "**Catch-up**: %d missed boundaries; every one charged %.1fs after the operator process started (metrics endpoint up after %.1fs); "+
		"%.0f account status writes (%.0f conflicts) for %d accounts; operator CPU %.1fs (%.0f%% of a core), peak RSS %s during catch-up; "+
		"meanwhile %s.\n\n",
		missedBoundaries, catchUp.Seconds(), ready.Seconds(), writes1.total-writes0.total, writes1.conflicts-writes0.conflicts, accounts,
		psCatch.cpu.Seconds(), 100*psCatch.cpu.Seconds()/catchUp.Seconds(), mib(rssCatch), cpuCatch)

	fmt.Fprintf(&t, "Operator's work queue at the end of catch-up: %s.\n\n", queueText(nil, opCatch))

	if c.catchupOnly {
		b.rep.addRaw("billing at scale and catch-up", t.String())
		return nil
	}
	// Steady state, then again with unrelated pods in the namespace.
	r1, err := b.window(ctx, op, w, "window 1")
	if err != nil {
		return err
	}
	t0 = time.Now()
	if c.unrelated > 0 {
		logf("bench: billing: creating %d unrelated pods in %s", c.unrelated, ns)
		if err := parallel(ctx, c.unrelated, c.createWorker, func(ctx context.Context, i int) error {
			_, err := b.createRetrying(ctx, unrelatedPod(ns, i), &otherRetries)
			return err
		}); err != nil {
			return fmt.Errorf("creating unrelated pods: %w", err)
		}
	}
	unrelatedTime := time.Since(t0)
	r2, err := b.window(ctx, op, w, "window 2")
	if err != nil {
		return err
	}

	windows := []*windowResult{r1, r2}
	var comparison []*windowResult
	if c.memLimit != "" {
		// The same operator with a memory budget, as it runs in a container
		// with a memory limit: it sets GOMEMLIMIT to 90 % of the limit
		// (automemlimit); here the harness sets GOMEMLIMIT itself.
		if err := op.stop(); err != nil {
			logf("bench: stopping the operator: %v", err)
		}
		b.cfg.opEnv = []string{"GOMEMLIMIT=" + c.memLimit}
		op, err = b.startOperator(ctx, bin, nil, ns, filepath.Join(b.tmp, "operator-memlimit.log"))
		b.cfg.opEnv = nil
		if err != nil {
			return err
		}
		time.Sleep(c.interval) // the restart's own reconcile of every account
		r3, err := b.window(ctx, op, w, "window 3 (GOMEMLIMIT="+c.memLimit+")")
		if err != nil {
			return err
		}
		windows = append(windows, r3)
		b.rep.add(sc, r3.name+": billing lag p50 / p99 (watch)", fmt.Sprintf("%s / %s", sec(r3.p50), sec(r3.p99)), "P4: p99 ≤ 1 s", verdictAtMost(round2(r3.p99.Seconds()), 1, " s"))
		b.rep.add(sc, r3.name+": operator CPU; max RSS", fmt.Sprintf("%.1f%% of a core; %s", 100*r3.cpuCores, mib(r3.rssMax)), "P4: RSS ≤ 150 MiB", verdictAtMost(round2(float64(r3.rssMax)/(1<<20)), rssTarget, " MiB"))
	}
	if c.moreWorkers > 0 {
		// The same, with more reconcile workers (a flag, not a code change).
		if err := op.stop(); err != nil {
			logf("bench: stopping the operator: %v", err)
		}
		b.cfg.opWorkers, c.opWorkers = c.moreWorkers, c.moreWorkers
		op, err = b.startOperator(ctx, bin, nil, ns, filepath.Join(b.tmp, "operator-workers.log"))
		b.cfg.opWorkers = 0
		if err != nil {
			return err
		}
		time.Sleep(c.interval) // the restart's own reconcile of every account
		r4, err := b.window(ctx, op, w, fmt.Sprintf("window %d (--workers=%d)", len(windows)+1, c.moreWorkers))
		if err != nil {
			return err
		}
		windows = append(windows, r4)
		comparison = append(comparison, r4)
	}
	for _, r := range []*windowResult{r1, r2} {
		label := r.name
		if r == r2 {
			label += fmt.Sprintf(" (+%d unrelated pods)", c.unrelated)
		}
		b.rep.add(sc, label+": billing lag p50 / p99 (watch)", fmt.Sprintf("%s / %s", sec(r.p50), sec(r.p99)), "P4: p99 ≤ 1 s", verdictAtMost(round2(r.p99.Seconds()), 1, " s"))
		b.rep.add(sc, label+": charges seen / due; writes per charge", fmt.Sprintf("%d / %d; %.2f", r.charged, r.expected, r.writesPerCharge), "", countVerdict(r.charged, r.expected))
		b.rep.add(sc, label+": operator CPU; max RSS", fmt.Sprintf("%.1f%% of a core; %s", 100*r.cpuCores, mib(r.rssMax)), "P4: RSS ≤ 150 MiB", verdictAtMost(round2(float64(r.rssMax)/(1<<20)), rssTarget, " MiB"))
	}
	growth := float64(r2.rssMax-r1.rssMax) / float64(r1.rssMax)
	b.rep.add(sc, fmt.Sprintf("RSS growth with %d unrelated pods", c.unrelated), fmt.Sprintf("%+.1f MiB (%+.1f%%)", float64(r2.rssMax-r1.rssMax)/(1<<20), 100*growth),
		"no growth (≤ +10%)", verdictAtMost(round2(100*growth), 10, " %"))
	for _, r := range comparison {
		b.rep.add(sc, r.name+": billing lag p50 / p99 (watch)", fmt.Sprintf("%s / %s", sec(r.p50), sec(r.p99)), "(comparison, not a target)", "")
		b.rep.add(sc, r.name+": operator CPU; max RSS", fmt.Sprintf("%.1f%% of a core; %s", 100*r.cpuCores, mib(r.rssMax)), "", "")
	}

	fmt.Fprintf(&t, "| window | length | boundaries due | charged (seen) | lag p50 | p90 | p99 | max | > 1 s | operator histogram p50 / p99 (bucket bound) | ≤ 1 s (histogram) | status writes (409s) | writes per charge | CPU | RSS max | VmHWM | Go heap in use |\n")
	fmt.Fprintf(&t, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range windows {
		fmt.Fprintf(&t, "| %s | %s | %d | %d | %s | %s | %s | %s | %d | %g s / %g s | %.2f%% | %.0f (%.0f) | %.2f | %.1f%% | %s | %s | %s |\n",
			r.name, r.length, r.expected, r.charged, sec(r.p50), sec(r.p90), sec(r.p99), sec(r.max), r.over1s,
			r.hist.quantile(.5), r.hist.quantile(.99), 100*r.hist.fractionAtMost(1), r.writes.total, r.writes.conflicts, r.writesPerCharge,
			100*r.cpuCores, mib(r.rssMax), mib(r.hwm), mib(r.heapInuse))
	}
	for _, r := range windows {
		fmt.Fprintf(&t, "\nCPU during %s: operator %.0f%% of a core; %s. Work queue: %s.\n", r.name, 100*r.cpuCores, r.others, r.queue)
	}
	for _, r := range windows {
		fmt.Fprintf(&t, "\nOperator lag histogram (`hubcredits_billing_lag_seconds`), %s: %s.\n", r.name, r.hist)
	}
	fmt.Fprintf(&t, "\n%d unrelated pods (no singleuser label) created in %s between the windows in %.1fs (%.0f/s, %d retried).\n",
		c.unrelated, ns, unrelatedTime.Seconds(), float64(c.unrelated)/unrelatedTime.Seconds(), otherRetries.Load())
	b.rep.addRaw("billing at scale and catch-up", t.String())

	if c.profile == "always" || (c.profile == "auto" && b.rep.missed(sc)) {
		if err := op.stop(); err != nil {
			logf("bench: stopping the operator: %v", err)
		}
		if err := b.profileOperator(ctx, ns); err != nil {
			b.rep.profiles = append(b.rep.profiles, section{"billing controllers", "Profiling failed: " + err.Error()})
		}
	}
	return nil
}

// rssTarget is P4's bound on the operator's RSS at 10,000 servers (issue 14).
const rssTarget = 150

func countVerdict(got, want int) string {
	if got == want {
		return ""
	}
	return fmt.Sprintf("MISSED (%d boundaries not charged within the late limit)", want-got)
}

func sec(d time.Duration) string { return fmt.Sprintf("%.3f s", d.Seconds()) }

type windowResult struct {
	name                   string
	length                 time.Duration
	expected, charged      int
	over1s                 int
	p50, p90, p99, max     time.Duration
	hist                   histDelta
	writes                 statusWrites
	writesPerCharge        float64
	cpuCores               float64
	rssMax, hwm, heapInuse int64
	others                 string // the control plane's CPU
	queue                  string // the operator's work queue
}

// window measures the operator for -intervals billing intervals.
func (b *bench) window(ctx context.Context, op *proc, w *ledgerWatch, name string) (*windowResult, error) {
	c := b.cfg
	length := time.Duration(c.intervals) * c.interval
	logf("bench: billing: %s: %s", name, length)
	m0, err := scrapeURL(ctx, op.metrics)
	if err != nil {
		return nil, err
	}
	wr0, err := b.accountWrites(ctx)
	if err != nil {
		return nil, err
	}
	p0, err := readProc(op.pid)
	if err != nil {
		return nil, err
	}
	n0 := w.periods.Load()
	cpu0 := b.cpu()
	from := time.Now()
	to := from.Add(length)
	var rssMax int64
	for time.Now().Before(to) {
		if ps, err := readProc(op.pid); err == nil && ps.rss > rssMax {
			rssMax = ps.rss
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	p1, err := readProc(op.pid)
	if err != nil {
		return nil, err
	}
	others := b.cpu().coresSince(cpu0)
	wall := time.Since(from)
	m1, err := scrapeURL(ctx, op.metrics)
	if err != nil {
		return nil, err
	}
	wr1, err := b.accountWrites(ctx)
	if err != nil {
		return nil, err
	}
	n1 := w.periods.Load()
	// Give the window's last boundaries their chance.
	deadline := time.Now().Add(c.lateLimit)
	lags, expected := w.window(from, to)
	for len(lags) < expected && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		lags, _ = w.window(from, to)
	}
	s := sortDurations(lags)
	r := &windowResult{
		name: name, length: length, expected: expected, charged: len(s), others: others,
		p50: quantile(s, .5), p90: quantile(s, .9), p99: quantile(s, .99),
		hist:     deltaHistogram(m0, m1, "hubcredits_billing_lag_seconds", nil),
		writes:   statusWrites{total: wr1.total - wr0.total, conflicts: wr1.conflicts - wr0.conflicts},
		cpuCores: (p1.cpu - p0.cpu).Seconds() / wall.Seconds(),
		rssMax:   max(rssMax, p1.rss), hwm: p1.hwm,
		heapInuse: int64(m1.sum("go_memstats_heap_inuse_bytes", nil)),
		queue:     queueText(m0, m1),
	}
	if len(s) > 0 {
		r.max = s[len(s)-1]
	}
	for _, d := range s {
		if d > time.Second {
			r.over1s++
		}
	}
	if n := n1 - n0; n > 0 {
		r.writesPerCharge = r.writes.total / float64(n)
	}
	return r, nil
}

// profileOperator runs the billing controllers under runtime/pprof in a
// child process of the harness for two intervals on the same namespace and
// summarises the profiles.
func (b *bench) profileOperator(ctx context.Context, ns string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	d := b.cfg.profileFor
	if d == 0 {
		d = 2 * b.cfg.interval
	}
	cpu := filepath.Join(b.tmp, "cpu.pprof")
	heap := filepath.Join(b.tmp, "heap.pprof")
	logf("bench: billing: profiling the billing controllers for %s", d)
	p, err := b.startOperator(ctx, self, []string{"-role=operator", "-cpuprofile=" + cpu, "-heapprofile=" + heap, fmt.Sprintf("-duration=%s", d)},
		ns, filepath.Join(b.tmp, "operator-profile.log"))
	if err != nil {
		return err
	}
	// kube-apiserver over the same time, minus the start-up.
	apiProf := filepath.Join(b.tmp, "apiserver-billing.pprof")
	apiSecs := max(int((d-5*time.Second)/time.Second), 5)
	apiErr := make(chan error, 1)
	go func() {
		time.Sleep(3 * time.Second)
		raw, err := b.cs.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", fmt.Sprint(apiSecs)).DoRaw(ctx)
		if err == nil {
			err = os.WriteFile(apiProf, raw, 0o644)
		}
		apiErr <- err
	}()
	if err := p.waitExit(d + time.Minute); err != nil {
		return err
	}
	if err := <-apiErr; err == nil {
		b.rep.profiles = append(b.rep.profiles,
			section{fmt.Sprintf("kube-apiserver CPU while the billing controllers run (%d s, `-top -nodecount=20`)", apiSecs),
				"```\n" + strings.TrimSpace(b.pprofTop(ctx, "-top", "-nodecount=20", apiProf)) + "\n```"},
			section{"kube-apiserver, cumulative (`-top -cum -nodecount=40`)",
				"```\n" + strings.TrimSpace(b.pprofTop(ctx, "-top", "-cum", "-nodecount=40", apiProf)) + "\n```"})
	}
	top := func(args ...string) string { return b.pprofTop(ctx, args...) }
	b.rep.profiles = append(b.rep.profiles,
		section{fmt.Sprintf("CPU, billing controllers (%s on %d servers, start-up included): `go tool pprof -top -nodecount=25`", d, b.cfg.servers),
			"```\n" + strings.TrimSpace(top("-top", "-nodecount=25", cpu)) + "\n```"},
		section{"CPU, cumulative (`-top -cum -nodecount=25`)",
			"```\n" + strings.TrimSpace(top("-top", "-cum", "-nodecount=25", cpu)) + "\n```"},
		section{"Heap in use at the end (`-sample_index=inuse_space -top -nodecount=15`)",
			"```\n" + strings.TrimSpace(top("-sample_index=inuse_space", "-top", "-nodecount=15", heap)) + "\n```"},
	)
	return nil
}

// pprofTop runs go tool pprof with args (the profile last).
func (b *bench) pprofTop(ctx context.Context, args ...string) string {
	cmd := exec.CommandContext(ctx, "go", append([]string{"tool", "pprof"}, args...)...)
	cmd.Dir = b.root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("go tool pprof failed: %v\n%s", err, out)
	}
	return string(out)
}

// queueText summarises the creditaccount controller's work between two
// scrapes of the operator's metrics (before nil: since its start).
func queueText(before, after samples) string {
	ctl := map[string]string{"controller": "creditaccount"}
	d := func(name string, m map[string]string) float64 { return after.sum(name, m) - before.sum(name, m) }
	n := d("controller_runtime_reconcile_time_seconds_count", ctl)
	if n == 0 {
		return "no reconciles"
	}
	waits := d("workqueue_queue_duration_seconds_count", ctl)
	var depth []string
	for _, s := range after {
		if s.name == "workqueue_depth" && s.labels["controller"] == "creditaccount" {
			p := s.labels["priority"]
			if p == "" {
				p = "all"
			}
			depth = append(depth, fmt.Sprintf("%.0f at priority %s", s.value, p))
		}
	}
	return fmt.Sprintf("%.0f reconciles (%.1f ms each on average), %.0f PUTs by the operator, average wait in the queue %.2f s, depth at the end: %s",
		n, 1000*d("controller_runtime_reconcile_time_seconds_sum", ctl)/n,
		d("rest_client_requests_total", map[string]string{"method": "PUT"}),
		d("workqueue_queue_duration_seconds_sum", ctl)/max(waits, 1), strings.Join(depth, ", "))
}
