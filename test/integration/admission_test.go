package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// denial is the Status message the API server returns to KubeSpawner for
// our webhook's denial (with HTTP 403).
func denial(msg string) string {
	return `admission webhook "pods.hubcredits.io" denied the request: ` + msg
}

func TestAdmissionAdmitsAndPinsThePrice(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(100).Obj())
	pod := testutil.MakeKubeSpawnerPod(ns, "alice", "").Obj()
	if err := createPod(pod); err != nil {
		t.Fatalf("KubeSpawner's pod was refused: %v", err)
	}
	want := map[string]string{
		hcv1.AnnotationAccount:         "alice",
		hcv1.AnnotationBillingValue:    "10",
		hcv1.AnnotationBillingInterval: "10m0s",
		hcv1.AnnotationPolicy:          "",
	}
	for k, v := range want {
		if got, ok := pod.Annotations[k]; !ok || got != v {
			t.Errorf("annotation %s = %q, want %q", k, got, v)
		}
	}
	if pod.Annotations[hcv1.AnnotationReservation] == "" {
		t.Error("no reservation annotation")
	}
	// The first period is paid at admission, before the pod exists.
	if a := testutil.GetAccount(t, k8s, ns, "alice"); a.Status.Balance != 90 || len(a.Status.Servers) != 1 {
		t.Fatalf("after admission: balance %d with %d servers, want 90 with 1", a.Status.Balance, len(a.Status.Servers))
	}
	// The user is told the price while the server starts.
	testutil.Eventually(t, 10*time.Second, func() error {
		var evs corev1.EventList
		if err := k8s.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == pod.Name && e.Reason == "CreditsReserved" {
				if e.Message != "This server costs 10 credits every 10m, paid from account alice (90 left)." {
					return fmt.Errorf("event message %q", e.Message)
				}
				return nil
			}
		}
		return fmt.Errorf("no CreditsReserved event on the pod yet")
	})
}

