package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/metrics"
	"github.com/hubcredits/hubcredits/internal/testutil"
	"github.com/hubcredits/hubcredits/internal/testutil/fakeclient"
)

// reasons is the reason of each Event, in order.
func reasons(events []string) []string {
	var out []string
	for _, ev := range events {
		out = append(out, strings.SplitN(ev, " ", 3)[1])
	}
	return out
}

func decisions(d string) float64 {
	return promtestutil.ToFloat64(metrics.IntegrityDecisions.WithLabelValues(d))
}

func TestCreditAccountDeletion(t *testing.T) {
	running := testutil.MakeServerCharge("r1").Pod("jupyter-alice").UID("u1").Running(0).Obj()
	runningPod := billedPod("jupyter-alice", "u1", "alice", "r1").Running(0).Obj()
	bobsServer := testutil.MakeServerCharge("r2").Pod("jupyter-bob").UID("u2").Running(0).Obj()
	bobsServer.User, bobsServer.Wallet = "bob", "bob"

	cases := map[string]struct {
		account *hcv1.CreditAccount
		objs    []client.Object
		hub     *fakeHub
		// wantGone: the finalizer was released (the account is gone).
		wantGone      bool
		wantTombstone *billing.Tombstone // the tombstone stored (nil: none), without deletedAt
		wantHeld      bool
		wantPodGone   bool
		wantHubStops  int
		wantReasons   []string
		wantDecisions map[string]float64
	}{
		"no server left: released, its balance and top-ups kept in a tombstone": {
			account:       openAccount("alice", "alice").Balance(42).Applied("a").Retired("b").TopUp("a", 5).UID("alice-1").Finalizers(hcv1.FinalizerLedger).Deleting(0).Obj(),
			wantGone:      true,
			wantTombstone: &billing.Tombstone{UID: "alice-1", Balance: 42, TopUps: []string{"a", "b"}},
			wantReasons:   []string{EventTombstone},
		},
		"a running server: held until it ends": {
			account:       openAccount("alice", "alice").Balance(90).Servers(running).Finalizers(hcv1.FinalizerLedger).Deleting(0).Obj(),
			objs:          []client.Object{runningPod},
			wantHeld:      true,
			wantReasons:   []string{EventDeletionHeld},
			wantDecisions: map[string]float64{metrics.DeletionHeld: 1},
		},
		"a pool whose share of a wallet's server is in its ledger: held": {
			account:       openAccount("physics", "alice", "bob").Balance(90).Servers(bobsServer).Finalizers(hcv1.FinalizerLedger).Deleting(0).Obj(),
			wantHeld:      true,
			wantReasons:   []string{EventDeletionHeld},
			wantDecisions: map[string]float64{metrics.DeletionHeld: 1},
		},
		"forced with a running server: released, the server's pod deleted": {
			account: openAccount("alice", "alice").Balance(90).Servers(running).UID("alice-1").Finalizers(hcv1.FinalizerLedger).Deleting(0).
				Annotation(hcv1.AnnotationForceDelete, "true").Obj(),
			objs:          []client.Object{runningPod},
			wantGone:      true,
			wantTombstone: &billing.Tombstone{UID: "alice-1", Balance: 90, Forced: true},
			wantPodGone:   true,
			wantReasons:   []string{EventDeletionForced, EventDeletionForced, EventTombstone},
			wantDecisions: map[string]float64{metrics.DeletionForced: 1},
		},
		"forced with a Hub API: the pod is deleted, not stopped through the hub (nobody would repeat the stop)": {
			account: openAccount("alice", "alice").Balance(90).Servers(running).UID("alice-1").Finalizers(hcv1.FinalizerLedger).Deleting(0).
				Annotation(hcv1.AnnotationForceDelete, "true").Obj(),
			objs:          []client.Object{runningPod},
			hub:           &fakeHub{},
			wantGone:      true,
			wantTombstone: &billing.Tombstone{UID: "alice-1", Balance: 90, Forced: true},
			wantPodGone:   true,
			wantReasons:   []string{EventDeletionForced, EventDeletionForced, EventTombstone},
			wantDecisions: map[string]float64{metrics.DeletionForced: 1},
		},
		"a force annotation other than true: held": {
			account: openAccount("alice", "alice").Balance(90).Servers(running).Finalizers(hcv1.FinalizerLedger).Deleting(0).
				Annotation(hcv1.AnnotationForceDelete, "yes").Obj(),
			objs:          []client.Object{runningPod},
			wantHeld:      true,
			wantReasons:   []string{EventDeletionHeld},
			wantDecisions: map[string]float64{metrics.DeletionHeld: 1},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			before := map[string]float64{}
			for _, d := range []string{metrics.DeletionHeld, metrics.DeletionForced} {
				before[d] = decisions(d)
			}
			api := fakeclient.New(nil, append(tc.objs, tc.account)...)
			env := newControllerEnv(api, at(10*time.Second))
			if tc.hub != nil {
				env.r.Hub = tc.hub
			}
			key := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: testNS, Name: tc.account.Name}}

			if _, err := env.r.Reconcile(context.Background(), key); err != nil {
				t.Fatal(err)
			}

			a := &hcv1.CreditAccount{}
			err := api.Get(context.Background(), key.NamespacedName, a)
			if gone := apierrors.IsNotFound(err); gone != tc.wantGone {
				t.Fatalf("account gone %v (%v), want %v", gone, err, tc.wantGone)
			}
			if !tc.wantGone {
				if !controllerutil.ContainsFinalizer(a, hcv1.FinalizerLedger) {
					t.Errorf("finalizer released on a held account")
				}
				if held := meta.IsStatusConditionTrue(a.Status.Conditions, hcv1.ConditionDeletionHeld); held != tc.wantHeld {
					t.Errorf("DeletionHeld %v, want %v", held, tc.wantHeld)
				}
			}
			if d := testutil.Diff(tc.wantTombstone, storedTombstone(t, api, tc.account.Name)); d != "" {
				t.Errorf("tombstone (-want +got):\n%s", d)
			}
			err = api.Get(context.Background(), types.NamespacedName{Namespace: testNS, Name: "jupyter-alice"}, &corev1.Pod{})
			if gone := apierrors.IsNotFound(err); gone != tc.wantPodGone && len(tc.objs) > 0 {
				t.Errorf("pod gone %v, want %v", gone, tc.wantPodGone)
			}
			if tc.hub != nil && len(tc.hub.stops()) != tc.wantHubStops {
				t.Errorf("%d stops through the Hub API, want %d", len(tc.hub.stops()), tc.wantHubStops)
			}
			if d := testutil.Diff(tc.wantReasons, reasons(env.eventList())); d != "" {
				t.Errorf("events (-want +got):\n%s", d)
			}
			got := map[string]float64{}
			for d, v := range before {
				if n := decisions(d) - v; n != 0 {
					got[d] = n
				}
			}
			if d := testutil.Diff(tc.wantDecisions, got); d != "" && len(tc.wantDecisions)+len(got) > 0 {
				t.Errorf("integrity decisions (-want +got):\n%s", d)
			}
		})
	}
}

