package controllers

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/testutil"
	"github.com/hubcredits/hubcredits/internal/testutil/fakeclient"
)

var aliceKey = reconcile.Request{NamespacedName: types.NamespacedName{Namespace: testNS, Name: "alice"}}

func TestCreditAccountReconcileCharges(t *testing.T) {
	running := testutil.MakeServerCharge("r1").Pod("jupyter-alice").UID("u1").Running(0).Obj()
	pending := testutil.MakeServerCharge("r1").Obj()
	runningPod := billedPod("jupyter-alice", "u1", "alice", "r1").Running(0).Obj()

	cases := map[string]struct {
		account     *hcv1.CreditAccount
		pods        []client.Object
		now         time.Duration
		wantBalance int64
		// wantPeriods is periodsPaid by entry id (an ended or refunded entry is gone).
		wantPeriods map[string]int64
		// wantEnded are the entries marked ended (removed on the next pass).
		wantEnded   []string
		wantRequeue time.Duration
		wantEvents  []string
	}{
		"a boundary: the second period is charged": {
			account:     openAccount("alice", "alice").Balance(90).Servers(running).Obj(),
			pods:        []client.Object{runningPod},
			now:         10 * time.Minute,
			wantBalance: 80, wantPeriods: map[string]int64{"r1": 2},
			wantRequeue: 10 * time.Minute,
		},
		"3s after a boundary: requeued for the next one": {
			account:     openAccount("alice", "alice").Balance(90).Servers(running).Obj(),
			pods:        []client.Object{runningPod},
			now:         10*time.Minute + 3*time.Second,
			wantBalance: 80, wantPeriods: map[string]int64{"r1": 2},
			wantRequeue: 9*time.Minute + 57*time.Second,
		},
		"mid-period: nothing is due": {
			account:     openAccount("alice", "alice").Balance(90).Servers(running).Obj(),
			pods:        []client.Object{runningPod},
			now:         4 * time.Minute,
			wantBalance: 90, wantPeriods: map[string]int64{"r1": 1},
			wantRequeue: 6 * time.Minute,
		},
		"two boundaries passed while nobody looked": {
			account:     openAccount("alice", "alice").Balance(90).Servers(running).Obj(),
			pods:        []client.Object{runningPod},
			now:         25 * time.Minute,
			wantBalance: 70, wantPeriods: map[string]int64{"r1": 3},
			wantRequeue: 5 * time.Minute,
		},
		"the pod starts: its clock starts with the container": {
			account:     openAccount("alice", "alice").Balance(90).Servers(pending).Obj(),
			pods:        []client.Object{billedPod("jupyter-alice", "u1", "alice", "r1").Running(time.Minute).Obj()},
			now:         time.Minute + 30*time.Second,
			wantBalance: 90, wantPeriods: map[string]int64{"r1": 1},
			wantRequeue: 9*time.Minute + 30*time.Second,
			wantEvents:  []string{"Normal CreditsReserved", "Normal ServerStarted", "Normal ServerStarted"},
		},
		"a pending pod waits on its reservation": {
			account:     openAccount("alice", "alice").Balance(90).Servers(pending).Obj(),
			pods:        []client.Object{billedPod("jupyter-alice", "u1", "alice", "r1").Obj()},
			now:         20 * time.Minute,
			wantBalance: 90, wantPeriods: map[string]int64{"r1": 1},
			wantEvents: []string{"Normal CreditsReserved"},
		},
		"a reservation whose pod never appeared waits out the grace": {
			account:     openAccount("alice", "alice").Balance(90).Servers(pending).Obj(),
			now:         10 * time.Second,
			wantBalance: 90, wantPeriods: map[string]int64{"r1": 1},
			wantRequeue: 20 * time.Second,
		},
		"a reservation whose pod never appeared is returned after the grace": {
			account:     openAccount("alice", "alice").Balance(90).Servers(pending).Obj(),
			now:         31 * time.Second,
			wantBalance: 100, wantPeriods: map[string]int64{},
			wantEvents: []string{"Normal ReservationRefunded"},
		},
		"the server was stopped mid-period: the period it began is paid, no more": {
			account: openAccount("alice", "alice").Balance(90).Servers(running).Obj(),
			pods: []client.Object{billedPod("jupyter-alice", "u1", "alice", "r1").Running(0).
				Deleting(15*time.Minute, 30).Obj()},
			now:         16 * time.Minute,
			wantBalance: 80, wantPeriods: map[string]int64{"r1": 2}, wantEnded: []string{"r1"},
			wantRequeue: time.Second,
		},
		"the server was stopped on a boundary: that period is not owed": {
			account: openAccount("alice", "alice").Balance(90).Servers(running).Obj(),
			pods: []client.Object{billedPod("jupyter-alice", "u1", "alice", "r1").Running(0).
				Deleting(10*time.Minute, 30).Obj()},
			now:         11 * time.Minute,
			wantBalance: 90, wantPeriods: map[string]int64{"r1": 1}, wantEnded: []string{"r1"},
			wantRequeue: time.Second,
		},
		"a pod replaced under the same name is not the server": {
			account:     openAccount("alice", "alice").Balance(90).Servers(running).Obj(),
			pods:        []client.Object{billedPod("jupyter-alice", "u2", "alice", "r1").Running(9 * time.Minute).Obj()},
			now:         10 * time.Minute,
			wantBalance: 90, wantPeriods: map[string]int64{"r1": 1}, wantEnded: []string{"r1"},
			wantRequeue: time.Second,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			env := newControllerEnv(fakeclient.New(nil, append(tc.pods, tc.account)...), at(tc.now))

			res, err := env.r.Reconcile(context.Background(), aliceKey)

			if err != nil {
				t.Fatal(err)
			}
			if d := testutil.Diff(ctrl.Result{RequeueAfter: tc.wantRequeue}, res); d != "" {
				t.Errorf("result (-want +got):\n%s", d)
			}
			a := testutil.GetAccount(t, env.api, testNS, "alice")
			if a.Status.Balance != tc.wantBalance {
				t.Errorf("balance %d, want %d", a.Status.Balance, tc.wantBalance)
			}
			if d := testutil.Diff(tc.wantPeriods, periods(a)); d != "" {
				t.Errorf("periods paid (-want +got):\n%s", d)
			}
			if d := testutil.Diff(tc.wantEnded, ended(a)); d != "" {
				t.Errorf("entries marked ended (-want +got):\n%s", d)
			}
			if d := testutil.Diff(tc.wantEvents, env.events()); d != "" {
				t.Errorf("events (-want +got):\n%s", d)
			}
			if c := meta.FindStatusCondition(a.Status.Conditions, hcv1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
				t.Errorf("Ready condition %+v", c)
			}
		})
	}
}

