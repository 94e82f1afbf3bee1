package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

const (
	nsPool     = "bench-pool"
	poolName   = "course"
	poolGroup  = "course-101"
	poolTarget = 50.0      // spawns/s at the end of the storm (P6)
	poolMaxObj = 256 << 10 // bytes of the pool object (P6)
	poolCredit = 1 << 40   // the pool's balance: it can pay for every spawn
	poolWindow = 30 * time.Second
)

// poolSample is the storm's state at one moment.
type poolSample struct {
	at       time.Duration
	admitted int
	rate     float64 // admitted per second over the last sample period
	bytes    int
	apiCores float64
}

// pool is the P6 scenario: a KubeSpawner-shaped spawn storm on ONE
// project pool (members by name through spec.users, up to its 1,000, and
// by group through spec.groups and the hubcredits.io/groups annotation),
// with -pool-clients concurrent clients, toward -pool-servers servers;
// then one billing boundary charged by the operator. It stops at a bound
// (-pool-limit, a spawn rate under -pool-min-rate over 30 s, or failing
// spawns such as the pool object's size limit) and says which.
func (b *bench) pool(ctx context.Context) error {
	c := b.cfg
	sc := "pool"
	ns := nsPool
	if err := b.namespace(ctx, ns); err != nil {
		return err
	}
	if err := b.c.Create(ctx, testutil.MakePolicy(ns, "bench").Value(1).Every(c.poolInterval).Selecting(hcv1.ComponentLabel, hcv1.SingleuserComponent).Obj()); err != nil {
		return err
	}
	named := min(c.poolNamed, c.poolServers)
	names := make([]string, named)
	for i := range names {
		names[i] = user(i)
	}
	if err := b.createAccounts(ctx, ns, 1, func(int) *hcv1.CreditAccount {
		return testutil.MakeAccount(ns, poolName, names...).Groups(poolGroup).Cap(poolCredit).InitialBalance(poolCredit).Obj()
	}); err != nil {
		return err
	}
	groupsJSON, _ := json.Marshal([]string{poolGroup})
	poolBytes := func(ctx context.Context) (int, error) {
		raw, err := b.cs.RESTClient().Get().AbsPath("/apis/hubcredits.io/v1alpha1/namespaces/" + ns + "/creditaccounts/" + poolName).DoRaw(ctx)
		return len(raw), err
	}

	// The storm.
	var (
		mu        sync.Mutex
		doneAt    []time.Duration // when each admitted spawn returned, from t0
		pods      []*corev1.Pod
		errs      = map[string]int{}
		nErrs     atomic.Int64
		next      atomic.Int64
		stopped   atomic.Bool
		why       string
		attempted atomic.Int64
	)
	stop := func(reason string) {
		mu.Lock()
		defer mu.Unlock()
		if why == "" {
			why = reason
		}
		stopped.Store(true)
	}
	t0 := time.Now()
	cpu0 := b.cpu()
	logf("bench: pool: spawn storm toward %d servers on one pool (%d members by name, the rest by group), %d clients", c.poolServers, named, c.poolClients)
	var wg sync.WaitGroup
	for range c.poolClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stopped.Load() && ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= c.poolServers {
					return
				}
				p := kubespawnerPod(ns, user(i), "")
				p.Annotations[hcv1.AnnotationGroups] = string(groupsJSON) // as the hub puts them, on every pod
				attempted.Add(1)
				out, err := b.cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
				d := time.Since(t0)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					msg := err.Error()
					if len(msg) > 300 {
						msg = msg[:300] + "…"
					}
					mu.Lock()
					errs[msg]++
					mu.Unlock()
					// A spawn the pool can pay for must not fail: a few
					// (a webhook call past its 2 s timeout) are noted,
					// more end the storm.
					if n := nErrs.Add(1); n >= 10 {
						stop(fmt.Sprintf("%d spawns failed (the last: %s)", n, msg))
					}
					continue
				}
				mu.Lock()
				doneAt = append(doneAt, d)
				pods = append(pods, out)
				mu.Unlock()
			}
		}()
	}
	// The sampler: the pool's size and the spawn rate every 5 s, and the
	// stop conditions on time and rate.
	var samples []poolSample
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		lastN, lastT, lastCPU := 0, time.Duration(0), b.cpu()
		every := 5 * time.Second
		if c.poolServers < 2000 {
			every = time.Second
		}
		tick := time.NewTicker(every)
		defer tick.Stop()
		for !stopped.Load() && ctx.Err() == nil {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			now := time.Since(t0)
			cpu := b.cpu()
			mu.Lock()
			n := len(doneAt)
			recent := 0
			for j := len(doneAt) - 1; j >= 0 && doneAt[j] > now-poolWindow; j-- {
				recent++
			}
			mu.Unlock()
			size, _ := poolBytes(ctx)
			samples = append(samples, poolSample{at: now, admitted: n, rate: float64(n-lastN) / (now - lastT).Seconds(), bytes: size,
				apiCores: (cpu.apiserver - lastCPU.apiserver).Seconds() / cpu.at.Sub(lastCPU.at).Seconds()})
			lastN, lastT, lastCPU = n, now, cpu
			switch {
			case n >= c.poolServers:
			case now > c.poolLimit:
				stop(fmt.Sprintf("time bound: %s reached at %d servers", c.poolLimit, n))
			case now >= poolWindow && float64(recent)/poolWindow.Seconds() < c.poolMinRate:
				stop(fmt.Sprintf("spawn rate %.2f/s over the last %s, under the bound of %g/s, at %d servers (pool object %s)",
					float64(recent)/poolWindow.Seconds(), poolWindow, c.poolMinRate, n, kib(size)))
			}
		}
	}()
	wg.Wait()
	stormWall := time.Since(t0)
	stopped.Store(true)
	<-sampled
	cpuStorm := b.cpu().coresSince(cpu0)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	admitted := len(doneAt)
	if why == "" && admitted < c.poolServers {
		why = fmt.Sprintf("%d spawns failed", nErrs.Load())
	}
	sort.Slice(doneAt, func(i, j int) bool { return doneAt[i] < doneAt[j] })
	last := min(500, admitted/2)
	endRate := 0.0
	if last > 1 {
		endRate = float64(last) / (doneAt[admitted-1] - doneAt[admitted-1-last]).Seconds()
	}
	size, err := poolBytes(ctx)
	if err != nil {
		return err
	}
	logf("bench: pool: %d of %d servers admitted in %.1fs (%s); %.1f spawns/s over the last %d; pool object %s",
		admitted, c.poolServers, stormWall.Seconds(), orText(why, "target reached"), endRate, last, kib(size))

	reached := admitted >= c.poolServers
	cause := ""
	if !reached {
		cause = "stopped at " + fmt.Sprint(admitted) + ": " + why
	}
	b.rep.add(sc, fmt.Sprintf("P6: servers admitted of %d (16 clients: %d)", c.poolServers, c.poolClients),
		fmt.Sprintf("%d (failed spawns %d)", admitted, nErrs.Load()), fmt.Sprintf("%d, every spawn the pool can pay", c.poolServers),
		boolVerdict(reached && nErrs.Load() == 0, cause))
	rateVerdict := verdictAtLeast(round2(endRate), poolTarget, "/s")
	if !reached {
		rateVerdict = fmt.Sprintf("MISSED (%.1f/s at the %dth spawn, not at the %dth)", endRate, admitted, c.poolServers)
	}
	b.rep.add(sc, fmt.Sprintf("P6: spawns/s over the last %d admitted", last), fmt.Sprintf("%.1f/s", endRate),
		fmt.Sprintf("≥ %g/s at the %dth", poolTarget, c.poolServers), rateVerdict)
	b.rep.add(sc, "P6: pool object size at the end (JSON as served)", kib(size), "≤ 256 KiB", verdictAtMost(round2(float64(size)/1024), poolMaxObj/1024, " KiB"))

	// One billing boundary: every admitted server runs from ref, the
	// operator starts, and the first boundary (ref + interval) must charge
	// every running server exactly once.
	ref := time.Now().Truncate(time.Second)
	tr := time.Now()
	if err := parallel(ctx, len(pods), c.createWorker, func(ctx context.Context, i int) error {
		return b.setRunning(ctx, pods[i], ref)
	}); err != nil {
		return fmt.Errorf("setting servers running: %w", err)
	}
	running := len(pods)
	logf("bench: pool: %d servers Running from %s (set in %.1fs)", running, ref.Format("15:04:05"), time.Since(tr).Seconds())
	bin, err := b.operatorBinary(ctx)
	if err != nil {
		return err
	}
	op, err := b.startOperator(ctx, bin, nil, ns, filepath.Join(b.tmp, "operator-pool.log"))
	if err != nil {
		return err
	}
	defer func() { _ = op.stop() }()
	boundary := ref.Add(c.poolInterval)
	deadline := ref.Add(2*c.poolInterval - 2*time.Second) // before the second boundary
	byPod := map[string]bool{}
	for _, p := range pods {
		byPod[p.Name] = true
	}
	var pool *hcv1.CreditAccount
	var all []hcv1.ServerCharge
	var pages map[int32]*hcv1.LedgerPage
	var seen, over, entries, orphans int
	var allAt time.Duration
	for {
		if pool, pages, all, err = b.poolLedger(ctx, ns); err != nil {
			return err
		}
		seen, over, entries, orphans = 0, 0, 0, 0
		for _, e := range all {
			if !byPod[e.Pod] {
				orphans++ // a reservation whose spawn failed: refunded after the grace, never charged
				continue
			}
			entries++
			if e.PeriodsPaid >= 2 {
				seen += int(e.PeriodsPaid - 1)
			}
			if e.PeriodsPaid > 2 {
				over++
			}
		}
		if seen >= running && allAt == 0 {
			allAt = time.Since(boundary)
		}
		if time.Now().After(deadline) || (allAt != 0 && time.Now().After(boundary.Add(allAt+5*time.Second))) || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second)
	}
	exactlyOnce := seen == running && over == 0 && entries == running
	onceCause := ""
	if !exactlyOnce {
		onceCause = fmt.Sprintf("%d of %d charged by %s after the boundary, %d charged twice, %d entries for %d running pods",
			seen, running, deadline.Sub(boundary).Round(time.Second), over, entries, running)
	}
	b.rep.add(sc, "P6: first boundary after the storm: charges seen / due", fmt.Sprintf("%d / %d", seen, running), "exactly once each", boolVerdict(exactlyOnce, onceCause))
	// The ledger: conservation over the pool's totals, and every entry's
	// paid amount is its periods at the price (1 credit).
	var sumPaid int64
	badEntries := 0
	for _, e := range all {
		sumPaid += e.Paid
		if e.Paid != e.PeriodsPaid*e.BillingValue {
			badEntries++
		}
	}
	st := pool.Status
	conserved := poolCredit+st.TotalGranted+st.TotalToppedUp+st.TotalAdjusted-st.TotalCharged+st.TotalRefunded == st.Balance
	held := st.TotalCharged - st.TotalRefunded
	pagedErr := billing.CheckPaged(pool, pages)
	exact := conserved && badEntries == 0 && sumPaid == held && pagedErr == nil
	exactCause := "not exact"
	if pagedErr != nil {
		exactCause = pagedErr.Error()
	}
	b.rep.add(sc, "P6: ledger exact (balance = initial − charged + refunded; Σ entries paid, inline and on pages = charged − refunded; the pool's page aggregates match its pages)",
		fmt.Sprintf("%s (balance %d, charged %d, refunded %d, Σ paid %d; %d inline, %d on %d pages)", yesNo(exact), st.Balance, st.TotalCharged, st.TotalRefunded, sumPaid,
			len(st.Servers), len(all)-len(st.Servers), len(pages)),
		"exact", boolVerdict(exact, exactCause))

	var t strings.Builder
	fmt.Fprintf(&t, "One pool `%s` (spec.users: %d names; spec.groups: [%s], which the other users reach through the `hubcredits.io/groups` annotation), "+
		"a policy of 1 credit every %s; %d concurrent clients create KubeSpawner-shaped pods through the webhook toward %d servers. "+
		"Bounds: %s, a spawn rate under %g/s over %s, 10 failed spawns.\n\n",
		poolName, named, poolGroup, c.poolInterval, c.poolClients, c.poolServers, c.poolLimit, c.poolMinRate, poolWindow)
	fmt.Fprintf(&t, "Storm: %d admitted in %.1fs; ended by: %s. CPU over the storm: %s.\n\n", admitted, stormWall.Seconds(), orText(why, "the target"), cpuStorm)
	fmt.Fprintf(&t, "| elapsed | admitted | spawns/s (since the previous sample) | pool object | kube-apiserver (cores) |\n|---|---|---|---|---|\n")
	stride := max(1, (len(samples)+39)/40) // at most 40 rows, and the last
	for i, s := range samples {
		if i%stride != 0 && i != len(samples)-1 {
			continue
		}
		fmt.Fprintf(&t, "| %.0f s | %d | %.1f | %s | %.2f |\n", s.at.Seconds(), s.admitted, s.rate, kib(s.bytes), s.apiCores)
	}
	if len(errs) > 0 {
		fmt.Fprintf(&t, "\nFailed spawns: %s\n", errText(errs))
	}
	fmt.Fprintf(&t, "\nBoundary: %d servers Running from %s; the operator started after; every one charged for period 1 %s after the boundary "+
		"(polling once a second); %d charged more than once; %d reservations without a pod (failed spawns).\n",
		running, ref.UTC().Format("15:04:05"), durText(allAt), over, orphans)
	b.rep.addRaw("pool: one project pool for a whole course", t.String())
	// Leave nothing running for the scenarios after this one: the operator
	// stops, the servers' pods go (no kubelet: at once).
	if err := op.stop(); err != nil {
		logf("bench: pool: stopping the operator: %v", err)
	}
	if err := b.cs.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, metav1.ListOptions{}); err != nil {
		logf("bench: pool: deleting the servers' pods: %v", err)
	}
	return nil
}

