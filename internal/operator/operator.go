// Package operator wires hubcredits' controllers and webhooks onto a
// controller-runtime manager. main.go and the integration tests share it.
package operator

import (
	"context"
	"crypto/tls"
	"net/http"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/controllers"
	"github.com/hubcredits/hubcredits/hubapi"
	"github.com/hubcredits/hubcredits/internal/indexer"
	"github.com/hubcredits/hubcredits/internal/scheme"
	"github.com/hubcredits/hubcredits/webhooks"
)

// Options configure the operator (flags in main.go, values in the chart).
type Options struct {
	// Namespace restricts the operator to the hub's namespace ("" watches all).
	Namespace string
	// SingleuserSelector selects the user pods (default component=singleuser-server).
	SingleuserSelector labels.Selector
	Defaults           billing.Defaults
	Billing            billing.Options
	// PageLimits bound where ledger entries go: inline, per LedgerPage,
	// pending per account write (zero: billing.DefaultPageLimits; tests
	// set small ones).
	PageLimits billing.PageLimits
	// InlineOnly keeps every reservation in the account's status.servers
	// (--ledger-pages=false). By default (false) the webhook puts the
	// servers an account pays for alone on its LedgerPages once
	// status.servers holds PageLimits.Inline entries; the billing
	// controllers settle pages either way.
	InlineOnly bool
	AutoCreate *webhooks.WalletTemplate
	// AutoCreatePerMinute bounds the wallets AutoCreate and the
	// CreditAccountTemplates make per minute and replica (0: no limit).
	// With a Hub API, a wallet is also created only for a user the hub
	// knows.
	AutoCreatePerMinute int
	Creators            []string
	// DryRunIdentities: see webhooks.PodAdmitter.
	DryRunIdentities []string
	Shadow           bool
	// FreeNeedsAccount: see webhooks.PodAdmitter.
	FreeNeedsAccount bool
	HubURL           string
	HubTokenFile     string
	Workers          int
	// UnbillablePods is controllers.UnbillableReport ("" too) or
	// controllers.UnbillableStop (--unbillable-pods).
	UnbillablePods string
	Clock          clock.Clock
	// TombstoneConfigMap is the ConfigMap that keeps deleted accounts'
	// tombstones ("": controllers.DefaultTombstoneConfigMap).
	TombstoneConfigMap string
	// UsageRetention is how long UsageRecords are kept (0: for ever).
	UsageRetention time.Duration
	// UsageCollectEvery overrides how often expired UsageRecords are
	// looked for (0: controllers.UsageCollectEvery; tests set it).
	UsageCollectEvery time.Duration
	// Webhooks registers the webhook handlers (the server runs on every replica).
	Webhooks bool
	// DisableControllers leaves the billing controllers out (a webhook-only
	// process, used by tests and benchmarks).
	DisableControllers bool
	// CertsReady, when set, delays the webhook server until the in-process
	// certificate rotation has written the serving certificate.
	CertsReady <-chan struct{}
}

// DefaultUsageRetention is how long UsageRecords are kept by default: 90
// days.
const DefaultUsageRetention = 90 * 24 * time.Hour

// Scheme returns a scheme with the core types and hubcredits.io.
func Scheme() *runtime.Scheme { return scheme.New() }

// DefaultSelector is Z2JH's label on user pods.
func DefaultSelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{hcv1.ComponentLabel: hcv1.SingleuserComponent})
}

// CacheOptions caches only what billing needs: singleuser pods (selected by
// label, with their spec dropped — it holds the user's Hub token — and
// managedFields stripped), accounts and policies. Memory therefore does not
// grow with the rest of the cluster.
func CacheOptions(o Options) cache.Options {
	sel := o.SingleuserSelector
	if sel == nil {
		sel = DefaultSelector()
	}
	co := cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Label: sel, Transform: TrimPod},
		},
	}
	if o.Namespace != "" {
		co.DefaultNamespaces = map[string]cache.Config{o.Namespace: {}}
	}
	return co
}

// ClientOptions keeps Secrets out of the manager's cache: a read of one
// through the manager's client (none today) is a single GET, which RBAC
// refuses for every Secret but the certificate's, instead of an informer
// that would list and watch them all in the hub's namespace.
func ClientOptions() client.Options {
	return client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}}
}

