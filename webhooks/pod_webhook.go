// Package webhooks holds hubcredits' admission webhooks: the pod webhook
// that prices every JupyterHub user server and reserves its first period,
// and the BillingPolicy validator that refuses expressions that do not
// compile.
package webhooks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
)

// PodWebhookPath is where the pod webhook is served.
const PodWebhookPath = "/mutate-v1-pod"

// WalletTemplate is the wallet created for a user who has none, when the
// operator is configured to create them.
type WalletTemplate struct {
	Cap            int64
	InitialBalance *int64
	Grant          *hcv1.Grant
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
	// AutoCreate, when set, creates a wallet for a user who has none.
	AutoCreate *WalletTemplate
	// NewWallets bounds the wallets AutoCreate makes (nil: unbounded).
	NewWallets *WalletGuard
	// Creators, when not empty, are the only users (e.g. the hub's service
	// account) allowed to create billed pods.
	Creators []string
	// Shadow counts without ever denying: a spawn the accounts cannot pay is
	// admitted unreserved.
	Shadow bool

	// noPolicies remembers when a live list found no policies in a namespace.
	mu         sync.Mutex
	noPolicies map[string]time.Time
}

// livePolicyTTL is how long a live list that found no policies in a
// namespace is trusted before the next spawn there asks again.
const livePolicyTTL = 30 * time.Second

var _ admission.Handler = (*PodAdmitter)(nil)

// decision is the outcome for one pod.
type decision struct {
	price   billing.Price
	wallet  *hcv1.CreditAccount
	project *hcv1.CreditAccount
}

// Handle implements admission.Handler. It never logs the request: a pod spec
// carries the user's Hub API token.
func (h *PodAdmitter) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := h.Clock.Now()
	resp, result, reason := h.handle(ctx, req)
	decisions.WithLabelValues(result, reason).Inc()
	decisionSeconds.Observe(h.Clock.Since(start).Seconds())
	return resp
}

func (h *PodAdmitter) handle(ctx context.Context, req admission.Request) (admission.Response, string, string) {
	if req.Operation != admissionv1.Create || req.Kind.Kind != "Pod" {
		return admission.Allowed("hubcredits only prices pod creation"), "admitted", "NotPodCreate"
	}
	pod := &corev1.Pod{}
	if err := h.Decoder.Decode(req, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, errors.New("hubcredits could not decode the pod")), "error", "Decode"
	}
	if pod.Labels[hcv1.ComponentLabel] != hcv1.SingleuserComponent {
		return admission.Allowed("not a singleuser server"), "admitted", "NotSingleuser"
	}
	dryRun := req.DryRun != nil && *req.DryRun
	resp, result, reason := h.admit(ctx, req, pod, dryRun)
	if h.Shadow && result == "denied" {
		// Shadow mode counts but never denies: the pod goes ahead unreserved
		// (with its price pinned when it could be found), and the controller
		// bills what it can.
		return admission.Allowed("shadow mode: " + resp.Result.Message), "admitted", "Shadow" + reason
	}
	return resp, result, reason
}

func (h *PodAdmitter) admit(ctx context.Context, req admission.Request, pod *corev1.Pod, dryRun bool) (admission.Response, string, string) {
	if len(h.Creators) > 0 && !contains(h.Creators, req.UserInfo.Username) {
		return deny(billing.DenyForbidden, "Only JupyterHub may start user servers in this namespace; "+req.UserInfo.Username+" may not.")
	}
	user := pod.Annotations[hcv1.AnnotationUsername]
	if user == "" {
		return deny(billing.DenyMissingUser, billing.MissingUserMessage())
	}
	ns := req.Namespace
	if pod.Namespace != "" {
		ns = pod.Namespace
	}
	d, err := h.decide(ctx, ns, user, pod, dryRun)
	if err != nil {
		return h.fail(err)
	}
	id := string(req.UID)
	if d.price.Value == 0 {
		return h.patch(pod, d, ""), "admitted", "Free"
	}
	if dryRun {
		// Decided from the cache, written nowhere (sideEffects: NoneOnDryRun).
		if err := affordable(d, h.Clock.Now()); err != nil {
			return h.fail(err)
		}
		return h.patch(pod, d, id), "admitted", "DryRun"
	}
	if err := h.reserve(ctx, ns, id, user, pod, d); err != nil {
		var denial *billing.Denial
		if h.Shadow && errors.As(err, &denial) {
			return h.patch(pod, d, ""), "admitted", "Shadow"
		}
		return h.fail(err)
	}
	return h.patch(pod, d, id), "admitted", "Reserved"
}

