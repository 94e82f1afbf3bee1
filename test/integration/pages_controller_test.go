package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/controllers"
	"github.com/hubcredits/hubcredits/internal/indexer"
	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// The account controller's pass over LedgerPages (billing/pages.go,
// billing/pages_pass.go), driven by hand: a reconciler on a cached client
// (the manager's cache and indexes, as in production) that a test wraps to
// drop writes, and a fake clock, so each boundary is reconciled exactly
// when the test says and a crash falls exactly between the account's
// commit and the page write.

// pagedBilling is a CreditAccountReconciler on its own manager's cache in
// namespace ns, not started as a controller: the test calls Reconcile.
type pagedBilling struct {
	r     *controllers.CreditAccountReconciler
	clock *clocktesting.FakeClock
	// dropPages makes every LedgerPage write fail (a crash between the
	// account's commit and the page's write); failRecords every
	// UsageRecord create.
	dropPages, failRecords atomic.Bool
	pageWrites             atomic.Int32
	// frozen, when set, is what the reconciler's cache shows of the
	// LedgerPages (an informer that lags); the API reader stays live.
	frozen atomic.Pointer[hcv1.LedgerPageList]
}

// freezePages makes the reconciler's cache show the LedgerPages of ns as
// they are now, until thawPages.
func (b *pagedBilling) freezePages(t *testing.T, ns string) {
	t.Helper()
	list := &hcv1.LedgerPageList{}
	if err := k8s.List(context.Background(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	b.frozen.Store(list)
}

func (b *pagedBilling) thawPages() { b.frozen.Store(nil) }

// frozenGet answers a Get of a LedgerPage from the frozen pages.
func (b *pagedBilling) frozenGet(key client.ObjectKey, obj client.Object) (bool, error) {
	frozen, page := b.frozen.Load(), obj.(*hcv1.LedgerPage)
	if frozen == nil {
		return false, nil
	}
	for i := range frozen.Items {
		if client.ObjectKeyFromObject(&frozen.Items[i]) == key {
			frozen.Items[i].DeepCopyInto(page)
			return true, nil
		}
	}
	return true, apierrors.NewNotFound(hcv1.GroupVersion.WithResource("ledgerpages").GroupResource(), key.Name)
}

// frozenList answers a List of LedgerPages (by namespace, and by the page
// index) from the frozen pages.
func (b *pagedBilling) frozenList(list *hcv1.LedgerPageList, opts ...client.ListOption) bool {
	frozen := b.frozen.Load()
	if frozen == nil {
		return false
	}
	lo := (&client.ListOptions{}).ApplyOptions(opts)
	list.Items = nil
	for _, p := range frozen.Items {
		if lo.Namespace != "" && p.Namespace != lo.Namespace {
			continue
		}
		if lo.FieldSelector != nil {
			if key, ok := lo.FieldSelector.RequiresExactMatch(indexer.PageServerKey); ok && !slices.Contains(billing.PageLedgerKeys(&p), key) {
				continue
			}
		}
		list.Items = append(list.Items, *p.DeepCopy())
	}
	return true
}

func newPagedBilling(t *testing.T, ns string, now time.Time, limits billing.PageLimits) *pagedBilling {
	t.Helper()
	o := operator.Options{Namespace: ns}
	mgr, err := ctrl.NewManager(rest.CopyConfig(env.Config), operator.ManagerOptions(o, operator.Process{SeveralManagers: true}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := indexer.Setup(ctx, mgr.GetCache()); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	b := &pagedBilling{clock: clocktesting.NewFakeClock(now)}
	dropped := errors.New("dropped: the process crashed before this write")
	c := interceptor.NewClient(noWatch{mgr.GetClient()}, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*hcv1.LedgerPage); ok {
				if frozen, err := b.frozenGet(key, obj); frozen {
					return err
				}
			}
			return c.Get(ctx, key, obj, opts...)
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if pages, ok := list.(*hcv1.LedgerPageList); ok && b.frozenList(pages, opts...) {
				return nil
			}
			return c.List(ctx, list, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			switch obj.(type) {
			case *hcv1.LedgerPage:
				if b.dropPages.Load() {
					return dropped
				}
			case *hcv1.UsageRecord:
				if b.failRecords.Load() {
					return errors.New("the API server is overloaded")
				}
			}
			return c.Create(ctx, obj, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			if _, ok := obj.(*hcv1.LedgerPage); ok {
				if b.dropPages.Load() {
					return dropped
				}
				b.pageWrites.Add(1)
			}
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
	})
	b.r = &controllers.CreditAccountReconciler{
		Client: c, APIReader: k8s, Tombstones: k8s, Clock: b.clock,
		Recorder: record.NewFakeRecorder(100000),
		Options:  billing.Options{OrphanGrace: testOrphanGrace, StopRetry: 5 * time.Second, LowPeriods: 2},
		Policies: &billing.PolicyCache{}, Defaults: billing.DefaultPrice, PageLimits: limits,
	}
	return b
}

// noWatch is a manager's client as the interceptor takes it (nothing here
// watches through it).
type noWatch struct{ client.Client }

func (noWatch) Watch(context.Context, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
	return nil, errors.New("not watched")
}

// setFinished marks the pod Succeeded, its container terminated at end, as
// a kubelet would.
func setFinished(t *testing.T, p *corev1.Pod, start, end time.Time) {
	t.Helper()
	got := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), got); err != nil {
		t.Fatal(err)
	}
	got.Status.Phase = corev1.PodSucceeded
	got.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: "notebook", Image: got.Spec.Containers[0].Image,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			StartedAt: metav1.NewTime(start), FinishedAt: metav1.NewTime(end), Reason: "Completed"}},
	}}
	if err := k8s.Status().Update(context.Background(), got); err != nil {
		t.Fatalf("finishing pod %s: %v", p.Name, err)
	}
}

