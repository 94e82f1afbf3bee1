package integration

import (
	"context"
	"fmt"
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

// TestReviewNonASCIIGroupNameAdmits: spec.groups items are bounded to 255
// characters (the API server counts runes) and the CRD accepts a Cyrillic
// course name of 200 letters, but the webhook bounds the pod's group names
// to 255 bytes (billing.PodGroups: len(g)): every member's spawn is denied
// InvalidGroups ("the hub's glue is broken").
func TestReviewNonASCIIGroupNameAdmits(t *testing.T) {
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

// TestReviewReopenedAccountStaysEditable: a re-created account takes over
// up to 1024 retired ids from its tombstone (status.retiredTopUps), but
// the CRD refuses every spec change while retired + removed ids exceed
// 512: past 512 taken over, the admin can no longer top the account up,
// adjust it or change its cap.
func TestReviewReopenedAccountStaysEditable(t *testing.T) {
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
}