func TestAdmissionDenials(t *testing.T) {
	ns := newNamespace(t)
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(100).InitialBalance(4).Grant(5, 3*time.Minute).Obj())
	createAccount(t, testutil.MakeAccount(ns, "physics", "alice").Cap(100).Obj())
	createAccount(t, testutil.MakeAccount(ns, "bob", "bob").Cap(100).Obj())
	createAccount(t, testutil.MakeAccount(ns, "carol-a", "carol").Obj())
	createAccount(t, testutil.MakeAccount(ns, "carol-b", "carol").Obj())
	cases := map[string]struct {
		pod     *corev1.Pod
		wantMsg string
		// wantEvent is the Warning Event the admin finds: on the account
		// the server would have been paid from, the user's would-be
		// wallet, or the refused pod.
		wantEvent event
	}{
		"not enough credits": {
			wantEvent: event{"CreditAccount", "alice", "NotEnoughCredits"},
			pod:       testutil.MakeKubeSpawnerPod(ns, "alice", "").Label(hcv1.LabelAccount, "alice").Obj(),
			wantMsg:   `Not enough credits to start this server: it costs 10 credits every 10m, and account "alice" has 4 (next +5 in 3m).`,
		},
		"user not in the named account": {
			wantEvent: event{"CreditAccount", "physics", "NotMember"},
			pod:       testutil.MakeKubeSpawnerPod(ns, "bob", "").Label(hcv1.LabelAccount, "physics").Obj(),
			wantMsg:   `User "bob" may not spend from credit account "physics" (it does not list them) — ask your hub admin.`,
		},
		"named account missing": {
			wantEvent: event{"CreditAccount", "chemistry", "AccountMissing"},
			pod:       testutil.MakeKubeSpawnerPod(ns, "bob", "").Label(hcv1.LabelAccount, "chemistry").Obj(),
			wantMsg:   `Credit account "chemistry", chosen by this server's profile, does not exist — ask your hub admin.`,
		},
		"no account": {
			wantEvent: event{"CreditAccount", "wallet-dave", "NoAccount"},
			pod:       testutil.MakeKubeSpawnerPod(ns, "dave", "").Obj(),
			wantMsg:   `No credit account for user "dave" — ask your hub admin.`,
		},
		"two candidate accounts": {
			wantEvent: event{"Pod", "jupyter-carol", "AmbiguousAccount"},
			pod:       testutil.MakeKubeSpawnerPod(ns, "carol", "").Obj(),
			wantMsg:   `User "carol" is in several credit accounts (carol-a, carol-b) and this server's profile names none — ask your hub admin to set the label hubcredits.io/account.`,
		},
		"no username annotation": {
			wantEvent: event{"Pod", "jupyter-erin", "MissingUsername"},
			pod: func() *corev1.Pod {
				p := testutil.MakeKubeSpawnerPod(ns, "erin", "").Obj()
				delete(p.Annotations, hcv1.AnnotationUsername)
				return p
			}(),
			wantMsg: `This server's pod has no hub.jupyter.org/username annotation, so hubcredits cannot tell who pays for it.`,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			reason := map[string]string{"reason": tc.wantEvent.reason}
			denied := testutil.Counter(t, "hubcredits_admission_denials_total", reason)
			err := createPod(tc.pod)
			if !apierrors.IsForbidden(err) {
				t.Fatalf("got %v, want a 403 denial", err)
			}
			if got, want := err.Error(), denial(tc.wantMsg); got != want {
				t.Fatalf("denial text:\n got: %s\nwant: %s", got, want)
			}
			if strings.Contains(err.Error(), testutil.HubToken) {
				t.Fatal("the denial leaks the Hub token")
			}
			if got := testutil.Counter(t, "hubcredits_admission_denials_total", reason) - denied; got != 1 {
				t.Errorf("hubcredits_admission_denials_total%v went up by %v, want 1", reason, got)
			}
			e := wantWarning(t, ns, tc.wantEvent)
			if !strings.Contains(e.Message, tc.wantMsg) || strings.Contains(e.Message, testutil.HubToken) {
				t.Errorf("event message %q, want the denial's sentence (and never the token)", e.Message)
			}
		})
	}
	// The same denial again is aggregated by the correlator: one Event
	// whose count goes up, not a second Event.
	again := testutil.MakeKubeSpawnerPod(ns, "alice", "").Label(hcv1.LabelAccount, "alice").Obj()
	if err := createPod(again); !apierrors.IsForbidden(err) {
		t.Fatalf("got %v, want a 403 denial", err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		e := wantWarning(t, ns, event{"CreditAccount", "alice", "NotEnoughCredits"})
		if e.Count != 2 {
			return fmt.Errorf("event count %d, want 2", e.Count)
		}
		return nil
	})
	// A dry run (kubectl credits why) leaves no Event and is not counted.
	dry := testutil.MakeKubeSpawnerPod(ns, "bob", "").Label(hcv1.LabelAccount, "physics").Obj()
	denied := testutil.Counter(t, "hubcredits_admission_denials_total", nil)
	if err := k8s.Create(context.Background(), dry, client.DryRunAll); !apierrors.IsForbidden(err) {
		t.Fatalf("dry run: %v, want a 403 denial", err)
	}
	if got := testutil.Counter(t, "hubcredits_admission_denials_total", nil) - denied; got != 0 {
		t.Errorf("a dry run was counted as a denial")
	}
	testutil.Consistently(t, time.Second, func() error {
		if e := wantWarning(t, ns, event{"CreditAccount", "physics", "NotMember"}); e.Count != 1 {
			return fmt.Errorf("event count %d after a dry run, want 1", e.Count)
		}
		return nil
	})
	// Nothing was reserved by any denial.
	if a := testutil.GetAccount(t, k8s, ns, "alice"); len(a.Status.Servers) != 0 {
		t.Fatalf("a denied spawn left %d reservations", len(a.Status.Servers))
	}
}

func TestAdmissionNonSingleuserPodsPassUntouched(t *testing.T) {
	ns := newNamespace(t)
	p := testutil.MakeKubeSpawnerPod(ns, "nobody", "").Obj()
	p.Labels["component"] = "user-placeholder"
	if err := createPod(p); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Annotations[hcv1.AnnotationAccount]; ok {
		t.Fatal("a placeholder pod was priced")
	}
}

func TestAdmissionFreePolicyAdmitsAtZero(t *testing.T) {
	ns := newNamespace(t)
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").InitialBalance(0).Obj())
	createPolicy(t, testutil.MakePolicy(ns, "free").Value(0).Every(time.Minute).Obj())
	p := testutil.MakeKubeSpawnerPod(ns, "alice", "").Obj()
	if err := createPod(p); err != nil {
		t.Fatalf("a free server was refused at balance 0: %v", err)
	}
	if p.Annotations[hcv1.AnnotationBillingValue] != "0" || p.Annotations[hcv1.AnnotationPolicy] != "free" {
		t.Fatalf("annotations %v", p.Annotations)
	}
}

