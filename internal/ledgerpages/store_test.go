package ledgerpages

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/testutil"
	"github.com/hubcredits/hubcredits/internal/testutil/fakeclient"
)

var (
	now    = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	limits = billing.PageLimits{Inline: 0, PerPage: 4, Pending: 8}
)

// committed is account lab (balance 100) with a reservation batch of ids
// committed on page n (as page shows it), as the account's write stores it.
func committed(t *testing.T, a *hcv1.CreditAccount, page *hcv1.LedgerPage, ids ...string) *hcv1.PageTransfer {
	t.Helper()
	var rs []billing.PageReservation
	for _, id := range ids {
		rs = append(rs, billing.PageReservation{Reservation: billing.Reservation{ID: id, Pod: "jupyter-" + id, User: "alice",
			Wallet: a.Name, Price: billing.Price{Value: 10, Interval: time.Minute}}, Need: 10, Want: 10})
	}
	tx, errs, err := billing.ReservePage(a, page, rs, now, limits)
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := billing.Commit(a, tx); err != nil {
		t.Fatal(err)
	}
	return &a.Status.Pending[len(a.Status.Pending)-1]
}

func account() *hcv1.CreditAccount {
	a := testutil.MakeAccount("ns", "lab").Cap(1000).InitialBalance(100).UID("uid-lab").OpenedAt(time.Hour).Obj()
	a.Status.Balance = 100
	return a
}

// counting wraps c, counting page creates and page status writes.
type counts struct{ creates, writes atomic.Int32 }

func countingFuncs(n *counts, extra *interceptor.Funcs) *interceptor.Funcs {
	f := interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if _, ok := obj.(*hcv1.LedgerPage); ok {
				n.creates.Add(1)
			}
			if extra != nil && extra.Create != nil {
				return extra.Create(ctx, c, obj, opts...)
			}
			return c.Create(ctx, obj, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			if _, ok := obj.(*hcv1.LedgerPage); ok {
				n.writes.Add(1)
			}
			if extra != nil && extra.SubResourceUpdate != nil {
				return extra.SubResourceUpdate(ctx, c, sub, obj, opts...)
			}
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
	}
	if extra != nil {
		f.Get = extra.Get
	}
	return &f
}

