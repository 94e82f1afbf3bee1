package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// period is the billing interval of the time-driven tests: short, so a test
// sees several boundaries, and long enough for a loaded 2-core machine.
const period = 2 * time.Second

// spawn admits a bound KubeSpawner-shaped pod and starts its clock at the
// current (whole) second, as a kubelet reports it.
func spawn(t *testing.T, ns, user, server string, label ...string) (*corev1.Pod, time.Time) {
	t.Helper()
	p := testutil.MakeKubeSpawnerPod(ns, user, server).Obj()
	p.Spec.NodeName = "node-1" // bound: deletion is graceful, as on a real node
	for i := 0; i+1 < len(label); i += 2 {
		p.Labels[label[i]] = label[i+1]
	}
	if err := createPod(p); err != nil {
		t.Fatalf("spawn of %s refused: %v", p.Name, err)
	}
	start := time.Now().Truncate(time.Second)
	setRunning(t, p, start)
	return p, start
}

// stopPod deletes a pod the way KubeSpawner does (grace 1s) in the middle of
// a period (timestamps have whole seconds; a deletion close to a boundary
// would make the expected count ambiguous), and returns the time the
// deletion was requested, as recorded by the API server.
func stopPod(t *testing.T, p *corev1.Pod, start time.Time) time.Time {
	t.Helper()
	since := time.Since(start)
	mid := start.Add(since - since%period + period/2 + 200*time.Millisecond)
	if mid.Before(time.Now()) {
		mid = mid.Add(period)
	}
	time.Sleep(time.Until(mid))
	ctx := context.Background()
	if err := k8s.Delete(ctx, p, client.GracePeriodSeconds(1)); err != nil {
		t.Fatal(err)
	}
	got := &corev1.Pod{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(p), got); err != nil {
		t.Fatal(err)
	}
	if got.DeletionTimestamp == nil {
		t.Fatal("pod deleted without a deletionTimestamp")
	}
	return got.DeletionTimestamp.Add(-time.Duration(*got.DeletionGracePeriodSeconds) * time.Second)
}

// forget removes a terminating pod for good (no kubelet here to finish it).
func forget(t *testing.T, p *corev1.Pod) {
	t.Helper()
	err := k8s.Delete(context.Background(), p, client.GracePeriodSeconds(0))
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
}

// owed is what a server that ran from start to end owes: (k+1)·value, k the
// boundaries it lived through.
func owed(start, end time.Time, value int64) int64 {
	return value * billing.PeriodsDue(start, end, period, true)
}

func TestBillingChargesEachBoundaryExactlyOnce(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createPolicy(t, testutil.MakePolicy(ns, "fast").Value(10).Every(period).Obj())
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(1000).Obj())
	p, start := spawn(t, ns, "alice", "")
	// Charged at each boundary while it runs: after 3 boundaries, 40.
	testutil.Eventually(t, 4*period+5*time.Second, func() error {
		a := testutil.GetAccount(t, k8s, ns, "alice")
		if a.Status.TotalCharged < 40 {
			return fmt.Errorf("charged %d so far", a.Status.TotalCharged)
		}
		if a.Status.RunningServers != 1 {
			return fmt.Errorf("runningServers %d", a.Status.RunningServers)
		}
		return nil
	})
	end := stopPod(t, p, start)
	want := 1000 - owed(start, end, 10)
	testutil.Eventually(t, 10*time.Second, balanceIs(t, ns, "alice", want))
	forget(t, p)
	testutil.Consistently(t, period+time.Second, balanceIs(t, ns, "alice", want))
	a := testutil.GetAccount(t, k8s, ns, "alice")
	if len(a.Status.Servers) != 0 || a.Status.RunningServers != 0 {
		t.Fatalf("settled server still listed: %+v", a.Status.Servers)
	}
}

// TestBillingExactAcrossRestartsAndTwoManagers runs two billing managers at
// once (no leader election: correctness must not depend on it), stops both
// for two boundaries, restarts one (catch-up), and checks the charge to the
// credit.
func TestBillingExactAcrossRestartsAndTwoManagers(t *testing.T) {
	ns := newNamespace(t)
	m1 := startBilling(t, ns, nil)
	m2 := startBilling(t, ns, nil)
	createPolicy(t, testutil.MakePolicy(ns, "fast").Value(7).Every(period).Obj())
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(10000).Obj())
	p, start := spawn(t, ns, "alice", "")
	testutil.Eventually(t, 3*period+5*time.Second, func() error {
		if c := testutil.GetAccount(t, k8s, ns, "alice").Status.TotalCharged; c < 21 {
			return fmt.Errorf("charged %d", c)
		}
		return nil
	})
	m1.Stop()
	m2.Stop()
	time.Sleep(2*period + 500*time.Millisecond) // boundaries pass with no operator
	startBilling(t, ns, nil)
	// Catch-up: every boundary that passed is charged on start.
	testutil.Eventually(t, 10*time.Second, func() error {
		a := testutil.GetAccount(t, k8s, ns, "alice")
		want := 7 * billing.PeriodsDue(start, time.Now().Add(-time.Second), period, false)
		if a.Status.TotalCharged < want {
			return fmt.Errorf("charged %d, want at least %d", a.Status.TotalCharged, want)
		}
		return nil
	})
	end := stopPod(t, p, start)
	want := 10000 - owed(start, end, 7)
	testutil.Eventually(t, 10*time.Second, balanceIs(t, ns, "alice", want))
	forget(t, p)
	testutil.Consistently(t, period, balanceIs(t, ns, "alice", want))
}

