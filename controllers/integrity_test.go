package controllers

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/testutil"
	"github.com/hubcredits/hubcredits/internal/testutil/fakeclient"
)

// Issue 13 at the controller: which ledger finds a pod, which adopts it,
// and what happens to a pod nobody may bill.
func TestReconcileIntegrity(t *testing.T) {
	pinned := func(p *corev1.Pod) *corev1.Pod {
		for k, v := range billing.PinPrice(billing.Price{Value: 10, Interval: 10 * time.Minute}) {
			p.Annotations[k] = v
		}
		return p
	}
	labelledFor := func(account, user string) *corev1.Pod {
		return pinned(testutil.MakePod(testNS, "jupyter-x").UID("u7").CreatedAt(0).
			User(user).Label(hcv1.LabelAccount, account).Running(0).Obj())
	}
	running := testutil.MakeServerCharge("r1").Pod("jupyter-alice").UID("u1").Running(0).Obj()
	cases := map[string]struct {
		objs       []client.Object
		reconcile  string // the account reconciled
		unbillable string
		now        time.Duration
		// wantPeriods are each account's entries' periodsPaid, by id.
		wantPeriods map[string]map[string]int64
		wantEvents  []string
		wantDeleted bool
	}{
		"an account annotation edited: the admitting wallet keeps billing it": {
			objs: []client.Object{openAccount("alice", "alice").Servers(running).Obj(), openAccount("lab", "bob").Obj(),
				pinned(billedPod("jupyter-alice", "u1", "lab", "r1").Running(0).Obj())},
			reconcile: "alice", now: 25 * time.Minute,
			wantPeriods: map[string]map[string]int64{"alice": {"r1": 3}, "lab": {}},
			wantEvents:  []string{"Warning AccountEditIgnored"}, // once, not on every run
		},
		"the account it names now never adopts it": {
			objs: []client.Object{openAccount("alice", "alice").Servers(running).Obj(), openAccount("lab", "alice").Obj(),
				pinned(billedPod("jupyter-alice", "u1", "lab", "r1").Running(0).Obj())},
			reconcile: "lab", now: 25 * time.Minute,
			wantPeriods: map[string]map[string]int64{"alice": {"r1": 1}, "lab": {}},
		},
		"a reservation no ledger holds: adopted again, billed from now": {
			objs:      []client.Object{openAccount("alice", "alice").Obj(), pinned(billedPod("jupyter-alice", "u1", "alice", "r1").Running(0).Obj())},
			reconcile: "alice", now: 5 * time.Minute,
			wantPeriods: map[string]map[string]int64{"alice": {"pod-u1": 1}},
			wantEvents:  []string{"Warning ServerReadopted", "Warning ServerReadopted", "Normal ServerStarted", "Normal ServerStarted"},
		},
		"a non-member's pod labelled for a pool: reported, left unbilled": {
			objs:      []client.Object{openAccount("lab", "bob").Obj(), labelledFor("lab", "alice")},
			reconcile: "lab", now: 5 * time.Minute, unbillable: UnbillableReport,
			wantPeriods: map[string]map[string]int64{"lab": {}},
			wantEvents:  []string{"Warning ServerUnbillable", "Warning ServerUnbillable"},
		},
		"a pod without a user labelled for a pool: stopped": {
			objs:      []client.Object{openAccount("lab", "bob").Obj(), labelledFor("lab", "")},
			reconcile: "lab", now: 5 * time.Minute, unbillable: UnbillableStop,
			wantPeriods: map[string]map[string]int64{"lab": {}},
			wantEvents:  []string{"Warning ServerUnbillable", "Warning ServerUnbillable"},
			wantDeleted: true,
		},
		"a member's pod labelled for a pool: adopted": {
			objs:      []client.Object{openAccount("lab", "bob").Obj(), labelledFor("lab", "bob")},
			reconcile: "lab", now: 5 * time.Minute,
			wantPeriods: map[string]map[string]int64{"lab": {"pod-u7": 1}},
			wantEvents:  []string{"Normal ServerAdopted", "Normal ServerAdopted", "Normal ServerStarted", "Normal ServerStarted"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			env := newControllerEnv(fakeclient.New(nil, tc.objs...), at(tc.now))
			env.r.UnbillablePods = tc.unbillable
			key := reconcileKey(tc.reconcile)
			for range 2 { // the second run reports nothing new
				if _, err := env.r.Reconcile(context.Background(), key); err != nil {
					t.Fatal(err)
				}
			}
			got := map[string]map[string]int64{}
			for name := range tc.wantPeriods {
				got[name] = periods(testutil.GetAccount(t, env.api, testNS, name))
			}
			if d := testutil.Diff(tc.wantPeriods, got); d != "" {
				t.Errorf("periods paid (-want +got):\n%s", d)
			}
			if d := testutil.Diff(tc.wantEvents, env.events()); d != "" {
				t.Errorf("events (-want +got):\n%s", d)
			}
			pod := &corev1.Pod{}
			err := env.api.Get(context.Background(), types.NamespacedName{Namespace: testNS, Name: "jupyter-x"}, pod)
			if deleted := apierrors.IsNotFound(err); deleted != tc.wantDeleted && tc.unbillable != "" {
				t.Errorf("pod deleted: %v, want %v", deleted, tc.wantDeleted)
			}
		})
	}
}
