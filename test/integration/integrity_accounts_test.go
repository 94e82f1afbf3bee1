package integration

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/controllers"
	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// Integrity of accounts, driven as an admin would: kubectl delete and
// re-apply of accounts while servers run, kubectl annotate to force a
// deletion, a hub that answers stops it does not carry out, a webhook
// replica whose clock lags, and top-ups removed and re-added.

var (
	kubeconfigOnce sync.Once
	kubeconfig     []byte
	kubeconfigErr  error
)

// kubectl runs bin/k8s/kubectl as a cluster admin in namespace ns. The
// admin's kubeconfig is made once and written into each test's own
// temporary directory.
func kubectl(t *testing.T, ns string, stdin string, args ...string) string {
	t.Helper()
	kubeconfigOnce.Do(func() { kubeconfig, kubeconfigErr = env.AdminKubeconfig() })
	if kubeconfigErr != nil {
		t.Fatal(kubeconfigErr)
	}
	kubeconfigPath := filepath.Join(t.TempDir(), "admin.kubeconfig")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join("..", "..", "bin", "k8s", "kubectl"), append([]string{"--kubeconfig", kubeconfigPath, "-n", ns}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// accountManifest is the YAML an admin keeps in Git for alice's wallet.
func accountManifest(ns string) string {
	return fmt.Sprintf(`apiVersion: hubcredits.io/v1alpha1
kind: CreditAccount
metadata:
  name: alice
  namespace: %s
spec:
  users: [alice]
  cap: 1000
  initialBalance: 100
  topUps:
  - id: welcome
    amount: 50
`, ns)
}

// errNoTombstone: the tombstone ConfigMap holds no key for the account.
var errNoTombstone = errors.New("no tombstone")

// tombstones is the data of the namespace's tombstone ConfigMap.
func tombstones(ns string) (map[string]string, error) {
	cm := &corev1.ConfigMap{}
	err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: controllers.DefaultTombstoneConfigMap}, cm)
	return cm.Data, err
}

// tombstone is account's tombstone (errNoTombstone: none).
func tombstone(t *testing.T, ns, account string) (*billing.Tombstone, error) {
	t.Helper()
	data, err := tombstones(ns)
	if err != nil {
		return nil, err
	}
	v, ok := data[account]
	if !ok {
		return nil, errNoTombstone
	}
	tomb, err := billing.DecodeTombstone(v)
	return &tomb, err
}

