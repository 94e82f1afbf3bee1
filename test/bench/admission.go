package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// variant is one namespace of the admission scenario.
type variant struct {
	key, ns, what string
	lat           []time.Duration
	wall          time.Duration
	created       int
}

func (v *variant) stats() (p50, p90, p99, slowest, mean time.Duration, perSec float64) {
	s := sortDurations(v.lat)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	if len(s) > 0 {
		mean = sum / time.Duration(len(s))
		slowest = s[len(s)-1]
	}
	return quantile(s, .5), quantile(s, .9), quantile(s, .99), slowest, mean, float64(len(s)) / v.wall.Seconds()
}

const perWorkerBlock = 10

func (b *bench) admission(ctx context.Context) error {
	c := b.cfg
	block := c.workers * perWorkerBlock
	rounds := (c.pods + block - 1) / block
	perVariant := (rounds + 1) * block // one warm-up block each
	vs := []*variant{
		{key: "a", ns: nsNoWebhook, what: "no webhook (excluded by namespaceSelector)"},
		{key: "b", ns: nsQuota, what: "ResourceQuota on pods (excluded from the webhook)"},
		{key: "c", ns: nsWebhook, what: "hubcredits webhook with a reservation"},
	}
	for _, v := range vs {
		if err := b.namespace(ctx, v.ns); err != nil {
			return err
		}
	}
	// (b) the API server's own gate: a quota on the pod count. Without a
	// kube-controller-manager the harness sets its status, as the quota
	// controller would; admission then moves status.used itself.
	hard := corev1.ResourceList{corev1.ResourcePods: *resource.NewQuantity(int64(perVariant+10), resource.DecimalSI)}
	q, err := b.cs.CoreV1().ResourceQuotas(nsQuota).Create(ctx, &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Name: "pods"},
		Spec:       corev1.ResourceQuotaSpec{Hard: hard},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	q.Status = corev1.ResourceQuotaStatus{Hard: hard, Used: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("0")}}
	if _, err := b.cs.CoreV1().ResourceQuotas(nsQuota).UpdateStatus(ctx, q, metav1.UpdateOptions{}); err != nil {
		return err
	}
	// (c) a policy and a wallet per user.
	if err := b.c.Create(ctx, testutil.MakePolicy(nsWebhook, "bench").Value(1).Every(10*time.Minute).Selecting(hcv1.ComponentLabel, hcv1.SingleuserComponent).Obj()); err != nil {
		return err
	}
	if err := b.createAccounts(ctx, nsWebhook, perVariant, func(i int) *hcv1.CreditAccount {
		return testutil.MakeAccount(nsWebhook, user(i), user(i)).Cap(100).InitialBalance(100).Obj()
	}); err != nil {
		return err
	}
	time.Sleep(2 * time.Second) // let the quota reach the API server's informer

	next := map[string]int{}
	runBlock := func(v *variant, record bool) error {
		var mu sync.Mutex
		var lat []time.Duration
		base := next[v.key]
		next[v.key] += block
		start := time.Now()
		err := parallel(ctx, block, c.workers, func(ctx context.Context, i int) error {
			p := kubespawnerPod(v.ns, user(base+i), "")
			t0 := time.Now()
			_, err := b.cs.CoreV1().Pods(v.ns).Create(ctx, p, metav1.CreateOptions{})
			d := time.Since(t0)
			if err != nil {
				return fmt.Errorf("variant %s: %w", v.key, err)
			}
			mu.Lock()
			lat = append(lat, d)
			mu.Unlock()
			return nil
		})
		wall := time.Since(start)
		if err != nil {
			return err
		}
		if record {
			v.lat = append(v.lat, lat...)
			v.wall += wall
			v.created += block
		}
		return nil
	}
	api0, err := b.apiserverMetrics(ctx)
	if err != nil {
		return err
	}
	hist0 := registryHistogram("hubcredits_admission_duration_seconds", nil)
	served0 := registryHistogram("controller_runtime_webhook_latency_seconds", map[string]string{"webhook": "/mutate-v1-pod"})
	cpu0 := b.cpu()
	logf("bench: admission: %d rounds of %d creates per variant, %d workers", rounds, block, c.workers)
	for r := -1; r < rounds; r++ {
		for k := range 3 {
			v := vs[(max(r, 0)+k)%3]
			if err := runBlock(v, r >= 0); err != nil {
				return err
			}
		}
	}
	cpuRun := b.cpu().coresSince(cpu0)
	api1, err := b.apiserverMetrics(ctx)
	if err != nil {
		return err
	}
	writes0, writes1 := accountStatusWrites(api0), accountStatusWrites(api1)
	webhookCall := deltaHistogram(api0, api1, "apiserver_admission_webhook_admission_duration_seconds", map[string]string{"name": "pods.hubcredits.io"})
	statusPut := deltaHistogram(api0, api1, "apiserver_request_duration_seconds", map[string]string{"verb": "PUT", "resource": "creditaccounts", "subresource": "status"})
	quotaWrites := api1.sum("apiserver_request_total", map[string]string{"verb": "PUT", "resource": "resourcequotas", "subresource": "status"}) -
		api0.sum("apiserver_request_total", map[string]string{"verb": "PUT", "resource": "resourcequotas", "subresource": "status"})
	quotaPlugin := deltaHistogram(api0, api1, "apiserver_admission_controller_admission_duration_seconds", map[string]string{"name": "ResourceQuota", "operation": "CREATE"})
	podCreate := deltaHistogram(api0, api1, "apiserver_request_duration_seconds", map[string]string{"verb": "POST", "resource": "pods"})
	hist := registryHistogram("hubcredits_admission_duration_seconds", nil).minus(hist0)
	served := registryHistogram("controller_runtime_webhook_latency_seconds", map[string]string{"webhook": "/mutate-v1-pod"}).minus(served0)

	// Sanity: the quota really gated (its usage moved), and every webhook
	// create reserved.
	q, err = b.cs.CoreV1().ResourceQuotas(nsQuota).Get(ctx, "pods", metav1.GetOptions{})
	if err != nil {
		return err
	}
	used := q.Status.Used[corev1.ResourcePods]
	var sample hcv1.CreditAccount
	if err := b.c.Get(ctx, types.NamespacedName{Namespace: nsWebhook, Name: user(0)}, &sample); err != nil {
		return err
	}

	a, bq, cw := vs[0], vs[1], vs[2]
	ap50, _, ap99, _, _, aps := a.stats()
	bp50, _, bp99, _, _, bps := bq.stats()
	cp50, _, cp99, _, _, cps := cw.stats()
	rat := func(x, y time.Duration) float64 { return float64(x) / float64(y) }
	sc := "admission"
	for _, v := range vs {
		p50, _, p99, _, _, ps := v.stats()
		b.rep.add(sc, fmt.Sprintf("(%s) p50 / p99 / throughput", v.key), fmt.Sprintf("%s / %s / %.0f/s", ms(p50), ms(p99), ps), "", "")
	}
	// P1 (issue 14): within 1.5× of the API server's own gate, ResourceQuota
	// (b), at p50 and p99. c/a is shown for reference.
	b.rep.add(sc, "c/a p50, p99 (no webhook; for reference)", fmt.Sprintf("%.2f, %.2f", rat(cp50, ap50), rat(cp99, ap99)), "", "")
	b.rep.add(sc, "P1: c/b p50", fmt.Sprintf("%.2f", rat(cp50, bp50)), "≤ 1.5 (within 1.5× of ResourceQuota's gate)", verdictAtMost(round2(rat(cp50, bp50)), 1.5, ""))
	b.rep.add(sc, "P1: c/b p99", fmt.Sprintf("%.2f", rat(cp99, bp99)), "≤ 1.5 (within 1.5× of ResourceQuota's gate)", verdictAtMost(round2(rat(cp99, bp99)), 1.5, ""))
	b.rep.add(sc, "throughput c/a, c/b", fmt.Sprintf("%.2f, %.2f", cps/aps, cps/bps), "", "")

	var t strings.Builder
	fmt.Fprintf(&t, "%d workers; %d measured creates per variant in %d blocks of %d (plus one warm-up block each).\n\n", c.workers, a.created, rounds, block)
	fmt.Fprintf(&t, "| variant | namespace | creates | p50 | p90 | p99 | max | mean | creates/s |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, v := range vs {
		p50, p90, p99, mx, mean, ps := v.stats()
		fmt.Fprintf(&t, "| (%s) %s | %s | %d | %s | %s | %s | %s | %s | %.0f |\n", v.key, v.what, v.ns, len(v.lat), ms(p50), ms(p90), ms(p99), ms(mx), ms(mean), ps)
	}
	fmt.Fprintf(&t, "\nRatios: c/a p50 %.2f, p99 %.2f; c/b p50 %.2f, p99 %.2f; throughput c/a %.2f, c/b %.2f.\n",
		rat(cp50, ap50), rat(cp99, ap99), rat(cp50, bp50), rat(cp99, bp99), cps/aps, cps/bps)
	fmt.Fprintf(&t, "\nCPU over the run: %s.\n", cpuRun)
	fmt.Fprintf(&t, "\nChecks: quota %s used %s after the run (the gate was live); %s: %d server entry, balance %d.\n",
		nsQuota, used.String(), user(0), len(sample.Status.Servers), sample.Status.Balance)
	fmt.Fprintf(&t, "\nAPI server: %.0f updates of creditaccounts/status during the run (%.0f conflicts) for %d webhook creates.\n",
		writes1.total-writes0.total, writes1.conflicts-writes0.conflicts, perVariant)
	fmt.Fprintf(&t, "\nWhere the time goes, from the API server's histograms over the run (bucket upper bounds, p50 / p99):\n\n")
	fmt.Fprintf(&t, "| histogram | count | p50 ≤ | p99 ≤ |\n|---|---|---|---|\n")
	for _, h := range []struct {
		name string
		h    histDelta
	}{
		{"pod POST, all three variants (`apiserver_request_duration_seconds`)", podCreate},
		{"webhook call pods.hubcredits.io, as the API server sees it (`apiserver_admission_webhook_admission_duration_seconds`)", webhookCall},
		{"the same request inside the webhook server (`controller_runtime_webhook_latency_seconds`)", served},
		{"PodAdmitter decision, reservation write included (`hubcredits_admission_duration_seconds`)", hist},
		{"reservation write, PUT creditaccounts/status (`apiserver_request_duration_seconds`)", statusPut},
		{"ResourceQuota admission plugin (`apiserver_admission_controller_admission_duration_seconds`)", quotaPlugin},
	} {
		fmt.Fprintf(&t, "| %s | %.0f | %g s | %g s |\n", h.name, h.h.total(), h.h.quantile(.5), h.h.quantile(.99))
	}
	fmt.Fprintf(&t, "\nResourceQuota status writes during the run: %.0f for %d creates in %s (the API server batches a namespace's concurrent creates into one quota write).\n",
		quotaWrites, perVariant, nsQuota)
	b.rep.addRaw("admission overhead", t.String())
	if b.cfg.profile == "always" || (b.cfg.profile == "auto" && b.rep.missed(sc)) {
		if err := b.profileAPIServer(ctx, perVariant); err != nil {
			b.rep.profiles = append(b.rep.profiles, section{"kube-apiserver during webhook creates", "Profiling failed: " + err.Error()})
		}
	}
	return nil
}

