package integration

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/indexer"
	"github.com/hubcredits/hubcredits/internal/ledgerpages"
	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
	"github.com/hubcredits/hubcredits/webhooks"
)

// Pages small enough for a storm of 60 spawns to fill a dozen.
var stormPages = billing.PageLimits{Inline: 4, PerPage: 4, Pending: 8}

// pagedReplica is a webhook replica's Reserver with pages on: its own
// informer cache of the namespace (with the manager's indexes) for reads,
// the API server for writes and live reads. funcs, when set, wraps its
// client (faults).
func pagedReplica(t *testing.T, ns string, funcs *interceptor.Funcs) *webhooks.Reserver {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, err := cache.New(env.Config, cache.Options{Scheme: operator.Scheme(), DefaultNamespaces: map[string]cache.Config{ns: {}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := indexer.Setup(ctx, c); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		t.Fatal("the replica's cache did not sync")
	}
	var cl client.WithWatch
	cl, err = client.NewWithWatch(env.Config, client.Options{Scheme: operator.Scheme(), Cache: &client.CacheOptions{Reader: c}})
	if err != nil {
		t.Fatal(err)
	}
	if funcs != nil {
		cl = interceptor.NewClient(cl, *funcs)
	}
	return &webhooks.Reserver{Client: cl, APIReader: k8s, Clock: clock.RealClock{}, Pages: true, PageLimits: stormPages}
}

// spawnOn reserves the first period of server id (price 10) on pool,
// which pays alone, as the webhook does.
func spawnOn(r *webhooks.Reserver, pool *hcv1.CreditAccount, id string) error {
	res := billing.Reservation{ID: id, Pod: "jupyter-" + id, User: "alice", Wallet: pool.Name,
		Price: billing.Price{Value: 10, Interval: 10 * time.Minute}}
	return r.Reserve(context.Background(), pool.Namespace, res, pool, nil)
}

// stormOutcome counts a storm's answers.
type stormOutcome struct {
	mu       sync.Mutex
	admitted []string
	denied   int
	failed   []error
}

// storm spawns ids at once, spread over replicas.
func storm(t *testing.T, replicas []*webhooks.Reserver, pool *hcv1.CreditAccount, ids []string) *stormOutcome {
	t.Helper()
	out := &stormOutcome{}
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := spawnOn(replicas[i%len(replicas)], pool, id)
			out.mu.Lock()
			defer out.mu.Unlock()
			var denial *billing.Denial
			switch {
			case err == nil:
				out.admitted = append(out.admitted, id)
			case errors.As(err, &denial) && denial.Reason == billing.DenyNotEnough:
				out.denied++
			default:
				out.failed = append(out.failed, fmt.Errorf("%s: %w", id, err))
			}
		}()
	}
	wg.Wait()
	return out
}