// countWrites wraps api so that status writes of CreditAccounts are counted
// and may be answered by update instead.
func countWrites(api client.WithWatch, n *atomic.Int32, update func(ctx context.Context, c client.Client, obj client.Object, n int32) error) client.WithWatch {
	return interceptor.NewClient(api, interceptor.Funcs{
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			k := n.Add(1)
			if update != nil {
				return update(ctx, c, obj, k)
			}
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
	})
}

func TestCreditAccountReconcileWritesOnlyChanges(t *testing.T) {
	api := fakeclient.New(nil,
		openAccount("alice", "alice").Balance(90).Servers(testutil.MakeServerCharge("r1").Pod("jupyter-alice").UID("u1").Running(0).Obj()).Obj(),
		billedPod("jupyter-alice", "u1", "alice", "r1").Running(0).Obj(),
	)
	var writes atomic.Int32
	env := newControllerEnv(countWrites(api, &writes, nil), at(10*time.Minute))

	for _, now := range []time.Duration{10 * time.Minute, 10*time.Minute + time.Second, 19 * time.Minute} {
		env.clock.SetTime(at(now))
		if _, err := env.r.Reconcile(context.Background(), aliceKey); err != nil {
			t.Fatal(err)
		}
	}

	if n := writes.Load(); n != 1 {
		t.Errorf("%d status writes for one charge, want 1", n)
	}
	if a := testutil.GetAccount(t, api, testNS, "alice"); a.Status.Balance != 80 {
		t.Errorf("balance %d, want 80", a.Status.Balance)
	}
}

