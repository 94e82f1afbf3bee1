package webhooks

import (
	"context"
	"errors"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
)

// The webhook prices pods from the BillingPolicies in the informer cache.
// +kubebuilder:rbac:groups=hubcredits.io,namespace=system,resources=billingpolicies,verbs=get;list;watch

const (
	// livePolicyTTL is how long a live list that found no policies in a
	// namespace is trusted before the next spawn there asks again: long
	// enough that a namespace without policies costs one live list per
	// half minute, not one per spawn; short enough that a lagging informer
	// is outwaited (it catches up within tens of seconds).
	livePolicyTTL = 30 * time.Second
	// maxNoPolicyNamespaces bounds the memory of those answers. Past it,
	// all are forgotten at once: the price is one more live list per
	// namespace.
	maxNoPolicyNamespaces = 10000
)

// decision is the outcome for one pod: its price and who pays.
type decision struct {
	price   billing.Price
	wallet  *hcv1.CreditAccount
	project *hcv1.CreditAccount
}

// decide prices the pod and finds who pays.
func (h *PodAdmitter) decide(ctx context.Context, ns, user string, pod *corev1.Pod, dryRun bool) (*decision, error) {
	// The groups are trusted as the username is: from a pod whose creator
	// passed --allowed-creators (admit checked it).
	groups, err := billing.PodGroups(pod.Annotations)
	if err != nil {
		return nil, err
	}
	price, err := h.price(ctx, ns, pod, groups)
	if err != nil {
		return nil, err
	}
	wallet, err := h.wallet(ctx, ns, user, groups, pod.Labels[hcv1.LabelAccount], dryRun)
	var denial *billing.Denial
	if price.Value == 0 && !h.FreeNeedsAccount && errors.As(err, &denial) {
		// Nothing to bill: a free server needs no payer.
		return &decision{price: price}, nil
	}
	if err != nil {
		return nil, err
	}
	project, err := h.project(ctx, ns, wallet)
	if err != nil {
		return nil, err
	}
	return &decision{price: price, wallet: wallet, project: project}, nil
}

// price resolves the pod's price from its namespace's policies.
func (h *PodAdmitter) price(ctx context.Context, ns string, pod *corev1.Pod, groups []string) (billing.Price, error) {
	pols, err := h.policies(ctx, ns)
	if err != nil {
		return billing.Price{}, err
	}
	price, err := billing.ResolvePriceInGroups(h.Policies.Sorted(pols), pod, groups, h.Defaults)
	if err != nil {
		// The evaluation error may quote the pod (and so the user's token):
		// the user is told which policy failed, never its error text.
		var policyErr *billing.PolicyError
		policy := ""
		if errors.As(err, &policyErr) {
			policy = policyErr.Policy
		}
		logf.FromContext(ctx).Info("A billing policy could not price a pod", "policy", policy, "pod", klog.KObj(pod))
		return billing.Price{}, &billing.Denial{Reason: billing.DenyPriceError, Message: billing.PriceErrorMessage(policy)}
	}
	return price, nil
}

// policies returns the namespace's BillingPolicies from the informer cache.
// When the cache shows none there, it asks the API server (at most once per
// livePolicyTTL while the answer is still none): after an API server
// restart an informer can lag by tens of seconds, and a namespace's first
// policies must not be missed for the default price. ResourceQuota
// admission looks up quotas its informer does not show yet the same way.
func (h *PodAdmitter) policies(ctx context.Context, ns string) ([]hcv1.BillingPolicy, error) {
	var pols hcv1.BillingPolicyList
	if err := h.Reader.List(ctx, &pols, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	if len(pols.Items) > 0 || h.Reserver == nil || h.Reserver.APIReader == nil {
		return pols.Items, nil
	}
	now := h.Clock.Now()
	h.mu.Lock()
	checked, ok := h.noPolicies[ns]
	h.mu.Unlock()
	if ok && now.Sub(checked) < livePolicyTTL {
		return nil, nil
	}
	if err := h.Reserver.APIReader.List(ctx, &pols, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	if len(pols.Items) == 0 {
		h.mu.Lock()
		if h.noPolicies == nil || len(h.noPolicies) > maxNoPolicyNamespaces {
			h.noPolicies = map[string]time.Time{}
		}
		h.noPolicies[ns] = now
		h.mu.Unlock()
	}
	return pols.Items, nil
}