func errText(m map[string]int) string {
	var parts []string
	for e, n := range m {
		parts = append(parts, fmt.Sprintf("%d× %s", n, e))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

func boolVerdict(ok bool, cause string) string {
	if ok {
		return "met"
	}
	return "MISSED (" + cause + ")"
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

func orText(s, otherwise string) string {
	if s == "" {
		return otherwise
	}
	return s
}

func durText(d time.Duration) string {
	if d == 0 {
		return "NOT"
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

func kib(n int) string { return fmt.Sprintf("%.1f KiB", float64(n)/1024) }

// poolLedger reads the pool and its LedgerPages as one consistent view
// (the pool read again after its pages, until it did not change between):
// the pool, its pages by number, and every entry, inline then on the pages
// as they are once the pool's pending transfers are applied.
func (b *bench) poolLedger(ctx context.Context, ns string) (*hcv1.CreditAccount, map[int32]*hcv1.LedgerPage, []hcv1.ServerCharge, error) {
	for attempt := 0; ; attempt++ {
		pool := &hcv1.CreditAccount{}
		if err := b.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: poolName}, pool); err != nil {
			return nil, nil, nil, err
		}
		var list hcv1.LedgerPageList
		if err := b.c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return nil, nil, nil, err
		}
		again := &hcv1.CreditAccount{}
		if err := b.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: poolName}, again); err != nil {
			return nil, nil, nil, err
		}
		if again.ResourceVersion != pool.ResourceVersion && attempt < 20 {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		pages := map[int32]*hcv1.LedgerPage{}
		all := slices.Clone(pool.Status.Servers)
		for i := range list.Items {
			p := &list.Items[i]
			if p.Spec.Account != poolName {
				continue
			}
			n, err := billing.PageNumber(poolName, p)
			if err != nil {
				return nil, nil, nil, err
			}
			view, err := billing.PageView(pool, p)
			if err != nil {
				return nil, nil, nil, err
			}
			pages[n] = p
			all = append(all, view.Status.Servers...)
		}
		return pool, pages, all, nil
	}
}
