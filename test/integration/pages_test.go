package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// TestLedgerPageProtocolThroughTheAPIServer runs one reservation batch of
// the page protocol (billing/pages.go) through the API server, with no
// controller: the account's status write is the commit, the page's the
// application, and what a reader gets back completes nothing twice. It
// also checks the bounds the CRDs put on pages and pending transfers. (The
// operator does not use pages yet: issue 14, P6.)
func TestLedgerPageProtocolThroughTheAPIServer(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	createAccount(t, testutil.MakeAccount(ns, "lab", "alice").Cap(1000).InitialBalance(500).Obj())
	now := time.Now() // sub-second: the writes keep whole seconds
	limits := billing.PageLimits{Inline: 0, PerPage: 64, Pending: 8}

	a := testutil.GetAccount(t, k8s, ns, "lab")
	billing.Refresh(a, now)
	n, create := billing.ChoosePage(a, 0, limits)
	if n != 1 || !create {
		t.Fatalf("ChoosePage = %d, %t; want a new page 1", n, create)
	}
	page, err := billing.NewPage(a, n)
	if err != nil {
		t.Fatal(err)
	}
	var rs []billing.PageReservation
	for i := range 3 {
		rs = append(rs, billing.PageReservation{Reservation: billing.Reservation{ID: fmt.Sprintf("r%d", i), Pod: fmt.Sprintf("jupyter-%d", i),
			User: "alice", Wallet: "lab", Price: billing.Price{Value: 10, Interval: time.Minute}}, Need: 10, Want: 10})
	}
	tx, errs, err := billing.ReservePage(a, page, rs, now, limits)
	if err != nil || errs[0] != nil || errs[1] != nil || errs[2] != nil {
		t.Fatalf("ReservePage: %v %v", err, errs)
	}
	if err := billing.Commit(a, tx); err != nil {
		t.Fatal(err)
	}
	// 1. The commit: the account's status write.
	if err := k8s.Status().Update(ctx, a); err != nil {
		t.Fatalf("the commit (account status write): %v", err)
	}
	// 2. The application, from the stored transfer: the page created (if
	// absent), then its status written.
	a = testutil.GetAccount(t, k8s, ns, "lab")
	if a.Status.Balance != 470 || a.Status.Pages != 1 || a.Status.PagedServers != 3 || a.Status.PagedPaid != 30 || len(a.Status.Pending) != 1 {
		t.Fatalf("stored account: balance %d, pages %d, paged %d/%d, pending %d", a.Status.Balance, a.Status.Pages,
			a.Status.PagedServers, a.Status.PagedPaid, len(a.Status.Pending))
	}
	if err := k8s.Create(ctx, page); err != nil {
		t.Fatalf("creating the page: %v", err)
	}
	if changed, err := billing.Apply(page, &a.Status.Pending[0]); !changed || err != nil {
		t.Fatalf("Apply: %t, %v", changed, err)
	}
	if err := k8s.Status().Update(ctx, page); err != nil {
		t.Fatalf("the application (page status write): %v", err)
	}
	stored := &hcv1.LedgerPage{}
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "lab-1"}, stored); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(page.Status, stored.Status); d != "" {
		t.Fatalf("the page read back differs from the page written (-written +read):\n%s", d)
	}
	// 3. A reader: nothing to roll forward; the transfer is confirmed.
	pageChanged, accountChanged, err := billing.Complete(a, stored)
	if err != nil || pageChanged || !accountChanged || len(a.Status.Pending) != 0 {
		t.Fatalf("Complete = %t, %t, %v; pending %d", pageChanged, accountChanged, err, len(a.Status.Pending))
	}
	if err := billing.CheckPaged(a, map[int32]*hcv1.LedgerPage{1: stored}); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Status().Update(ctx, a); err != nil {
		t.Fatalf("the confirming write: %v", err)
	}

	// 4. The servers start (whole seconds, as the kubelet reports them)
	// and are charged: the counters (pagedRunning, pagedCost, pagedDue in
	// microseconds) survive the API server and agree with the stored page.
	started := now.Truncate(time.Second).Add(-150 * time.Second)
	pods := func(e hcv1.ServerCharge) billing.PodObservation {
		return billing.PodObservation{Exists: true, UID: types.UID("u-" + e.ID), StartedAt: &started}
	}
	a = testutil.GetAccount(t, k8s, ns, "lab")
	billing.Refresh(a, now)
	tx, err = billing.SettlePage(a, stored, pods, now, billing.DefaultOptions, limits)
	if err != nil {
		t.Fatal(err)
	}
	if err := billing.Commit(a, tx); err != nil {
		t.Fatal(err)
	}
	billing.UpdateCounters(a, now, 0, billing.DefaultOptions)
	if err := k8s.Status().Update(ctx, a); err != nil {
		t.Fatalf("the settle commit: %v", err)
	}
	a = testutil.GetAccount(t, k8s, ns, "lab")
	if changed, err := billing.Apply(stored, &a.Status.Pending[0]); !changed || err != nil {
		t.Fatalf("Apply: %t, %v", changed, err)
	}
	if err := k8s.Status().Update(ctx, stored); err != nil {
		t.Fatalf("the settle application: %v", err)
	}
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "lab-1"}, stored); err != nil {
		t.Fatal(err)
	}
	if err := billing.CheckPaged(a, map[int32]*hcv1.LedgerPage{1: stored}); err != nil {
		t.Fatalf("after the settle, read back: %v", err)
	}
	// Started 150 s ago, 1-minute periods: 3 periods paid each, the next
	// due 30 s from now.
	due := started.Add(3 * time.Minute)
	if a.Status.PagedRunning != 3 || a.Status.PagedCost != 30 || a.Status.RunningServers != 3 || len(a.Status.PagedDue) != 1 ||
		!a.Status.PagedDue[0].At.Time.Equal(due) || billing.ChargesOutstanding(a, now) {
		t.Fatalf("stored counters: running %d (account %d), cost %d, due %v; want 3, 30, one page due at %s",
			a.Status.PagedRunning, a.Status.RunningServers, a.Status.PagedCost, a.Status.PagedDue, due)
	}
	if _, err := billing.Confirm(a, stored); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Status().Update(ctx, a); err != nil {
		t.Fatalf("the confirming write: %v", err)
	}

	t.Run("the bounds of the CRDs", func(t *testing.T) {
		p := stored.DeepCopy()
		for i := len(p.Status.Servers); i <= hcv1.MaxPageServers; i++ {
			e := *p.Status.Servers[0].DeepCopy()
			e.ID = fmt.Sprintf("x%d", i)
			p.Status.Servers = append(p.Status.Servers, e)
		}
		if err := k8s.Status().Update(ctx, p); !apierrors.IsInvalid(err) {
			t.Errorf("a page with %d entries: %v, want it refused as invalid", len(p.Status.Servers), err)
		}
		p = stored.DeepCopy()
		p.Spec.Account = "other"
		if err := k8s.Update(ctx, p); !apierrors.IsInvalid(err) {
			t.Errorf("changing a page's spec.account: %v, want it refused as invalid", err)
		}
		acc := testutil.GetAccount(t, k8s, ns, "lab")
		for i := range hcv1.MaxPendingTransfers + 1 {
			acc.Status.Pending = append(acc.Status.Pending, hcv1.PageTransfer{Page: int32(i + 1), Seq: 1, Kind: hcv1.TransferSettle,
				Entries: []hcv1.PageDelta{{ID: "r0", PeriodsPaid: 2, Paid: 20, PaidThrough: &metav1.Time{Time: now}}}})
		}
		if err := k8s.Status().Update(ctx, acc); !apierrors.IsInvalid(err) {
			t.Errorf("an account with %d pending transfers: %v, want it refused as invalid", len(acc.Status.Pending), err)
		}
		acc.Status.Pending = acc.Status.Pending[:2]
		acc.Status.Pending[1].Page = 1
		if err := k8s.Status().Update(ctx, acc); !apierrors.IsInvalid(err) {
			t.Errorf("an account with two pending transfers for one page: %v, want it refused as invalid", err)
		}
		acc = testutil.GetAccount(t, k8s, ns, "lab")
		acc.Status.Pages = hcv1.MaxPages + 1
		if err := k8s.Status().Update(ctx, acc); !apierrors.IsInvalid(err) {
			t.Errorf("an account with %d pages: %v, want it refused as invalid", acc.Status.Pages, err)
		}
		acc = testutil.GetAccount(t, k8s, ns, "lab")
		acc.Status.PagedDue = nil
		for i := range hcv1.MaxPages + 1 {
			acc.Status.PagedDue = append(acc.Status.PagedDue, hcv1.PageDue{Page: int32(i + 1), At: metav1.NewMicroTime(now)})
		}
		if err := k8s.Status().Update(ctx, acc); !apierrors.IsInvalid(err) {
			t.Errorf("an account with %d lines in pagedDue: %v, want it refused as invalid", len(acc.Status.PagedDue), err)
		}
	})
}