// reconcile runs one Reconcile of account name at the fake clock's time.
func (b *pagedBilling) reconcile(t *testing.T, ns, name string) (ctrl.Result, error) {
	t.Helper()
	return b.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}})
}

// settled reconciles until a pass changes nothing more (at most 8 times).
func (b *pagedBilling) settled(t *testing.T, ns, name string) {
	t.Helper()
	for range 8 {
		before := testutil.GetAccount(t, k8s, ns, name).ResourceVersion
		if _, err := b.reconcile(t, ns, name); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
		if testutil.GetAccount(t, k8s, ns, name).ResourceVersion == before {
			return
		}
	}
	t.Fatalf("account %s still changes after 8 passes", name)
}

// livePages reads account's pages from the API server, by number.
func livePages(t *testing.T, a *hcv1.CreditAccount) map[int32]*hcv1.LedgerPage {
	t.Helper()
	var list hcv1.LedgerPageList
	if err := k8s.List(context.Background(), &list, client.InNamespace(a.Namespace)); err != nil {
		t.Fatal(err)
	}
	pages := map[int32]*hcv1.LedgerPage{}
	for i := range list.Items {
		p := &list.Items[i]
		if p.Spec.Account != a.Name {
			continue
		}
		n, err := billing.PageNumber(a.Name, p)
		if err != nil {
			t.Fatal(err)
		}
		pages[n] = p
	}
	return pages
}

// pagedLedger checks, against the API server, the account's aggregates of
// its pages (billing.CheckPaged) and conservation: balance + held +
// spent - credits added is what the ledger opened with, and every credit
// charged and not refunded is held or spent. It returns the entries by id
// (inline and on pages, as the pages show them with the pending transfers
// applied).
func pagedLedger(t *testing.T, ns, name string, opened, spent int64) map[string]hcv1.ServerCharge {
	t.Helper()
	a := testutil.GetAccount(t, k8s, ns, name)
	pages := livePages(t, a)
	if err := billing.CheckPaged(a, pages); err != nil {
		t.Fatal(err)
	}
	held, err := billing.Held(a, pages)
	if err != nil {
		t.Fatal(err)
	}
	added := a.Status.TotalGranted + a.Status.TotalToppedUp + a.Status.TotalAdjusted
	if got := a.Status.Balance + held + spent - added; got != opened {
		t.Fatalf("balance %d + held %d + spent %d - added %d = %d, want %d (the opening balance)", a.Status.Balance, held, spent, added, got, opened)
	}
	if got := a.Status.TotalCharged - a.Status.TotalRefunded; got != held+spent {
		t.Fatalf("charged - refunded = %d, but the entries hold %d and %d were spent", got, held, spent)
	}
	entries, err := billing.PageEntries(a, pages)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]hcv1.ServerCharge{}
	for _, e := range append(a.Status.Servers, entries...) {
		if _, dup := out[e.ID]; dup {
			t.Fatalf("entry %s held twice", e.ID)
		}
		out[e.ID] = e
	}
	return out
}