func accountGone(ns, name string) func() error {
	return func() error {
		err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &hcv1.CreditAccount{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("account %s still there", name)
	}
}

func claimed(t *testing.T, ns, name string) func() error {
	return func() error {
		a := testutil.GetAccount(t, k8s, ns, name)
		if !slices.Contains(a.Finalizers, hcv1.FinalizerLedger) || a.Status.OpenedAt == nil {
			return fmt.Errorf("account %s: finalizers %v, opened %v", name, a.Finalizers, a.Status.OpenedAt != nil)
		}
		return nil
	}
}

// TestDeletedAccountIsHeldWhileItsServerRunsAndReappliedWithoutDoublingCredits:
// kubectl delete of a wallet whose server runs is held (and the server
// billed) until the server ends; the re-applied manifest opens with the
// balance the deleted account ended with, and its top-up is not applied
// again.
func TestDeletedAccountIsHeldWhileItsServerRunsAndReappliedWithoutDoublingCredits(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createPolicy(t, testutil.MakePolicy(ns, "fast").Value(10).Every(period).Obj())
	kubectl(t, ns, accountManifest(ns), "apply", "-f", "-")
	testutil.Eventually(t, 10*time.Second, claimed(t, ns, "alice"))
	testutil.Eventually(t, 10*time.Second, balanceIs(t, ns, "alice", 150))
	p, start := spawn(t, ns, "alice", "")

	out := kubectl(t, ns, "", "delete", "creditaccount", "alice", "--wait=false")
	if !strings.Contains(out, "deleted") {
		t.Fatalf("kubectl delete: %s", out)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		a := testutil.GetAccount(t, k8s, ns, "alice")
		c := meta.FindStatusCondition(a.Status.Conditions, hcv1.ConditionDeletionHeld)
		if a.DeletionTimestamp == nil || c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("deletion %v, DeletionHeld %+v", a.DeletionTimestamp, c)
		}
		return nil
	})
	wantEventReason(t, ns, "alice", controllers.EventDeletionHeld)
	t.Log(kubectl(t, ns, "", "get", "ca", "alice", "-o", `jsonpath={.status.conditions[?(@.type=="DeletionHeld")].message}`))
	// Still billed while held.
	charged := testutil.GetAccount(t, k8s, ns, "alice").Status.TotalCharged
	testutil.Eventually(t, 2*period+5*time.Second, func() error {
		if got := testutil.GetAccount(t, k8s, ns, "alice").Status.TotalCharged; got <= charged {
			return fmt.Errorf("charged %d, not more than %d when the deletion was held", got, charged)
		}
		return nil
	})
	end := stopPod(t, p, start)
	forget(t, p)
	testutil.Eventually(t, 15*time.Second, accountGone(ns, "alice"))
	want := 150 - owed(start, end, 10)
	tomb, err := tombstone(t, ns, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if tomb.Balance != want || !slices.Equal(tomb.TopUps, []string{"welcome"}) || tomb.Forced {
		t.Fatalf("tombstone %+v, want balance %d and the top-up welcome", tomb, want)
	}
	t.Log(kubectl(t, ns, "", "get", "cm", controllers.DefaultTombstoneConfigMap, "-o", "jsonpath={.data.alice}"))

	// The admin applies the same manifest again.
	kubectl(t, ns, accountManifest(ns), "apply", "-f", "-")
	testutil.Eventually(t, 10*time.Second, claimed(t, ns, "alice"))
	testutil.Consistently(t, period, balanceIs(t, ns, "alice", want))
	a := testutil.GetAccount(t, k8s, ns, "alice")
	if a.Status.ReopenedFrom == "" || a.Status.TotalToppedUp != 0 || !slices.Equal(a.Status.AppliedTopUps, []string{"welcome"}) {
		t.Fatalf("re-created account: reopenedFrom %q, toppedUp %d, applied %v", a.Status.ReopenedFrom, a.Status.TotalToppedUp, a.Status.AppliedTopUps)
	}
	wantEventReason(t, ns, "alice", controllers.EventAccountReopened)
	testutil.Eventually(t, 10*time.Second, func() error {
		_, err := tombstone(t, ns, "alice")
		switch {
		case errors.Is(err, errNoTombstone):
			return nil
		case err != nil:
			return err
		}
		return fmt.Errorf("tombstone still there once taken over")
	})
}

// TestReappliedAccountOpenedByASpawnBeforeTheOperatorSawIt: the operator is
// down when the admin re-applies the account and the user spawns; the
// webhook opens the account from its spec (initialBalance and the top-up
// again). When the operator comes back it corrects the account to the
// tombstone's balance, less the reservation.
func TestReappliedAccountOpenedByASpawnBeforeTheOperatorSawIt(t *testing.T) {
	ns := newNamespace(t)
	billingMgr := startBilling(t, ns, nil)
	createPolicy(t, testutil.MakePolicy(ns, "fast").Value(10).Every(period).Obj())
	kubectl(t, ns, accountManifest(ns), "apply", "-f", "-")
	testutil.Eventually(t, 10*time.Second, claimed(t, ns, "alice"))
	// Spend some, with a short server.
	p, start := spawn(t, ns, "alice", "")
	end := stopPod(t, p, start)
	forget(t, p)
	want := 150 - owed(start, end, 10)
	testutil.Eventually(t, 10*time.Second, func() error {
		a := testutil.GetAccount(t, k8s, ns, "alice")
		if len(a.Status.Servers) != 0 || a.Status.Balance != want {
			return fmt.Errorf("balance %d with %d servers, want %d and none", a.Status.Balance, len(a.Status.Servers), want)
		}
		return nil
	})
	kubectl(t, ns, "", "delete", "creditaccount", "alice")
	if _, err := tombstone(t, ns, "alice"); err != nil {
		t.Fatal(err)
	}
	billingMgr.Stop()

	kubectl(t, ns, accountManifest(ns), "apply", "-f", "-")
	p2, _ := spawn(t, ns, "alice", "")
	a := testutil.GetAccount(t, k8s, ns, "alice")
	if a.Status.Balance != 150-10 {
		t.Fatalf("the webhook opened the account with %d, want 140 (the spec's 100 + 50, less the reservation)", a.Status.Balance)
	}
	// What Reopen will take back, as the API server stored it.
	if got, want := a.Status.AppliedAmounts, []hcv1.AppliedAmount{{ID: "welcome", Kind: hcv1.LedgerTopUp, Amount: 50}}; !slices.Equal(got, want) {
		t.Fatalf("status.appliedAmounts = %+v, want %+v", got, want)
	}
	startBilling(t, ns, nil)
	testutil.Eventually(t, 10*time.Second, func() error {
		a := testutil.GetAccount(t, k8s, ns, "alice")
		if a.Status.ReopenedFrom == "" {
			return fmt.Errorf("not reopened yet")
		}
		if a.Status.Balance > want-10 {
			return fmt.Errorf("balance %d, want at most %d (the tombstone's, less the reservation)", a.Status.Balance, want-10)
		}
		if a.Status.TotalToppedUp != 0 {
			return fmt.Errorf("toppedUp %d: the top-up counts twice", a.Status.TotalToppedUp)
		}
		if a.Status.AppliedAmounts != nil {
			return fmt.Errorf("status.appliedAmounts still %+v after the claim", a.Status.AppliedAmounts)
		}
		return nil
	})
	forget(t, p2)
}

