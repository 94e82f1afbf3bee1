package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/controllers"
	"github.com/hubcredits/hubcredits/internal/metrics"
	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// Issue 13, "Ledger integrity under everyday faults and misuse": each test
// performs the fault the way an admin, a kubelet or PodGC would, on the real
// API server, and checks the ledgers to the credit.
//
// The metadata edits are kubectl-style merge patches made with the
// operator's own credentials, which the pod guard (pod-updates.hubcredits.io)
// lets through: they stand for the edits that happen while the guard is
// down with failurePolicy Ignore, or before it was installed. Status writes
// go through the pods/status subresource as strategic merge patches, as the
// kubelet and PodGC write them (there is no kubelet here).

// patchPod merge-patches a pod's metadata, as `kubectl annotate/label` does.
func patchPod(t *testing.T, p *corev1.Pod, patch string) {
	t.Helper()
	target := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}}
	if err := k8s.Patch(context.Background(), target, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatalf("patching pod %s with %s: %v", p.Name, patch, err)
	}
}

// patchPodStatus patches a pod's status through the pods/status subresource
// with a strategic merge patch, as the kubelet and PodGC do.
func patchPodStatus(t *testing.T, p *corev1.Pod, patch string) {
	t.Helper()
	target := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}}
	if err := k8s.Status().Patch(context.Background(), target, client.RawPatch(types.StrategicMergePatchType, []byte(patch))); err != nil {
		t.Fatalf("patching the status of pod %s: %v", p.Name, err)
	}
}

// midPeriod waits until the middle of the period after at least one more
// boundary of a server that started at start, and returns that time
// truncated to the second (what the API server records).
func midPeriod(start time.Time) time.Time {
	since := time.Since(start)
	mid := start.Add(since - since%period + period/2 + 200*time.Millisecond)
	if mid.Before(time.Now()) {
		mid = mid.Add(period)
	}
	time.Sleep(time.Until(mid))
	return time.Now().Truncate(time.Second)
}

// entryOf returns the account's entry for the pod with uid, if any.
func entryOf(a *hcv1.CreditAccount, uid types.UID) *hcv1.ServerCharge {
	for i := range a.Status.Servers {
		if e := &a.Status.Servers[i]; e.PodUID == uid {
			return e
		}
	}
	return nil
}

func decisions(decision string) float64 {
	return promtestutil.ToFloat64(metrics.IntegrityDecisions.WithLabelValues(decision))
}

// wantEventContaining waits for an Event with reason on object whose
// message contains part.
func wantEventContaining(t *testing.T, ns, object, reason, part string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		var evs corev1.EventList
		if err := k8s.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == object && e.Reason == reason && strings.Contains(e.Message, part) {
				return nil
			}
		}
		return fmt.Errorf("no %s event on %s containing %q", reason, object, part)
	})
}

// Row: an admin changed a running billed pod's hubcredits.io/account
// annotation. The account that admitted it keeps billing it, to the credit;
// the account it names now never pays.
func TestIntegrityAccountEditKeepsBillingTheAdmittingAccount(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createPolicy(t, testutil.MakePolicy(ns, "fast").Value(10).Every(period).Obj())
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(1000).Obj())
	createAccount(t, testutil.MakeAccount(ns, "lab", "bob").Cap(1000).Obj())
	p, start := spawn(t, ns, "alice", "")
	testutil.Eventually(t, 10*time.Second, func() error {
		if e := entryOf(testutil.GetAccount(t, k8s, ns, "alice"), p.UID); e == nil || e.StartedAt == nil {
			return fmt.Errorf("not running on alice's ledger yet")
		}
		return nil
	})
	edits := decisions(metrics.AccountEditIgnored)
	patchPod(t, p, `{"metadata":{"annotations":{"hubcredits.io/account":"lab"}}}`)
	wantEventContaining(t, ns, p.Name, billing.EventAccountEditIgnored, "account alice admitted it and keeps billing it")
	if got := decisions(metrics.AccountEditIgnored); got < edits+1 {
		t.Errorf("hubcredits_integrity_decisions_total{decision=%q} went from %v to %v", metrics.AccountEditIgnored, edits, got)
	}
	// Billed on through two more boundaries, by alice.
	charged := testutil.GetAccount(t, k8s, ns, "alice").Status.TotalCharged
	testutil.Eventually(t, 3*period+10*time.Second, func() error {
		if c := testutil.GetAccount(t, k8s, ns, "alice").Status.TotalCharged; c < charged+20 {
			return fmt.Errorf("alice charged %d since the edit, want 20", c-charged)
		}
		return nil
	})
	end := stopPod(t, p, start)
	want := 1000 - owed(start, end, 10)
	testutil.Eventually(t, 10*time.Second, balanceIs(t, ns, "alice", want))
	forget(t, p)
	testutil.Consistently(t, period, func() error {
		if err := balanceIs(t, ns, "alice", want)(); err != nil {
			return err
		}
		if lab := testutil.GetAccount(t, k8s, ns, "lab"); lab.Status.Balance != 1000 || len(lab.Status.Servers) != 0 || lab.Status.TotalCharged != 0 {
			return fmt.Errorf("lab paid: balance %d, charged %d, %d servers", lab.Status.Balance, lab.Status.TotalCharged, len(lab.Status.Servers))
		}
		return nil
	})
}