// TestPagedServersChargedOncePerBoundaryAcrossACrash: five servers of a
// course pool (Inline 2, PerPage 2), admitted inline by the webhook and
// moved to pages by the controller (the migration), are charged at each
// boundary exactly once, inline and on pages; a crash after the account's
// commit and before the page writes is completed by the next pass, nothing
// lost or charged twice; a pod whose entry is on a page is never adopted
// by another account; the ended page entries get their UsageRecords, and
// are dropped only once those exist. CheckPaged and conservation hold
// after every step.
func TestPagedServersChargedOncePerBoundaryAcrossACrash(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	const minute = time.Minute
	users := []string{"u0", "u1", "u2", "u3", "u4"}
	createPolicy(t, testutil.MakePolicy(ns, "course").Value(10).Every(minute).Obj())
	createAccount(t, testutil.MakeAccount(ns, "lab", users...).Cap(100000).InitialBalance(1000).Obj())
	t0 := time.Now().Truncate(time.Second)
	b := newPagedBilling(t, ns, t0, billing.PageLimits{Inline: 2, PerPage: 2, Pending: 8})
	b.settled(t, ns, "lab")
	opened := testutil.GetAccount(t, k8s, ns, "lab").Status.Balance
	if opened != 1000 {
		t.Fatalf("opened with %d", opened)
	}

	// Five servers, admitted by the webhook (their first period reserved
	// inline), all started at t0.
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
	boundary := func(k int) time.Time { return t0.Add(time.Duration(k) * minute) }
	wantPeriods := func(step string, want int64) {
		t.Helper()
		entries := pagedLedger(t, ns, "lab", opened, 0)
		if len(entries) != len(users) {
			t.Fatalf("%s: %d entries, want %d", step, len(entries), len(users))
		}
		for id, e := range entries {
			if e.PeriodsPaid != want || e.Paid != 10*want {
				t.Fatalf("%s: entry %s (%s) paid %d periods, %d credits; want %d", step, id, e.Pod, e.PeriodsPaid, e.Paid, want)
			}
		}
		a := testutil.GetAccount(t, k8s, ns, "lab")
		if a.Status.Balance != opened-int64(len(users))*10*want {
			t.Fatalf("%s: balance %d, want %d", step, a.Status.Balance, opened-int64(len(users))*10*want)
		}
		if a.Status.RunningServers != int32(len(users)) || len(a.Status.Pending) != 0 {
			t.Fatalf("%s: runningServers %d, %d transfers pending", step, a.Status.RunningServers, len(a.Status.Pending))
		}
	}

	// The clocks start; the excess entries move to pages.
	b.clock.SetTime(t0.Add(5 * time.Second))
	b.settled(t, ns, "lab")
	a := testutil.GetAccount(t, k8s, ns, "lab")
	if len(a.Status.Servers) != 2 || a.Status.Pages != 2 || a.Status.PagedServers != 3 || a.Status.PagedRunning != 3 {
		t.Fatalf("after the migration: %d inline, %d pages, %d paged (%d running); want 2, 2, 3 (3)",
			len(a.Status.Servers), a.Status.Pages, a.Status.PagedServers, a.Status.PagedRunning)
	}
	wantPeriods("started", 1)

	// Boundary 1: every server charged once, inline and on pages; a second
	// pass at the same time charges nothing.
	b.clock.SetTime(boundary(1).Add(5 * time.Second))
	writes := b.pageWrites.Load()
	b.settled(t, ns, "lab")
	if b.pageWrites.Load()-writes != 2 {
		t.Errorf("boundary 1: %d page writes, want 2 (one per page)", b.pageWrites.Load()-writes)
	}
	wantPeriods("boundary 1", 2)
	b.settled(t, ns, "lab")
	wantPeriods("boundary 1, again", 2)

	// A pod whose entry is on a page, its account annotation edited to
	// another account that lists its user: that account never adopts it
	// (the page index holds it), the pool bills on.
	var onPage *corev1.Pod
	for _, p := range livePages(t, testutil.GetAccount(t, k8s, ns, "lab")) {
		for _, e := range p.Status.Servers {
			for _, pod := range pods {
				if pod.UID == e.PodUID {
					onPage = pod
				}
			}
		}
	}
	if onPage == nil {
		t.Fatal("no pod's entry is on a page")
	}
	createAccount(t, testutil.MakeAccount(ns, "other", onPage.Annotations[hcv1.AnnotationUsername]).Cap(1000).InitialBalance(500).Obj())
	patchPod(t, onPage, `{"metadata":{"annotations":{"hubcredits.io/account":"other"}}}`)
	testutil.Eventually(t, 10*time.Second, func() error { // the cache sees the edit
		var list corev1.PodList
		if err := b.r.Client.List(ctx, &list, client.InNamespace(ns), client.MatchingFields{indexer.PodAccountKey: "other"}); err != nil {
			return err
		}
		if len(list.Items) != 1 {
			return fmt.Errorf("%d pods billed to other in the cache", len(list.Items))
		}
		return nil
	})
	b.settled(t, ns, "other")
	b.settled(t, ns, "other")
	if o := testutil.GetAccount(t, k8s, ns, "other"); len(o.Status.Servers) != 0 || o.Status.TotalCharged != 0 || o.Status.Balance != 500 {
		t.Fatalf("other adopted the pod held on lab's page: %d servers, charged %d, balance %d",
			len(o.Status.Servers), o.Status.TotalCharged, o.Status.Balance)
	}
	b.settled(t, ns, "lab")
	wantPeriods("after the edit", 2)

	// Boundary 2 with a crash: the account commits the charges (inline and
	// the pages' transfers), the page writes are lost.
	b.clock.SetTime(boundary(2).Add(5 * time.Second))
	b.dropPages.Store(true)
	if _, err := b.reconcile(t, ns, "lab"); err == nil {
		t.Fatal("the pass reported no error with its page writes dropped")
	}
	a = testutil.GetAccount(t, k8s, ns, "lab")
	if len(a.Status.Pending) != 2 || a.Status.Balance != opened-5*30 {
		t.Fatalf("after the crash: %d transfers pending, balance %d; want 2 pending (the charges committed), balance %d",
			len(a.Status.Pending), a.Status.Balance, opened-5*30)
	}
	for n, p := range livePages(t, a) {
		for _, e := range p.Status.Servers {
			if e.PeriodsPaid != 2 {
				t.Fatalf("page %d was written through the crash: %s paid %d periods", n, e.ID, e.PeriodsPaid)
			}
		}
	}
	pagedLedger(t, ns, "lab", opened, 0) // the pending transfers count as held
	// The next pass completes the pages; nothing is charged twice.
	b.dropPages.Store(false)
	b.settled(t, ns, "lab")
	wantPeriods("boundary 2, after the crash", 3)
	b.clock.SetTime(boundary(2).Add(30 * time.Second))
	b.settled(t, ns, "lab")
	wantPeriods("boundary 2, later", 3)

	// The servers end mid-period 3 (their containers finish at b2+40s):
	// nothing more is owed. While UsageRecords cannot be written the ended
	// entries stay (on the pages too); then they are recorded and dropped.
	end := boundary(2).Add(40 * time.Second)
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
	seen := end.Add(5 * time.Second) // the entry's endedAt: when the end is seen
	b.clock.SetTime(seen)
	b.failRecords.Store(true)
	b.settled(t, ns, "lab")
	entries := pagedLedger(t, ns, "lab", opened, 0)
	paged := 0
	for _, e := range entries {
		if e.EndedAt == nil || e.PeriodsPaid != 3 {
			t.Fatalf("entry %s: ended %v, %d periods paid; want ended after 3", e.ID, e.EndedAt, e.PeriodsPaid)
		}
	}
	a = testutil.GetAccount(t, k8s, ns, "lab")
	paged = int(a.Status.PagedServers)
	if len(entries) != len(users) || paged == 0 {
		t.Fatalf("with no usage records: %d entries kept (%d on pages), want all %d, some on pages", len(entries), paged, len(users))
	}
	var records hcv1.UsageRecordList
	if err := k8s.List(ctx, &records, client.InNamespace(ns)); err != nil || len(records.Items) != 0 {
		t.Fatalf("%d usage records written while their writes fail (%v)", len(records.Items), err)
	}
	b.failRecords.Store(false)
	b.clock.SetTime(end.Add(20 * time.Second))
	b.settled(t, ns, "lab")
	if entries := pagedLedger(t, ns, "lab", opened, 5*30); len(entries) != 0 {
		t.Fatalf("%d entries left after the ends were recorded", len(entries))
	}
	a = testutil.GetAccount(t, k8s, ns, "lab")
	if a.Status.Balance != opened-5*30 || a.Status.PagedServers != 0 || a.Status.RunningServers != 0 || a.Status.PagedRunning != 0 {
		t.Fatalf("after the ends: balance %d (want %d), paged %d, running %d/%d", a.Status.Balance, opened-5*30,
			a.Status.PagedServers, a.Status.RunningServers, a.Status.PagedRunning)
	}
	if err := k8s.List(ctx, &records, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	byPod := map[string]hcv1.UsageRecord{}
	for _, r := range records.Items {
		byPod[r.Server] = r
	}
	for _, p := range pods {
		r, ok := byPod[p.Name]
		if !ok || r.Total != 30 || r.Periods != 3 || r.Account != "lab" || !r.End.Time.Equal(seen) {
			t.Errorf("usage record of %s: %d periods, %d credits, account %s, ended %s (found %t); want 3, 30, lab, %s",
				p.Name, r.Periods, r.Total, r.Account, r.End.UTC(), ok, seen.UTC())
		}
	}
	if len(records.Items) != len(pods) {
		t.Errorf("%d usage records, want %d (one per server)", len(records.Items), len(pods))
	}
}

// TestPagedServersBilledByTheOperator: the same through the operator's
// controllers (watches, requeues, two workers) in real time: four servers
// of a pool with Inline 1, PerPage 2 end up on two pages and are charged
// what they owe, exactly; their ends are recorded and the entries dropped.
func TestPagedServersBilledByTheOperator(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, func(o *operator.Options) {
		o.PageLimits = billing.PageLimits{Inline: 1, PerPage: 2, Pending: 8}
	})
	users := []string{"v0", "v1", "v2", "v3"}
	createPolicy(t, testutil.MakePolicy(ns, "fast").Value(10).Every(period).Obj())
	createAccount(t, testutil.MakeAccount(ns, "lab", users...).Cap(100000).InitialBalance(1000).Obj())
	testutil.Eventually(t, 10*time.Second, balanceIs(t, ns, "lab", 1000))
	type server struct {
		pod   *corev1.Pod
		start time.Time
	}
	var servers []server
	for _, u := range users {
		p, start := spawn(t, ns, u, "")
		servers = append(servers, server{p, start})
	}
	// Moved to pages, charged through at least two boundaries there.
	testutil.Eventually(t, 4*period+10*time.Second, func() error {
		a := testutil.GetAccount(t, k8s, ns, "lab")
		if len(a.Status.Servers) != 1 || a.Status.PagedServers != 3 || a.Status.PagedRunning != 3 {
			return fmt.Errorf("%d inline, %d paged (%d running)", len(a.Status.Servers), a.Status.PagedServers, a.Status.PagedRunning)
		}
		if a.Status.TotalCharged < 4*30 {
			return fmt.Errorf("charged %d so far", a.Status.TotalCharged)
		}
		return nil
	})
	pagedLedger(t, ns, "lab", 1000, 0)
	var want int64
	for _, s := range servers {
		end := stopPod(t, s.pod, s.start)
		want += owed(s.start, end, 10)
	}
	testutil.Eventually(t, 15*time.Second, func() error {
		a := testutil.GetAccount(t, k8s, ns, "lab")
		if len(a.Status.Servers) != 0 || a.Status.PagedServers != 0 || len(a.Status.Pending) != 0 {
			return fmt.Errorf("%d inline, %d paged, %d pending", len(a.Status.Servers), a.Status.PagedServers, len(a.Status.Pending))
		}
		return balanceIs(t, ns, "lab", 1000-want)()
	})
	for _, s := range servers {
		forget(t, s.pod)
	}
	testutil.Consistently(t, period+time.Second, balanceIs(t, ns, "lab", 1000-want))
	pagedLedger(t, ns, "lab", 1000, want)
	var records hcv1.UsageRecordList
	if err := k8s.List(context.Background(), &records, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var recorded int64
	for _, r := range records.Items {
		recorded += r.Total
	}
	if len(records.Items) != len(servers) || recorded != want {
		t.Errorf("%d usage records totalling %d, want %d totalling %d", len(records.Items), recorded, len(servers), want)
	}
}

// TestReservedOnPagesByTheWebhookChargedByTheController: reservations the
// webhook's Reserver places on a pool's pages (Inline 2, PerPage 2) are
// settled by the account controller: the servers whose pods run are
// charged at each boundary exactly once, the reservations whose pod never
// came are returned after the grace, on their pages; CheckPaged and
// conservation after every step.
func TestReservedOnPagesByTheWebhookChargedByTheController(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	limits := billing.PageLimits{Inline: 2, PerPage: 2, Pending: 8}
	createAccount(t, testutil.MakeAccount(ns, "lab", "alice").Cap(100000).InitialBalance(1000).Obj())
	t0 := time.Now().Truncate(time.Second)
	b := newPagedBilling(t, ns, t0, limits)
	b.settled(t, ns, "lab")
	replica := pagedReplica(t, ns, nil)
	replica.PageLimits = limits

	// Six reservations through the Reserver: two inline, four on two pages.
	ids := []string{"r0", "r1", "r2", "r3", "r4", "r5"}
	for _, id := range ids {
		res := billing.Reservation{ID: id, Pod: "jupyter-" + id, User: "alice", Wallet: "lab",
			Price: billing.Price{Value: 10, Interval: time.Minute}}
		if err := replica.Reserve(ctx, ns, res, testutil.GetAccount(t, k8s, ns, "lab"), nil); err != nil {
			t.Fatalf("reserving %s: %v", id, err)
		}
	}
	a := testutil.GetAccount(t, k8s, ns, "lab")
	if len(a.Status.Servers) != 2 || a.Status.Pages != 2 || a.Status.PagedServers != 4 || a.Status.Balance != 940 {
		t.Fatalf("after the reservations: %d inline, %d pages, %d paged, balance %d; want 2, 2, 4, 940",
			len(a.Status.Servers), a.Status.Pages, a.Status.PagedServers, a.Status.Balance)
	}
	pagedLedger(t, ns, "lab", 1000, 0)

	// The pods of four of them (r1 inline, r2..r4 on pages) run from t0;
	// r0 and r5 never come. A pod is created out of the webhook's sight
	// (no singleuser label yet) with its reservation pinned, as the webhook
	// pins it, then labelled.
	var pods []*corev1.Pod
	for _, id := range []string{"r1", "r2", "r3", "r4"} {
		p := testutil.MakeKubeSpawnerPod(ns, "alice", id).Obj()
		p.Name = "jupyter-" + id
		p.Spec.NodeName = "node-1"
		delete(p.Labels, hcv1.ComponentLabel)
		p.Annotations[hcv1.AnnotationAccount] = "lab"
		p.Annotations[hcv1.AnnotationReservation] = id
		if err := createPod(p); err != nil {
			t.Fatalf("creating pod %s: %v", p.Name, err)
		}
		setRunning(t, p, t0)
		patchPod(t, p, `{"metadata":{"labels":{"component":"singleuser-server"}}}`)
		pods = append(pods, p)
	}
	testutil.Eventually(t, 10*time.Second, func() error { // the controller's cache sees them
		var list corev1.PodList
		if err := b.r.Client.List(ctx, &list, client.InNamespace(ns), client.MatchingFields{indexer.PodAccountKey: "lab"}); err != nil {
			return err
		}
		if len(list.Items) != len(pods) {
			return fmt.Errorf("%d of %d pods in the cache", len(list.Items), len(pods))
		}
		return nil
	})

	// The pods start; past the grace (from when the controller first saw
	// the reservations) r0 and r5 are returned.
	b.clock.SetTime(t0.Add(5 * time.Second))
	b.settled(t, ns, "lab")
	if a := testutil.GetAccount(t, k8s, ns, "lab"); a.Status.Balance != 940 || a.Status.RunningServers != 4 {
		t.Fatalf("within the grace: balance %d, running %d; want 940, 4", a.Status.Balance, a.Status.RunningServers)
	}
	b.clock.SetTime(t0.Add(testOrphanGrace + 10*time.Second))
	b.settled(t, ns, "lab")
	check := func(step string, periods int64) {
		t.Helper()
		entries := pagedLedger(t, ns, "lab", 1000, 0)
		if len(entries) != len(pods) {
			t.Fatalf("%s: %d entries, want %d (r0 and r5 returned)", step, len(entries), len(pods))
		}
		for _, p := range pods {
			e, ok := entries[p.Annotations[hcv1.AnnotationReservation]]
			if !ok || e.PodUID != p.UID || e.StartedAt == nil || e.PeriodsPaid != periods {
				t.Fatalf("%s: entry of %s: %+v; want bound, started, %d periods paid", step, p.Name, e, periods)
			}
		}
		if a := testutil.GetAccount(t, k8s, ns, "lab"); a.Status.Balance != 1000-4*10*periods || a.Status.RunningServers != 4 {
			t.Fatalf("%s: balance %d, running %d; want %d, 4", step, a.Status.Balance, a.Status.RunningServers, 1000-4*10*periods)
		}
	}
	check("past the grace", 1)
	for k := 1; k <= 3; k++ {
		b.clock.SetTime(t0.Add(time.Duration(k)*time.Minute + 5*time.Second))
		b.settled(t, ns, "lab")
		check(fmt.Sprintf("boundary %d", k), int64(k+1))
		b.settled(t, ns, "lab")
		check(fmt.Sprintf("boundary %d, again", k), int64(k+1))
	}

	// Deleted while servers on its pages run: the deletion is held.
	if err := k8s.Delete(ctx, testutil.GetAccount(t, k8s, ns, "lab")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		a := &hcv1.CreditAccount{}
		if err := b.r.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "lab"}, a); err != nil {
			return err
		}
		if a.DeletionTimestamp == nil {
			return errors.New("the cache does not see the deletion yet")
		}
		return nil
	})
	b.settled(t, ns, "lab")
	a = testutil.GetAccount(t, k8s, ns, "lab")
	if c := meta.FindStatusCondition(a.Status.Conditions, hcv1.ConditionDeletionHeld); c == nil || c.Status != metav1.ConditionTrue ||
		!strings.Contains(c.Message, "4 server(s)") {
		t.Fatalf("deleted with 4 servers running (3 on pages): DeletionHeld %+v", c)
	}
	check("deletion held", 4)
}