// TestTombstonesOfAccountsDeletedTogetherAndAFullStore: five accounts
// deleted by one kubectl delete all land in the one tombstone ConfigMap
// (each write carries its resourceVersion: none overwrites another). Then
// the ConfigMap is full: the next deletion is held (DeletionHeld,
// TombstoneStoreFull) with every tombstone kept, until the admin removes a
// key; the account is then released with its tombstone.
func TestTombstonesOfAccountsDeletedTogetherAndAFullStore(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	ctx := context.Background()
	var names []string
	var manifests strings.Builder
	for i := 1; i <= 5; i++ {
		name := fmt.Sprintf("user%d", i)
		names = append(names, name)
		fmt.Fprintf(&manifests, "---\napiVersion: hubcredits.io/v1alpha1\nkind: CreditAccount\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n  users: [%s]\n  cap: 1000\n  initialBalance: %d\n", name, ns, name, 10*i)
	}
	kubectl(t, ns, manifests.String(), "apply", "-f", "-")
	for _, name := range names {
		testutil.Eventually(t, 10*time.Second, claimed(t, ns, name))
	}
	kubectl(t, ns, "", append([]string{"delete", "creditaccount", "--wait=false"}, names...)...)
	for _, name := range names {
		testutil.Eventually(t, 15*time.Second, accountGone(ns, name))
	}
	for i, name := range names {
		tomb, err := tombstone(t, ns, name)
		if err != nil || tomb.Balance != int64(10*(i+1)) {
			t.Errorf("tombstone of %s: %+v (%v), want balance %d", name, tomb, err, 10*(i+1))
		}
	}

	// An admin's note fills the ConfigMap to its limit.
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: controllers.DefaultTombstoneConfigMap}, cm); err != nil {
		t.Fatal(err)
	}
	used := 0
	for k, v := range cm.Data {
		used += len(k) + len(v)
	}
	cm.Data["filler"] = strings.Repeat("x", controllers.TombstonesMaxBytes-used-len("filler")-10)
	if err := k8s.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	kubectl(t, ns, accountManifest(ns), "apply", "-f", "-")
	testutil.Eventually(t, 10*time.Second, claimed(t, ns, "alice"))
	kubectl(t, ns, "", "delete", "creditaccount", "alice", "--wait=false")
	testutil.Eventually(t, 10*time.Second, func() error {
		a := testutil.GetAccount(t, k8s, ns, "alice")
		c := meta.FindStatusCondition(a.Status.Conditions, hcv1.ConditionDeletionHeld)
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != hcv1.ReasonTombstoneStoreFull {
			return fmt.Errorf("DeletionHeld %+v, want TombstoneStoreFull", c)
		}
		return nil
	})
	wantEventReason(t, ns, "alice", controllers.EventDeletionHeld)
	t.Log(kubectl(t, ns, "", "get", "ca", "alice", "-o", `jsonpath={.status.conditions[?(@.type=="DeletionHeld")].message}`))
	data, err := tombstones(ns)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := data["alice"]; ok || len(data) != len(names)+1 {
		t.Fatalf("tombstones %d keys (alice's %v), want the %d there were", len(data), ok, len(names)+1)
	}

	// The admin prunes the note (kubectl edit cm hubcredits-tombstones).
	kubectl(t, ns, "", "patch", "configmap", controllers.DefaultTombstoneConfigMap, "--type=json", "-p", `[{"op":"remove","path":"/data/filler"}]`)
	testutil.Eventually(t, 25*time.Second, accountGone(ns, "alice"))
	if tomb, err := tombstone(t, ns, "alice"); err != nil || tomb.Balance != 150 {
		t.Fatalf("alice's tombstone %+v (%v), want balance 150", tomb, err)
	}
	for _, name := range names {
		if _, err := tombstone(t, ns, name); err != nil {
			t.Errorf("tombstone of %s: %v", name, err)
		}
	}
}

