package integration

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/testutil"
	"github.com/hubcredits/hubcredits/webhooks"
)

// TestReservationRetryAfterThePoolWasEmptied is issue 13's read finding on
// the real API server: the pool step's first write loses a real conflict
// (409) to another writer that empties the pool; the retry finds the pool
// empty and must take nothing from it, so the wallet pays the whole price
// and no entry claims a pool share. (Before the fix the wallet paid 6 and
// recorded 4 from a pool that paid nothing: 4 credits created.)
func TestReservationRetryAfterThePoolWasEmptied(t *testing.T) {
	ns := newNamespace(t)
	createAccount(t, testutil.MakeAccount(ns, "lab").Cap(100).InitialBalance(4).Obj())
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(100).Project("lab").Obj())
	// The operator opens both ledgers, then stops: only the Reserver writes.
	b := startBilling(t, ns, nil)
	testutil.Eventually(t, 10*time.Second, balanceIs(t, ns, "lab", 4))
	testutil.Eventually(t, 10*time.Second, balanceIs(t, ns, "alice", 100))
	b.Stop()
	ctx := context.Background()
	var raced atomic.Bool
	ww, err := client.NewWithWatch(env.Config, client.Options{Scheme: k8s.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	c := interceptor.NewClient(ww, interceptor.Funcs{
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			if obj.GetName() == "lab" && raced.CompareAndSwap(false, true) {
				// Another server's period empties the pool between our read
				// and our write.
				other := testutil.GetAccount(t, k8s, ns, "lab")
				other.Status.Balance = 0
				if err := k8s.Status().Update(ctx, other); err != nil {
					return err
				}
			}
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
	})
	r := &webhooks.Reserver{Client: c, APIReader: k8s, Clock: clock.RealClock{}}
	res := billing.Reservation{ID: "r1", Pod: "jupyter-alice", User: "alice", Wallet: "alice", Project: "lab",
		Price: billing.Price{Value: 10, Interval: 10 * time.Minute}}
	if err := r.Reserve(ctx, ns, res, testutil.GetAccount(t, k8s, ns, "alice"), testutil.GetAccount(t, k8s, ns, "lab")); err != nil {
		t.Fatalf("reserve: %v", err)
	}
	if !raced.Load() {
		t.Fatal("the pool was never written: the race did not happen")
	}
	wallet, pool := testutil.GetAccount(t, k8s, ns, "alice"), testutil.GetAccount(t, k8s, ns, "lab")
	if pool.Status.Balance != 0 || billing.FindServer(pool, "r1") >= 0 {
		t.Errorf("pool: balance %d, entry %v; want 0 and none", pool.Status.Balance, billing.FindServer(pool, "r1") >= 0)
	}
	i := billing.FindServer(wallet, "r1")
	if i < 0 {
		t.Fatal("the wallet holds no reservation")
	}
	if e := wallet.Status.Servers[i]; wallet.Status.Balance != 90 || e.Paid != 10 || e.ProjectPaid != 0 {
		t.Errorf("wallet: balance %d, paid %d with %d from the pool; want 90, 10 and 0", wallet.Status.Balance, e.Paid, e.ProjectPaid)
	}
}