// TestCreditAccountDeletionHeldThenReleased: the server ends, the held
// account goes, and its Event was told once.
func TestCreditAccountDeletionHeldThenReleased(t *testing.T) {
	running := testutil.MakeServerCharge("r1").Pod("jupyter-alice").UID("u1").Running(0).Obj()
	api := fakeclient.New(nil, openAccount("alice", "alice").Balance(90).Servers(running).UID("alice-1").Finalizers(hcv1.FinalizerLedger).Deleting(0).Obj(),
		billedPod("jupyter-alice", "u1", "alice", "r1").Running(0).Obj())
	env := newControllerEnv(api, at(5*time.Minute))
	reconcileAt := func(d time.Duration) {
		t.Helper()
		env.clock.SetTime(at(d))
		if _, err := env.r.Reconcile(context.Background(), aliceKey); err != nil {
			t.Fatal(err)
		}
	}
	reconcileAt(5 * time.Minute)
	reconcileAt(6 * time.Minute) // still held: told once
	pod := &corev1.Pod{}
	if err := api.Get(context.Background(), types.NamespacedName{Namespace: testNS, Name: "jupyter-alice"}, pod); err != nil {
		t.Fatal(err)
	}
	if err := api.Delete(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	reconcileAt(7 * time.Minute) // the end is marked
	reconcileAt(7*time.Minute + time.Second)

	if err := api.Get(context.Background(), aliceKey.NamespacedName, &hcv1.CreditAccount{}); !apierrors.IsNotFound(err) {
		t.Errorf("account still there (%v) after its last server ended", err)
	}
	// 90 at t0 + 5m, the pod gone before the boundary at 10m: nothing more.
	if tomb := storedTombstone(t, api, "alice"); tomb == nil || tomb.Balance != 90 {
		t.Errorf("tombstone %+v, want balance 90", tomb)
	}
	got := reasons(env.eventList())
	if n := strings.Count(strings.Join(got, " "), EventDeletionHeld); n != 1 {
		t.Errorf("events %v: %d DeletionHeld, want 1", got, n)
	}
	if got[len(got)-1] != EventTombstone {
		t.Errorf("events %v: want the tombstone last", got)
	}
}

func TestCreditAccountClaim(t *testing.T) {
	cases := map[string]struct {
		account *hcv1.CreditAccount
		objs    []client.Object
		wantErr bool
		// want is the account's balance and its applied and retired ids.
		wantBalance      int64
		wantApplied      []string
		wantRetired      []string
		wantReopenedFrom string
		wantTombstone    bool
		wantReasons      []string
	}{
		"a new account is claimed and opens with its initial balance and top-ups": {
			account:     openAccount("alice", "alice").TopUp("welcome", 50).Unopened().Obj(),
			wantBalance: 150, wantApplied: []string{"welcome"},
		},
		"created again under a deleted account's name: opens with its balance, never applies its top-ups again": {
			account:     openAccount("alice", "alice").TopUp("welcome", 50).TopUp("new", 5).UID("alice-2").Unopened().Obj(),
			objs:        []client.Object{makeTombstone("alice", "alice-1", 35, "gone", "welcome")},
			wantBalance: 40, wantApplied: []string{"welcome", "new"}, wantRetired: []string{"gone"},
			wantReopenedFrom: "alice-1",
			wantReasons:      []string{EventAccountReopened},
		},
		"a spawn opened it first: corrected to the tombstone's balance": {
			account: func() *hcv1.CreditAccount {
				a := openAccount("alice", "alice").TopUp("welcome", 50).Balance(140).Applied("welcome").UID("alice-2").Obj()
				a.Status.TotalToppedUp, a.Status.TotalCharged = 50, 10
				return a
			}(),
			objs:        []client.Object{makeTombstone("alice", "alice-1", 35, "welcome")},
			wantBalance: 25, wantApplied: []string{"welcome"},
			wantReopenedFrom: "alice-1",
			wantReasons:      []string{EventAccountReopened},
		},
		"a tombstone that cannot be read: nothing is opened, an error": {
			account:       openAccount("alice", "alice").TopUp("welcome", 50).Unopened().Obj(),
			objs:          []client.Object{tombstoneStore(map[string]string{"alice": `{"uid":"alice-1","balance":"lots"}`})},
			wantErr:       true,
			wantTombstone: true,
		},
		"another account's tombstone is not taken over, nor removed": {
			account:     openAccount("alice", "alice").TopUp("welcome", 50).Unopened().Obj(),
			objs:        []client.Object{makeTombstone("bob", "bob-1", 35, "welcome")},
			wantBalance: 150, wantApplied: []string{"welcome"},
		},
		"an account already claimed reads no tombstone": {
			account:       openAccount("alice", "alice").Balance(60).Finalizers(hcv1.FinalizerLedger).Obj(),
			objs:          []client.Object{makeTombstone("alice", "alice-1", 35, "welcome")},
			wantBalance:   60,
			wantTombstone: true,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			before := decisions(metrics.AccountReopened)
			api := fakeclient.New(nil, append(tc.objs, tc.account)...)
			env := newControllerEnv(api, at(time.Minute))

			_, err := env.r.Reconcile(context.Background(), aliceKey)

			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error: %v", err, tc.wantErr)
			}
			a := testutil.GetAccount(t, api, testNS, "alice")
			if tc.wantErr {
				if a.Status.OpenedAt != nil || controllerutil.ContainsFinalizer(a, hcv1.FinalizerLedger) {
					t.Errorf("account opened (%v) or claimed despite an unreadable tombstone", a.Status.OpenedAt)
				}
			} else {
				if !controllerutil.ContainsFinalizer(a, hcv1.FinalizerLedger) {
					t.Errorf("finalizer not added")
				}
				got := struct {
					Balance          int64
					Applied, Retired []string
					ReopenedFrom     string
				}{a.Status.Balance, a.Status.AppliedTopUps, a.Status.RetiredTopUps, a.Status.ReopenedFrom}
				want := got
				want.Balance, want.Applied, want.Retired, want.ReopenedFrom = tc.wantBalance, tc.wantApplied, tc.wantRetired, tc.wantReopenedFrom
				if d := testutil.Diff(want, got); d != "" {
					t.Errorf("account (-want +got):\n%s", d)
				}
			}
			stored := storedTombstones(t, api)
			if _, kept := stored["alice"]; kept != tc.wantTombstone {
				t.Errorf("tombstone kept %v, want %v", kept, tc.wantTombstone)
			}
			if _, ok := stored["bob"]; !ok && len(tc.objs) > 0 && tc.objs[0].(*corev1.ConfigMap).Data["bob"] != "" {
				t.Errorf("bob's tombstone removed by alice's claim")
			}
			var gotReasons []string
			for _, r := range reasons(env.eventList()) {
				if r == EventAccountReopened {
					gotReasons = append(gotReasons, r)
				}
			}
			if d := testutil.Diff(tc.wantReasons, gotReasons); d != "" {
				t.Errorf("events (-want +got):\n%s", d)
			}
			if n := decisions(metrics.AccountReopened) - before; n != float64(len(tc.wantReasons)) {
				t.Errorf("%v AccountReopened decisions, want %d", n, len(tc.wantReasons))
			}
		})
	}
}