func getPage(t *testing.T, c client.Reader, name string) *hcv1.LedgerPage {
	t.Helper()
	p := &hcv1.LedgerPage{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "ns", Name: name}, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWriteCreatesTheNewPageAndAppliesOnce(t *testing.T) {
	ctx := context.Background()
	var n counts
	c := fakeclient.New(countingFuncs(&n, nil))
	s := &Store{Client: c, APIReader: c}
	a := account()
	empty, err := s.Page(ctx, a, 1, false)
	if err != nil || empty.ResourceVersion != "" || empty.Status.Seq != 0 {
		t.Fatalf("Page of a page not created yet = %+v, %v; want NewPage's", empty, err)
	}
	tr := committed(t, a, empty, "r1", "r2")

	written, err := s.Write(ctx, a, tr)
	if err != nil {
		t.Fatal(err)
	}
	stored := getPage(t, c, "lab-1")
	if stored.Status.Seq != 1 || len(stored.Status.Servers) != 2 || written.ResourceVersion != stored.ResourceVersion {
		t.Fatalf("stored page: seq %d, %d entries, rv %s (written rv %s); want seq 1, 2 entries, as written",
			stored.Status.Seq, len(stored.Status.Servers), stored.ResourceVersion, written.ResourceVersion)
	}
	if len(stored.OwnerReferences) != 1 || stored.OwnerReferences[0].UID != a.UID {
		t.Errorf("owner references %v, want the account's", stored.OwnerReferences)
	}
	// The same transfer again (a retry, a second replica): nothing written.
	if _, err := s.Write(ctx, a, tr); err != nil {
		t.Fatal(err)
	}
	if n.creates.Load() != 1 || n.writes.Load() != 1 {
		t.Errorf("%d creates and %d page writes, want 1 and 1", n.creates.Load(), n.writes.Load())
	}
	if got := getPage(t, c, "lab-1"); got.ResourceVersion != stored.ResourceVersion {
		t.Errorf("the page was written again")
	}
}

// A second writer created the page between our read and our create: the
// create fails with AlreadyExists, the page is read live and applied.
func TestWriteAfterAnotherWriterCreatedThePage(t *testing.T) {
	ctx := context.Background()
	a := account()
	page, _ := billing.NewPage(a, 1)
	tr := committed(t, a, page, "r1")
	// The cache and then the live read miss the page once each.
	var misses atomic.Int32
	misses.Store(2)
	miss := func() bool { return misses.Add(-1) >= 0 }
	base := fakeclient.New(nil)
	if err := base.Create(ctx, page.DeepCopy()); err != nil { // the other writer's create
		t.Fatal(err)
	}
	var n counts
	c := fakeclient.New(countingFuncs(&n, &interceptor.Funcs{
		Get: func(ctx context.Context, _ client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*hcv1.LedgerPage); ok && miss() {
				return apierrors.NewNotFound(schema.GroupResource{Group: "hubcredits.io", Resource: "ledgerpages"}, key.Name)
			}
			return base.Get(ctx, key, obj, opts...)
		},
		Create: func(ctx context.Context, _ client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			return base.Create(ctx, obj, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, _ client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			return base.SubResource(sub).Update(ctx, obj, opts...)
		},
	}))
	s := &Store{Client: c, APIReader: readerFunc(func(ctx context.Context, key client.ObjectKey, obj client.Object) error {
		if miss() {
			return apierrors.NewNotFound(schema.GroupResource{Group: "hubcredits.io", Resource: "ledgerpages"}, key.Name)
		}
		return base.Get(ctx, key, obj)
	})}
	if _, err := s.Write(ctx, a, tr); err != nil {
		t.Fatal(err)
	}
	stored := getPage(t, base, "lab-1")
	if stored.Status.Seq != 1 || len(stored.Status.Servers) != 1 || n.creates.Load() != 1 || n.writes.Load() != 1 {
		t.Fatalf("stored page seq %d, %d entries; %d creates, %d writes; want seq 1, 1 entry, 1 create (refused), 1 write",
			stored.Status.Seq, len(stored.Status.Servers), n.creates.Load(), n.writes.Load())
	}
}

// readerFunc is a client.Reader from a Get (List is not used).
type readerFunc func(ctx context.Context, key client.ObjectKey, obj client.Object) error

func (f readerFunc) Get(ctx context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	return f(ctx, key, obj)
}

func (f readerFunc) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("not used")
}

// The cache lags: it shows the page a transfer behind (seq 0) while the
// API server has seq 1 and the account's pending transfer is 2 (a gap
// from the cache's view), or shows seq 1 while another writer already
// applied 2 (a conflict). Either way the page ends at seq 2, applied once.
func TestWriteWithALaggingCache(t *testing.T) {
	for name, lagBy := range map[string]int{"a gap": 2, "a conflict": 1} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			api := fakeclient.New(nil)
			s := &Store{Client: api, APIReader: api}
			a := account()
			p0, _ := s.Page(ctx, a, 1, true)
			tr1 := committed(t, a, p0, "r1")
			p1, err := s.Write(ctx, a, tr1)
			if err != nil {
				t.Fatal(err)
			}
			snapshots := map[int64]*hcv1.LedgerPage{0: p0.DeepCopy(), 1: p1.DeepCopy()}
			snapshots[0].ResourceVersion = "1"
			if _, err := billing.Confirm(a, p1); err != nil {
				t.Fatal(err)
			}
			tr2 := committed(t, a, p1, "r2")
			if lagBy == 1 {
				// Another writer applied transfer 2 already.
				if _, err := s.Write(ctx, a, tr2); err != nil {
					t.Fatal(err)
				}
			}
			cached := snapshots[2-int64(lagBy)]
			var n counts
			c := fakeclient.New(countingFuncs(&n, &interceptor.Funcs{
				Get: func(ctx context.Context, _ client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
					if p, ok := obj.(*hcv1.LedgerPage); ok {
						cached.DeepCopyInto(p)
						return nil
					}
					return api.Get(ctx, key, obj, opts...)
				},
				SubResourceUpdate: func(ctx context.Context, _ client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
					return api.SubResource(sub).Update(ctx, obj, opts...)
				},
			}))
			s = &Store{Client: c, APIReader: api}
			got, err := s.Write(ctx, a, tr2)
			if err != nil {
				t.Fatal(err)
			}
			stored := getPage(t, api, "lab-1")
			if stored.Status.Seq != 2 || len(stored.Status.Servers) != 2 || got.ResourceVersion != stored.ResourceVersion {
				t.Fatalf("stored page: seq %d, entries %v; want seq 2 with r1 and r2, as returned", stored.Status.Seq, ids(stored))
			}
		})
	}
}

