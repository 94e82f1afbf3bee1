package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// Adversarial review (wt-review): these tests fail on main. They are left
// failing on purpose.

// TestLongUsernameThroughGroupIsDeniedAtAdmission: a user who reaches a
// course pool only through a JupyterHub group is listed nowhere, so no
// spec.users bound (255) applies to the name; a UsageRecord's user is
// bounded to 255 characters. The webhook denies the spawn of a
// 300-character username (NameTooLong, a sentence that does not quote the
// name) instead of admitting a server it could never record.
func TestLongUsernameThroughGroupIsDeniedAtAdmission(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createPolicy(t, testutil.MakePolicy(ns, "fast").Value(10).Every(period).Obj())
	createAccount(t, testutil.MakeAccount(ns, "course").Groups("course").Cap(1000).Obj())
	for name, tc := range map[string]struct{ user, server, want string }{
		"a username of 300 characters":    {strings.Repeat("a", 300), "", billing.NameTooLongMessage("username", 300, billing.MaxUserLength)},
		"a server name of 256 characters": {"bob", strings.Repeat("s", 256), billing.NameTooLongMessage("server name", 256, billing.MaxServerNameLength)},
	} {
		t.Run(name, func(t *testing.T) {
			p := testutil.MakeKubeSpawnerPod(ns, "longname", "").User(tc.user).Annotation(hcv1.AnnotationGroups, `["course"]`).
				Annotation(hcv1.AnnotationServerName, tc.server).Obj()
			err := createPod(p)
			if err == nil {
				forget(t, p)
				t.Fatal("the spawn was admitted: its usage could never be recorded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("denied with %q, want the sentence %q", err, tc.want)
			}
		})
	}
	if a := testutil.GetAccount(t, k8s, ns, "course"); len(a.Status.Servers) != 0 || a.Status.TotalCharged != 0 {
		t.Errorf("the pool holds %d entries, charged %d", len(a.Status.Servers), a.Status.TotalCharged)
	}
}

// TestUsageRecordTheAPIRefusesIsCountedAndDropped: an ended server admitted
// before the webhook checked names (an older operator) carries a username
// the UsageRecord API refuses (422 Invalid on the field user). Retrying
// cannot help: the operator counts the record as invalid, logs it, and
// drops the entry, so the account's billing and deletion are not held.
func TestUsageRecordTheAPIRefusesIsCountedAndDropped(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createAccount(t, testutil.MakeAccount(ns, "course").Groups("course").Cap(1000).Obj())
	testutil.Eventually(t, 10*time.Second, balanceIs(t, ns, "course", 1000))
	invalid := testutil.Counter(t, "hubcredits_usage_records_total", map[string]string{"result": "invalid"})
	now := time.Now().Truncate(time.Second)
	e := testutil.MakeServerCharge("old-reservation").Pod("jupyter-long").User(strings.Repeat("a", 300)).Wallet("course").Paid(0, 0).Obj()
	e.ReservedAt = metav1.NewTime(now.Add(-time.Minute))
	e.StartedAt, e.EndedAt = ptr.To(e.ReservedAt), ptr.To(metav1.NewTime(now))
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		a := testutil.GetAccount(t, k8s, ns, "course")
		a.Status.Servers = append(a.Status.Servers, e)
		return k8s.Status().Update(context.Background(), a)
	})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, func() error {
		if n := len(testutil.GetAccount(t, k8s, ns, "course").Status.Servers); n != 0 {
			return fmt.Errorf("%d server entries kept", n)
		}
		return nil
	})
	if got := testutil.Counter(t, "hubcredits_usage_records_total", map[string]string{"result": "invalid"}) - invalid; got != 1 {
		t.Errorf("invalid records counted %v, want 1", got)
	}
	if recs := usageRecords(t, ns); len(recs) != 0 {
		t.Errorf("%d usage records", len(recs))
	}
	if a := testutil.GetAccount(t, k8s, ns, "course"); a.Status.Balance != 1000 {
		t.Errorf("balance %d, want 1000", a.Status.Balance)
	}
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
