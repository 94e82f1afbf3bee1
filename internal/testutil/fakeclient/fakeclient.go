// Package fakeclient is the one fake API server of the unit tests: the
// scheme, the status subresources and every field index the manager
// registers. It is apart from internal/testutil because the indexes know
// billing's ledger keys, and billing's own tests use testutil.
package fakeclient

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/indexer"
	"github.com/hubcredits/hubcredits/internal/scheme"
)

// New is a fake API server holding objs, with the status subresources and
// every field index the manager registers (indexer.WithIndexes), refusing
// as the manager's cache does a list by one of them without a namespace
// (indexer.CheckNamespaced). funcs injects faults; it may be nil.
func New(funcs *interceptor.Funcs, objs ...client.Object) client.WithWatch {
	b := fake.NewClientBuilder().
		WithScheme(scheme.New()).
		WithStatusSubresource(&hcv1.CreditAccount{}, &hcv1.BillingPolicy{}, &hcv1.LedgerPage{})
	b = indexer.WithIndexes(b).WithObjects(objs...)
	if funcs != nil {
		b = b.WithInterceptorFuncs(*funcs)
	}
	return interceptor.NewClient(b.Build(), interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if err := indexer.CheckNamespaced(opts...); err != nil {
				return err
			}
			return c.List(ctx, list, opts...)
		},
	})
}