// TestTombstoneStore: every tombstone goes into the one ConfigMap, under
// the account's name; the others in it are kept, whatever happens.
func TestTombstoneStore(t *testing.T) {
	bobs := billing.EncodeTombstone(billing.Tombstone{UID: "bob-1", Balance: 7, TopUps: []string{"x"}})
	big := strings.Repeat("x", TombstonesMaxBytes-len("old")-len(bobs)-len("bob")-10)
	forbidden := func(verb string) *interceptor.Funcs {
		deny := func(obj client.Object) error {
			if _, ok := obj.(*corev1.ConfigMap); ok {
				return apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, obj.GetName(), nil)
			}
			return nil
		}
		f := &interceptor.Funcs{}
		switch verb {
		case "create":
			f.Create = func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				if err := deny(obj); err != nil {
					return err
				}
				return c.Create(ctx, obj, opts...)
			}
		case "update":
			f.Update = func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
				if err := deny(obj); err != nil {
					return err
				}
				return c.Update(ctx, obj, opts...)
			}
		}
		return f
	}
	cases := map[string]struct {
		store *corev1.ConfigMap // nil: missing
		funcs *interceptor.Funcs
		// wantHeld is the DeletionHeld reason ("": released).
		wantHeld string
		// wantKept are the keys the store must still hold as they were.
		wantKept map[string]string
	}{
		"missing, and the operator may create it: created with the tombstone": {},
		"with another account's tombstone: both kept": {
			store:    tombstoneStore(map[string]string{"bob": bobs}),
			wantKept: map[string]string{"bob": bobs},
		},
		"with a tombstone of an earlier alice never taken over: replaced": {
			store: makeTombstone("alice", "alice-0", 3, "old"),
		},
		"missing, and the operator may not create it: held": {
			funcs:    forbidden("create"),
			wantHeld: hcv1.ReasonTombstoneStoreMissing,
		},
		"not writable (the Role names another ConfigMap): held": {
			store:    tombstoneStore(map[string]string{"bob": bobs}),
			funcs:    forbidden("update"),
			wantHeld: hcv1.ReasonTombstoneStoreForbidden,
			wantKept: map[string]string{"bob": bobs},
		},
		"full: held, nothing dropped": {
			store:    tombstoneStore(map[string]string{"bob": bobs, "old": big}),
			wantHeld: hcv1.ReasonTombstoneStoreFull,
			wantKept: map[string]string{"bob": bobs, "old": big},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			heldBefore := decisions(metrics.DeletionHeld)
			account := openAccount("alice", "alice").Balance(42).Applied("a").TopUp("a", 5).UID("alice-1").Finalizers(hcv1.FinalizerLedger).Deleting(0).Obj()
			objs := []client.Object{account}
			if tc.store != nil {
				objs = append(objs, tc.store)
			}
			api := fakeclient.New(tc.funcs, objs...)
			env := newControllerEnv(api, at(10*time.Second))

			res, err := env.r.Reconcile(context.Background(), aliceKey)
			if err != nil {
				t.Fatal(err)
			}

			stored := storedTombstones(t, api)
			for k, v := range tc.wantKept {
				if stored[k] != v {
					t.Errorf("tombstone %s changed or dropped", k)
				}
			}
			if tc.wantHeld == "" {
				if err := api.Get(context.Background(), aliceKey.NamespacedName, &hcv1.CreditAccount{}); !apierrors.IsNotFound(err) {
					t.Fatalf("account not released: %v", err)
				}
				want := &billing.Tombstone{UID: "alice-1", Balance: 42, TopUps: []string{"a"}}
				if d := testutil.Diff(want, storedTombstone(t, api, "alice")); d != "" {
					t.Errorf("tombstone (-want +got):\n%s", d)
				}
				return
			}
			a := testutil.GetAccount(t, api, testNS, "alice")
			if !controllerutil.ContainsFinalizer(a, hcv1.FinalizerLedger) {
				t.Fatalf("finalizer released without a tombstone")
			}
			c := meta.FindStatusCondition(a.Status.Conditions, hcv1.ConditionDeletionHeld)
			if c == nil || c.Status != metav1.ConditionTrue || c.Reason != tc.wantHeld {
				t.Fatalf("DeletionHeld %+v, want reason %s", c, tc.wantHeld)
			}
			if !strings.Contains(c.Message, DefaultTombstoneConfigMap) {
				t.Errorf("DeletionHeld message %q does not name the ConfigMap", c.Message)
			}
			if res.RequeueAfter != tombstoneRetry {
				t.Errorf("requeue after %v, want %v", res.RequeueAfter, tombstoneRetry)
			}
			if d := testutil.Diff([]string{EventDeletionHeld}, reasons(env.eventList())); d != "" {
				t.Errorf("events (-want +got):\n%s", d)
			}
			if n := decisions(metrics.DeletionHeld) - heldBefore; n != 1 {
				t.Errorf("%v DeletionHeld decisions, want 1", n)
			}
			// Told once.
			if _, err := env.r.Reconcile(context.Background(), aliceKey); err != nil {
				t.Fatal(err)
			}
			if got := env.eventList(); len(got) != 0 {
				t.Errorf("held again: events %v, want none", got)
			}
			if n := decisions(metrics.DeletionHeld) - heldBefore; n != 1 {
				t.Errorf("%v DeletionHeld decisions, want 1", n)
			}
		})
	}
}

