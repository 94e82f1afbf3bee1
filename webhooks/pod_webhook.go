// Package webhooks holds hubcredits' admission webhooks: the pod webhook
// that prices every JupyterHub user server and reserves its first period,
// and the BillingPolicy validator that refuses expressions that do not
// compile.
//
// The pod webhook, by job:
//
//	pod_webhook.go  the handler: which pods, shadow mode, metrics
//	verdict.go      the answer and the labels it is counted under
//	decision.go     the price of a pod (BillingPolicies, live when the cache shows none)
//	payer.go        who pays: the wallet (created when configured) and its project pool
//	reservation.go  the first period paid: pool first, then the wallet
//	reserver.go     batched, conflict-retried writes to one account and its LedgerPages
//	patch.go        the price pinned on the pod
package webhooks

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
)

// PodWebhookPath is where the pod webhook is served.
const PodWebhookPath = "/mutate-v1-pod"

// WalletTemplate is the wallet created for a user who has none: the
// operator's (--auto-create-wallets), or a CreditAccountTemplate's.
type WalletTemplate struct {
	// Name is the CreditAccountTemplate's name ("" for the operator's
	// template); the wallet is labelled hubcredits.io/template with it.
	Name           string
	Cap            int64
	InitialBalance *int64
	Grant          *hcv1.Grant
	// Project is the pool that pays first for the wallet ("": none).
	Project string
}

// +kubebuilder:webhook:path=/mutate-v1-pod,mutating=true,failurePolicy=fail,sideEffects=NoneOnDryRun,groups="",resources=pods,verbs=create,versions=v1,name=pods.hubcredits.io,admissionReviewVersions=v1,timeoutSeconds=2,matchPolicy=Equivalent,reinvocationPolicy=Never

// PodAdmitter prices singleuser pods and reserves their first period.
type PodAdmitter struct {
	// Reader reads accounts and policies, from the informer cache.
	Reader   client.Reader
	Reserver *Reserver
	Decoder  admission.Decoder
	Clock    clock.Clock
	Policies *billing.PolicyCache
	Defaults billing.Defaults
	// AutoCreate, when set, creates a wallet for a user who has none and
	// whose groups no CreditAccountTemplate lists.
	AutoCreate *WalletTemplate
	// NoTemplates ignores CreditAccountTemplates (their CRD is not
	// installed): only AutoCreate creates wallets.
	NoTemplates bool
	// NewWallets bounds the wallets AutoCreate and the templates make
	// (nil: unbounded).
	NewWallets *WalletGuard
	// Creators, when not empty, are the only users (e.g. the hub's service
	// account) allowed to create billed pods.
	Creators []string
	// DryRunIdentities, with Creators set, may also ask for a billed pod,
	// as a server-side dry run only (kubectl credits why without
	// impersonating the hub): the webhook answers from its cache and
	// writes nothing for a dry run (sideEffects: NoneOnDryRun); a real pod
	// of theirs is denied like anyone else's. Kubernetes RBAC cannot grant
	// "create pods, dry run only": the chart's ValidatingAdmissionPolicy
	// refuses their real pods of any kind, including those this webhook
	// does not see.
	DryRunIdentities []string
	// Shadow counts without ever denying: a spawn the accounts cannot pay is
	// admitted unreserved.
	Shadow bool
	// FreeNeedsAccount denies a free server (price 0) whose user has no
	// account, like any other; by default it is admitted without a payer
	// (there is nothing to bill).
	FreeNeedsAccount bool
	// Denials reports each denied spawn to the admin (nil: the counter
	// only).
	Denials *DenialReporter

	// noPolicies remembers when a live list found no policies in a namespace.
	mu         sync.Mutex
	noPolicies map[string]time.Time
}

var _ admission.Handler = (*PodAdmitter)(nil)

// Handle implements admission.Handler. It never logs the request: a pod spec
// carries the user's Hub API token.
func (h *PodAdmitter) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := h.Clock.Now()
	v := h.handle(ctx, req)
	recordDecision(v, h.Clock.Since(start))
	if v.denied != nil {
		h.Denials.report(v, h.Clock.Now())
	}
	return v.resp
}