func TestCreditAccountReconcileRetriesConflicts(t *testing.T) {
	conflict := func(name string) error {
		return apierrors.NewConflict(schema.GroupResource{Group: "hubcredits.io", Resource: "creditaccounts"}, name, errors.New("the object has been modified"))
	}
	cases := map[string]struct {
		// update answers the n-th status write.
		update      func(ctx context.Context, c client.Client, obj client.Object, n int32) error
		wantErr     bool
		wantBalance int64
		wantPeriods map[string]int64
		wantCharges int
		wantWrites  int32
	}{
		"the webhook reserved meanwhile: one charge, its reservation kept": {
			update: func(ctx context.Context, c client.Client, obj client.Object, n int32) error {
				if n == 1 {
					// The webhook's write lands first: a second server's reservation.
					a := &hcv1.CreditAccount{}
					if err := c.Get(ctx, client.ObjectKeyFromObject(obj), a); err != nil {
						return err
					}
					r := billing.Reservation{ID: "r2", Pod: "jupyter-alice--two", User: "alice", Wallet: "alice",
						Price: billing.Price{Value: 10, Interval: 10 * time.Minute}}
					if _, err := billing.Take(a, r, 10, 10, 0, at(10*time.Minute)); err != nil {
						return err
					}
					if err := c.Status().Update(ctx, a); err != nil {
						return err
					}
				}
				return c.Status().Update(ctx, obj) // a real conflict the first time
			},
			wantBalance: 70,
			wantPeriods: map[string]int64{"r1": 2, "r2": 1},
			wantCharges: 1,
			wantWrites:  2,
		},
		"an injected conflict: retried from a live read": {
			update: func(ctx context.Context, c client.Client, obj client.Object, n int32) error {
				if n == 1 {
					return conflict(obj.GetName())
				}
				return c.Status().Update(ctx, obj)
			},
			wantBalance: 80,
			wantPeriods: map[string]int64{"r1": 2},
			wantCharges: 1,
			wantWrites:  2,
		},
		"conflicts on every write: an error, nothing charged": {
			update: func(_ context.Context, _ client.Client, obj client.Object, _ int32) error {
				return conflict(obj.GetName())
			},
			wantErr:     true,
			wantBalance: 90,
			wantPeriods: map[string]int64{"r1": 1},
			wantWrites:  5,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			api := fakeclient.New(nil,
				openAccount("alice", "alice").Balance(90).Servers(testutil.MakeServerCharge("r1").Pod("jupyter-alice").UID("u1").Running(0).Obj()).Obj(),
				billedPod("jupyter-alice", "u1", "alice", "r1").Running(0).Obj(),
			)
			var writes, liveReads atomic.Int32
			env := newControllerEnv(countWrites(api, &writes, tc.update), at(10*time.Minute))
			env.r.APIReader = interceptor.NewClient(api, interceptor.Funcs{
				Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
					// The account's reads (a reservation whose pod the
					// cache lacks is confirmed live too: not a retry).
					if _, ok := obj.(*hcv1.CreditAccount); ok {
						liveReads.Add(1)
					}
					return c.Get(ctx, key, obj, opts...)
				},
			})

			_, err := env.r.Reconcile(context.Background(), aliceKey)

			if tc.wantErr != (err != nil) {
				t.Fatalf("error %v, want error: %v", err, tc.wantErr)
			}
			a := testutil.GetAccount(t, api, testNS, "alice")
			if a.Status.Balance != tc.wantBalance {
				t.Errorf("balance %d, want %d", a.Status.Balance, tc.wantBalance)
			}
			if d := testutil.Diff(tc.wantPeriods, periods(a)); d != "" {
				t.Errorf("periods paid (-want +got):\n%s", d)
			}
			charges := 0
			for _, k := range ledgerKinds(a) {
				if k == hcv1.LedgerCharge {
					charges++
				}
			}
			if charges != tc.wantCharges {
				t.Errorf("%d charges in the ledger %v, want %d", charges, ledgerKinds(a), tc.wantCharges)
			}
			if got := writes.Load(); got != tc.wantWrites {
				t.Errorf("%d status writes, want %d", got, tc.wantWrites)
			}
			if got := liveReads.Load(); got != tc.wantWrites-1 {
				t.Errorf("%d live reads, want one per retry (%d)", got, tc.wantWrites-1)
			}
		})
	}
}