// profileAPIServer takes a CPU profile of kube-apiserver (its
// /debug/pprof, through the admin client) while the workers create pods
// in the webhook namespace only (second servers of the same users), and
// the harness' own CPU time over the same seconds (the webhook runs here).
func (b *bench) profileAPIServer(ctx context.Context, users int) error {
	const seconds = 15
	logf("bench: admission: profiling kube-apiserver for %ds under webhook creates", seconds)
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	var created atomic.Int64
	var wg sync.WaitGroup
	for w := range b.cfg.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := w; pctx.Err() == nil; j += b.cfg.workers {
				p := kubespawnerPod(nsWebhook, user(j%users), fmt.Sprintf("p%d", j/users))
				if _, err := b.cs.CoreV1().Pods(nsWebhook).Create(pctx, p, metav1.CreateOptions{}); err == nil {
					created.Add(1)
				}
			}
		}()
	}
	self0, _ := readProc(os.Getpid())
	raw, err := b.cs.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", fmt.Sprint(seconds)).DoRaw(ctx)
	self1, _ := readProc(os.Getpid())
	stop()
	wg.Wait()
	if err != nil {
		return err
	}
	path := filepath.Join(b.tmp, "apiserver-cpu.pprof")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		return err
	}
	n := created.Load()
	body := fmt.Sprintf("%d webhook creates (each with a reservation write) in the %d s; the harness process (webhook server, "+
		"its cache, and the load generator) used %.1f CPU-seconds over the same time (%.2f ms per create).\n\n```\n%s\n```",
		n, seconds, (self1.cpu - self0.cpu).Seconds(), float64((self1.cpu-self0.cpu).Milliseconds())/float64(max(n, 1)),
		strings.TrimSpace(b.pprofTop(ctx, "-top", "-nodecount=25", path)))
	b.rep.profiles = append(b.rep.profiles,
		section{fmt.Sprintf("kube-apiserver CPU during webhook creates (%d s, `go tool pprof -top -nodecount=25`)", seconds), body},
		section{"kube-apiserver, cumulative (`-top -cum -nodecount=30`)", "```\n" + strings.TrimSpace(b.pprofTop(ctx, "-top", "-cum", "-nodecount=30", path)) + "\n```"})
	return nil
}

