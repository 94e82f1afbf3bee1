package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// spawnResult counts the outcomes of a burst of spawns.
type spawnResult struct {
	admitted, denied atomic.Int64
	mu               sync.Mutex
	errs             map[string]int
	wall             time.Duration
	conflicts        float64
	writes           statusWrites
}

func (r *spawnResult) errorText() string {
	var parts []string
	for e, n := range r.errs {
		parts = append(parts, fmt.Sprintf("%d× %s", n, e))
	}
	return strings.Join(parts, "; ")
}

func (r *spawnResult) errors() int {
	n := 0
	for _, c := range r.errs {
		n += c
	}
	return n
}

// burst creates the pods with the given concurrency (all released at
// once when concurrency ≥ len(pods)) and classifies the outcomes.
func (b *bench) burst(ctx context.Context, pods []*corev1.Pod, concurrency int) (*spawnResult, error) {
	res := &spawnResult{errs: map[string]int{}}
	c0 := reservationConflicts()
	w0, err := b.accountWrites(ctx)
	if err != nil {
		return nil, err
	}
	gate := make(chan struct{})
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	for _, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			sem <- struct{}{}
			defer func() { <-sem }()
			_, err := b.cs.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
			switch {
			case err == nil:
				res.admitted.Add(1)
			case apierrors.IsForbidden(err) && strings.Contains(err.Error(), "Not enough credits"):
				res.denied.Add(1)
			default:
				msg := err.Error()
				if len(msg) > 160 {
					msg = msg[:160] + "…"
				}
				res.mu.Lock()
				res.errs[msg]++
				res.mu.Unlock()
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // every goroutine waits at the gate
	start := time.Now()
	close(gate)
	wg.Wait()
	res.wall = time.Since(start)
	res.conflicts = reservationConflicts() - c0
	w1, err := b.accountWrites(ctx)
	if err != nil {
		return nil, err
	}
	res.writes = statusWrites{total: w1.total - w0.total, conflicts: w1.conflicts - w0.conflicts}
	return res, nil
}

func (b *bench) contention(ctx context.Context) error {
	c := b.cfg
	sc := "contention"
	const price = 10
	// (i) One account, N concurrent spawns, balance for M.
	if err := b.namespace(ctx, nsRace); err != nil {
		return err
	}
	if err := b.c.Create(ctx, testutil.MakePolicy(nsRace, "bench").Value(price).Every(10*time.Minute).Selecting(hcv1.ComponentLabel, hcv1.SingleuserComponent).Obj()); err != nil {
		return err
	}
	balance := int64(c.raceAffords * price)
	if err := b.createAccounts(ctx, nsRace, 1, func(int) *hcv1.CreditAccount {
		return testutil.MakeAccount(nsRace, "alice", "alice").Cap(balance).InitialBalance(balance).Obj()
	}); err != nil {
		return err
	}
	var pods []*corev1.Pod
	for i := range c.race {
		pods = append(pods, kubespawnerPod(nsRace, "alice", fmt.Sprintf("s%03d", i)))
	}
	logf("bench: contention: %d concurrent spawns on one account (balance for %d)", c.race, c.raceAffords)
	r1, err := b.burst(ctx, pods, c.race)
	if err != nil {
		return err
	}
	var alice hcv1.CreditAccount
	if err := b.c.Get(ctx, client.ObjectKey{Namespace: nsRace, Name: "alice"}, &alice); err != nil {
		return err
	}
	var podList corev1.PodList
	if err := b.c.List(ctx, &podList, client.InNamespace(nsRace)); err != nil {
		return err
	}
	racePods := len(podList.Items)
	exact := r1.admitted.Load() == int64(c.raceAffords) && len(alice.Status.Servers) == c.raceAffords &&
		alice.Status.Balance == 0 && len(podList.Items) == c.raceAffords && r1.errors() == 0
	b.rep.add(sc, fmt.Sprintf("one account: admitted of %d (balance for %d)", c.race, c.raceAffords),
		fmt.Sprintf("%d (denied %d, errors %d)", r1.admitted.Load(), r1.denied.Load(), r1.errors()),
		fmt.Sprintf("exactly %d", c.raceAffords), exactVerdict(exact))
	b.rep.add(sc, "one account: decisions/s; conflicts retried", fmt.Sprintf("%.0f/s; %.0f", float64(c.race)/r1.wall.Seconds(), r1.conflicts), "", "")

	// (ii) Many accounts, one spawn each, each affording exactly one period.
	if err := b.namespace(ctx, nsSpread); err != nil {
		return err
	}
	if err := b.c.Create(ctx, testutil.MakePolicy(nsSpread, "bench").Value(price).Every(10*time.Minute).Selecting(hcv1.ComponentLabel, hcv1.SingleuserComponent).Obj()); err != nil {
		return err
	}
	if err := b.createAccounts(ctx, nsSpread, c.spread, func(i int) *hcv1.CreditAccount {
		return testutil.MakeAccount(nsSpread, user(i), user(i)).Cap(price).InitialBalance(price).Obj()
	}); err != nil {
		return err
	}
	pods = pods[:0]
	for i := range c.spread {
		pods = append(pods, kubespawnerPod(nsSpread, user(i), ""))
	}
	logf("bench: contention: %d spawns on %d accounts, %d in flight", c.spread, c.spread, c.raceWorkers)
	r2, err := b.burst(ctx, pods, c.raceWorkers)
	if err != nil {
		return err
	}
	var accts hcv1.CreditAccountList
	if err := b.c.List(ctx, &accts, client.InNamespace(nsSpread)); err != nil {
		return err
	}
	entries, nonZero := 0, 0
	for _, a := range accts.Items {
		entries += len(a.Status.Servers)
		if a.Status.Balance != 0 {
			nonZero++
		}
	}
	if err := b.c.List(ctx, &podList, client.InNamespace(nsSpread)); err != nil {
		return err
	}
	exact2 := r2.admitted.Load() == int64(c.spread) && entries == c.spread && nonZero == 0 && len(podList.Items) == c.spread
	b.rep.add(sc, fmt.Sprintf("%d accounts: admitted of %d", c.spread, c.spread),
		fmt.Sprintf("%d (denied %d, errors %d)", r2.admitted.Load(), r2.denied.Load(), r2.errors()),
		fmt.Sprintf("exactly %d", c.spread), exactVerdict(exact2))
	b.rep.add(sc, fmt.Sprintf("%d accounts: admissions/s; conflicts retried", c.spread), fmt.Sprintf("%.0f/s; %.0f", float64(r2.admitted.Load())/r2.wall.Seconds(), r2.conflicts), "", "")

	var t strings.Builder
	fmt.Fprintf(&t, "| burst | spawns | in flight | admitted | denied | errors | wall | decisions/s | admitted/s | conflicts retried (webhook) | account status writes (409s) |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	row := func(name string, n, inflight int, r *spawnResult) {
		fmt.Fprintf(&t, "| %s | %d | %d | %d | %d | %d | %s | %.0f | %.0f | %.0f | %.0f (%.0f) |\n", name, n, inflight,
			r.admitted.Load(), r.denied.Load(), r.errors(), r.wall.Round(time.Millisecond),
			float64(n)/r.wall.Seconds(), float64(r.admitted.Load())/r.wall.Seconds(), r.conflicts, r.writes.total, r.writes.conflicts)
	}
	row(fmt.Sprintf("one account, balance for %d", c.raceAffords), c.race, c.race, r1)
	row(fmt.Sprintf("%d accounts, one period each", c.spread), c.spread, c.raceWorkers, r2)
	fmt.Fprintf(&t, "\nChecks (one account): status balance %d, %d server entries, %d pods exist. (%d accounts): %d server entries, %d accounts with a balance left, %d pods exist.\n",
		alice.Status.Balance, len(alice.Status.Servers), racePods, c.spread, entries, nonZero, len(podList.Items))
	if e := r1.errorText() + r2.errorText(); e != "" {
		fmt.Fprintf(&t, "\nErrors: %s\n", e)
	}
	b.rep.addRaw("contention", t.String())
	return nil
}

func exactVerdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED (count not exact)"
}