func TestCreditAccountReconcileStopsUnpaidServers(t *testing.T) {
	cases := map[string]struct {
		hub            *fakeHub // nil: no Hub API configured
		shadow         bool
		serverName     string
		wantStops      []stopCall
		wantPodDeleted bool
		wantEvents     []string
	}{
		"through the Hub API": {
			hub:        &fakeHub{},
			wantStops:  []stopCall{{User: "alice"}},
			wantEvents: []string{"Warning CreditsExhausted", "Warning CreditsExhausted"},
		},
		"a named server through the Hub API": {
			hub:        &fakeHub{},
			serverName: "gpu",
			wantStops:  []stopCall{{User: "alice", Server: "gpu"}},
			wantEvents: []string{"Warning CreditsExhausted", "Warning CreditsExhausted"},
		},
		"the Hub API fails: the pod is deleted": {
			hub:            &fakeHub{err: errors.New("the Hub API answered 500 Internal Server Error")},
			wantStops:      []stopCall{{User: "alice"}},
			wantPodDeleted: true,
			wantEvents:     []string{"Warning CreditsExhausted", "Warning CreditsExhausted"},
		},
		"the hub does not know the server: the pod is deleted": {
			hub:            &fakeHub{err: errors.New("the hub reports no such running server")},
			wantStops:      []stopCall{{User: "alice"}},
			wantPodDeleted: true,
			wantEvents:     []string{"Warning CreditsExhausted", "Warning CreditsExhausted"},
		},
		"no Hub API: the pod is deleted": {
			wantPodDeleted: true,
			wantEvents:     []string{"Warning CreditsExhausted", "Warning CreditsExhausted"},
		},
		"shadow mode: told, not stopped": {
			hub:        &fakeHub{},
			shadow:     true,
			wantEvents: []string{"Warning CreditsExhausted", "Warning CreditsExhausted"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			e := testutil.MakeServerCharge("r1").Pod("jupyter-alice").UID("u1").ServerName(tc.serverName).Running(0).Obj()
			api := fakeclient.New(nil,
				openAccount("alice", "alice").Balance(5).Servers(e).Obj(),
				billedPod("jupyter-alice", "u1", "alice", "r1").Running(0).Obj(),
			)
			env := newControllerEnv(api, at(10*time.Minute))
			env.r.Shadow = tc.shadow
			if tc.hub != nil {
				env.r.Hub = tc.hub
			}

			res, err := env.r.Reconcile(context.Background(), aliceKey)

			if err != nil {
				t.Fatal(err)
			}
			if tc.hub != nil {
				if d := testutil.Diff(tc.wantStops, tc.hub.stops()); d != "" {
					t.Errorf("Hub API stops (-want +got):\n%s", d)
				}
			}
			err = api.Get(context.Background(), types.NamespacedName{Namespace: testNS, Name: "jupyter-alice"}, &corev1.Pod{})
			if deleted := apierrors.IsNotFound(err); deleted != tc.wantPodDeleted {
				t.Errorf("pod deleted %v (%v), want %v", deleted, err, tc.wantPodDeleted)
			}
			if d := testutil.Diff(tc.wantEvents, env.events()); d != "" {
				t.Errorf("events (-want +got):\n%s", d)
			}
			// Nothing is charged for the period that cannot be paid, and the
			// stop is retried after StopRetry.
			a := testutil.GetAccount(t, api, testNS, "alice")
			if a.Status.Balance != 5 || periods(a)["r1"] != 1 || a.Status.Servers[0].StopRequestedAt == nil {
				t.Errorf("balance %d, entry %+v; want 5, one period paid, a stop requested", a.Status.Balance, a.Status.Servers)
			}
			if res.RequeueAfter != billing.DefaultOptions.StopRetry {
				t.Errorf("requeue after %v, want %v", res.RequeueAfter, billing.DefaultOptions.StopRetry)
			}
			if c := meta.FindStatusCondition(a.Status.Conditions, hcv1.ConditionExhausted); c == nil || c.Status != metav1.ConditionTrue {
				t.Errorf("Exhausted condition %+v, want True", c)
			}
		})
	}
}

