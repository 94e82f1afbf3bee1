package integration

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// groupPod is user's KubeSpawner pod with the groups the hub puts on it.
func groupPod(ns, user, server, groups string) *corev1.Pod {
	return testutil.MakeKubeSpawnerPod(ns, user, server).Annotation(hcv1.AnnotationGroups, groups).Obj()
}

// TestCoursePoolAdmitsItsGroup: a pool for a whole course lists a
// JupyterHub group; a member of the group spends from it, a student with
// a wallet keeps spending from the wallet unless the profile names the
// course, and a user outside the group is refused.
func TestCoursePoolAdmitsItsGroup(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createAccount(t, testutil.MakeAccount(ns, "physics-101").Groups("physics-101").Cap(1000).Obj())
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(100).Obj())

	bob := groupPod(ns, "bob", "", `["physics-101"]`)
	if err := createPod(bob); err != nil {
		t.Fatalf("a member's spawn refused: %v", err)
	}
	if got := bob.Annotations[hcv1.AnnotationAccount]; got != "physics-101" {
		t.Fatalf("bob's server billed to %q, want the course pool", got)
	}
	alice := groupPod(ns, "alice", "", `["physics-101"]`)
	if err := createPod(alice); err != nil {
		t.Fatalf("alice's spawn refused: %v", err)
	}
	if got := alice.Annotations[hcv1.AnnotationAccount]; got != "alice" {
		t.Fatalf("alice's server billed to %q, want her wallet (listed by name)", got)
	}
	lab := testutil.MakeKubeSpawnerPod(ns, "alice", "lab").Label(hcv1.LabelAccount, "physics-101").
		Annotation(hcv1.AnnotationGroups, `["physics-101"]`).Obj()
	if err := createPod(lab); err != nil || lab.Annotations[hcv1.AnnotationAccount] != "physics-101" {
		t.Fatalf("the course profile's spawn: %v, billed to %q", err, lab.Annotations[hcv1.AnnotationAccount])
	}
	carol := groupPod(ns, "carol", "", `["chem-201"]`)
	err := createPod(carol)
	if !apierrors.IsForbidden(err) || err.Error() != denial(`No credit account for user "carol" — ask your hub admin.`) {
		t.Fatalf("a non-member's spawn: %v, want the NoAccount denial", err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		pool := testutil.GetAccount(t, k8s, ns, "physics-101")
		if pool.Status.Balance != 980 || len(pool.Status.Servers) != 2 {
			return fmt.Errorf("pool balance %d with %d servers, want 980 with 2", pool.Status.Balance, len(pool.Status.Servers))
		}
		return nil
	})
	for _, p := range []*corev1.Pod{bob, alice, lab} {
		forget(t, p)
	}
}