// Row: a pod created without the singleuser label (the webhook never saw
// it) was labelled singleuser and for a pool its user is not in. The pool
// never pays; the pod is reported, and stopped with --unbillable-pods=stop.
func TestIntegrityUnbillablePodIsReportedOrStopped(t *testing.T) {
	for _, mode := range []string{controllers.UnbillableReport, controllers.UnbillableStop} {
		t.Run(mode, func(t *testing.T) {
			ns := newNamespace(t)
			startBilling(t, ns, func(o *operator.Options) { o.UnbillablePods = mode })
			createPolicy(t, testutil.MakePolicy(ns, "fast").Value(10).Every(period).Obj())
			createAccount(t, testutil.MakeAccount(ns, "lab", "bob").Cap(1000).Obj())
			createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(1000).Obj())
			p := testutil.MakeKubeSpawnerPod(ns, "alice", "").Obj()
			delete(p.Labels, hcv1.ComponentLabel)
			if err := createPod(p); err != nil {
				t.Fatal(err)
			}
			if len(p.Annotations[hcv1.AnnotationReservation]) > 0 {
				t.Fatal("the webhook saw a pod without the singleuser label")
			}
			setRunning(t, p, time.Now().Truncate(time.Second))
			decision := metrics.Unbillable
			if mode == controllers.UnbillableStop {
				decision = metrics.UnbillableStopped
			}
			before := decisions(decision)
			patchPod(t, p, `{"metadata":{"labels":{"component":"singleuser-server","hubcredits.io/account":"lab"}}}`)
			wantEventContaining(t, ns, p.Name, billing.EventUnbillable, billing.NotMemberMessage("alice", "lab"))
			if got := decisions(decision); got < before+1 {
				t.Errorf("hubcredits_integrity_decisions_total{decision=%q} went from %v to %v", decision, before, got)
			}
			if mode == controllers.UnbillableStop {
				testutil.Eventually(t, 10*time.Second, func() error {
					got := &corev1.Pod{}
					err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), got)
					if err == nil && got.DeletionTimestamp == nil {
						return fmt.Errorf("the unbillable pod was not deleted")
					}
					return client.IgnoreNotFound(err)
				})
			}
			testutil.Consistently(t, 2*period, func() error {
				for _, name := range []string{"lab", "alice"} {
					if a := testutil.GetAccount(t, k8s, ns, name); a.Status.Balance != 1000 || len(a.Status.Servers) != 0 {
						return fmt.Errorf("%s paid for it: balance %d, %d servers", name, a.Status.Balance, len(a.Status.Servers))
					}
				}
				return nil
			})
			forget(t, p)
		})
	}
}

// Row: the pod was marked Failed while its container statuses still said
// running, as PodGC does to the pods of a lost node. The periods it used
// stay paid: it ends when the failure is seen, never at its start.
func TestIntegrityFailedWhileRunningKeepsUsedPeriods(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createPolicy(t, testutil.MakePolicy(ns, "fast").Value(10).Every(period).Obj())
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(1000).Obj())
	p, start := spawn(t, ns, "alice", "")
	testutil.Eventually(t, 3*period+10*time.Second, func() error {
		if c := testutil.GetAccount(t, k8s, ns, "alice").Status.TotalCharged; c < 20 {
			return fmt.Errorf("charged %d", c)
		}
		return nil
	})
	failed := midPeriod(start)
	patchPodStatus(t, p, fmt.Sprintf(`{"status":{"phase":"Failed","conditions":[{"type":"DisruptionTarget","status":"True",`+
		`"reason":"DeletionByPodGC","message":"PodGC: node node-1 no longer exists","lastTransitionTime":%q}]}}`,
		failed.UTC().Format(time.RFC3339)))
	want := 1000 - owed(start, failed, 10)
	testutil.Eventually(t, 10*time.Second, func() error {
		a := testutil.GetAccount(t, k8s, ns, "alice")
		if len(a.Status.Servers) != 0 {
			return fmt.Errorf("not settled yet")
		}
		if a.Status.Balance != want {
			return fmt.Errorf("balance %d, want %d (refunded %d)", a.Status.Balance, want, a.Status.TotalRefunded)
		}
		return nil
	})
	forget(t, p)
	testutil.Consistently(t, period, balanceIs(t, ns, "alice", want))
}