func TestCreditAccountReconcileRepeatsAStopThatDidNotTakeEffect(t *testing.T) {
	api := fakeclient.New(nil,
		openAccount("alice", "alice").Balance(5).Servers(testutil.MakeServerCharge("r1").Pod("jupyter-alice").UID("u1").Running(0).Obj()).Obj(),
		billedPod("jupyter-alice", "u1", "alice", "r1").Running(0).Obj(),
	)
	hub := &fakeHub{}
	env := newControllerEnv(api, at(10*time.Minute))
	env.r.Hub = hub

	var requeues []time.Duration
	for _, now := range []time.Duration{10 * time.Minute, 10*time.Minute + 10*time.Second, 10*time.Minute + 30*time.Second} {
		env.clock.SetTime(at(now))
		res, err := env.r.Reconcile(context.Background(), aliceKey)
		if err != nil {
			t.Fatal(err)
		}
		requeues = append(requeues, res.RequeueAfter)
	}

	if n := len(hub.stops()); n != 2 {
		t.Errorf("%d stops through the Hub API, want 2 (the first and one repeat after StopRetry)", n)
	}
	if d := testutil.Diff([]time.Duration{30 * time.Second, 20 * time.Second, 30 * time.Second}, requeues); d != "" {
		t.Errorf("requeues (-want +got):\n%s", d)
	}
	// A repeat tells nobody again.
	if d := testutil.Diff([]string{"Warning CreditsExhausted", "Warning CreditsExhausted"}, env.events()); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
	if a := testutil.GetAccount(t, api, testNS, "alice"); a.Status.Balance != 5 {
		t.Errorf("balance %d, want 5", a.Status.Balance)
	}
}

func TestCreditAccountReconcileReady(t *testing.T) {
	cases := map[string]struct {
		objs       []client.Object
		wantStatus metav1.ConditionStatus
		wantReason string
	}{
		"a wallet": {
			objs:       []client.Object{openAccount("alice", "alice").Obj()},
			wantStatus: metav1.ConditionTrue, wantReason: hcv1.ReasonLedgerOpen,
		},
		"a wallet funded by a pool": {
			objs:       []client.Object{openAccount("alice", "alice").Project("physics").Obj(), openAccount("physics").Obj()},
			wantStatus: metav1.ConditionTrue, wantReason: hcv1.ReasonLedgerOpen,
		},
		"the pool is missing": {
			objs:       []client.Object{openAccount("alice", "alice").Project("physics").Obj()},
			wantStatus: metav1.ConditionFalse, wantReason: hcv1.ReasonProjectNotFound,
		},
		"the pool names a project itself": {
			objs: []client.Object{
				openAccount("alice", "alice").Project("physics").Obj(),
				openAccount("physics").Project("faculty").Obj(),
				openAccount("faculty").Obj(),
			},
			wantStatus: metav1.ConditionFalse, wantReason: hcv1.ReasonProjectChain,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			env := newControllerEnv(fakeclient.New(nil, tc.objs...), at(time.Minute))

			if _, err := env.r.Reconcile(context.Background(), aliceKey); err != nil {
				t.Fatal(err)
			}

			a := testutil.GetAccount(t, env.api, testNS, "alice")
			c := meta.FindStatusCondition(a.Status.Conditions, hcv1.ConditionReady)
			if c == nil || c.Status != tc.wantStatus || c.Reason != tc.wantReason || c.ObservedGeneration != a.Generation {
				t.Errorf("Ready %+v, want %s/%s at generation %d", c, tc.wantStatus, tc.wantReason, a.Generation)
			}
			if a.Status.ObservedGeneration != a.Generation {
				t.Errorf("observedGeneration %d, want %d", a.Status.ObservedGeneration, a.Generation)
			}
		})
	}
}

func TestCreditAccountReconcileGoneAccount(t *testing.T) {
	env := newControllerEnv(fakeclient.New(nil), at(0))
	res, err := env.r.Reconcile(context.Background(), aliceKey)
	if err != nil || res != (ctrl.Result{}) {
		t.Fatalf("got %+v, %v; want nothing to do", res, err)
	}
}

// A pod billed to the account without a reservation (admitted in shadow
// mode, or while the webhook was bypassed) should be adopted and billed
// from its start (billing.Unreserved, billing.AdoptedID); Reconcile passes
// no pods to adopt, so it runs free.
func TestCreditAccountReconcileAdoptsUnreservedPods(t *testing.T) {
	api := fakeclient.New(nil,
		openAccount("alice", "alice").Obj(),
		billedPod("jupyter-alice", "u1", "alice", "").Running(0).Obj(),
	)
	env := newControllerEnv(api, at(10*time.Minute))

	if _, err := env.r.Reconcile(context.Background(), aliceKey); err != nil {
		t.Fatal(err)
	}

	a := testutil.GetAccount(t, api, testNS, "alice")
	if _, ok := periods(a)[billing.AdoptedID("u1")]; !ok || a.Status.Balance >= 100 {
		t.Errorf("balance %d, servers %v: the running unreserved pod was not adopted and billed", a.Status.Balance, periods(a))
	}
}