func TestAdmissionCELPricesGPUsAndPriorityWins(t *testing.T) {
	ns := newNamespace(t)
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(1000).Obj())
	createPolicy(t, testutil.MakePolicy(ns, "default").Value(10).Every(10*time.Minute).Obj())
	gpu := testutil.MakePolicy(ns, "gpu").Value(0).Every(5 * time.Minute).Obj()
	gpu.Spec.BillingValue = nil
	gpu.Spec.Priority = 10
	gpu.Spec.PodSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"hubcredits.io/policy": "gpu"}}
	gpu.Spec.BillingValueExpression = "25 * quantity(pod.spec.containers[0].resources.requests['nvidia.com/gpu']).asInteger()"
	createPolicy(t, gpu)
	// Two policies with equal priority: the name that sorts first wins.
	a := testutil.MakePolicy(ns, "b-tie").Value(7).Every(time.Minute).Obj()
	a.Spec.Priority = 5
	a.Spec.PodSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "x"}}
	createPolicy(t, a)
	b := testutil.MakePolicy(ns, "a-tie").Value(3).Every(time.Minute).Obj()
	b.Spec.Priority = 5
	b.Spec.PodSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "x"}}
	createPolicy(t, b)

	cases := map[string]struct {
		pod        *corev1.Pod
		wantValue  string
		wantPolicy string
	}{
		"default":        {pod: testutil.MakeKubeSpawnerPod(ns, "alice", "plain").Obj(), wantValue: "10", wantPolicy: "default"},
		"two GPUs":       {pod: testutil.MakeKubeSpawnerPod(ns, "alice", "gpu2").Label("hubcredits.io/policy", "gpu").GPUs("2").Obj(), wantValue: "50", wantPolicy: "gpu"},
		"tie goes to a-": {pod: testutil.MakeKubeSpawnerPod(ns, "alice", "tie").Label("tier", "x").Obj(), wantValue: "3", wantPolicy: "a-tie"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if err := createPod(tc.pod); err != nil {
				t.Fatal(err)
			}
			if got := tc.pod.Annotations[hcv1.AnnotationBillingValue]; got != tc.wantValue {
				t.Errorf("billing value %s, want %s", got, tc.wantValue)
			}
			if got := tc.pod.Annotations[hcv1.AnnotationPolicy]; got != tc.wantPolicy {
				t.Errorf("policy %s, want %s", got, tc.wantPolicy)
			}
		})
	}
	// A GPU pod the expression cannot price (no GPU request) is denied with the reason.
	err := createPod(testutil.MakeKubeSpawnerPod(ns, "alice", "nogpu").Label("hubcredits.io/policy", "gpu").Obj())
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `Cannot price this server: billing policy "gpu" failed on it — ask your hub admin.`) {
		t.Fatalf("got %v", err)
	}
}

// TestAdmissionRaceAdmitsExactlyTheAffordable: 200 concurrent spawns against
// a balance that covers 50 admit exactly 50, and the balance ends at 0.
func TestAdmissionRaceAdmitsExactlyTheAffordable(t *testing.T) {
	ns := newNamespace(t)
	createAccount(t, testutil.MakeAccount(ns, "pool", "u").Cap(500).InitialBalance(500).Obj())
	const n = 200
	admitted, denied, timedOut, other := spawnRace(ns, "u", n, nil)
	if len(other) > 0 {
		t.Fatalf("%d unexpected errors, first: %v", len(other), other[0])
	}
	// Never more reserved than the balance covers; exactly the affordable
	// number admitted whenever every request was answered in time.
	a := testutil.GetAccount(t, k8s, ns, "pool")
	if a.Status.Balance != 0 || len(a.Status.Servers) != 50 || admitted > 50 {
		t.Fatalf("balance %d with %d reservations and %d admitted; want 0 with 50, at most 50 admitted", a.Status.Balance, len(a.Status.Servers), admitted)
	}
	if timedOut == 0 && (admitted != 50 || denied != n-50) {
		t.Fatalf("admitted %d, denied %d; want 50 and %d", admitted, denied, n-50)
	}
	if timedOut > 0 {
		t.Logf("%d of %d requests timed out at the API server (machine under load); %d admitted, %d denied", timedOut, n, admitted, denied)
	}
}

func TestAdmissionDryRunChangesNothing(t *testing.T) {
	ns := newNamespace(t)
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").InitialBalance(30).Obj())
	p := testutil.MakeKubeSpawnerPod(ns, "alice", "").Obj()
	if err := k8s.Create(context.Background(), p, client.DryRunAll); err != nil {
		t.Fatal(err)
	}
	a := testutil.GetAccount(t, k8s, ns, "alice")
	if len(a.Status.Servers) != 0 || (a.Status.OpenedAt != nil && a.Status.Balance != 30) {
		t.Fatalf("dry run changed the account: %+v", a.Status)
	}
	// And a dry run that cannot be paid is denied like the real thing.
	createAccount(t, testutil.MakeAccount(ns, "bob", "bob").InitialBalance(3).Obj())
	err := k8s.Create(context.Background(), testutil.MakeKubeSpawnerPod(ns, "bob", "").Obj(), client.DryRunAll)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "Not enough credits") {
		t.Fatalf("got %v", err)
	}
}