// TestBillingServerEndedWhileOperatorDown: the documented rule in the user's
// favour — nothing is charged beyond what was paid when it was last seen.
func TestBillingServerEndedWhileOperatorDown(t *testing.T) {
	ns := newNamespace(t)
	m := startBilling(t, ns, nil)
	createPolicy(t, testutil.MakePolicy(ns, "fast").Value(10).Every(period).Obj())
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(1000).Obj())
	p, _ := spawn(t, ns, "alice", "")
	testutil.Eventually(t, 10*time.Second, func() error {
		if len(testutil.GetAccount(t, k8s, ns, "alice").Status.Servers) != 1 || testutil.GetAccount(t, k8s, ns, "alice").Status.Servers[0].StartedAt == nil {
			return fmt.Errorf("not running yet")
		}
		return nil
	})
	m.Stop()
	paid := testutil.GetAccount(t, k8s, ns, "alice").Status.Balance
	time.Sleep(2 * period)
	forget(t, p)
	startBilling(t, ns, nil)
	testutil.Eventually(t, 10*time.Second, func() error {
		a := testutil.GetAccount(t, k8s, ns, "alice")
		if len(a.Status.Servers) != 0 {
			return fmt.Errorf("not settled yet")
		}
		if a.Status.Balance != paid {
			return fmt.Errorf("balance %d, want %d", a.Status.Balance, paid)
		}
		return nil
	})
}

func TestBillingProjectPaysFirst(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createPolicy(t, testutil.MakePolicy(ns, "fast").Value(10).Every(period).Obj())
	createAccount(t, testutil.MakeAccount(ns, "physics").Cap(1000).InitialBalance(15).Obj())
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(1000).InitialBalance(100).Project("physics").Obj())
	p, start := spawn(t, ns, "alice", "")
	if a := testutil.GetAccount(t, k8s, ns, "physics"); a.Status.Balance != 5 {
		t.Fatalf("the pool paid %d of the reservation, want 10", 15-a.Status.Balance)
	}
	testutil.Eventually(t, 3*period+5*time.Second, func() error {
		if b := testutil.GetAccount(t, k8s, ns, "alice").Status.Balance; b > 85 {
			return fmt.Errorf("wallet balance %d", b)
		}
		return nil
	})
	end := stopPod(t, p, start)
	total := owed(start, end, 10)
	testutil.Eventually(t, 10*time.Second, func() error {
		pool, wallet := testutil.GetAccount(t, k8s, ns, "physics"), testutil.GetAccount(t, k8s, ns, "alice")
		if pool.Status.Balance != 0 || wallet.Status.Balance != 100-(total-15) {
			return fmt.Errorf("pool %d wallet %d; want 0 and %d (total %d)", pool.Status.Balance, wallet.Status.Balance, 100-(total-15), total)
		}
		if len(pool.Status.Servers)+len(wallet.Status.Servers) != 0 {
			return fmt.Errorf("entries left: pool %d wallet %d", len(pool.Status.Servers), len(wallet.Status.Servers))
		}
		return nil
	})
	forget(t, p)
}

func TestGrantsReachTheCapAndTopUpsApplyOnce(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(20).InitialBalance(0).Grant(5, time.Second).Obj())
	testutil.Eventually(t, 15*time.Second, balanceIs(t, ns, "alice", 20))
	testutil.Consistently(t, 2*time.Second, balanceIs(t, ns, "alice", 20))
	a := testutil.GetAccount(t, k8s, ns, "alice")
	// No drift: the schedule stays on whole intervals from the creation.
	if d := a.Status.GrantedThrough.Sub(a.CreationTimestamp.Time); d%time.Second != 0 || d < 4*time.Second {
		t.Fatalf("grantedThrough %v is off the schedule (creation %v)", a.Status.GrantedThrough, a.CreationTimestamp)
	}
	// A top-up goes above the cap, once; removing it and adding it again
	// does not apply it twice.
	for i, topUps := range [][]hcv1.TopUp{{{ID: "workshop", Amount: 30, Reason: "workshop"}}, nil, {{ID: "workshop", Amount: 30}}} {
		setTopUps(t, ns, "alice", topUps)
		if i == 0 {
			testutil.Eventually(t, 5*time.Second, balanceIs(t, ns, "alice", 50))
		}
	}
	testutil.Consistently(t, 2*time.Second, balanceIs(t, ns, "alice", 50))
}

