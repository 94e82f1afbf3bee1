package controllers

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/testutil"
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
		p := pinned(makePod("jupyter-x", "u7", "", "").running(0).obj())
		delete(p.Annotations, hcv1.AnnotationAccount)
		p.Labels[hcv1.LabelAccount] = account
		p.Annotations[hcv1.AnnotationUsername] = user
		return p
	}
	running := makeServer("r1").pod("jupyter-alice", "u1").startedAt(0).obj()
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
			objs: []client.Object{makeAccount("alice", "alice").servers(running).obj(), makeAccount("lab", "bob").obj(),
				pinned(makePod("jupyter-alice", "u1", "lab", "r1").running(0).obj())},
			reconcile: "alice", now: 25 * time.Minute,
			wantPeriods: map[string]map[string]int64{"alice": {"r1": 3}, "lab": {}},
			wantEvents:  []string{"Warning AccountEditIgnored"}, // once, not on every run
		},
		"the account it names now never adopts it": {
			objs: []client.Object{makeAccount("alice", "alice").servers(running).obj(), makeAccount("lab", "alice").obj(),
				pinned(makePod("jupyter-alice", "u1", "lab", "r1").running(0).obj())},
			reconcile: "lab", now: 25 * time.Minute,
			wantPeriods: map[string]map[string]int64{"alice": {"r1": 1}, "lab": {}},
		},
		"a reservation no ledger holds: adopted again, billed from now": {
			objs:      []client.Object{makeAccount("alice", "alice").obj(), pinned(makePod("jupyter-alice", "u1", "alice", "r1").running(0).obj())},
			reconcile: "alice", now: 5 * time.Minute,
			wantPeriods: map[string]map[string]int64{"alice": {"pod-u1": 1}},
			wantEvents:  []string{"Warning ServerReadopted", "Warning ServerReadopted", "Normal ServerStarted", "Normal ServerStarted"},
		},
		"a non-member's pod labelled for a pool: reported, left unbilled": {
			objs:      []client.Object{makeAccount("lab", "bob").obj(), labelledFor("lab", "alice")},
			reconcile: "lab", now: 5 * time.Minute, unbillable: UnbillableReport,
			wantPeriods: map[string]map[string]int64{"lab": {}},
			wantEvents:  []string{"Warning ServerUnbillable", "Warning ServerUnbillable"},
		},
		"a pod without a user labelled for a pool: stopped": {
			objs:      []client.Object{makeAccount("lab", "bob").obj(), labelledFor("lab", "")},
			reconcile: "lab", now: 5 * time.Minute, unbillable: UnbillableStop,
			wantPeriods: map[string]map[string]int64{"lab": {}},
			wantEvents:  []string{"Warning ServerUnbillable", "Warning ServerUnbillable"},
			wantDeleted: true,
		},
		"a member's pod labelled for a pool: adopted": {
			objs:      []client.Object{makeAccount("lab", "bob").obj(), labelledFor("lab", "bob")},
			reconcile: "lab", now: 5 * time.Minute,
			wantPeriods: map[string]map[string]int64{"lab": {"pod-u7": 1}},
			wantEvents:  []string{"Normal ServerAdopted", "Normal ServerAdopted", "Normal ServerStarted", "Normal ServerStarted"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			env := newControllerEnv(newAPI(nil, tc.objs...), at(tc.now))
			env.r.UnbillablePods = tc.unbillable
			key := ctrl.Request{NamespacedName: types.NamespacedName{Namespace: testNS, Name: tc.reconcile}}
			for range 2 { // the second run reports nothing new
				if _, err := env.r.Reconcile(context.Background(), key); err != nil {
					t.Fatal(err)
				}
			}
			got := map[string]map[string]int64{}
			for name := range tc.wantPeriods {
				got[name] = periods(getAccount(t, env.api, name))
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