// TestTombstoneStoreFullThenPruned: the admin removes an old key; the held
// account is released on its next try.
func TestTombstoneStoreFullThenPruned(t *testing.T) {
	big := strings.Repeat("x", TombstonesMaxBytes-len("old"))
	api := fakeclient.New(nil, tombstoneStore(map[string]string{"old": big}),
		openAccount("alice", "alice").Balance(42).UID("alice-1").Finalizers(hcv1.FinalizerLedger).Deleting(0).Obj())
	env := newControllerEnv(api, at(10*time.Second))
	if _, err := env.r.Reconcile(context.Background(), aliceKey); err != nil {
		t.Fatal(err)
	}
	if a := testutil.GetAccount(t, api, testNS, "alice"); !meta.IsStatusConditionTrue(a.Status.Conditions, hcv1.ConditionDeletionHeld) {
		t.Fatalf("not held: %+v", a.Status.Conditions)
	}
	cm := &corev1.ConfigMap{}
	if err := api.Get(context.Background(), types.NamespacedName{Namespace: testNS, Name: DefaultTombstoneConfigMap}, cm); err != nil {
		t.Fatal(err)
	}
	delete(cm.Data, "old") // kubectl edit cm hubcredits-tombstones
	if err := api.Update(context.Background(), cm); err != nil {
		t.Fatal(err)
	}
	if _, err := env.r.Reconcile(context.Background(), aliceKey); err != nil {
		t.Fatal(err)
	}
	if err := api.Get(context.Background(), aliceKey.NamespacedName, &hcv1.CreditAccount{}); !apierrors.IsNotFound(err) {
		t.Fatalf("account not released once pruned: %v", err)
	}
	if tomb := storedTombstone(t, api, "alice"); tomb == nil || tomb.Balance != 42 {
		t.Errorf("tombstone %+v, want balance 42", tomb)
	}
}