// runOutOfSight creates the running pod of reservation id on account,
// started at start, out of the webhook's sight (labelled singleuser once
// created, its reservation pinned as the webhook pins it).
func runOutOfSight(t *testing.T, ns, account, user, id string, start time.Time) *corev1.Pod {
	t.Helper()
	p := testutil.MakeKubeSpawnerPod(ns, user, id).Obj()
	p.Name = "jupyter-" + id
	p.Spec.NodeName = "node-1"
	delete(p.Labels, hcv1.ComponentLabel)
	p.Annotations[hcv1.AnnotationAccount] = account
	p.Annotations[hcv1.AnnotationReservation] = id
	if err := createPod(p); err != nil {
		t.Fatalf("creating pod %s: %v", p.Name, err)
	}
	setRunning(t, p, start)
	patchPod(t, p, `{"metadata":{"labels":{"component":"singleuser-server"}}}`)
	return p
}

// TestPagedCatchUpKeepsTheGrants: after an outage of six grant intervals,
// a pool at its cap whose servers are on pages keeps every grant, as the
// same pool with its servers inline does (the pages' rounds go one grant
// interval at a time, Result.Waiting): both end with the same balance,
// grants and charges, nobody stopped. Granting first would cap the grants
// and run the servers short.
func TestPagedCatchUpKeepsTheGrants(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	for _, name := range []string{"paged", "inline"} {
		createAccount(t, testutil.MakeAccount(ns, name, "alice").Cap(100).InitialBalance(100).Grant(40, time.Minute).Obj())
	}
	t0 := time.Now().Truncate(time.Second)
	paged := newPagedBilling(t, ns, t0, billing.PageLimits{Inline: 1, PerPage: 2, Pending: 8})
	inline := newPagedBilling(t, ns, t0, billing.PageLimits{})
	paged.settled(t, ns, "paged")
	inline.settled(t, ns, "inline")
	replica := pagedReplica(t, ns, nil)
	replica.PageLimits = billing.PageLimits{Inline: 1, PerPage: 2, Pending: 8}
	start := t0.Add(10 * time.Second) // boundaries 10 s after the grant slots
	for _, name := range []string{"paged", "inline"} {
		for i := range 4 {
			id := fmt.Sprintf("%s-%d", name, i)
			res := billing.Reservation{ID: id, Pod: "jupyter-" + id, User: "alice", Wallet: name,
				Price: billing.Price{Value: 10, Interval: time.Minute}}
			if err := replica.Reserve(ctx, ns, res, testutil.GetAccount(t, k8s, ns, name), nil); err != nil {
				t.Fatalf("reserving %s: %v", id, err)
			}
			runOutOfSight(t, ns, name, "alice", id, start)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		var list corev1.PodList
		if err := paged.r.Client.List(ctx, &list, client.InNamespace(ns), client.MatchingFields{indexer.PodAccountKey: "paged"}); err != nil {
			return err
		}
		var other corev1.PodList
		if err := inline.r.Client.List(ctx, &other, client.InNamespace(ns), client.MatchingFields{indexer.PodAccountKey: "inline"}); err != nil {
			return err
		}
		if len(list.Items) != 4 || len(other.Items) != 4 {
			return fmt.Errorf("%d and %d of 4 pods in the caches", len(list.Items), len(other.Items))
		}
		return nil
	})
	step := func(at time.Time) {
		t.Helper()
		paged.clock.SetTime(at)
		inline.clock.SetTime(at)
		paged.settled(t, ns, "paged")
		inline.settled(t, ns, "inline")
	}
	step(start.Add(5 * time.Second))
	if a := testutil.GetAccount(t, k8s, ns, "paged"); a.Status.PagedServers != 3 || a.Status.RunningServers != 4 {
		t.Fatalf("paged: %d servers on pages, %d running; want 3, 4", a.Status.PagedServers, a.Status.RunningServers)
	}
	// The outage: six grant slots and six boundaries pass unseen. One
	// Reconcile catches up (its rounds go on at once while the catch-up
	// waits for the pages); the next changes nothing.
	at := start.Add(6*time.Minute + 30*time.Second)
	paged.clock.SetTime(at)
	if _, err := paged.reconcile(t, ns, "paged"); err != nil {
		t.Fatal(err)
	}
	rv := testutil.GetAccount(t, k8s, ns, "paged").ResourceVersion
	step(at)
	if got := testutil.GetAccount(t, k8s, ns, "paged"); got.ResourceVersion != rv || len(got.Status.Pending) != 0 {
		t.Errorf("one Reconcile did not catch up: the next one wrote the account again (%d transfers were pending)", len(got.Status.Pending))
	}
	p, in := testutil.GetAccount(t, k8s, ns, "paged"), testutil.GetAccount(t, k8s, ns, "inline")
	pagedLedger(t, ns, "paged", 100, 0)
	if p.Status.Balance != in.Status.Balance || p.Status.TotalGranted != in.Status.TotalGranted ||
		p.Status.TotalCharged != in.Status.TotalCharged || p.Status.TotalRefunded != in.Status.TotalRefunded {
		t.Fatalf("after the outage: paged balance %d, granted %d, charged %d, refunded %d; inline %d, %d, %d, %d",
			p.Status.Balance, p.Status.TotalGranted, p.Status.TotalCharged, p.Status.TotalRefunded,
			in.Status.Balance, in.Status.TotalGranted, in.Status.TotalCharged, in.Status.TotalRefunded)
	}
	// Each slot's grant refills the pool to its cap (60 + 40), each
	// boundary's charges take 40: all six grants kept, balance 60.
	if p.Status.RunningServers != 4 || p.Status.PagedStopping != 0 || p.Status.TotalCharged != 4*10*7 || p.Status.TotalGranted != 6*40 ||
		p.Status.Balance != 60 {
		t.Fatalf("after the outage: running %d, stopping %d, charged %d, granted %d, balance %d; want 4 running, none stopped, 280 charged, 240 granted, 60",
			p.Status.RunningServers, p.Status.PagedStopping, p.Status.TotalCharged, p.Status.TotalGranted, p.Status.Balance)
	}
}