// TrimPod keeps the parts of a pod that billing reads, and nothing else:
// its identity (name, namespace, UID, resourceVersion), creation and
// deletion (billing.ObservePod), the label and annotations hubcredits
// reads (the indexes, billing.PinnedPrice, billing.Adoption; not the
// singleuser label: the informer's selector already filtered on it, and a
// pod that loses it is deleted from the cache), and the run
// times of its containers (the phase, the start time, and each
// container's running and terminated start and finish times). The spec
// is dropped (it holds the user's Hub API token in the environment; an
// adopted pod is priced from a live read), and so are managedFields,
// owner references, finalizers, conditions, and the containers' names,
// images, waiting states and termination messages. (About 23 KiB of heap
// per server untrimmed, mostly labels and annotations KubeSpawner and
// Z2JH set.) TestTrimPod lists what is kept.
func TrimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	t := &corev1.Pod{TypeMeta: p.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
		CreationTimestamp: p.CreationTimestamp, DeletionTimestamp: p.DeletionTimestamp,
		DeletionGracePeriodSeconds: p.DeletionGracePeriodSeconds,
		Labels:                     keep(p.Labels, hcv1.LabelAccount),
		Annotations: keep(p.Annotations, hcv1.AnnotationUsername, hcv1.AnnotationServerName,
			hcv1.AnnotationAccount, hcv1.AnnotationProject, hcv1.AnnotationBillingValue,
			hcv1.AnnotationBillingInterval, hcv1.AnnotationPolicy, hcv1.AnnotationReservation),
	}}
	t.Status.Phase = p.Status.Phase
	t.Status.StartTime = p.Status.StartTime
	if n := len(p.Status.ContainerStatuses); n > 0 {
		t.Status.ContainerStatuses = make([]corev1.ContainerStatus, n)
		for i, cs := range p.Status.ContainerStatuses {
			t.Status.ContainerStatuses[i] = corev1.ContainerStatus{
				State: runTimes(cs.State), LastTerminationState: runTimes(cs.LastTerminationState),
			}
		}
	}
	return t, nil
}

// runTimes keeps a container state's start and finish times (a waiting
// state, reasons, messages and exit codes are dropped).
func runTimes(s corev1.ContainerState) corev1.ContainerState {
	var out corev1.ContainerState
	if s.Running != nil {
		out.Running = &corev1.ContainerStateRunning{StartedAt: s.Running.StartedAt}
	}
	if s.Terminated != nil {
		out.Terminated = &corev1.ContainerStateTerminated{StartedAt: s.Terminated.StartedAt, FinishedAt: s.Terminated.FinishedAt}
	}
	return out
}

// keep returns the entries of m with the given keys (nil when none).
func keep(m map[string]string, keys ...string) map[string]string {
	var out map[string]string
	for _, k := range keys {
		if v, ok := m[k]; ok {
			if out == nil {
				out = make(map[string]string, len(keys))
			}
			out[k] = v
		}
	}
	return out
}

// WebhookTLS disables HTTP/2 (Rapid Reset, CVE-2023-44487) unless asked
// for, and requires TLS 1.2.
func WebhookTLS(enableHTTP2 bool) []func(*tls.Config) {
	return []func(*tls.Config){func(c *tls.Config) {
		c.MinVersion = tls.VersionTLS12
		if !enableHTTP2 {
			c.NextProtos = []string{"http/1.1"}
		}
	}}
}

// Setup registers indexes, controllers and (optionally) webhooks.
func Setup(ctx context.Context, mgr manager.Manager, o Options) error {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	o.Defaults = o.Defaults.OrDefault()
	o.Billing = o.Billing.OrDefault()
	if err := indexer.Setup(ctx, mgr.GetCache()); err != nil {
		return err
	}
	policies := &billing.PolicyCache{}
	if !o.DisableControllers {
		if err := setupControllers(mgr, o, policies); err != nil {
			return err
		}
	}
	if !o.Webhooks {
		return nil
	}
	if o.CertsReady == nil {
		return setupWebhooks(ctx, mgr, o, policies)
	}
	go func() {
		select {
		case <-o.CertsReady:
		case <-ctx.Done():
			return
		}
		if err := setupWebhooks(ctx, mgr, o, policies); err != nil {
			mgr.GetLogger().Error(err, "Setting up the webhooks failed")
		}
	}()
	return nil
}

