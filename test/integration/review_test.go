package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

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
