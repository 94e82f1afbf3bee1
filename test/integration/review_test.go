package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/util/retry"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// Adversarial review (wt-review): these tests fail on main. They are left
// failing on purpose.

// TestReviewLongUsernameThroughGroupGetsARecord: a user reaches a course
// pool only through a JupyterHub group, so no spec.users bound (255)
// applies to the name; the reservation keeps a 300-character username in
// status (servers[].user is unbounded) but the UsageRecord's user is
// bounded to 255: the record is refused for ever, the ended server's entry
// is kept for ever (retried every 10 s) and the usage never recorded.
func TestReviewLongUsernameThroughGroupGetsARecord(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createPolicy(t, testutil.MakePolicy(ns, "fast").Value(10).Every(period).Obj())
	createAccount(t, testutil.MakeAccount(ns, "course").Groups("course").Cap(1000).Obj())
	user := strings.Repeat("a", 300)
	p := testutil.MakeKubeSpawnerPod(ns, "longname", "").User(user).Annotation(hcv1.AnnotationGroups, `["course"]`).Obj()
	p.Spec.NodeName = "node-1"
	if err := createPod(p); err != nil {
		t.Fatalf("spawn refused (then nothing is lost): %v", err)
	}
	start := time.Now().Truncate(time.Second)
	setRunning(t, p, start)
	stopPod(t, p, start)
	defer forget(t, p)
	testutil.Eventually(t, 25*time.Second, func() error {
		a := testutil.GetAccount(t, k8s, ns, "course")
		if n := len(a.Status.Servers); n != 0 {
			return fmt.Errorf("%d server entries kept (ended: %v)", n, a.Status.Servers[0].EndedAt != nil)
		}
		if recs := usageRecords(t, ns); len(recs) != 1 {
			return fmt.Errorf("%d usage records, want 1", len(recs))
		}
		return nil
	})
}

// TestReviewOneOffAmountsCannotChange: the API refuses a changed
// adjustment amount (the ledger would no longer match the spec) but lets
// the same happen to a top-up, and lets an applied id move from one list
// to the other with another amount and sign: the spec then shows movements
// that never happened (a top-up of 5000 where 50 were added, an
// adjustment of -1000 never taken), and Reopen's and the plugin's
// fallbacks read those amounts from the spec.
func TestReviewOneOffAmountsCannotChange(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(100).TopUp("t", 50).TopUp("u", 10).Obj())
	testutil.Eventually(t, 10*time.Second, func() error {
		if b := testutil.GetAccount(t, k8s, ns, "alice").Status.Balance; b != 160 {
			return fmt.Errorf("balance %d", b)
		}
		return nil
	})
	t.Run("a top-up's amount", func(t *testing.T) {
		a := testutil.GetAccount(t, k8s, ns, "alice")
		a.Spec.TopUps[0].Amount = 5000
		if err := k8s.Update(context.Background(), a); err == nil {
			t.Errorf("the amount of the applied top-up t changed from 50 to 5000; the balance stays %d", a.Status.Balance)
		}
	})
	t.Run("an applied top-up id listed again as an adjustment", func(t *testing.T) {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			a := testutil.GetAccount(t, k8s, ns, "alice")
			a.Spec.TopUps = slices.DeleteFunc(a.Spec.TopUps, func(x hcv1.TopUp) bool { return x.ID == "u" })
			a.Spec.Adjustments = append(a.Spec.Adjustments, hcv1.Adjustment{ID: "u", Amount: -1000, Reason: "moved"})
			return k8s.Update(context.Background(), a)
		})
		if err == nil {
			a := testutil.GetAccount(t, k8s, ns, "alice")
			t.Errorf("top-up u (+10, applied) is now listed as an adjustment of -1000 that is never applied (balance %d, totalAdjusted %d)",
				a.Status.Balance, a.Status.TotalAdjusted)
		} else {
			t.Logf("refused: %v", err)
		}
	})
}

// TestNonASCIIGroupNameAdmits: spec.groups items are bounded to 255
// characters (the API server counts code points) and the CRD accepts a
// Cyrillic course name of 200 letters (400 bytes); the webhook bounds the
// pod's group names the same way (billing.PodGroups counts characters,
// not bytes), so a member's spawn is admitted, paid by the pool.
func TestNonASCIIGroupNameAdmits(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	group := strings.Repeat("ф", 200)
	createAccount(t, testutil.MakeAccount(ns, "course").Groups(group).Cap(1000).Obj())
	p := groupPod(ns, "bob", "", `["`+group+`"]`)
	if err := createPod(p); err != nil {
		t.Fatalf("a member of the course's group (a name the CRD accepted) was refused: %v", err)
	}
	forget(t, p)
}

// TestReopenedAccountWithManyRetiredIDsStaysEditable: a re-created account
// takes over up to 1024 retired ids from its tombstone
// (status.retiredTopUps). The CRD's bound on retired ids (512) applies only
// to an edit that removes an entry from the spec: past 512 taken over, the
// admin can still top the account up, adjust it or change its cap, but
// removing an entry (which would retire one more id) is refused.
func TestReopenedAccountWithManyRetiredIDsStaysEditable(t *testing.T) {
	ns := newNamespace(t)
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(100).Obj())
	ctx := context.Background()
	// The status Reopen leaves after a tombstone of 600 ids (written here
	// directly: no operator runs in this test).
	a := testutil.GetAccount(t, k8s, ns, "alice")
	for i := range 600 {
		a.Status.RetiredTopUps = append(a.Status.RetiredTopUps, fmt.Sprintf("old-%04d", i))
	}
	a.Status.ReopenedFrom = "old-uid"
	if err := k8s.Status().Update(ctx, a); err != nil {
		t.Fatal(err)
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		a := testutil.GetAccount(t, k8s, ns, "alice")
		a.Spec.TopUps = append(a.Spec.TopUps, hcv1.TopUp{ID: "new", Amount: 50})
		return k8s.Update(ctx, a)
	})
	if err != nil {
		t.Errorf("a new top-up on a re-created account is refused: %v", err)
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		a := testutil.GetAccount(t, k8s, ns, "alice")
		a.Spec.Cap = 200
		return k8s.Update(ctx, a)
	})
	if err != nil {
		t.Errorf("a new cap on a re-created account is refused: %v", err)
	}
	// The operator would have applied "new" (no operator runs here).
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		a := testutil.GetAccount(t, k8s, ns, "alice")
		a.Status.AppliedTopUps = []string{"new"}
		return k8s.Status().Update(ctx, a)
	})
	if err != nil {
		t.Fatal(err)
	}
	a = testutil.GetAccount(t, k8s, ns, "alice")
	a.Spec.TopUps = nil
	err = k8s.Update(ctx, a)
	if err == nil || !strings.Contains(err.Error(), "at most 512 removed ids") {
		t.Errorf("removing the applied top-up of an account with 600 retired ids: %v, want it refused", err)
	}
}