func (h *PodAdmitter) handle(ctx context.Context, req admission.Request) verdict {
	if req.Operation != admissionv1.Create || req.Kind.Kind != "Pod" {
		return allow("hubcredits only prices pod creation", reasonNotPodCreate)
	}
	pod := &corev1.Pod{}
	if err := h.Decoder.Decode(req, pod); err != nil {
		return errored(http.StatusBadRequest, reasonDecode, errors.New("hubcredits could not decode the pod"))
	}
	if pod.Labels[hcv1.ComponentLabel] != hcv1.SingleuserComponent {
		return allow("not a singleuser server", reasonNotSingleuser)
	}
	dryRun := req.DryRun != nil && *req.DryRun
	v := h.admit(ctx, req, pod, dryRun)
	if v.result == resultDenied && !dryRun && !h.Shadow {
		// A dry run has no side effects (sideEffects: NoneOnDryRun), so it
		// leaves no Event; shadow mode denies nothing.
		v.denied = &deniedSpawn{namespace: req.Namespace, pod: podName(pod), user: pod.Annotations[hcv1.AnnotationUsername]}
		if pod.Namespace != "" {
			v.denied.namespace = pod.Namespace
		}
	}
	if h.Shadow && v.result == resultDenied {
		// Shadow mode counts but never denies: the pod goes ahead unreserved
		// (with its price pinned when it could be found, see admit), and the
		// controller bills what it can.
		return v.shadowed()
	}
	return v
}

// admit decides on a singleuser pod: who may create it, its price and
// payer, and (unless it is free or a dry run) its first period reserved.
func (h *PodAdmitter) admit(ctx context.Context, req admission.Request, pod *corev1.Pod, dryRun bool) verdict {
	if len(h.Creators) > 0 && !slices.Contains(h.Creators, req.UserInfo.Username) &&
		(!dryRun || !slices.Contains(h.DryRunIdentities, req.UserInfo.Username)) {
		return deny(billing.DenyForbidden, "Only JupyterHub may start user servers in this namespace; "+req.UserInfo.Username+" may not.")
	}
	user := pod.Annotations[hcv1.AnnotationUsername]
	if user == "" {
		return deny(billing.DenyMissingUser, billing.MissingUserMessage())
	}
	if err := billing.RecordableNames(user, pod.Annotations[hcv1.AnnotationServerName]); err != nil {
		return fail(err)
	}
	ns := req.Namespace
	if pod.Namespace != "" {
		ns = pod.Namespace
	}
	d, err := h.decide(ctx, ns, user, pod, dryRun)
	if err != nil {
		return fail(err)
	}
	id := string(req.UID)
	if d.price.Value == 0 {
		if d.wallet == nil {
			return admitted(patch(pod, d, ""), reasonFreeNoAccount)
		}
		return admitted(patch(pod, d, ""), reasonFree)
	}
	if dryRun {
		// Decided from the cache, written nowhere (sideEffects: NoneOnDryRun).
		if err := affordable(d.price, d.wallet, d.project, h.Clock.Now()); err != nil {
			return fail(err)
		}
		return admitted(patch(pod, d, id), reasonDryRun)
	}
	return h.reserve(ctx, ns, id, user, pod, d)
}

// reserve reserves the first period of the pod's server under reservation
// id. In shadow mode a pod the accounts cannot pay goes ahead unreserved,
// its price pinned.
func (h *PodAdmitter) reserve(ctx context.Context, ns, id, user string, pod *corev1.Pod, d *decision) verdict {
	r := billing.Reservation{
		ID: id, Pod: pod.Name, User: user, ServerName: pod.Annotations[hcv1.AnnotationServerName],
		Wallet: d.wallet.Name, Price: d.price,
	}
	if err := h.Reserver.Reserve(ctx, ns, r, d.wallet, d.project); err != nil {
		var denial *billing.Denial
		if h.Shadow && errors.As(err, &denial) {
			return admitted(patch(pod, d, ""), reasonShadow)
		}
		return fail(err)
	}
	return admitted(patch(pod, d, id), reasonReserved)
}