func TestFreeServersAreNeverCharged(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createPolicy(t, testutil.MakePolicy(ns, "free").Value(0).Every(time.Second).Obj())
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").InitialBalance(5).Obj())
	p, _ := spawn(t, ns, "alice", "")
	testutil.Eventually(t, 5*time.Second, balanceIs(t, ns, "alice", 5))
	testutil.Consistently(t, 3*time.Second, balanceIs(t, ns, "alice", 5))
	forget(t, p)
}

// TestReservationOfPodThatNeverRanIsRefunded: a pod deleted while pending
// (image pull, user-scheduler) gets its reservation back.
func TestReservationOfPodThatNeverRanIsRefunded(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").InitialBalance(50).Obj())
	p := testutil.MakeKubeSpawnerPod(ns, "alice", "").Obj()
	if err := createPod(p); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if a := testutil.GetAccount(t, k8s, ns, "alice"); len(a.Status.Servers) != 1 || a.Status.Servers[0].PodUID == "" {
			return fmt.Errorf("reservation not bound to the pod yet")
		}
		return nil
	})
	forget(t, p)
	testutil.Eventually(t, 10*time.Second, balanceIs(t, ns, "alice", 50))
}

// fakeHub records the stop calls JupyterHub would receive, and stops the
// server the way KubeSpawner does: by deleting the pod.
type fakeHub struct {
	mu    sync.Mutex
	calls []string
	ns    string
}

func (h *fakeHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.calls = append(h.calls, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
	h.mu.Unlock()
	if r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, "/hub/api/users/") {
		user := strings.Split(strings.TrimPrefix(r.URL.Path, "/hub/api/users/"), "/")[0]
		_ = k8s.Delete(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "jupyter-" + user}}, client.GracePeriodSeconds(1))
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.WriteHeader(http.StatusNotFound)
}

func (h *fakeHub) Calls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.calls...)
}

func TestUnpaidServerIsStoppedThroughTheHubAPI(t *testing.T) {
	ns := newNamespace(t)
	hub := &fakeHub{ns: ns}
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
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(100).InitialBalance(25).Obj())
	p, _ := spawn(t, ns, "alice", "")
	// 10 reserved, 10 at the first boundary, the second cannot be paid.
	testutil.Eventually(t, 3*period+10*time.Second, func() error {
		calls := hub.Calls()
		if len(calls) == 0 {
			return fmt.Errorf("the hub was not asked to stop the server")
		}
		if calls[0] != "DELETE /hub/api/users/alice/server token svc-token" {
			return fmt.Errorf("hub call %q", calls[0])
		}
		return nil
	})
	testutil.Eventually(t, 10*time.Second, func() error {
		a := testutil.GetAccount(t, k8s, ns, "alice")
		if a.Status.Balance != 5 {
			return fmt.Errorf("balance %d, want 5 (nothing charged for the unpaid period)", a.Status.Balance)
		}
		c := meta.FindStatusCondition(a.Status.Conditions, hcv1.ConditionExhausted)
		if c == nil || c.Status != metav1.ConditionTrue || c.Message != "Stopped: account alice has 5 credits, the next 2s costs 10." {
			return fmt.Errorf("Exhausted condition %+v", c)
		}
		return nil
	})
	wantEvent(t, ns, p.Name, "CreditsExhausted", "Stopped: account alice has 5 credits, the next 2s costs 10.")
	forget(t, p)
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := len(testutil.GetAccount(t, k8s, ns, "alice").Status.Servers); n != 0 {
			return fmt.Errorf("%d servers left", n)
		}
		return nil
	})
}

func TestUnpaidServerPodIsDeletedWithoutAHubAPI(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createPolicy(t, testutil.MakePolicy(ns, "fast").Value(10).Every(period).Obj())
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(100).InitialBalance(10).Obj())
	p, _ := spawn(t, ns, "alice", "")
	testutil.Eventually(t, 2*period+10*time.Second, func() error {
		got := &corev1.Pod{}
		if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: p.Name}, got); err != nil {
			return client.IgnoreNotFound(err)
		}
		if got.DeletionTimestamp == nil {
			return fmt.Errorf("pod not deleted yet")
		}
		return nil
	})
	testutil.Consistently(t, period, balanceIs(t, ns, "alice", 0))
	forget(t, p)
}

func wantEvent(t *testing.T, ns, object, reason, msg string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		var evs corev1.EventList
		if err := k8s.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == object && e.Reason == reason {
				if e.Message != msg {
					return fmt.Errorf("event %s on %s says %q, want %q", reason, object, e.Message, msg)
				}
				return nil
			}
		}
		return fmt.Errorf("no %s event on %s", reason, object)
	})
}

// setTopUps edits an account's spec as an admin would (kubectl edit),
// retrying when the operator wrote the status meanwhile.
func setTopUps(t *testing.T, ns, name string, topUps []hcv1.TopUp) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		a := testutil.GetAccount(t, k8s, ns, name)
		a.Spec.TopUps = topUps
		return k8s.Update(context.Background(), a)
	})
	if err != nil {
		t.Fatal(err)
	}
}