// ended is the ids of the entries marked ended.
func ended(a *hcv1.CreditAccount) []string {
	var out []string
	for _, e := range a.Status.Servers {
		if e.EndedAt != nil {
			out = append(out, e.ID)
		}
	}
	return out
}

func TestPodToAccounts(t *testing.T) {
	cases := map[string]struct {
		pod  *corev1.Pod
		want []reconcile.Request
	}{
		"a wallet": {
			pod:  billedPod("p", "u", "alice", "r1").Obj(),
			want: []reconcile.Request{aliceKey},
		},
		"a wallet and its pool": {
			pod: func() *corev1.Pod {
				p := billedPod("p", "u", "alice", "r1").Obj()
				p.Annotations[hcv1.AnnotationProject] = "physics"
				return p
			}(),
			want: []reconcile.Request{aliceKey, {NamespacedName: types.NamespacedName{Namespace: testNS, Name: "physics"}}},
		},
		"not admitted yet: the profile's label": {
			pod: func() *corev1.Pod {
				p := billedPod("p", "u", "", "").Obj()
				p.Labels[hcv1.LabelAccount] = "alice"
				return p
			}(),
			want: []reconcile.Request{aliceKey},
		},
		"not billed": {pod: billedPod("p", "u", "", "").Obj()},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if d := testutil.Diff(tc.want, podToAccounts(context.Background(), tc.pod)); d != "" {
				t.Errorf("requests (-want +got):\n%s", d)
			}
		})
	}
}

func TestAccountToRelated(t *testing.T) {
	share := func(wallet string) hcv1.ServerCharge {
		e := testutil.MakeServerCharge("r-" + wallet).Obj()
		e.Wallet = wallet
		return e
	}
	pool := openAccount("physics").Servers(share("alice"), share("bob"), share("alice"), share("physics")).Obj()
	// carol's wallet names the pool: its Ready condition depends on the pool.
	api := fakeclient.New(nil, pool, openAccount("carol", "carol").Project("physics").Obj())
	want := []reconcile.Request{aliceKey, {NamespacedName: types.NamespacedName{Namespace: testNS, Name: "bob"}},
		{NamespacedName: types.NamespacedName{Namespace: testNS, Name: "carol"}}}
	if d := testutil.Diff(want, (&CreditAccountReconciler{Client: api}).accountToRelated(context.Background(), pool)); d != "" {
		t.Errorf("requests (-want +got):\n%s", d)
	}
}

// The pool's status is written before the wallet's; when the wallet's write
// conflicts, the retry finds the pool's payment in flight and completes it
// instead of charging the pool again.
func TestCreditAccountReconcilePoolShareSurvivesAWalletConflict(t *testing.T) {
	walletEntry := testutil.MakeServerCharge("r1").Pod("jupyter-alice").UID("u1").Running(0).Obj()
	walletEntry.Project, walletEntry.Paid, walletEntry.ProjectPaid = "physics", 6, 4
	poolEntry := testutil.MakeServerCharge("r1").Pod("jupyter-alice").UID("u1").Running(0).Obj()
	poolEntry.Paid, poolEntry.PaidThrough = 4, nil
	api := fakeclient.New(nil,
		openAccount("physics").Balance(3).Servers(poolEntry).Obj(),
		openAccount("alice", "alice").Balance(94).Project("physics").Servers(walletEntry).Obj(),
		billedPod("jupyter-alice", "u1", "alice", "r1").Running(0).Obj(),
	)
	var writes atomic.Int32
	var walletConflicts atomic.Int32
	c := countWrites(api, &writes, func(ctx context.Context, c client.Client, obj client.Object, _ int32) error {
		if obj.GetName() == "alice" && walletConflicts.Add(1) == 1 {
			return apierrors.NewConflict(schema.GroupResource{Group: "hubcredits.io", Resource: "creditaccounts"}, "alice", errors.New("the object has been modified"))
		}
		return c.Status().Update(ctx, obj)
	})
	env := newControllerEnv(c, at(10*time.Minute))

	if _, err := env.r.Reconcile(context.Background(), aliceKey); err != nil {
		t.Fatal(err)
	}

	type share struct{ Balance, PeriodsPaid, Paid, ProjectPaid int64 }
	got := map[string]share{}
	for _, name := range []string{"physics", "alice"} {
		a := testutil.GetAccount(t, api, testNS, name)
		s := share{Balance: a.Status.Balance}
		if i := billing.FindServer(a, "r1"); i >= 0 {
			e := a.Status.Servers[i]
			s.PeriodsPaid, s.Paid, s.ProjectPaid = e.PeriodsPaid, e.Paid, e.ProjectPaid
		}
		got[name] = s
	}
	// The second period costs 10: the pool's last 3, the wallet the other 7.
	want := map[string]share{
		"physics": {Balance: 0, PeriodsPaid: 2, Paid: 7},
		"alice":   {Balance: 87, PeriodsPaid: 2, Paid: 13, ProjectPaid: 7},
	}
	if d := testutil.Diff(want, got); d != "" {
		t.Errorf("accounts (-want +got):\n%s", d)
	}
	if n := walletConflicts.Load(); n != 2 {
		t.Errorf("%d wallet writes, want 2 (a conflict, then the retry)", n)
	}
}

