package testutil

import (
	"context"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// GetAccount reads account ns/name from r, failing the test if it cannot.
func GetAccount(t testing.TB, r client.Reader, ns, name string) *hcv1.CreditAccount {
	t.Helper()
	a := &hcv1.CreditAccount{}
	if err := r.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, a); err != nil {
		t.Fatal(err)
	}
	return a
}
