package integration

import (
	"context"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/ledgerpages"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// pageBatch commits a reservation batch of ids on page (number n of a),
// in memory: the caller's account write is the commit.
func pageBatch(t *testing.T, a *hcv1.CreditAccount, page *hcv1.LedgerPage, now time.Time, l billing.PageLimits, ids ...string) {
	t.Helper()
	var rs []billing.PageReservation
	for _, id := range ids {
		rs = append(rs, billing.PageReservation{Reservation: billing.Reservation{ID: id, Pod: "jupyter-" + id, User: "alice",
			Wallet: a.Name, Price: billing.Price{Value: 10, Interval: time.Minute}}, Need: 10, Want: 10})
	}
	tx, errs, err := billing.ReservePage(a, page, rs, now, l)
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
}

// TestLedgerPagesStoreAfterACrash: a writer commits a batch on the account
// and dies before the page write. The next writer's Complete (a fresh
// Store: another process) creates and writes the page and confirms the
// transfer; a stale writer that still holds the account as committed
// completes nothing twice, and its own account write is refused.
func TestLedgerPagesStoreAfterACrash(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	createAccount(t, testutil.MakeAccount(ns, "lab", "alice").Cap(1000).InitialBalance(500).Obj())
	now := time.Now()
	limits := billing.PageLimits{Inline: 0, PerPage: 4, Pending: 8}
	store := &ledgerpages.Store{Client: k8s, APIReader: k8s}

	// 1. The first writer: the commit (account status write), then the crash.
	a := testutil.GetAccount(t, k8s, ns, "lab")
	billing.Refresh(a, now)
	page, err := store.Page(ctx, a, 1, true)
	if err != nil || page.ResourceVersion != "" {
		t.Fatalf("page 1 before it exists: %v, %v", page, err)
	}
	pageBatch(t, a, page, now, limits, "r1", "r2", "r3")
	if err := k8s.Status().Update(ctx, a); err != nil {
		t.Fatalf("the commit: %v", err)
	}
	stale := testutil.GetAccount(t, k8s, ns, "lab")
	if len(stale.Status.Pending) != 1 || stale.Status.Balance != 470 {
		t.Fatalf("committed account: pending %v, balance %d", stale.Status.Pending, stale.Status.Balance)
	}

	// 2. The next writer (another Store) completes the page and confirms.
	next := &ledgerpages.Store{Client: k8s, APIReader: k8s}
	a = testutil.GetAccount(t, k8s, ns, "lab")
	pages, changed, err := next.Complete(ctx, a)
	if err != nil || !changed || len(a.Status.Pending) != 0 {
		t.Fatalf("Complete: changed %t, %v, pending %v", changed, err, a.Status.Pending)
	}
	if p := pages[1]; p == nil || p.Status.Seq != 1 || len(p.Status.Servers) != 3 {
		t.Fatalf("the completed page: %+v", pages[1])
	}
	// It goes on with a batch on the page Complete returned, and commits
	// both (the confirmation and the batch) in one account write.
	billing.Refresh(a, now)
	pageBatch(t, a, pages[1], now, limits, "r4")
	if err := k8s.Status().Update(ctx, a); err != nil {
		t.Fatalf("the second commit: %v", err)
	}
	if _, err := next.Write(ctx, a, &a.Status.Pending[0]); err != nil {
		t.Fatal(err)
	}
	written, err := next.Page(ctx, a, 1, true)
	if err != nil || written.Status.Seq != 2 || len(written.Status.Servers) != 4 {
		t.Fatalf("page 1 after the second batch: %+v, %v", written, err)
	}

	// 3. The stale writer, still holding the account with transfer 1
	// pending: Complete sees the page past it and only confirms; Write of
	// transfer 1 changes nothing; its account write is refused.
	old := stale.Status.Pending[0].DeepCopy()
	pagesSeen, changed, err := store.Complete(ctx, stale)
	if err != nil || !changed || len(stale.Status.Pending) != 0 {
		t.Fatalf("the stale writer's Complete: changed %t, %v, pending %v", changed, err, stale.Status.Pending)
	}
	if pagesSeen[1].Status.Seq != 2 || pagesSeen[1].ResourceVersion != written.ResourceVersion {
		t.Fatalf("the stale writer saw page 1 at seq %d (rv %s), want 2 untouched (rv %s)", pagesSeen[1].Status.Seq,
			pagesSeen[1].ResourceVersion, written.ResourceVersion)
	}
	again, err := store.Write(ctx, stale, old)
	if err != nil || again.ResourceVersion != written.ResourceVersion {
		t.Fatalf("a stale Write of transfer 1: %v (rv %s, the page's %s): want the page untouched", err, again.ResourceVersion, written.ResourceVersion)
	}
	if err := k8s.Status().Update(ctx, stale); !apierrors.IsConflict(err) {
		t.Fatalf("the stale writer's account write: %v, want a conflict", err)
	}

	// The account and its pages agree, and every credit is accounted for.
	final := testutil.GetAccount(t, k8s, ns, "lab")
	all, err := next.Pages(ctx, final, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := billing.CheckPaged(final, all); err != nil {
		t.Fatal(err)
	}
	held, err := billing.Held(final, all)
	if err != nil || final.Status.Balance+held != 500 || held != 40 {
		t.Fatalf("balance %d + held %d (%v), want 460 + 40", final.Status.Balance, held, err)
	}
}
