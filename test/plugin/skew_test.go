package plugin

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/hubcredits/hubcredits/internal/testutil"
)

// TestMovementKeepsFieldsThePluginDoesNotKnow: a kubectl-credits older
// than the cluster's CRD (a field added since) must not drop that field
// when it records a top-up or an adjustment: it sends only the entry it
// appends.
func TestMovementKeepsFieldsThePluginDoesNotKnow(t *testing.T) {
	ctx := context.Background()
	crd := &unstructured.Unstructured{}
	crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
	if err := admin.Get(ctx, client.ObjectKey{Name: "creditaccounts.hubcredits.io"}, crd); err != nil {
		t.Fatal(err)
	}
	original := crd.DeepCopy()
	// A newer CRD: spec.futureField, unknown to this plugin's Go types.
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for i := range versions {
		v := versions[i].(map[string]any)
		props, _, _ := unstructured.NestedMap(v, "schema", "openAPIV3Schema", "properties", "spec", "properties")
		props["futureField"] = map[string]any{"type": "string"}
		if err := unstructured.SetNestedMap(v, props, "schema", "openAPIV3Schema", "properties", "spec", "properties"); err != nil {
			t.Fatal(err)
		}
		versions[i] = v
	}
	if err := unstructured.SetNestedSlice(crd.Object, versions, "spec", "versions"); err != nil {
		t.Fatal(err)
	}
	if err := admin.Update(ctx, crd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		current := &unstructured.Unstructured{}
		current.SetGroupVersionKind(crd.GroupVersionKind())
		if err := admin.Get(ctx, client.ObjectKey{Name: "creditaccounts.hubcredits.io"}, current); err == nil {
			_ = unstructured.SetNestedField(current.Object, original.Object["spec"], "spec")
			_ = admin.Update(ctx, current)
		}
	})

	ns := newNamespace(t)
	create(t, testutil.MakeAccount(ns, "alice", "alice").Cap(100).Obj())
	opened(t, ns, "alice")
	account := func() *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(schema.GroupVersionKind{Group: "hubcredits.io", Version: "v1alpha1", Kind: "CreditAccount"})
		if err := admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "alice"}, u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	// The API server prunes the field until the new schema is in force.
	testutil.Eventually(t, 20*time.Second, func() error {
		u := account()
		if err := unstructured.SetNestedField(u.Object, "kept", "spec", "futureField"); err != nil {
			return err
		}
		if err := admin.Update(ctx, u); err != nil {
			return err
		}
		if v, _, _ := unstructured.NestedString(account().Object, "spec", "futureField"); v != "kept" {
			return fmt.Errorf("spec.futureField not stored yet")
		}
		return nil
	})

	for _, args := range [][]string{
		{"top-up", "alice", "5", "--reason", "skew"},
		{"adjust", "alice", "-3", "--reason", "skew"},
	} {
		if r := kubectlCredits(t, append(args, "-n", ns)...); r.code != 0 {
			t.Fatalf("%s: exit %d\n%s%s", args[0], r.code, r.out, r.err)
		}
		if v, _, _ := unstructured.NestedString(account().Object, "spec", "futureField"); v != "kept" {
			t.Fatalf("kubectl credits %s dropped spec.futureField (now %q)", args[0], v)
		}
	}
	a := getAccount(t, ns, "alice")
	if len(a.Spec.TopUps) != 1 || len(a.Spec.Adjustments) != 1 || a.Status.Balance != 102 {
		t.Errorf("after the top-up and the adjustment: %d top-ups, %d adjustments, balance %d; want 1, 1, 102",
			len(a.Spec.TopUps), len(a.Spec.Adjustments), a.Status.Balance)
	}
}
