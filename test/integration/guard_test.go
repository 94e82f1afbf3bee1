package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// TestPodGuardRefusesBillingEdits edits an admitted pod as another admin
// would with kubectl annotate/label: the keys that bind it to its account
// are refused with one sentence (and an Event), other edits go through, and
// the operator's own identity is exempt.
func TestPodGuardRefusesBillingEdits(t *testing.T) {
	ns := newNamespace(t)
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(100).Obj())
	createAccount(t, testutil.MakeAccount(ns, "pool", "bob").Cap(100).Obj())
	pod := testutil.MakeKubeSpawnerPod(ns, "alice", "").Obj()
	if err := createPod(pod); err != nil {
		t.Fatalf("KubeSpawner's pod was refused: %v", err)
	}
	u, err := env.AddUser(envtest.User{Name: "another-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(u.Config(), client.Options{Scheme: operator.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mergePatch := func(c client.Client, patch string) error {
		p := &corev1.Pod{}
		p.Namespace, p.Name = ns, pod.Name
		return c.Patch(ctx, p, client.RawPatch(types.MergePatchType, []byte(patch)))
	}
	refused := map[string]string{
		"move it to the pool":        `{"metadata":{"annotations":{"hubcredits.io/account":"pool"}}}`,
		"label it for the pool":      `{"metadata":{"labels":{"hubcredits.io/account":"pool"}}}`,
		"drop the reservation":       `{"metadata":{"annotations":{"hubcredits.io/reservation":null}}}`,
		"drop the singleuser label":  `{"metadata":{"labels":{"component":null}}}`,
		"give it to another user":    `{"metadata":{"annotations":{"hub.jupyter.org/username":"bob"}}}`,
		"change the pinned interval": `{"metadata":{"annotations":{"hubcredits.io/billing-interval":"1h"}}}`,
	}
	for what, patch := range refused {
		err := mergePatch(admin, patch)
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			t.Errorf("%s: got %v, want the edit refused", what, err)
			continue
		}
		if !strings.Contains(err.Error(), `admission webhook "pod-updates.hubcredits.io" denied the request: hubcredits: the `) ||
			!strings.Contains(err.Error(), "is bound to its billing since admission") {
			t.Errorf("%s: message %q", what, err.Error())
		}
	}
	if err := mergePatch(admin, `{"metadata":{"labels":{"team":"physics"},"annotations":{"note":"ok"}}}`); err != nil {
		t.Errorf("an unrelated edit was refused: %v", err)
	}
	var got corev1.Pod
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(pod), &got); err != nil {
		t.Fatal(err)
	}
	if got.Annotations[hcv1.AnnotationAccount] != "alice" || got.Labels[hcv1.ComponentLabel] != hcv1.SingleuserComponent {
		t.Fatalf("a refused edit changed the pod: account %q component %q", got.Annotations[hcv1.AnnotationAccount], got.Labels[hcv1.ComponentLabel])
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		var evs corev1.EventList
		if err := k8s.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == pod.Name && e.Reason == "BillingEditRefused" && e.Type == corev1.EventTypeWarning &&
				strings.Contains(e.Message, "requested by another-admin") {
				return nil
			}
		}
		return fmt.Errorf("no BillingEditRefused Event on %s", pod.Name)
	})
	// The operator's own identity (the webhook process runs with k8s's
	// credentials here) may change them.
	if err := mergePatch(k8s, `{"metadata":{"annotations":{"hubcredits.io/policy":"moved-by-operator"}}}`); err != nil {
		t.Errorf("the operator's own edit was refused: %v", err)
	}
}
