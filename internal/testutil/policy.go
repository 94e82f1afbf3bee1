package testutil

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// PolicyWrapper builds a BillingPolicy.
type PolicyWrapper struct{ p hcv1.BillingPolicy }

// MakePolicy is policy name in ns as the API server stores it: no price
// of its own yet, the billingInterval default (Interval) applied.
func MakePolicy(ns, name string) *PolicyWrapper {
	return &PolicyWrapper{p: hcv1.BillingPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       hcv1.BillingPolicySpec{BillingInterval: metav1.Duration{Duration: Interval}},
	}}
}

// Obj is a copy of the policy built so far.
func (w *PolicyWrapper) Obj() *hcv1.BillingPolicy { return w.p.DeepCopy() }

// UID sets metadata.uid.
func (w *PolicyWrapper) UID(uid types.UID) *PolicyWrapper { w.p.UID = uid; return w }

// Generation sets metadata.generation.
func (w *PolicyWrapper) Generation(g int64) *PolicyWrapper { w.p.Generation = g; return w }

// Value sets spec.billingValue.
func (w *PolicyWrapper) Value(v int64) *PolicyWrapper { w.p.Spec.BillingValue = &v; return w }

// ValueExpr sets spec.billingValueExpression.
func (w *PolicyWrapper) ValueExpr(e string) *PolicyWrapper {
	w.p.Spec.BillingValueExpression = e
	return w
}

// Every sets spec.billingInterval.
func (w *PolicyWrapper) Every(d time.Duration) *PolicyWrapper {
	w.p.Spec.BillingInterval = metav1.Duration{Duration: d}
	return w
}

// Priority sets spec.priority.
func (w *PolicyWrapper) Priority(p int32) *PolicyWrapper { w.p.Spec.Priority = p; return w }

// Match sets spec.matchExpression.
func (w *PolicyWrapper) Match(e string) *PolicyWrapper { w.p.Spec.MatchExpression = e; return w }

// Selecting sets spec.podSelector to the one label k=v.
func (w *PolicyWrapper) Selecting(k, v string) *PolicyWrapper {
	return w.Selector(&metav1.LabelSelector{MatchLabels: map[string]string{k: v}})
}

// Selector sets spec.podSelector.
func (w *PolicyWrapper) Selector(s *metav1.LabelSelector) *PolicyWrapper {
	w.p.Spec.PodSelector = s
	return w
}
