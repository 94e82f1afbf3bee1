package controllers

import (
	"context"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/testutil"
	"github.com/hubcredits/hubcredits/internal/testutil/fakeclient"
)

// condition is a Condition without its transition time (stamped from the
// wall clock by meta.SetStatusCondition).
type condition struct {
	Status             metav1.ConditionStatus
	Reason             string
	Message            string
	ObservedGeneration int64
}

func conditions(p *hcv1.BillingPolicy) map[string]condition {
	out := map[string]condition{}
	for _, c := range p.Status.Conditions {
		out[c.Type] = condition{c.Status, c.Reason, c.Message, c.ObservedGeneration}
	}
	return out
}

func TestPolicyStatus(t *testing.T) {
	accepted := condition{metav1.ConditionTrue, hcv1.ReasonValid, "The policy prices the pods it selects.", 3}
	noTie := condition{metav1.ConditionFalse, hcv1.ReasonNoTie, "No other policy has the same priority.", 3}
	cases := map[string]struct {
		policy *hcv1.BillingPolicy
		peers  []*hcv1.BillingPolicy
		// wantAcceptedMsg are parts of the Accepted=False message (the
		// compiler's words); nil: Accepted=True.
		wantAcceptedMsg []string
		wantTied        condition
	}{
		"alone and valid": {
			policy:   pricedPolicy("gpu", 10).Obj(),
			wantTied: noTie,
		},
		"other priorities are no tie": {
			policy:   pricedPolicy("gpu", 10).Obj(),
			peers:    []*hcv1.BillingPolicy{pricedPolicy("default", 0).Obj(), pricedPolicy("large", 5).Obj()},
			wantTied: noTie,
		},
		"a CEL error": {
			policy:          pricedPolicy("typo", 0).Match("pod.metadata.labelz.size == 'large' && gpus > 0").Obj(),
			wantAcceptedMsg: []string{"spec.matchExpression:", "undeclared reference to 'gpus'"},
			wantTied:        noTie,
		},
		"a CEL type error": {
			policy:          pricedPolicy("int", 0).Match("1").Obj(),
			wantAcceptedMsg: []string{"spec.matchExpression: the expression returns int, but it must return bool"},
			wantTied:        noTie,
		},
		"a tie it loses": {
			policy: pricedPolicy("b-large", 5).Obj(),
			peers:  []*hcv1.BillingPolicy{pricedPolicy("a-large", 5).Obj(), pricedPolicy("c-large", 5).Obj(), pricedPolicy("other", 4).Obj()},
			wantTied: condition{metav1.ConditionTrue, hcv1.ReasonSamePriority,
				`Policies a-large, b-large, c-large have the same priority 5; for a pod they all select, "a-large" wins (names sort first).`, 3},
		},
		"a tie it wins": {
			policy: pricedPolicy("a-large", 5).Obj(),
			peers:  []*hcv1.BillingPolicy{pricedPolicy("b-large", 5).Obj()},
			wantTied: condition{metav1.ConditionTrue, hcv1.ReasonSamePriority,
				`Policies a-large, b-large have the same priority 5; for a pod they all select, "a-large" wins (names sort first).`, 3},
		},
		"negative priorities tie too": {
			policy: pricedPolicy("z", -7).Obj(),
			peers:  []*hcv1.BillingPolicy{pricedPolicy("y", -7).Obj()},
			wantTied: condition{metav1.ConditionTrue, hcv1.ReasonSamePriority,
				`Policies y, z have the same priority -7; for a pod they all select, "y" wins (names sort first).`, 3},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := tc.policy
			all := []hcv1.BillingPolicy{*p} // the list includes the policy itself
			for _, o := range tc.peers {
				all = append(all, *o)
			}

			policyStatus(p, all, &billing.PolicyCache{})

			got := conditions(p)
			if tc.wantAcceptedMsg == nil {
				if d := testutil.Diff(accepted, got[hcv1.ConditionAccepted]); d != "" {
					t.Errorf("Accepted (-want +got):\n%s", d)
				}
			} else {
				c := got[hcv1.ConditionAccepted]
				if c.Status != metav1.ConditionFalse || c.Reason != hcv1.ReasonInvalidExpr || c.ObservedGeneration != 3 {
					t.Errorf("Accepted %+v, want False/%s at generation 3", c, hcv1.ReasonInvalidExpr)
				}
				for _, want := range tc.wantAcceptedMsg {
					if !strings.Contains(c.Message, want) {
						t.Errorf("Accepted message %q does not say %q", c.Message, want)
					}
				}
			}
			tied := got[hcv1.ConditionTied]
			tied.Message = sortTiedNames(tied.Message)
			if d := testutil.Diff(tc.wantTied, tied); d != "" {
				t.Errorf("Tied (-want +got):\n%s", d)
			}
			if p.Status.ObservedGeneration != 3 {
				t.Errorf("observedGeneration %d, want 3", p.Status.ObservedGeneration)
			}
		})
	}
}