func ids(p *hcv1.LedgerPage) []string {
	var out []string
	for _, e := range p.Status.Servers {
		out = append(out, e.ID)
	}
	return out
}

// Complete rolls forward a transfer whose page write was lost (the crash
// between the account's commit and the page's write), confirms the one
// whose page shows it, and leaves an account with nothing pending alone.
func TestComplete(t *testing.T) {
	ctx := context.Background()
	var n counts
	c := fakeclient.New(countingFuncs(&n, nil))
	s := &Store{Client: c, APIReader: c}
	a := account()
	if pages, changed, err := s.Complete(ctx, a); err != nil || changed || len(pages) != 0 {
		t.Fatalf("Complete with nothing pending = %v, %t, %v", pages, changed, err)
	}
	// Page 1: committed and written. Page 2: committed, its write lost.
	p1, _ := s.Page(ctx, a, 1, false)
	tr1 := committed(t, a, p1, "r1", "r2", "r3", "r4")
	if _, err := s.Write(ctx, a, tr1); err != nil {
		t.Fatal(err)
	}
	p2, _ := s.Page(ctx, a, 2, false)
	committed(t, a, p2, "r5")
	if len(a.Status.Pending) != 2 || a.Status.Pages != 2 {
		t.Fatalf("pending %d, pages %d; want 2 and 2", len(a.Status.Pending), a.Status.Pages)
	}
	writes := n.writes.Load()
	pages, changed, err := s.Complete(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if !changed || len(a.Status.Pending) != 0 || len(pages) != 2 {
		t.Fatalf("Complete: changed %t, pending %v, pages %d; want both confirmed, 2 pages", changed, a.Status.Pending, len(pages))
	}
	if got := n.writes.Load() - writes; got != 1 {
		t.Errorf("Complete wrote %d pages, want 1 (page 2's lost write)", got)
	}
	all, err := s.Pages(ctx, a, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := billing.CheckPaged(a, all); err != nil {
		t.Fatal(err)
	}
	for n, want := range map[int32]int{1: 4, 2: 1} {
		if got := len(all[n].Status.Servers); got != want || pages[n].ResourceVersion != all[n].ResourceVersion {
			t.Errorf("page %d: %d entries (want %d), returned rv %s, stored %s", n, got, want, pages[n].ResourceVersion, all[n].ResourceVersion)
		}
	}
	held, err := billing.Held(a, all)
	if err != nil || a.Status.Balance+held != 100 {
		t.Errorf("balance %d + held %d (%v), want 100", a.Status.Balance, held, err)
	}
}

// A stale writer (a replica that read the account before the transfer was
// confirmed, and the page later moved on) never applies the transfer again.
func TestAStaleWriterAppliesNothingTwice(t *testing.T) {
	ctx := context.Background()
	c := fakeclient.New(nil)
	s := &Store{Client: c, APIReader: c}
	a := account()
	p, _ := s.Page(ctx, a, 1, false)
	tr1 := committed(t, a, p, "r1")
	stale := a.DeepCopy() // pending: transfer 1
	p, err := s.Write(ctx, a, tr1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := billing.Confirm(a, p); err != nil {
		t.Fatal(err)
	}
	tr2 := committed(t, a, p, "r2")
	if _, err := s.Write(ctx, a, tr2); err != nil {
		t.Fatal(err)
	}
	before := getPage(t, c, "lab-1")
	if _, changed, err := s.Complete(ctx, stale); err != nil || !changed || len(stale.Status.Pending) != 0 {
		t.Fatalf("the stale writer's Complete: changed %t, %v, pending %v; want transfer 1 confirmed", changed, err, stale.Status.Pending)
	}
	after := getPage(t, c, "lab-1")
	if after.ResourceVersion != before.ResourceVersion || after.Status.Seq != 2 || len(after.Status.Servers) != 2 {
		t.Fatalf("after the stale writer: rv %s (was %s), seq %d, entries %v", after.ResourceVersion, before.ResourceVersion, after.Status.Seq, ids(after))
	}
}

func TestPageOfAnotherAccount(t *testing.T) {
	ctx := context.Background()
	old := account()
	old.UID = "uid-old"
	p, _ := billing.NewPage(old, 1)
	foreign := &hcv1.LedgerPage{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "lab-2"}, Spec: hcv1.LedgerPageSpec{Account: "other"}}
	c := fakeclient.New(nil, p, foreign)
	s := &Store{Client: c, APIReader: c}
	a := account()
	for n, want := range map[int32]string{1: "earlier account", 2: "is not a page of account"} {
		_, err := s.Page(ctx, a, n, false)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("page %d: %v, want an error saying %q", n, err, want)
		}
	}
	if _, err := s.Pages(ctx, &hcv1.CreditAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "lab"},
		Status: hcv1.CreditAccountStatus{Pages: 1}}, true); err != nil {
		t.Errorf("a page read for an account without a uid: %v", err)
	}
}

