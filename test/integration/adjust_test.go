package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// applyAccount server-side applies an account's spec as an admin's
// `kubectl apply --server-side` would: the same manifest applied twice is
// the same object.
func applyAccount(t *testing.T, ns, name string, spec map[string]any) error {
	t.Helper()
	body, err := json.Marshal(map[string]any{
		"apiVersion": "hubcredits.io/v1alpha1", "kind": "CreditAccount",
		"metadata": map[string]any{"name": name, "namespace": ns}, "spec": spec,
	})
	if err != nil {
		t.Fatal(err)
	}
	return clientset.RESTClient().Patch(types.ApplyPatchType).
		AbsPath("/apis/hubcredits.io/v1alpha1/namespaces", ns, "creditaccounts", name).
		Param("fieldManager", "admin").Param("force", "true").
		Body(body).Do(context.Background()).Error()
}

func adjustments(list ...hcv1.Adjustment) []any {
	out := []any{}
	for _, j := range list {
		out = append(out, map[string]any{"id": j.ID, "amount": j.Amount, "reason": j.Reason})
	}
	return out
}

// conservedAccount checks an account against its own status: balance =
// opened + granted + toppedUp + adjusted − charged + refunded.
func conservedAccount(t *testing.T, ns, name string, opened int64) func() error {
	return func() error {
		st := testutil.GetAccount(t, k8s, ns, name).Status
		if want := opened + st.TotalGranted + st.TotalToppedUp + st.TotalAdjusted - st.TotalCharged + st.TotalRefunded; st.Balance != want {
			return fmt.Errorf("%s is not conserved: balance %d, but opened %d + granted %d + toppedUp %d + adjusted %d - charged %d + refunded %d = %d",
				name, st.Balance, opened, st.TotalGranted, st.TotalToppedUp, st.TotalAdjusted, st.TotalCharged, st.TotalRefunded, want)
		}
		return nil
	}
}

// TestAdjustmentsApplyOnce: an admin corrects a balance up and down. Each
// adjustment is applied once: when the manifest is applied again, when it
// is edited while the operator is down and two replicas start together,
// and when entries are removed and added again. A negative adjustment stops
// at 0, and its amount cannot be changed once listed.
func TestAdjustmentsApplyOnce(t *testing.T) {
	ns := newNamespace(t)
	m := startBilling(t, ns, nil)
	fix := hcv1.Adjustment{ID: "fix-1", Amount: -30, Reason: "double grant"}
	bonus := hcv1.Adjustment{ID: "bonus-1", Amount: 50, Reason: "outage"}
	spec := map[string]any{"users": []string{"alice"}, "cap": 100, "adjustments": adjustments(fix)}
	if err := applyAccount(t, ns, "alice", spec); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, balanceIs(t, ns, "alice", 70))
	for range 3 { // re-applied: nothing moves
		if err := applyAccount(t, ns, "alice", spec); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Consistently(t, 2*time.Second, balanceIs(t, ns, "alice", 70))

	// The amount of a listed adjustment is fixed.
	changed := fix
	changed.Amount = -3
	err := applyAccount(t, ns, "alice", map[string]any{"users": []string{"alice"}, "cap": 100, "adjustments": adjustments(changed)})
	if err == nil || !strings.Contains(err.Error(), "the amount of an adjustment cannot change once listed") {
		t.Fatalf("changing an adjustment's amount: %v, want it refused", err)
	}

	// Crash: the operator is down while the admin adds an adjustment and
	// applies it twice; two replicas start at once.
	m.Stop()
	spec["adjustments"] = adjustments(fix, bonus)
	for range 2 {
		if err := applyAccount(t, ns, "alice", spec); err != nil {
			t.Fatal(err)
		}
	}
	startBilling(t, ns, nil)
	startBilling(t, ns, nil)
	testutil.Eventually(t, 10*time.Second, balanceIs(t, ns, "alice", 120))
	testutil.Consistently(t, 2*time.Second, balanceIs(t, ns, "alice", 120))

	// Removed, then added again: retired, never applied again.
	spec["adjustments"] = adjustments()
	if err := applyAccount(t, ns, "alice", spec); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if r := testutil.GetAccount(t, k8s, ns, "alice").Status.RetiredTopUps; !slices.Equal(r, []string{"bonus-1", "fix-1"}) {
			return fmt.Errorf("retired %v", r)
		}
		return nil
	})
	spec["adjustments"] = adjustments(fix, bonus)
	if err := applyAccount(t, ns, "alice", spec); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if a := testutil.GetAccount(t, k8s, ns, "alice").Status.AppliedTopUps; len(a) != 2 {
			return fmt.Errorf("applied %v", a)
		}
		return nil
	})
	testutil.Consistently(t, 2*time.Second, balanceIs(t, ns, "alice", 120))

	// A negative adjustment larger than the balance stops at 0.
	spec["adjustments"] = adjustments(fix, bonus, hcv1.Adjustment{ID: "close", Amount: -1000, Reason: "course over"})
	if err := applyAccount(t, ns, "alice", spec); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, balanceIs(t, ns, "alice", 0))
	a := testutil.GetAccount(t, k8s, ns, "alice")
	last := a.Status.Ledger[len(a.Status.Ledger)-1]
	if last.Kind != hcv1.LedgerAdjust || last.Amount != -120 || last.Subject != "close" || !strings.Contains(last.Message, "clamped to -120") {
		t.Fatalf("last ledger line %+v, want the clamped adjustment", last)
	}
	if a.Status.TotalAdjusted != -100 {
		t.Fatalf("totalAdjusted %d, want -30 + 50 - 120", a.Status.TotalAdjusted)
	}
	testutil.Consistently(t, time.Second, conservedAccount(t, ns, "alice", 100))
}