func user(i int) string { return fmt.Sprintf("u%05d", i) }

func round2(f float64) float64 { return math.Round(f*100) / 100 }

// registryHistogram reads a histogram from controller-runtime's registry in
// this process (summed over the label sets that include match).
func registryHistogram(name string, match map[string]string) histDelta {
	var h histDelta
	fams, err := metrics.Registry.Gather()
	if err != nil {
		return h
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for k, v := range match {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			hh := m.GetHistogram()
			var bounds, counts []float64
			for _, bk := range hh.GetBucket() {
				bounds = append(bounds, bk.GetUpperBound())
				counts = append(counts, float64(bk.GetCumulativeCount()))
			}
			bounds = append(bounds, math.Inf(1))
			counts = append(counts, float64(hh.GetSampleCount()))
			if h.bounds == nil {
				h.bounds, h.counts = bounds, counts
				continue
			}
			for i := range h.counts {
				h.counts[i] += counts[i]
			}
		}
	}
	return h
}

// minus subtracts an earlier reading of the same histogram.
func (h histDelta) minus(o histDelta) histDelta {
	out := histDelta{bounds: h.bounds}
	for i, c := range h.counts {
		if i < len(o.counts) {
			c -= o.counts[i]
		}
		out.counts = append(out.counts, c)
	}
	return out
}