// An ended server is settled in two passes: the last charge is written with
// the entries marked ended, and the entries go on the next pass, the pool's
// first. A conflict on either wallet write never charges anyone twice.
func TestCreditAccountReconcileEndedServerWithAPool(t *testing.T) {
	cases := map[string]struct {
		// conflictOn is which write of the wallet's status conflicts (0: none).
		conflictOn int32
	}{
		"no conflict":                         {},
		"the wallet's first write conflicts":  {conflictOn: 1},
		"the wallet's second write conflicts": {conflictOn: 2},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			walletEntry := testutil.MakeServerCharge("r1").Pod("jupyter-alice").UID("u1").Running(0).Obj()
			walletEntry.Project, walletEntry.Paid, walletEntry.ProjectPaid = "physics", 6, 4
			poolEntry := testutil.MakeServerCharge("r1").Pod("jupyter-alice").UID("u1").Running(0).Obj()
			poolEntry.Paid, poolEntry.PaidThrough = 4, nil
			api := fakeclient.New(nil,
				openAccount("physics").Balance(3).Servers(poolEntry).Obj(),
				openAccount("alice", "alice").Balance(94).Project("physics").Servers(walletEntry).Obj(),
				billedPod("jupyter-alice", "u1", "alice", "r1").Running(0).Deleting(15*time.Minute, 30).Obj(),
			)
			var writes, walletWrites atomic.Int32
			c := countWrites(api, &writes, func(ctx context.Context, c client.Client, obj client.Object, _ int32) error {
				if obj.GetName() == "alice" && walletWrites.Add(1) == tc.conflictOn {
					return apierrors.NewConflict(schema.GroupResource{Group: "hubcredits.io", Resource: "creditaccounts"}, "alice", errors.New("the object has been modified"))
				}
				return c.Status().Update(ctx, obj)
			})
			env := newControllerEnv(c, at(16*time.Minute))

			first, err := env.r.Reconcile(context.Background(), aliceKey)
			if err != nil {
				t.Fatal(err)
			}
			pool, wallet := testutil.GetAccount(t, api, testNS, "physics"), testutil.GetAccount(t, api, testNS, "alice")
			if d := testutil.Diff([]string{"r1"}, ended(pool)); d != "" {
				t.Errorf("after the first pass, the pool's entries marked ended (-want +got):\n%s", d)
			}
			if d := testutil.Diff([]string{"r1"}, ended(wallet)); d != "" {
				t.Errorf("after the first pass, the wallet's entries marked ended (-want +got):\n%s", d)
			}
			if first.RequeueAfter != time.Second {
				t.Errorf("requeue after %v, want 1s for the second pass", first.RequeueAfter)
			}
			env.clock.Step(time.Second)
			if _, err := env.r.Reconcile(context.Background(), aliceKey); err != nil {
				t.Fatal(err)
			}

			// The second period (the server ran 15m) costs 10: the pool's
			// last 3, the wallet 7.
			type state struct {
				Balance int64
				Servers int
				Charges []int64
			}
			got := map[string]state{}
			for _, name := range []string{"physics", "alice"} {
				a := testutil.GetAccount(t, api, testNS, name)
				s := state{Balance: a.Status.Balance, Servers: len(a.Status.Servers)}
				for _, l := range a.Status.Ledger {
					if l.Kind == hcv1.LedgerCharge {
						s.Charges = append(s.Charges, l.Amount)
					}
				}
				got[name] = s
			}
			want := map[string]state{
				"physics": {Balance: 0, Charges: []int64{-3}},
				"alice":   {Balance: 87, Charges: []int64{-7}},
			}
			if d := testutil.Diff(want, got); d != "" {
				t.Errorf("accounts (-want +got):\n%s", d)
			}
		})
	}
}