func deny(reason, msg string) (admission.Response, string, string) {
	return admission.Denied(msg), "denied", reason
}

// fail turns an error into a denial (for a Denial) or an internal error.
func (h *PodAdmitter) fail(err error) (admission.Response, string, string) {
	var denial *billing.Denial
	if errors.As(err, &denial) {
		return deny(denial.Reason, denial.Message)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return admission.Errored(http.StatusServiceUnavailable, errors.New("hubcredits could not reserve credits in time; please try again")), "error", "Timeout"
	}
	return admission.Errored(http.StatusInternalServerError, errors.New("hubcredits could not reserve credits: "+err.Error())), "error", "Internal"
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
		if h.noPolicies == nil || len(h.noPolicies) > 10000 {
			h.noPolicies = map[string]time.Time{}
		}
		h.noPolicies[ns] = now
		h.mu.Unlock()
	}
	return pols.Items, nil
}

// decide prices the pod and finds who pays.
func (h *PodAdmitter) decide(ctx context.Context, ns, user string, pod *corev1.Pod, dryRun bool) (*decision, error) {
	pols, err := h.policies(ctx, ns)
	if err != nil {
		return nil, err
	}
	price, err := billing.ResolvePrice(h.Policies.Sorted(pols), pod, h.Defaults)
	if err != nil {
		// The evaluation error may quote the pod (and so the user's token):
		// the user is told which policy failed, never its error text.
		var pe *billing.PolicyError
		policy := ""
		if errors.As(err, &pe) {
			policy = pe.Policy
		}
		logf.FromContext(ctx).Info("A billing policy could not price a pod", "policy", policy, "pod", klog.KObj(pod))
		return nil, &billing.Denial{Reason: billing.DenyPriceError, Message: billing.PriceErrorMessage(policy)}
	}
	wallet, err := h.wallet(ctx, ns, user, pod.Labels[hcv1.LabelAccount], dryRun)
	if err != nil {
		return nil, err
	}
	d := &decision{price: price, wallet: wallet}
	d.project, err = billing.ResolveProject(wallet, func(name string) *hcv1.CreditAccount {
		p := &hcv1.CreditAccount{}
		key := types.NamespacedName{Namespace: ns, Name: name}
		err := h.Reader.Get(ctx, key, p)
		if apierrors.IsNotFound(err) {
			err = h.Reserver.APIReader.Get(ctx, key, p) // created a moment ago?
		}
		if err != nil {
			return nil
		}
		return p
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// wallet finds (or creates) the account that pays for the user's server.
func (h *PodAdmitter) wallet(ctx context.Context, ns, user, label string, dryRun bool) (*hcv1.CreditAccount, error) {
	candidates, err := h.candidates(ctx, h.Reader, true, ns, user, label)
	if err != nil {
		return nil, err
	}
	w, err := billing.ResolveWallet(user, label, candidates)
	if err == nil && w == nil || errors.As(err, new(*billing.Denial)) && len(candidates) == 0 {
		// Nothing in the cache: the account may have been created a moment
		// ago. Ask the API server before denying (only on this rare path).
		if candidates, err = h.candidates(ctx, h.Reserver.APIReader, false, ns, user, label); err != nil {
			return nil, err
		}
		w, err = billing.ResolveWallet(user, label, candidates)
	}
	if err != nil || w != nil {
		return w, err
	}
	if h.AutoCreate == nil {
		return nil, &billing.Denial{Reason: billing.DenyNoAccount, Message: billing.NoAccountMessage(user)}
	}
	return h.createWallet(ctx, ns, user, dryRun)
}

// candidates are the accounts that could pay for user's server: the one the
// label names, or those that list the user. indexed says r is the cache,
// which has the users index (the API server does not).
func (h *PodAdmitter) candidates(ctx context.Context, r client.Reader, indexed bool, ns, user, label string) ([]*hcv1.CreditAccount, error) {
	var out []*hcv1.CreditAccount
	if label != "" {
		a := &hcv1.CreditAccount{}
		err := r.Get(ctx, types.NamespacedName{Namespace: ns, Name: label}, a)
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return append(out, a), nil
	}
	var list hcv1.CreditAccountList
	opts := []client.ListOption{client.InNamespace(ns)}
	if indexed {
		opts = append(opts, client.MatchingFields{billing.IndexAccountUsers: user})
	}
	if err := r.List(ctx, &list, opts...); err != nil {
		return nil, err
	}
	for i := range list.Items {
		if billing.Lists(&list.Items[i], user) {
			out = append(out, &list.Items[i])
		}
	}
	return out, nil
}

// createWallet creates the user's wallet from the template (in a dry run,
// only in memory).
func (h *PodAdmitter) createWallet(ctx context.Context, ns, user string, dryRun bool) (*hcv1.CreditAccount, error) {
	a := &hcv1.CreditAccount{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   ns,
			Name:        WalletName(user),
			Labels:      map[string]string{"hubcredits.io/auto-created": "true"},
			Annotations: map[string]string{hcv1.AnnotationUsername: user},
		},
		Spec: hcv1.CreditAccountSpec{
			Users:          []string{user},
			Cap:            h.AutoCreate.Cap,
			InitialBalance: h.AutoCreate.InitialBalance,
			Grant:          h.AutoCreate.Grant,
		},
	}
	if dryRun {
		return a, nil
	}
	if err := h.NewWallets.allow(ctx, user); err != nil {
		return nil, err
	}
	err := h.Reserver.Client.Create(ctx, a)
	if apierrors.IsAlreadyExists(err) {
		err = h.Reserver.APIReader.Get(ctx, client.ObjectKeyFromObject(a), a)
		if err == nil && !billing.Lists(a, user) {
			return nil, &billing.Denial{Reason: billing.DenyNoAccount, Message: billing.NoAccountMessage(user)}
		}
	}
	if err != nil {
		return nil, err
	}
	return a, nil
}

var invalidName = regexp.MustCompile(`[^a-z0-9-]+`)

// WalletName is the name of the wallet created for user: "wallet-<user>"
// when the name is a valid object name, else a slug with a hash.
func WalletName(user string) string {
	slug := strings.Trim(invalidName.ReplaceAllString(strings.ToLower(user), "-"), "-")
	if slug == user && len(slug) <= 50 && slug != "" {
		return "wallet-" + slug
	}
	sum := sha256.Sum256([]byte(user))
	if len(slug) > 40 {
		slug = strings.Trim(slug[:40], "-")
	}
	return "wallet-" + slug + "-" + hex.EncodeToString(sum[:4])
}

// affordable checks, without writing, whether the accounts could pay (for
// dry-run requests, which must change nothing).
func affordable(d *decision, now time.Time) error {
	w := d.wallet.DeepCopy()
	billing.RefreshForAdmission(w, now)
	have := w.Status.Balance
	var p *hcv1.CreditAccount
	if d.project != nil {
		p = d.project.DeepCopy()
		billing.RefreshForAdmission(p, now)
		have += p.Status.Balance
	}
	if have < d.price.Value {
		return &billing.Denial{Reason: billing.DenyNotEnough, Message: billing.NotEnoughMessage(d.price, w, p, now)}
	}
	return nil
}

// reserve pays the first period: the project pool first (as much as it
// holds), then the wallet the rest. If the wallet cannot pay its part, the
// pool's part is given back.
func (h *PodAdmitter) reserve(ctx context.Context, ns, id, user string, pod *corev1.Pod, d *decision) error {
	if err := affordable(d, h.Clock.Now()); err != nil {
		return err // the cache already says no: deny without a write
	}
	r := billing.Reservation{
		ID: id, Pod: pod.Name, User: user, ServerName: pod.Annotations[hcv1.AnnotationServerName],
		Wallet: d.wallet.Name, Price: d.price,
	}
	var projectPaid int64
	var project *hcv1.CreditAccount
	if d.project != nil {
		r.Project = d.project.Name
		pa, err := h.Reserver.Do(ctx, key(ns, d.project.Name), func(a *hcv1.CreditAccount, now time.Time) error {
			if a.Status.Balance <= 0 {
				return errNothingTaken // the pool is empty: no entry, no write
			}
			taken, err := billing.Take(a, r, 0, d.price.Value, 0, now)
			projectPaid = taken
			return err
		})
		if err != nil && !errors.Is(err, errNothingTaken) {
			return err
		}
		project = pa
		if pa == nil {
			project = d.project
		}
	}
	wa, err := h.Reserver.Do(ctx, key(ns, d.wallet.Name), func(a *hcv1.CreditAccount, now time.Time) error {
		_, err := billing.Take(a, r, d.price.Value-projectPaid, d.price.Value-projectPaid, projectPaid, now)
		return err
	})
	if err == nil {
		d.wallet = wa
		return nil
	}
	if projectPaid > 0 {
		// Give the pool's share back. If this fails too, the controller
		// returns it once the pool's entry outlives the orphan grace.
		pa, rerr := h.Reserver.Do(context.WithoutCancel(ctx), key(ns, d.project.Name), func(a *hcv1.CreditAccount, now time.Time) error {
			billing.Release(a, id, now, "reservation returned: the wallet could not pay its part")
			return nil
		})
		if rerr == nil && pa != nil {
			project = pa
		}
	}
	var short *billing.InsufficientError
	if errors.As(err, &short) {
		w := wa
		if w == nil {
			w = d.wallet
		}
		return &billing.Denial{Reason: billing.DenyNotEnough, Message: billing.NotEnoughMessage(d.price, w, project, h.Clock.Now())}
	}
	if errors.Is(err, ErrAccountGone) {
		return &billing.Denial{Reason: billing.DenyNoAccount, Message: billing.NoAccountMessage(user)}
	}
	return err
}

var errNothingTaken = errors.New("nothing taken")

func key(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

// patch pins the price on the pod: annotations only, added one by one so
// the patch is small and the pod is not re-encoded.
func (h *PodAdmitter) patch(pod *corev1.Pod, d *decision, reservation string) admission.Response {
	add := map[string]string{
		hcv1.AnnotationAccount:         d.wallet.Name,
		hcv1.AnnotationBillingValue:    strconv.FormatInt(d.price.Value, 10),
		hcv1.AnnotationBillingInterval: d.price.Interval.String(),
		hcv1.AnnotationPolicy:          d.price.Policy,
	}
	if d.project != nil {
		add[hcv1.AnnotationProject] = d.project.Name
	}
	if reservation != "" {
		add[hcv1.AnnotationReservation] = reservation
	}
	var ops []jsonpatch.JsonPatchOperation
	if pod.Annotations == nil {
		ops = append(ops, jsonpatch.NewOperation("add", "/metadata/annotations", add))
	} else {
		for k, v := range add {
			ops = append(ops, jsonpatch.NewOperation("add", "/metadata/annotations/"+escapePointer(k), v))
		}
		// Only the webhook sets these: one preset by the pod's creator
		// would bind this pod to another server's ledger.
		for _, k := range []string{hcv1.AnnotationReservation, hcv1.AnnotationProject} {
			if _, preset := pod.Annotations[k]; preset {
				if _, ours := add[k]; !ours {
					ops = append(ops, jsonpatch.NewOperation("remove", "/metadata/annotations/"+escapePointer(k), nil))
				}
			}
		}
	}
	resp := admission.Patched("", ops...)
	msg := "This server costs " + billing.PriceText(d.price) + "."
	if d.price.Value == 0 {
		msg = "This server is free."
	}
	resp.Result = &metav1.Status{Message: msg, Code: http.StatusOK}
	return resp
}

// escapePointer escapes a JSON pointer segment (RFC 6901).
func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