// TestReservationWithoutPodIsRefunded: KubeSpawner's retry after a client
// timeout meets the pod it already created (409): our webhook reserved for
// the second create, whose pod never appears. The controller gives it back.
func TestReservationWithoutPodIsRefunded(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").InitialBalance(50).Obj())
	if err := createPod(testutil.MakeKubeSpawnerPod(ns, "alice", "").Obj()); err != nil {
		t.Fatal(err)
	}
	err := createPod(testutil.MakeKubeSpawnerPod(ns, "alice", "").Obj())
	if !apierrors.IsAlreadyExists(err) {
		t.Fatalf("got %v, want AlreadyExists", err)
	}
	if a := testutil.GetAccount(t, k8s, ns, "alice"); a.Status.Balance != 30 {
		t.Fatalf("balance %d after two reservations, want 30", a.Status.Balance)
	}
	testutil.Eventually(t, testOrphanGrace+15*time.Second, balanceIs(t, ns, "alice", 40))
	testutil.Consistently(t, 2*time.Second, balanceIs(t, ns, "alice", 40))
}

// TestAdmissionFreeServerWithoutAccount: a free server needs no payer
// (issue 13): a user with no CreditAccount starts it, nothing is reserved
// and no account is pinned; a priced server is still denied.
func TestAdmissionFreeServerWithoutAccount(t *testing.T) {
	ns := newNamespace(t)
	createPolicy(t, testutil.MakePolicy(ns, "free").Value(0).Every(time.Minute).Selecting("size", "free").Obj())
	free := testutil.MakeKubeSpawnerPod(ns, "dave", "").Label("size", "free").Obj()
	if err := createPod(free); err != nil {
		t.Fatalf("a free server without an account was refused: %v", err)
	}
	if _, ok := free.Annotations[hcv1.AnnotationAccount]; ok || free.Annotations[hcv1.AnnotationBillingValue] != "0" {
		t.Fatalf("annotations %v: want the price pinned and no account", free.Annotations)
	}
	if _, ok := free.Annotations[hcv1.AnnotationReservation]; ok {
		t.Fatal("a free server got a reservation")
	}
	priced := testutil.MakeKubeSpawnerPod(ns, "dave", "paid").Obj()
	err := createPod(priced)
	if err == nil || !strings.Contains(err.Error(), denial(`No credit account for user "dave" — ask your hub admin.`)) {
		t.Fatalf("a priced server without an account: %v", err)
	}
}

// event names a Warning Event: the kind and name of its object, its reason.
type event struct{ kind, name, reason string }

// wantWarning waits for the Warning Event e in ns (as `kubectl get events`
// lists them) and returns it.
func wantWarning(t *testing.T, ns string, e event) *corev1.Event {
	t.Helper()
	var found *corev1.Event
	testutil.Eventually(t, 10*time.Second, func() error {
		var evs corev1.EventList
		if err := k8s.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for i, got := range evs.Items {
			o := got.InvolvedObject
			if o.Kind == e.kind && o.Name == e.name && got.Reason == e.reason && got.Type == corev1.EventTypeWarning {
				found = &evs.Items[i]
				return nil
			}
		}
		return fmt.Errorf("no Warning %s Event on %s/%s", e.reason, e.kind, e.name)
	})
	return found
}

// spawnRace creates n pods of user at once through the webhook (and runs
// also, when set, beside them) and counts the outcomes: admitted, denied
// for lack of credits, timed out at the API server (a loaded 2-core
// machine, many TLS handshakes at once: the reservation may have been
// written; the controller refunds it once no pod appears), and any other
// error.
func spawnRace(ns, user string, n int, also func() error) (admitted, denied, timedOut int, other []error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	record := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		switch testutil.SpawnOutcome(err) {
		case testutil.Admitted:
			admitted++
		case testutil.Denied:
			denied++
		case testutil.TimedOut:
			timedOut++
		default:
			other = append(other, err)
		}
	}
	if also != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := also(); err != nil {
				mu.Lock()
				other = append(other, err)
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			record(createPod(testutil.MakeKubeSpawnerPod(ns, user, fmt.Sprintf("s%d", i)).Obj()))
		}()
	}
	wg.Wait()
	return admitted, denied, timedOut, other
}
