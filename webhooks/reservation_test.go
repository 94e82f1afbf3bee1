package webhooks

import (
	"context"
	"errors"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/testutil/fakeclient"
)

// The pool step loses its first write to a writer that empties the pool;
// its retry finds the pool empty and takes nothing. The wallet must then
// pay the whole price, and no entry may claim the pool paid.
//
// Issue 13: the closure once set paid only when it took, so the first
// attempt's 4 survived the retry that took nothing; the wallet paid 6 and
// its entry recorded ProjectPaid 4 that the pool never paid (13 credits
// moved for 20 of periods with two members spawning at once).
func TestReservePoolEmptiedDuringARetryTakesNothingFromIt(t *testing.T) {
	api := fakeclient.New(nil,
		openAccount("pool").Balance(4).Obj(),
		openAccount("alice", "alice").Balance(100).Project("pool").Obj(),
	)
	r, _ := newReserver(api, func(ctx context.Context, c client.Client, obj client.Object, n int32) error {
		if obj.GetName() == "pool" && n == 1 {
			other := &hcv1.CreditAccount{}
			if err := c.Get(ctx, poolKey, other); err != nil {
				return err
			}
			other.Status.Balance = 0 // another server's period charged first
			if err := c.Status().Update(ctx, other); err != nil {
				return err
			}
			return apierrors.NewConflict(schema.GroupResource{Group: "hubcredits.io", Resource: "creditaccounts"}, obj.GetName(), errors.New("the object has been modified"))
		}
		return c.Status().Update(ctx, obj)
	})
	res := billing.Reservation{ID: "req-alice", Pod: "jupyter-alice", User: "alice", Wallet: "alice",
		Price: billing.Price{Value: 10, Interval: 10 * time.Minute}}

	err := r.Reserve(context.Background(), testNS, res, getAccount(t, api, key(testNS, "alice")), getAccount(t, api, poolKey))

	if err != nil {
		t.Fatalf("the wallet can pay the whole price, but: %v", err)
	}
	wallet := getAccount(t, api, key(testNS, "alice"))
	i := billing.FindServer(wallet, "req-alice")
	if i < 0 {
		t.Fatal("no entry on the wallet")
	}
	if e := wallet.Status.Servers[i]; e.Paid != 10 || e.ProjectPaid != 0 || wallet.Status.Balance != 90 {
		t.Errorf("wallet balance %d, entry paid %d with %d from the pool; want 90, 10 and 0",
			wallet.Status.Balance, e.Paid, e.ProjectPaid)
	}
}