// TestForceDeletedAccountStopsItsServers: kubectl annotate
// hubcredits.io/force-delete=true releases a held account; its server is
// stopped (its pod deleted) and the tombstone says it was forced.
func TestForceDeletedAccountStopsItsServers(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createPolicy(t, testutil.MakePolicy(ns, "fast").Value(10).Every(period).Obj())
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(1000).Obj())
	testutil.Eventually(t, 10*time.Second, claimed(t, ns, "alice"))
	p, _ := spawn(t, ns, "alice", "")
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := testutil.GetAccount(t, k8s, ns, "alice").Status.RunningServers; n != 1 {
			return fmt.Errorf("%d running servers", n)
		}
		return nil
	})
	kubectl(t, ns, "", "delete", "ca", "alice", "--wait=false")
	testutil.Eventually(t, 10*time.Second, func() error {
		if !meta.IsStatusConditionTrue(testutil.GetAccount(t, k8s, ns, "alice").Status.Conditions, hcv1.ConditionDeletionHeld) {
			return fmt.Errorf("deletion not held")
		}
		return nil
	})
	kubectl(t, ns, "", "annotate", "ca", "alice", hcv1.AnnotationForceDelete+"=true")
	testutil.Eventually(t, 10*time.Second, accountGone(ns, "alice"))
	testutil.Eventually(t, 10*time.Second, func() error {
		got := &corev1.Pod{}
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), got); err != nil {
			return client.IgnoreNotFound(err)
		}
		if got.DeletionTimestamp == nil {
			return fmt.Errorf("pod not deleted")
		}
		return nil
	})
	wantEventReason(t, ns, p.Name, controllers.EventDeletionForced)
	tomb, err := tombstone(t, ns, "alice")
	if err != nil || !tomb.Forced {
		t.Fatalf("tombstone %+v (%v), want forced", tomb, err)
	}
	forget(t, p)
}

// hubThatIgnoresStops answers every stop with 202 Accepted and does
// nothing, as a hub whose spawner is wedged does.
type hubThatIgnoresStops struct{ stops atomic.Int32 }

func (h *hubThatIgnoresStops) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodDelete {
		h.stops.Add(1)
	}
	w.WriteHeader(http.StatusAccepted)
}

// TestStopTheHubAcceptsButNeverCarriesOutIsEscalated: the hub answers 202 to
// every stop; after MaxHubStops of them the operator deletes the pod.
func TestStopTheHubAcceptsButNeverCarriesOutIsEscalated(t *testing.T) {
	ns := newNamespace(t)
	hub := &hubThatIgnoresStops{}
	srv := httptest.NewServer(hub)
	defer srv.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("svc-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	startBilling(t, ns, func(o *operator.Options) {
		o.HubURL, o.HubTokenFile = srv.URL+"/hub/api", tokenFile
	})
	createPolicy(t, testutil.MakePolicy(ns, "fast").Value(10).Every(period).Obj())
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(100).InitialBalance(15).Obj())
	p, _ := spawn(t, ns, "alice", "")
	// 10 reserved; the first boundary cannot be paid: stopped through the
	// hub, repeated every StopRetry (5 s here), then the pod is deleted.
	testutil.Eventually(t, period+2*5*time.Second+15*time.Second, func() error {
		got := &corev1.Pod{}
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), got); err != nil {
			return client.IgnoreNotFound(err)
		}
		if got.DeletionTimestamp == nil {
			return fmt.Errorf("pod not deleted; %d stops through the hub", hub.stops.Load())
		}
		return nil
	})
	if n := hub.stops.Load(); n != controllers.MaxHubStops {
		t.Errorf("%d stops through the hub before the pod was deleted, want %d", n, controllers.MaxHubStops)
	}
	wantEventReason(t, ns, p.Name, controllers.EventStopEscalated)
	testutil.Consistently(t, period, balanceIs(t, ns, "alice", 5))
	forget(t, p)
}