// TestPageFinalizer: a page created before the finalizer gets it on its
// next write; Release takes it off the account's own pages (an earlier
// account's of the same name, or another account's, are left alone).
func TestPageFinalizer(t *testing.T) {
	ctx := context.Background()
	a := account()
	bare, _ := billing.NewPage(a, 1)
	bare.Finalizers = nil
	old := account()
	old.UID = "uid-old"
	earlier, _ := billing.NewPage(old, 2)
	other, _ := billing.NewPage(&hcv1.CreditAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "lab2", UID: "uid-2"}}, 1)
	c := fakeclient.New(nil, bare, earlier, other)
	s := &Store{Client: c, APIReader: c}
	a.Status.Pages = 1
	tr := committed(t, a, getPage(t, c, "lab-1"), "r1")
	if _, err := s.Write(ctx, a, tr); err != nil {
		t.Fatal(err)
	}
	if p := getPage(t, c, "lab-1"); p.Status.Seq != 1 || len(p.Finalizers) != 1 || p.Finalizers[0] != hcv1.FinalizerLedger {
		t.Fatalf("written: seq %d, finalizers %v; want 1, [%s]", p.Status.Seq, p.Finalizers, hcv1.FinalizerLedger)
	}
	if err := s.Release(ctx, a); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{"lab-1": 0, "lab-2": 1, "lab2-1": 1} {
		if p := getPage(t, c, name); len(p.Finalizers) != want {
			t.Errorf("after Release: page %s has finalizers %v, want %d", name, p.Finalizers, want)
		}
	}
	// Once the account is gone (no uid known), every page naming it.
	if err := s.Release(ctx, &hcv1.CreditAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "lab"}}); err != nil {
		t.Fatal(err)
	}
	if p := getPage(t, c, "lab-2"); len(p.Finalizers) != 0 {
		t.Errorf("page lab-2 of the account gone: finalizers %v", p.Finalizers)
	}
}