// setupWebhooks registers the handlers; the first call to
// GetWebhookServer adds the server to the manager.
func setupWebhooks(ctx context.Context, mgr manager.Manager, o Options, policies *billing.PolicyCache) error {
	if err := webhooks.SetupBillingPolicyWebhook(mgr); err != nil {
		return err
	}
	webhooks.SetupPodGuard(mgr, &webhooks.PodGuard{
		Self:     whoAmI(ctx, mgr),
		Recorder: mgr.GetEventRecorderFor("hubcredits"), //nolint:staticcheck // core/v1 Events, as the controllers write
	})
	noTemplates, err := watchTemplates(ctx, mgr)
	if err != nil {
		return err
	}
	webhooks.SetupPodWebhook(mgr, &webhooks.PodAdmitter{
		Reader: mgr.GetClient(),
		Reserver: &webhooks.Reserver{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: o.Clock,
			Pages: !o.InlineOnly, PageLimits: o.PageLimits},
		Clock:            o.Clock,
		Policies:         policies,
		Defaults:         o.Defaults,
		AutoCreate:       o.AutoCreate,
		NoTemplates:      noTemplates,
		NewWallets:       newWalletGuard(o),
		Creators:         o.Creators,
		DryRunIdentities: o.DryRunIdentities,
		Shadow:           o.Shadow,
		FreeNeedsAccount: o.FreeNeedsAccount,
		Denials: &webhooks.DenialReporter{
			Recorder: mgr.GetEventRecorderFor(webhooks.DenialEventSource), //nolint:staticcheck // core/v1 Events, as kubectl get events shows
		},
	})
	return nil
}

// watchTemplates starts the informer of CreditAccountTemplates with the
// cache (the webhook reads them on a new user's first spawn), so it is
// synced before the webhook serves. Without their CRD (an upgrade that
// did not apply the chart's crds/) the webhook ignores templates, and says
// so once: it still serves every other spawn.
func watchTemplates(ctx context.Context, mgr manager.Manager) (noTemplates bool, err error) {
	_, err = mgr.GetCache().GetInformer(ctx, &hcv1.CreditAccountTemplate{})
	if meta.IsNoMatchError(err) {
		mgr.GetLogger().Error(err, "The CreditAccountTemplate API is not installed: no wallet is created from templates until its CRD is applied and the operator restarted")
		return true, nil
	}
	return false, err
}

// newWalletGuard bounds automatic wallet creation (AutoCreate's and the
// CreditAccountTemplates'): by the hub's users when a Hub API is
// configured, and by a rate.
func newWalletGuard(o Options) *webhooks.WalletGuard {
	g := &webhooks.WalletGuard{PerMinute: o.AutoCreatePerMinute}
	if o.HubURL != "" && o.HubTokenFile != "" {
		g.Users = &hubapi.Client{URL: o.HubURL, TokenFile: o.HubTokenFile, HTTP: &http.Client{Timeout: time.Second}}
	}
	return g
}

func setupControllers(mgr manager.Manager, o Options, policies *billing.PolicyCache) error {
	var hub controllers.ServerStopper
	if o.HubURL != "" && o.HubTokenFile != "" {
		hub = &hubapi.Client{URL: o.HubURL, TokenFile: o.HubTokenFile}
	}
	acct := &controllers.CreditAccountReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Singleuser: o.SingleuserSelector, Clock: o.Clock,
		Recorder: mgr.GetEventRecorderFor("hubcredits"), //nolint:staticcheck // KubeSpawner streams core/v1 Events
		Options:  o.Billing, Hub: hub, Shadow: o.Shadow,
		Policies: policies, Defaults: o.Defaults, UnbillablePods: o.UnbillablePods,
		TombstoneConfigMap: o.TombstoneConfigMap, PageLimits: o.PageLimits,
	}
	if err := acct.SetupWithManager(mgr, o.Workers); err != nil {
		return err
	}
	if err := mgr.Add(&controllers.UsageCollector{
		Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Clock: o.Clock,
		Namespace: o.Namespace, Retention: o.UsageRetention, Every: o.UsageCollectEvery,
	}); err != nil {
		return err
	}
	return (&controllers.BillingPolicyReconciler{Client: mgr.GetClient(), Policies: policies}).SetupWithManager(mgr)
}

// whoAmI asks the API server who the operator is (a SelfSubjectReview,
// allowed to every authenticated user), so the pod guard can let the
// operator's own edits through. "" when it cannot tell: then nobody is
// exempt, which is the safe side.
func whoAmI(ctx context.Context, mgr manager.Manager) string {
	cs, err := kubernetes.NewForConfig(mgr.GetConfig())
	if err != nil {
		return ""
	}
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		mgr.GetLogger().Info("Could not tell the operator's own username; the pod guard exempts nobody", "error", err.Error())
		return ""
	}
	return r.Status.UserInfo.Username
}

// NewCache is the manager's cache: controller-runtime's, refusing a list
// by one of hubcredits' indexes without a namespace (indexer.Setup indexes
// by namespace only).
func NewCache(cfg *rest.Config, opts cache.Options) (cache.Cache, error) {
	c, err := cache.New(cfg, opts)
	if err != nil {
		return nil, err
	}
	return indexer.NamespacedOnly(c), nil
}