// TestReservationOfALaggingReplicaWaitsTheWholeGrace: a webhook replica
// 30 s behind writes a reservation whose pod never comes (its reservedAt
// looks older than the grace). It is refunded a whole grace after the
// controller saw it, not at once.
func TestReservationOfALaggingReplicaWaitsTheWholeGrace(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(100).Obj())
	testutil.Eventually(t, 10*time.Second, claimed(t, ns, "alice"))
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		a := testutil.GetAccount(t, k8s, ns, "alice")
		a.Status.Servers = append(a.Status.Servers, hcv1.ServerCharge{
			ID: "lagging-replica-1", Pod: "jupyter-alice", User: "alice", Wallet: "alice",
			BillingValue: 10, BillingInterval: metav1.Duration{Duration: time.Minute},
			ReservedAt: metav1.NewTime(time.Now().Add(-30 * time.Second)), PeriodsPaid: 1, Paid: 10,
		})
		a.Status.Balance -= 10
		a.Status.TotalCharged += 10
		return k8s.Status().Update(context.Background(), a)
	})
	if err != nil {
		t.Fatal(err)
	}
	written := time.Now()
	testutil.Consistently(t, testOrphanGrace-time.Second, balanceIs(t, ns, "alice", 90))
	testutil.Eventually(t, 10*time.Second, balanceIs(t, ns, "alice", 100))
	if waited := time.Since(written); waited < testOrphanGrace {
		t.Errorf("refunded %v after it appeared, before the grace (%v)", waited, testOrphanGrace)
	}
	wantEventReason(t, ns, "alice", controllers.EventGraceFromFirstSight)
}

// TestRemovedTopUpsAreRetiredAndBounded: an admin replaces the top-ups of
// an account edit after edit. Removed ids are retired (never applied again,
// also when re-added), status.appliedTopUps holds only the spec's, and an
// edit that would retire more than 512 is refused with a sentence.
func TestRemovedTopUpsAreRetiredAndBounded(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(100).InitialBalance(0).Obj())
	batch := func(name string) []hcv1.TopUp {
		var out []hcv1.TopUp
		for i := range 256 {
			out = append(out, hcv1.TopUp{ID: fmt.Sprintf("%s-%03d", name, i), Amount: 1})
		}
		return out
	}
	applied := func(balance int64, inSpec, retired int) func() error {
		return func() error {
			a := testutil.GetAccount(t, k8s, ns, "alice")
			if a.Status.Balance != balance || len(a.Status.AppliedTopUps) != inSpec || len(a.Status.RetiredTopUps) != retired {
				return fmt.Errorf("balance %d, %d applied, %d retired; want %d, %d, %d",
					a.Status.Balance, len(a.Status.AppliedTopUps), len(a.Status.RetiredTopUps), balance, inSpec, retired)
			}
			return nil
		}
	}
	setTopUps(t, ns, "alice", batch("a"))
	testutil.Eventually(t, 10*time.Second, applied(256, 256, 0))
	// Re-adding a removed id next to new ones: the new ones only.
	setTopUps(t, ns, "alice", append(batch("b")[:255], hcv1.TopUp{ID: "a-000", Amount: 1}))
	testutil.Eventually(t, 10*time.Second, applied(511, 256, 255))
	setTopUps(t, ns, "alice", batch("c"))
	testutil.Eventually(t, 10*time.Second, applied(767, 256, 511))
	// A fourth batch would retire 767.
	a := testutil.GetAccount(t, k8s, ns, "alice")
	a.Spec.TopUps = batch("d")
	err := k8s.Update(context.Background(), a)
	if err == nil || !strings.Contains(err.Error(), "at most 512 removed ids") {
		t.Fatalf("an edit retiring 767 top-ups: %v, want it refused", err)
	}
	t.Logf("refused: %v", err)
	testutil.Consistently(t, time.Second, applied(767, 256, 511))
}

// wantEventReason waits for an Event with reason on object.
func wantEventReason(t *testing.T, ns, object, reason string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		var evs corev1.EventList
		if err := k8s.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == object && e.Reason == reason {
				return nil
			}
		}
		return fmt.Errorf("no %s event on %s", reason, object)
	})
}