// unreserved leaves the caller's pods alone, returns the unbilled pods it
// adopts by entry id, and reports a failed read instead of skipping it.
func TestUnreserved(t *testing.T) {
	unbilled := billedPod("jupyter-alice", "u9", "", "").Running(0).Obj()
	delete(unbilled.Annotations, hcv1.AnnotationAccount)
	env := newControllerEnv(fakeclient.New(nil, openAccount("alice", "alice").Obj(), unbilled), at(time.Minute))
	env.r.Defaults = billing.DefaultPrice
	pods := map[string]*corev1.Pod{}

	adopt, adopted, err := env.r.unreserved(context.Background(), openAccount("alice", "alice").Obj(), nil, pods)
	if err != nil {
		t.Fatal(err)
	}
	if len(pods) != 0 {
		t.Errorf("the caller's pods were changed: %v", pods)
	}
	if len(adopt) != 1 || adopted[billing.AdoptedID("u9")] == nil {
		t.Errorf("adopt %v, adopted %v: want the unbilled pod", adopt, adopted)
	}

	failing := fakeclient.New(&interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
		if _, ok := list.(*hcv1.CreditAccountList); ok {
			return errors.New("etcd is down")
		}
		return c.List(ctx, list, opts...)
	}}, openAccount("alice", "alice").Obj(), unbilled)
	env = newControllerEnv(failing, at(time.Minute))
	if _, _, err := env.r.unreserved(context.Background(), openAccount("alice", "alice").Obj(), nil, pods); err == nil {
		t.Errorf("a failed list of the user's accounts was dropped")
	}
}

// TestReservationKeptWhileTheCacheLacksItsPod: the cache does not show a
// reserved server's pod (its watch lags, as after kube-apiserver
// restarts) although it runs. Its absence is confirmed live before the
// reservation is returned or the server ended: the pod is found, and its
// server billed. A pod out of the singleuser selector is out of sight
// live too: its reservation is returned as before.
func TestReservationKeptWhileTheCacheLacksItsPod(t *testing.T) {
	for name, tc := range map[string]struct {
		singleuser  bool
		wantBalance int64
		wantHeld    bool
	}{
		"the pod runs: billed":                        {singleuser: true, wantBalance: 80, wantHeld: true},
		"the pod lost its singleuser label: returned": {singleuser: false, wantBalance: 100, wantHeld: false},
	} {
		t.Run(name, func(t *testing.T) {
			acct := openAccount("alice", "alice").Balance(90).
				Servers(testutil.MakeServerCharge("r1").Pod("jupyter-alice").ReservedAt(0).Obj()).Obj()
			pod := billedPod("jupyter-alice", "u1", "alice", "r1").Running(0).Obj()
			if !tc.singleuser {
				delete(pod.Labels, hcv1.ComponentLabel)
			}
			cache := fakeclient.New(nil, acct.DeepCopy())
			api := fakeclient.New(nil, acct.DeepCopy(), pod)
			env := newControllerEnv(cache, at(10*time.Minute))
			env.r.APIReader = api
			if _, err := env.r.Reconcile(context.Background(), aliceKey); err != nil {
				t.Fatal(err)
			}
			a := testutil.GetAccount(t, cache, testNS, "alice")
			if a.Status.Balance != tc.wantBalance || (billing.FindServer(a, "r1") >= 0) != tc.wantHeld {
				t.Fatalf("balance %d, servers %+v; want %d, r1 held: %v", a.Status.Balance, a.Status.Servers, tc.wantBalance, tc.wantHeld)
			}
		})
	}
}