// TestTombstonesOfTwoAccountsReleasedAtOnce: another account's tombstone
// lands between the read and the write of this one; the write conflicts,
// starts over from a fresh read, and both are kept.
func TestTombstonesOfTwoAccountsReleasedAtOnce(t *testing.T) {
	bobs := billing.EncodeTombstone(billing.Tombstone{UID: "bob-1", Balance: 7})
	raced := false
	api := fakeclient.New(&interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if cm, ok := obj.(*corev1.ConfigMap); ok && !raced {
				raced = true
				// bob's release writes first.
				other := &corev1.ConfigMap{}
				if err := c.Get(ctx, client.ObjectKeyFromObject(cm), other); err != nil {
					return err
				}
				other.Data = map[string]string{"bob": bobs}
				if err := c.Update(ctx, other); err != nil {
					return err
				}
			}
			return c.Update(ctx, obj, opts...)
		},
	}, tombstoneStore(map[string]string{}),
		openAccount("alice", "alice").Balance(42).UID("alice-1").Finalizers(hcv1.FinalizerLedger).Deleting(0).Obj())
	env := newControllerEnv(api, at(10*time.Second))
	if _, err := env.r.Reconcile(context.Background(), aliceKey); err != nil {
		t.Fatal(err)
	}
	if !raced {
		t.Fatal("the race was not staged")
	}
	stored := storedTombstones(t, api)
	if stored["bob"] != bobs {
		t.Errorf("bob's tombstone lost: %v", stored)
	}
	if tomb := storedTombstone(t, api, "alice"); tomb == nil || tomb.Balance != 42 {
		t.Errorf("alice's tombstone %+v, want balance 42", tomb)
	}
}
