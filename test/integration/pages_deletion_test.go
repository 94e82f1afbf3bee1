package integration

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// TestPagesOutliveAForegroundDeletion: a pool whose servers run on its
// LedgerPages is deleted with foreground propagation (kubectl delete
// --cascade=foreground, or a GitOps tool's prune): the garbage collector
// deletes the dependents, the pages, at once, while the operator's
// finalizer holds the account because its servers still run. A page
// carries the ledger's entries (what its servers paid, up to when): lost,
// the servers would go unbilled, the pool's held credits would vanish and
// the pods would look unreserved. Each page holds the finalizer
// hubcredits.io/ledger until its account is released: the servers are
// charged on, conservation holds, and once they end and the account is
// let go its pages go too. envtest runs no garbage collector: the test
// deletes the pages as it would.
func TestPagesOutliveAForegroundDeletion(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	const minute = time.Minute
	users := []string{"w0", "w1", "w2"}
	createPolicy(t, testutil.MakePolicy(ns, "course").Value(10).Every(minute).Obj())
	createAccount(t, testutil.MakeAccount(ns, "lab", users...).Cap(100000).InitialBalance(1000).Obj())
	t0 := time.Now().Truncate(time.Second)
	b := newPagedBilling(t, ns, t0, billing.PageLimits{Inline: 1, PerPage: 2, Pending: 8})
	b.settled(t, ns, "lab")
	var pods []*corev1.Pod
	for _, u := range users {
		p := testutil.MakeKubeSpawnerPod(ns, u, "").Obj()
		p.Spec.NodeName = "node-1"
		if err := createPod(p); err != nil {
			t.Fatalf("spawn of %s refused: %v", p.Name, err)
		}
		setRunning(t, p, t0)
		pods = append(pods, p)
	}
	b.clock.SetTime(t0.Add(5 * time.Second))
	b.settled(t, ns, "lab")
	a := testutil.GetAccount(t, k8s, ns, "lab")
	pages := livePages(t, a)
	if a.Status.PagedServers != 2 || len(pages) != 1 {
		t.Fatalf("after the migration: %d paged servers on %d pages, want 2 on 1", a.Status.PagedServers, len(pages))
	}
	for _, p := range pages {
		if !slices.Contains(p.Finalizers, hcv1.FinalizerLedger) {
			t.Errorf("page %s has no finalizer %s: %v", p.Name, hcv1.FinalizerLedger, p.Finalizers)
		}
	}

	// The foreground deletion: the account is held, its pages deleted.
	if err := k8s.Delete(ctx, a, client.PropagationPolicy(metav1.DeletePropagationForeground)); err != nil {
		t.Fatal(err)
	}
	for _, p := range pages {
		if err := k8s.Delete(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	b.clock.SetTime(t0.Add(minute + 5*time.Second))
	b.settled(t, ns, "lab")
	entries := pagedLedger(t, ns, "lab", 1000, 0)
	if len(entries) != len(users) {
		t.Fatalf("after the pages' deletion: %d entries, want %d", len(entries), len(users))
	}
	for id, e := range entries {
		if e.PeriodsPaid != 2 {
			t.Errorf("boundary 1 while deleted: entry %s (%s) paid %d periods, want 2", id, e.Pod, e.PeriodsPaid)
		}
	}
	a = testutil.GetAccount(t, k8s, ns, "lab")
	if a.Status.Balance != 1000-3*20 || !slices.Contains(a.Finalizers, hcv1.FinalizerLedger) {
		t.Fatalf("balance %d (want %d), finalizers %v (want the ledger's: servers run)", a.Status.Balance, 1000-3*20, a.Finalizers)
	}

	// The servers end: the account is released and its pages go.
	end := t0.Add(minute + 30*time.Second)
	for _, p := range pods {
		setFinished(t, p, t0, end)
	}
	testutil.Eventually(t, 10*time.Second, func() error { // the cache sees the ends
		for _, p := range pods {
			got := &corev1.Pod{}
			if err := b.r.Client.Get(ctx, client.ObjectKeyFromObject(p), got); err != nil {
				return err
			}
			if got.Status.Phase != corev1.PodSucceeded {
				return fmt.Errorf("pod %s: %s in the cache", p.Name, got.Status.Phase)
			}
		}
		return nil
	})
	b.clock.SetTime(end.Add(20 * time.Second))
	for range 8 {
		if _, err := b.reconcile(t, ns, "lab"); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
		a = testutil.GetAccount(t, k8s, ns, "lab")
		if !slices.Contains(a.Finalizers, hcv1.FinalizerLedger) {
			break
		}
	}
	if slices.Contains(a.Finalizers, hcv1.FinalizerLedger) {
		t.Fatalf("the account is still held after its servers ended: %d inline, %d paged, %d pending",
			len(a.Status.Servers), a.Status.PagedServers, len(a.Status.Pending))
	}
	if a.Status.Balance != 1000-3*20 {
		t.Errorf("released with balance %d, want %d", a.Status.Balance, 1000-3*20)
	}
	for _, p := range pages {
		got := &hcv1.LedgerPage{}
		err := k8s.Get(ctx, client.ObjectKeyFromObject(p), got)
		if !apierrors.IsNotFound(err) {
			t.Errorf("page %s after the account's release: %v (finalizers %v), want it gone", p.Name, err, got.Finalizers)
		}
	}
}

// TestPagesOfAnAccountGoneWithoutItsRelease: an account whose finalizer
// an admin removed by hand goes without its release; its pages, which
// hold their own finalizer, are released by the next pass for the name
// (else its garbage collection would wait on them for ever).
func TestPagesOfAnAccountGoneWithoutItsRelease(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	createPolicy(t, testutil.MakePolicy(ns, "course").Value(10).Every(time.Minute).Obj())
	users := []string{"x0", "x1"}
	createAccount(t, testutil.MakeAccount(ns, "lab", users...).Cap(100000).InitialBalance(1000).Obj())
	t0 := time.Now().Truncate(time.Second)
	b := newPagedBilling(t, ns, t0, billing.PageLimits{Inline: 1, PerPage: 2, Pending: 8})
	b.settled(t, ns, "lab")
	for _, u := range users {
		p := testutil.MakeKubeSpawnerPod(ns, u, "").Obj()
		p.Spec.NodeName = "node-1"
		if err := createPod(p); err != nil {
			t.Fatalf("spawn of %s refused: %v", p.Name, err)
		}
		setRunning(t, p, t0)
	}
	b.clock.SetTime(t0.Add(5 * time.Second))
	b.settled(t, ns, "lab")
	a := testutil.GetAccount(t, k8s, ns, "lab")
	pages := livePages(t, a)
	if len(pages) != 1 {
		t.Fatalf("%d pages, want 1", len(pages))
	}
	before := a.DeepCopy()
	a.Finalizers = nil
	if err := k8s.Patch(ctx, a, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(ctx, a); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		err := b.r.Client.Get(ctx, client.ObjectKeyFromObject(a), &hcv1.CreditAccount{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("the account in the cache: %w", err)
		}
		return nil
	})
	if _, err := b.reconcile(t, ns, "lab"); err != nil {
		t.Fatal(err)
	}
	for _, p := range pages {
		got := &hcv1.LedgerPage{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(p), got); err != nil {
			t.Fatal(err)
		}
		if len(got.Finalizers) != 0 {
			t.Errorf("page %s of the account gone: finalizers %v, want none", p.Name, got.Finalizers)
		}
	}
}

// TestAdoptionReadsThePagesLive: the controller's cache of LedgerPages
// may lag its cache of accounts (two watches): a page written, then the
// account's confirmation of it seen first. A pod whose entry was just
// moved to that page looks held by no ledger in the cache; adopted, it
// would be billed twice (its entry on the page, and the adopted one).
// Before adopting, the account's pages are read live.
func TestAdoptionReadsThePagesLive(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	const minute = time.Minute
	createPolicy(t, testutil.MakePolicy(ns, "course").Value(10).Every(minute).Obj())
	users := []string{"y0", "y1", "y2"}
	createAccount(t, testutil.MakeAccount(ns, "lab", users...).Cap(100000).InitialBalance(1000).Obj())
	t0 := time.Now().Truncate(time.Second)
	b := newPagedBilling(t, ns, t0, billing.PageLimits{Inline: 1, PerPage: 4, Pending: 8})
	b.settled(t, ns, "lab")
	spawnAt := func(u string) {
		p := testutil.MakeKubeSpawnerPod(ns, u, "").Obj()
		p.Spec.NodeName = "node-1"
		if err := createPod(p); err != nil {
			t.Fatalf("spawn of %s refused: %v", p.Name, err)
		}
		setRunning(t, p, t0)
	}
	spawnAt("y0")
	spawnAt("y1")
	b.clock.SetTime(t0.Add(5 * time.Second))
	b.settled(t, ns, "lab") // y1's entry moves to page 1
	if a := testutil.GetAccount(t, k8s, ns, "lab"); a.Status.PagedServers != 1 {
		t.Fatalf("%d paged servers, want 1", a.Status.PagedServers)
	}
	// The cache's pages stop here; y2's entry moves to page 1.
	b.freezePages(t, ns)
	spawnAt("y2")
	b.settled(t, ns, "lab")
	a := testutil.GetAccount(t, k8s, ns, "lab")
	if a.Status.PagedServers != 2 || len(a.Status.Pending) != 0 {
		t.Fatalf("%d paged servers, %d pending; want 2, 0", a.Status.PagedServers, len(a.Status.Pending))
	}
	testutil.Eventually(t, 10*time.Second, func() error { // the account's cache is current
		cached := &hcv1.CreditAccount{}
		if err := b.r.Client.Get(ctx, client.ObjectKeyFromObject(a), cached); err != nil {
			return err
		}
		if cached.ResourceVersion != a.ResourceVersion {
			return fmt.Errorf("cached at %s, live at %s", cached.ResourceVersion, a.ResourceVersion)
		}
		return nil
	})
	b.clock.SetTime(t0.Add(minute + 5*time.Second))
	b.settled(t, ns, "lab")
	b.thawPages()
	b.settled(t, ns, "lab")
	entries := pagedLedger(t, ns, "lab", 1000, 0)
	if len(entries) != len(users) {
		t.Errorf("%d entries for %d servers (a pod adopted while its entry was on a page the cache had not seen)", len(entries), len(users))
	}
	if a := testutil.GetAccount(t, k8s, ns, "lab"); a.Status.Balance != 1000-3*20 {
		t.Errorf("balance %d after one boundary of three servers at 10, want %d", a.Status.Balance, 1000-3*20)
	}
}

// TestPagePassBindsThePodsOfPagesReadLive: a page the cache shows lags the
// account (its watch behind), and the page pass reads it live to commit on
// it. An entry the cached page lacked (moved onto it meanwhile) is bound
// to its pod like the others: here a server that ended before a period it
// was charged (the charge made while its pod still looked running, as a
// lagging pod cache does) gets that period back, and ends with what it
// owes. Unbound, its pod looked gone: the server was ended where it stood,
// the period charged after its end kept (TestAPIServerRestartOnPages once
// charged a server one period more than it ran). An ended pod is never
// adoptable, so the load's live read of the pages before an adoption
// (TestAdoptionReadsThePagesLive) does not happen for it; "running" checks
// that a running server on such a page is billed on its one entry too.
func TestPagePassBindsThePodsOfPagesReadLive(t *testing.T) {
	t.Run("ended", func(t *testing.T) { pagePassBindsPods(t, true) })
	t.Run("running", func(t *testing.T) { pagePassBindsPods(t, false) })
}

func pagePassBindsPods(t *testing.T, end bool) {
	ctx := context.Background()
	ns := newNamespace(t)
	const minute = time.Minute
	createPolicy(t, testutil.MakePolicy(ns, "course").Value(10).Every(minute).Obj())
	users := []string{"x0", "x1", "x2"}
	createAccount(t, testutil.MakeAccount(ns, "lab", users...).Cap(100000).InitialBalance(1000).Obj())
	t0 := time.Now().Truncate(time.Second)
	b := newPagedBilling(t, ns, t0, billing.PageLimits{Inline: 1, PerPage: 4, Pending: 8})
	b.settled(t, ns, "lab")
	pods := map[string]*corev1.Pod{}
	spawnAt := func(u string) {
		p := testutil.MakeKubeSpawnerPod(ns, u, "").Obj()
		p.Spec.NodeName = "node-1"
		if err := createPod(p); err != nil {
			t.Fatalf("spawn of %s refused: %v", p.Name, err)
		}
		setRunning(t, p, t0)
		pods[p.Name] = p
	}
	paged := func() map[string]bool {
		on := map[string]bool{}
		for _, pg := range livePages(t, testutil.GetAccount(t, k8s, ns, "lab")) {
			for _, e := range pg.Status.Servers {
				on[e.Pod] = true
			}
		}
		return on
	}
	spawnAt("x0")
	spawnAt("x1")
	b.clock.SetTime(t0.Add(5 * time.Second))
	b.settled(t, ns, "lab") // one entry moves to page 1
	first := paged()
	if len(first) != 1 {
		t.Fatalf("%d entries on pages, want 1", len(first))
	}
	// The cache's pages stop here. The second boundary is charged to the
	// three servers, and the oldest inline entry moves to page 1.
	b.freezePages(t, ns)
	spawnAt("x2")
	b.clock.SetTime(t0.Add(minute + 5*time.Second))
	b.settled(t, ns, "lab")
	var moved string
	for name := range paged() {
		if !first[name] {
			moved = name
		}
	}
	if moved == "" {
		t.Fatal("no second entry moved to page 1")
	}
	// The moved server ended long before that boundary (the fake clock is
	// a minute ahead of the API server's): its second period was charged
	// after its end.
	if end {
		if err := k8s.Delete(ctx, pods[moved], client.GracePeriodSeconds(1)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() error { // the caches are current but for the pages
		a := testutil.GetAccount(t, k8s, ns, "lab")
		cached := &hcv1.CreditAccount{}
		if err := b.r.Client.Get(ctx, client.ObjectKeyFromObject(a), cached); err != nil {
			return err
		}
		if cached.ResourceVersion != a.ResourceVersion {
			return fmt.Errorf("account cached at %s, live at %s", cached.ResourceVersion, a.ResourceVersion)
		}
		pod := &corev1.Pod{}
		if err := b.r.Client.Get(ctx, client.ObjectKeyFromObject(pods[moved]), pod); err != nil {
			return err
		}
		if end && pod.DeletionTimestamp == nil {
			return fmt.Errorf("the cache does not show pod %s deleted yet", moved)
		}
		return nil
	})
	// The third boundary: the page pass commits on page 1 (the first
	// paged server's charge), reading it live.
	b.clock.SetTime(t0.Add(2*minute + 5*time.Second))
	b.settled(t, ns, "lab")
	b.thawPages()
	b.settled(t, ns, "lab")
	if !end {
		// Three servers for three periods, each on its one entry.
		if a := testutil.GetAccount(t, k8s, ns, "lab"); a.Status.Balance != 1000-3*30 {
			t.Fatalf("balance %d, want %d (server %s running on a page the cache lagged)", a.Status.Balance, 1000-3*30, moved)
		}
		if entries := pagedLedger(t, ns, "lab", 1000, 0); len(entries) != 3 {
			t.Errorf("%d entries, want the 3 servers running", len(entries))
		}
		return
	}
	// Two servers for three periods, the ended one for its first.
	if a := testutil.GetAccount(t, k8s, ns, "lab"); a.Status.Balance != 1000-2*30-10 {
		t.Fatalf("balance %d, want %d: server %s was charged after its end and kept it", a.Status.Balance, 1000-2*30-10, moved)
	}
	if entries := pagedLedger(t, ns, "lab", 1000, 10); len(entries) != 2 {
		t.Errorf("%d entries, want the 2 servers still running", len(entries))
	}
}