// Row: a project pool paid later periods (it was empty at admission and
// topped up after), then the server's end was seen late (the kubelet's
// report of its termination arrived after several boundaries). Each
// refunded period goes back to whoever paid it.
func TestIntegrityLateEndRefundsEachPayer(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createPolicy(t, testutil.MakePolicy(ns, "fast").Value(10).Every(period).Obj())
	createAccount(t, testutil.MakeAccount(ns, "lab").Cap(1000).InitialBalance(0).Obj())
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(1000).InitialBalance(100).Project("lab").Obj())
	p, start := spawn(t, ns, "alice", "")
	if a := testutil.GetAccount(t, k8s, ns, "alice"); a.Status.Balance != 90 {
		t.Fatalf("the wallet paid %d of the reservation, want all 10 (the pool is empty)", 100-a.Status.Balance)
	}
	setTopUps(t, ns, "lab", []hcv1.TopUp{{ID: "grant", Amount: 100}})
	testutil.Eventually(t, 4*period+10*time.Second, func() error {
		if lab := testutil.GetAccount(t, k8s, ns, "lab"); lab.Status.TotalToppedUp != 100 || lab.Status.Balance > 80 {
			return fmt.Errorf("the pool paid %d so far (topped up %d)", lab.Status.TotalToppedUp-lab.Status.Balance, lab.Status.TotalToppedUp)
		}
		return nil
	})
	// The server had stopped one second after it started.
	end := metav1.NewTime(start.Add(time.Second))
	patchPodStatus(t, p, fmt.Sprintf(`{"status":{"phase":"Succeeded","containerStatuses":[{"name":"notebook","ready":false,"restartCount":0,`+
		`"image":%q,"imageID":"","state":{"terminated":{"exitCode":0,"reason":"Completed","startedAt":%q,"finishedAt":%q}}}]}}`,
		p.Spec.Containers[0].Image, start.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339)))
	// Period 0 (the wallet's reservation) was used; every later period goes
	// back to whoever paid it: the pool gets its whole top-up back.
	testutil.Eventually(t, 10*time.Second, func() error {
		lab, wallet := testutil.GetAccount(t, k8s, ns, "lab"), testutil.GetAccount(t, k8s, ns, "alice")
		if lab.Status.Balance != 100 || wallet.Status.Balance != 90 {
			return fmt.Errorf("pool %d, wallet %d; want 100 and 90", lab.Status.Balance, wallet.Status.Balance)
		}
		if len(lab.Status.Servers)+len(wallet.Status.Servers) != 0 {
			return fmt.Errorf("entries left: pool %d, wallet %d", len(lab.Status.Servers), len(wallet.Status.Servers))
		}
		return nil
	})
	forget(t, p)
	testutil.Consistently(t, period, balanceIs(t, ns, "lab", 100))
}

// Row: a pod's reservation was returned while the pod was out of the
// controller's sight (its singleuser label removed for a moment), then it
// ran. It is adopted again and billed from when it is seen running.
func TestIntegrityLostReservationIsReadopted(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createPolicy(t, testutil.MakePolicy(ns, "fast").Value(10).Every(period).Obj())
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(1000).InitialBalance(100).Obj())
	p := testutil.MakeKubeSpawnerPod(ns, "alice", "").Obj()
	p.Spec.NodeName = "node-1"
	if err := createPod(p); err != nil {
		t.Fatal(err)
	}
	before := decisions(metrics.Readopted)
	patchPod(t, p, `{"metadata":{"labels":{"component":null}}}`)
	// Out of sight past the grace: the reservation comes back.
	testutil.Eventually(t, testOrphanGrace+10*time.Second, func() error {
		if a := testutil.GetAccount(t, k8s, ns, "alice"); a.Status.Balance != 100 || len(a.Status.Servers) != 0 {
			return fmt.Errorf("balance %d with %d servers: the reservation is not returned yet", a.Status.Balance, len(a.Status.Servers))
		}
		return nil
	})
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), p); err != nil {
		t.Fatal(err)
	}
	setRunning(t, p, time.Now().Truncate(time.Second))
	patchPod(t, p, `{"metadata":{"labels":{"component":"singleuser-server"}}}`)
	var start time.Time
	testutil.Eventually(t, 10*time.Second, func() error {
		e := entryOf(testutil.GetAccount(t, k8s, ns, "alice"), p.UID)
		if e == nil || e.StartedAt == nil || e.ID != billing.AdoptedID(p.UID) {
			return fmt.Errorf("not adopted again yet: %+v", e)
		}
		start = e.StartedAt.Time
		return nil
	})
	wantEventContaining(t, ns, p.Name, billing.EventReadopted, "billed to account alice from now")
	if got := decisions(metrics.Readopted); got < before+1 {
		t.Errorf("hubcredits_integrity_decisions_total{decision=%q} went from %v to %v", metrics.Readopted, before, got)
	}
	testutil.Eventually(t, 3*period+10*time.Second, func() error {
		if c := testutil.GetAccount(t, k8s, ns, "alice").Status.TotalCharged; c < 30 {
			return fmt.Errorf("charged %d since it came back", c-10)
		}
		return nil
	})
	end := stopPod(t, p, start)
	want := 100 - owed(start, end, 10)
	testutil.Eventually(t, 10*time.Second, balanceIs(t, ns, "alice", want))
	forget(t, p)
	testutil.Consistently(t, period, balanceIs(t, ns, "alice", want))
}