// sortTiedNames sorts the list in "Policies x, y have the same priority":
// which order the names come in is not the point of these tests.
func sortTiedNames(msg string) string {
	rest, ok := strings.CutPrefix(msg, "Policies ")
	if !ok {
		return msg
	}
	list, tail, ok := strings.Cut(rest, " have ")
	if !ok {
		return msg
	}
	names := strings.Split(list, ", ")
	sort.Strings(names)
	return "Policies " + strings.Join(names, ", ") + " have " + tail
}

// A policy that does not compile prices nothing (PolicyCache.Sorted skips
// it), yet Tied names it as the winner over the valid policy that does
// price the pods.
func TestPolicyStatusTieIgnoresPoliciesThatDoNotCompile(t *testing.T) {
	p := pricedPolicy("b-good", 5).Obj()
	all := []hcv1.BillingPolicy{*p, *pricedPolicy("a-broken", 5).Match("(").Obj()}

	policyStatus(p, all, &billing.PolicyCache{})

	if c := conditions(p)[hcv1.ConditionTied]; strings.Contains(c.Message, `"a-broken" wins`) {
		t.Errorf("Tied says a policy that prices nothing wins: %+v", c)
	}
}

func TestBillingPolicyReconcile(t *testing.T) {
	api := fakeclient.New(nil, pricedPolicy("a-large", 5).Obj(), pricedPolicy("b-large", 5).Obj(), pricedPolicy("typo", 0).Match("gpus").Obj())
	var writes atomic.Int32
	c := countWrites(api, &writes, nil)
	r := &BillingPolicyReconciler{Client: c, Policies: &billing.PolicyCache{}}
	req := func(name string) reconcile.Request {
		return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: testNS, Name: name}}
	}

	for range 2 { // the second round finds nothing to change
		for _, name := range []string{"a-large", "b-large", "typo", "gone"} {
			if res, err := r.Reconcile(context.Background(), req(name)); err != nil || res.RequeueAfter != 0 {
				t.Fatalf("reconciling %s: %+v, %v", name, res, err)
			}
		}
	}

	if n := writes.Load(); n != 3 {
		t.Errorf("%d status writes, want 3 (one per policy, once)", n)
	}
	got := map[string]map[string]metav1.ConditionStatus{}
	for _, name := range []string{"a-large", "b-large", "typo"} {
		p := &hcv1.BillingPolicy{}
		if err := api.Get(context.Background(), client.ObjectKey{Namespace: testNS, Name: name}, p); err != nil {
			t.Fatal(err)
		}
		got[name] = map[string]metav1.ConditionStatus{}
		for _, c := range p.Status.Conditions {
			got[name][c.Type] = c.Status
		}
	}
	want := map[string]map[string]metav1.ConditionStatus{
		"a-large": {hcv1.ConditionAccepted: metav1.ConditionTrue, hcv1.ConditionTied: metav1.ConditionTrue},
		"b-large": {hcv1.ConditionAccepted: metav1.ConditionTrue, hcv1.ConditionTied: metav1.ConditionTrue},
		"typo":    {hcv1.ConditionAccepted: metav1.ConditionFalse, hcv1.ConditionTied: metav1.ConditionFalse},
	}
	if d := testutil.Diff(want, got); d != "" {
		t.Errorf("conditions (-want +got):\n%s", d)
	}
}