// TestLoweredBalanceStopsServersAtTheirNextBoundary: a negative adjustment
// does not take back what a running server already paid; the server runs
// out its paid period and is stopped at the boundary it cannot pay.
func TestLoweredBalanceStopsServersAtTheirNextBoundary(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createPolicy(t, testutil.MakePolicy(ns, "fast").Value(10).Every(period).Obj())
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(1000).Obj())
	p, start := spawn(t, ns, "alice", "")
	testutil.Eventually(t, 10*time.Second, func() error {
		if a := testutil.GetAccount(t, k8s, ns, "alice"); a.Status.RunningServers != 1 {
			return fmt.Errorf("runningServers %d", a.Status.RunningServers)
		}
		return nil
	})
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		a := testutil.GetAccount(t, k8s, ns, "alice")
		a.Spec.Adjustments = []hcv1.Adjustment{{ID: "close", Amount: -hcv1.MaxCredits, Reason: "course over"}}
		return k8s.Update(context.Background(), a)
	})
	if err != nil {
		t.Fatal(err)
	}
	adjustedAt := time.Now()
	testutil.Eventually(t, 10*time.Second, balanceIs(t, ns, "alice", 0))
	testutil.Eventually(t, 2*period+10*time.Second, func() error {
		got := &corev1.Pod{}
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), got); err != nil {
			return client.IgnoreNotFound(err)
		}
		if got.DeletionTimestamp == nil {
			return fmt.Errorf("pod not stopped yet")
		}
		return nil
	})
	stoppedAt := time.Now()
	a := testutil.GetAccount(t, k8s, ns, "alice")
	var e *hcv1.ServerCharge
	for i := range a.Status.Servers {
		e = &a.Status.Servers[i]
	}
	if e == nil || e.StopRequestedAt == nil || e.PaidThrough == nil {
		t.Fatalf("server entry %+v, want a stop requested", a.Status.Servers)
	}
	// The stop came at the first boundary after the adjustment, not before:
	// the period it had paid ran out.
	if stop, paid := e.StopRequestedAt.Time, e.PaidThrough.Time; stop.Before(paid.Add(-time.Second)) || paid.Before(adjustedAt.Truncate(time.Second)) {
		t.Fatalf("stop requested at %v, paid through %v (adjusted at %v, started %v, seen stopped %v)",
			e.StopRequestedAt, e.PaidThrough, adjustedAt, start, stoppedAt)
	}
	testutil.Consistently(t, period, balanceIs(t, ns, "alice", 0))
	testutil.Consistently(t, time.Second, conservedAccount(t, ns, "alice", 1000))
	forget(t, p)
}

// TestNegativeAdjustmentRacesSpawns: an admin lowers a balance while the
// account's users spawn. Whatever the order, the balance never goes below
// 0, the adjustment takes only what was left when it applied (all of it,
// or the balance then, leaving 0), every admitted server's first period is
// paid exactly once, and the account conserves.
func TestNegativeAdjustmentRacesSpawns(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(1000).InitialBalance(100).Obj())
	testutil.Eventually(t, 10*time.Second, balanceIs(t, ns, "alice", 100))
	const n, price, cut = 16, 10, 55
	admitted, _, _, other := spawnRace(ns, "alice", n, func() error {
		return retry.OnError(retry.DefaultRetry, apierrors.IsConflict, func() error {
			return applyAccount(t, ns, "alice", map[string]any{"users": []string{"alice"}, "cap": 1000, "initialBalance": 100,
				"adjustments": adjustments(hcv1.Adjustment{ID: "cut", Amount: -cut, Reason: "race"})})
		})
	})
	if len(other) > 0 {
		t.Fatalf("%d unexpected errors, first: %v", len(other), other[0])
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if a := testutil.GetAccount(t, k8s, ns, "alice"); !slices.Contains(a.Status.AppliedTopUps, "cut") {
			return fmt.Errorf("the adjustment is not applied yet")
		}
		return nil
	})
	a := testutil.GetAccount(t, k8s, ns, "alice").Status
	reserved := int64(len(a.Servers)) * price
	switch {
	case a.Balance < 0:
		t.Fatalf("balance %d below 0", a.Balance)
	case a.TotalAdjusted > 0 || a.TotalAdjusted < -cut:
		t.Fatalf("totalAdjusted %d, want between -%d and 0", a.TotalAdjusted, cut)
	case a.TotalAdjusted > -cut && a.Balance != 0:
		t.Fatalf("the adjustment was clamped to %d but the balance is %d, not 0", a.TotalAdjusted, a.Balance)
	case a.TotalCharged != reserved || int64(admitted)*price > reserved:
		t.Fatalf("charged %d for %d reservations (%d admitted), want %d each once", a.TotalCharged, len(a.Servers), admitted, price)
	}
	t.Logf("%d admitted, adjustment applied as %d, balance %d", admitted, a.TotalAdjusted, a.Balance)
	testutil.Consistently(t, time.Second, conservedAccount(t, ns, "alice", 100))
}