// checkPool checks the stored pool and its pages: billing.CheckPaged, the
// conservation of credits (balance + Held = initial), the limits, and
// returns how many times each reservation is held.
func checkPool(t *testing.T, ns, name string, initial int64) map[string]int {
	t.Helper()
	a := testutil.GetAccount(t, k8s, ns, name)
	store := &ledgerpages.Store{Client: k8s, APIReader: k8s}
	pages, err := store.Pages(context.Background(), a, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := billing.CheckPaged(a, pages); err != nil {
		t.Error(err)
	}
	held, err := billing.Held(a, pages)
	if err != nil {
		t.Fatal(err)
	}
	if a.Status.Balance+held != initial {
		t.Errorf("balance %d + held %d = %d, want %d", a.Status.Balance, held, a.Status.Balance+held, initial)
	}
	if a.Status.TotalCharged != held {
		t.Errorf("charged %d, held %d: every credit taken is held by one entry", a.Status.TotalCharged, held)
	}
	if len(a.Status.Servers) > stormPages.Inline {
		t.Errorf("%d entries inline, the limit is %d", len(a.Status.Servers), stormPages.Inline)
	}
	count := map[string]int{}
	for _, e := range a.Status.Servers {
		count[e.ID]++
	}
	for n, p := range pages {
		view, err := billing.PageView(a, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(view.Status.Servers) > stormPages.PerPage {
			t.Errorf("page %d holds %d entries, the limit is %d", n, len(view.Status.Servers), stormPages.PerPage)
		}
		for _, e := range view.Status.Servers {
			count[e.ID]++
		}
	}
	t.Logf("pool %s: balance %d, %d inline, %d pages, %d paged, %d pending", name, a.Status.Balance,
		len(a.Status.Servers), a.Status.Pages, a.Status.PagedServers, len(a.Status.Pending))
	return count
}

func spawnIDs(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return out
}

// TestReserverPagesStorm: 60 spawns at once on one pool that pays alone,
// 50 of which it can pay, through one replica and through two (each with
// its own cache: real conflicts on the account and its pages). Every
// admitted spawn is paid exactly once, denials only when the pool is
// empty, the account agrees with its pages and no credit is made or lost.
func TestReserverPagesStorm(t *testing.T) {
	for name, tc := range map[string]struct {
		replicas   int
		controller bool
	}{
		"one-replica":                   {replicas: 1},
		"two-replicas":                  {replicas: 2},
		"two-replicas-a-controller-too": {replicas: 2, controller: true},
	} {
		t.Run(name, func(t *testing.T) {
			ns := newNamespace(t)
			createAccount(t, testutil.MakeAccount(ns, "course", "alice").Cap(1000).InitialBalance(500).Obj())
			var rs []*webhooks.Reserver
			for range tc.replicas {
				rs = append(rs, pagedReplica(t, ns, nil))
			}
			var b *billingManager
			if tc.controller {
				// The billing controller's pass over the pages runs
				// meanwhile (completing, confirming, migrating): more
				// writers of the account and its pages. No pod comes, and
				// the grace outlasts the test: nothing is returned.
				b = startBilling(t, ns, func(o *operator.Options) {
					o.PageLimits = stormPages
					o.Billing.OrphanGrace = time.Hour
				})
				testutil.Eventually(t, 10*time.Second, balanceIs(t, ns, "course", 500))
			}
			pool := testutil.GetAccount(t, k8s, ns, "course")
			start := time.Now()
			out := storm(t, rs, pool, spawnIDs("s", 60))
			t.Logf("60 spawns answered in %s", time.Since(start).Round(time.Millisecond))
			if b != nil {
				b.Stop() // the account and its pages are read at rest
			}
			for _, err := range out.failed {
				t.Error(err)
			}
			if len(out.admitted) != 50 || out.denied != 10 {
				t.Fatalf("%d admitted, %d denied, %d failed; want 50, 10, 0", len(out.admitted), out.denied, len(out.failed))
			}
			held := checkPool(t, ns, "course", 500)
			for _, id := range out.admitted {
				if held[id] != 1 {
					t.Errorf("admitted %s is held %d times", id, held[id])
				}
			}
			if len(held) != 50 {
				t.Errorf("%d reservations held, 50 admitted", len(held))
			}
			if a := testutil.GetAccount(t, k8s, ns, "course"); a.Status.Balance != 0 {
				t.Errorf("balance %d, want 0 (denials only once the pool is empty)", a.Status.Balance)
			}
			// Every one retried (the API server calling the webhook again):
			// nothing is taken twice, wherever it is.
			again := storm(t, rs, pool, out.admitted)
			if len(again.admitted) != 50 || len(again.failed) > 0 {
				t.Fatalf("the retries: %d admitted, %d denied, %v", len(again.admitted), again.denied, again.failed)
			}
			held = checkPool(t, ns, "course", 500)
			for _, id := range out.admitted {
				if held[id] != 1 {
					t.Errorf("retried %s is held %d times", id, held[id])
				}
			}
		})
	}
}

// TestReserverPageWriteLost: the page write after the account's commit is
// lost once. The spawn on that page fails (a request is answered only
// after its page's write); the next batch, of another replica (the first
// one gone), completes the page and goes on. Nothing is lost or taken
// twice: the failed spawn's entry holds its credits until the controller
// returns the reservation, whose pod never came.
func TestReserverPageWriteLost(t *testing.T) {
	ns := newNamespace(t)
	createAccount(t, testutil.MakeAccount(ns, "course", "alice").Cap(1000).InitialBalance(500).Obj())
	var dropped atomic.Int32
	first := pagedReplica(t, ns, &interceptor.Funcs{
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			if _, ok := obj.(*hcv1.LedgerPage); ok && dropped.Add(1) == 1 {
				return errors.New("connection reset by peer (dropped by the test)")
			}
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
	})
	pool := testutil.GetAccount(t, k8s, ns, "course")
	for _, id := range spawnIDs("a", 4) { // inline
		if err := spawnOn(first, pool, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := spawnOn(first, pool, "lost"); err == nil {
		t.Fatal("the spawn whose page write was lost was admitted")
	}
	a := testutil.GetAccount(t, k8s, ns, "course")
	if len(a.Status.Pending) != 1 || a.Status.Pages != 1 || a.Status.Balance != 450 {
		t.Fatalf("after the lost write: pending %v, pages %d, balance %d; want the transfer committed, 1 page, 450",
			a.Status.Pending, a.Status.Pages, a.Status.Balance)
	}
	if p, err := (&ledgerpages.Store{Client: k8s, APIReader: k8s}).Page(context.Background(), a, 1, true); err != nil || p.Status.Seq != 0 {
		t.Fatalf("page 1 after the lost write: seq %d, %v; want it not applied", p.Status.Seq, err)
	}
	second := pagedReplica(t, ns, nil)
	out := storm(t, []*webhooks.Reserver{second}, pool, spawnIDs("c", 6))
	if len(out.admitted) != 6 || len(out.failed) > 0 {
		t.Fatalf("after the lost write: %d admitted, %v", len(out.admitted), out.failed)
	}
	held := checkPool(t, ns, "course", 500)
	for _, id := range append(spawnIDs("c", 6), "lost") {
		if held[id] != 1 {
			t.Errorf("%s is held %d times", id, held[id])
		}
	}
	if a := testutil.GetAccount(t, k8s, ns, "course"); a.Status.Balance != 500-110 || a.Status.PagedServers != 7 {
		t.Errorf("balance %d, paged %d; want 390, 7", a.Status.Balance, a.Status.PagedServers)
	}
}
