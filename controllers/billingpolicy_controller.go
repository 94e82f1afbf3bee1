package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
)

// BillingPolicyReconciler reports whether a policy is in use (Accepted) and
// whether another policy has the same priority (Tied).
type BillingPolicyReconciler struct {
	Client   client.Client
	Policies *billing.PolicyCache
}

var _ reconcile.Reconciler = (*BillingPolicyReconciler)(nil)

// +kubebuilder:rbac:groups=hubcredits.io,namespace=system,resources=billingpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=hubcredits.io,namespace=system,resources=billingpolicies/status,verbs=get;update

// policyConflictRequeue is when a policy whose status write lost a conflict
// is looked at again (its change wakes it sooner).
const policyConflictRequeue = time.Second

// Reconcile sets the policy's conditions.
func (r *BillingPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	p := &hcv1.BillingPolicy{}
	if err := r.Client.Get(ctx, req.NamespacedName, p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	var all hcv1.BillingPolicyList
	if err := r.Client.List(ctx, &all, client.InNamespace(p.Namespace)); err != nil {
		return ctrl.Result{}, err
	}
	before := p.Status.DeepCopy()
	policyStatus(p, all.Items, r.Policies)
	if equality.Semantic.DeepEqual(before, &p.Status) {
		return ctrl.Result{}, nil
	}
	if err := r.Client.Status().Update(ctx, p); apierrors.IsConflict(err) {
		return ctrl.Result{RequeueAfter: policyConflictRequeue}, nil // the policy changed meanwhile: look again
	} else if err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, nil
}

// policyStatus computes a policy's conditions from its peers.
func policyStatus(p *hcv1.BillingPolicy, all []hcv1.BillingPolicy, cache *billing.PolicyCache) {
	set := func(t string, st metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&p.Status.Conditions, metav1.Condition{Type: t, Status: st, Reason: reason, Message: msg, ObservedGeneration: p.Generation})
	}
	if _, err := cache.Get(p); err != nil {
		set(hcv1.ConditionAccepted, metav1.ConditionFalse, hcv1.ReasonInvalidExpr, err.Error())
	} else {
		set(hcv1.ConditionAccepted, metav1.ConditionTrue, hcv1.ReasonValid, "The policy prices the pods it selects.")
	}
	var peers []string
	for i := range all {
		o := &all[i]
		if o.Name == p.Name || o.Spec.Priority != p.Spec.Priority {
			continue
		}
		if _, err := cache.Get(o); err != nil {
			continue // a policy that does not compile prices nothing
		}
		peers = append(peers, o.Name)
	}
	if len(peers) == 0 {
		set(hcv1.ConditionTied, metav1.ConditionFalse, hcv1.ReasonNoTie, "No other policy has the same priority.")
	} else {
		names := append(peers, p.Name)
		sort.Strings(names)
		set(hcv1.ConditionTied, metav1.ConditionTrue, hcv1.ReasonSamePriority, fmt.Sprintf(
			"Policies %s have the same priority %d; for a pod they all select, %q wins (names sort first).",
			strings.Join(names, ", "), p.Spec.Priority, names[0]))
	}
	p.Status.ObservedGeneration = p.Generation
}

// SetupWithManager watches policies; a change to one re-checks its peers' ties.
func (r *BillingPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&hcv1.BillingPolicy{}).
		Watches(&hcv1.BillingPolicy{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			var all hcv1.BillingPolicyList
			if err := r.Client.List(ctx, &all, client.InNamespace(o.GetNamespace())); err != nil {
				return nil
			}
			out := make([]reconcile.Request, 0, len(all.Items))
			for _, p := range all.Items {
				out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: p.Namespace, Name: p.Name}})
			}
			return out
		})).
		Named("billingpolicy").
		Complete(r)
}
