package testutil

import (
	"context"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/indexer"
	"github.com/hubcredits/hubcredits/internal/scheme"
)

// NewFakeClient is a fake API server holding objs, with the status
// subresources and every field index the manager registers
// (indexer.WithIndexes). funcs injects faults; it may be nil.
func NewFakeClient(funcs *interceptor.Funcs, objs ...client.Object) client.WithWatch {
	b := fake.NewClientBuilder().
		WithScheme(scheme.New()).
		WithStatusSubresource(&hcv1.CreditAccount{}, &hcv1.BillingPolicy{})
	b = indexer.WithIndexes(b).WithObjects(objs...)
	if funcs != nil {
		b = b.WithInterceptorFuncs(*funcs)
	}
	return b.Build()
}

// GetAccount reads account ns/name from r, failing the test if it cannot.
func GetAccount(t testing.TB, r client.Reader, ns, name string) *hcv1.CreditAccount {
	t.Helper()
	a := &hcv1.CreditAccount{}
	if err := r.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, a); err != nil {
		t.Fatal(err)
	}
	return a
}
