// Package controllers keeps the ledgers: it bills running servers at each
// boundary, returns reservations whose pod never ran, applies grants and
// top-ups, and stops servers whose next period cannot be paid.
package controllers

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/indexer"
	"github.com/hubcredits/hubcredits/internal/metrics"
)

// ServerStopper stops a user's server through JupyterHub.
type ServerStopper interface {
	StopServer(ctx context.Context, user, server string) error
}

// CreditAccountReconciler keeps one account's ledger. It is the only writer
// of charges; the webhook only adds reservations. Every write carries the
// account's resourceVersion.
type CreditAccountReconciler struct {
	Client client.Client
	// APIReader reads around the cache after a conflict.
	APIReader client.Reader
	Clock     clock.Clock
	Recorder  record.EventRecorder
	Options   billing.Options
	// Tombstones reads tombstones live (the API reader: the cache holds no
	// ConfigMaps); nil reads them through Client.
	Tombstones client.Reader
	// TombstoneConfigMap is the name of the ConfigMap, in each account's
	// namespace, that keeps deleted accounts' tombstones (""
	// DefaultTombstoneConfigMap).
	TombstoneConfigMap string
	// Hub stops servers through the Hub API; nil deletes the pod instead.
	Hub ServerStopper
	// Shadow counts without ever stopping a server.
	Shadow bool
	// Policies and Defaults price pods the webhook never saw.
	Policies *billing.PolicyCache
	Defaults billing.Defaults
	// Stops carries out stops outside the reconcile workers (set up by
	// SetupWithManager; nil stops inline).
	Stops      *Stopper
	inlineOnce sync.Once
	// seen is when this controller first saw each reservation whose pod it
	// has not seen (the orphan grace runs on its own clock).
	seen reservationsSeen
	// UnbillablePods says what happens to a pod no account may pay for:
	// UnbillableReport (default) or UnbillableStop.
	UnbillablePods string

	// reported remembers the pods already reported (by reason and UID).
	reported      sync.Map
	reportedCount atomic.Int64
}

// report reports whether a decision about a pod is new (so its Event and
// metric are recorded once per pod and process, not on every reconcile).
func (r *CreditAccountReconciler) report(reason string, uid types.UID) bool {
	if _, done := r.reported.LoadOrStore(reason+"/"+string(uid), true); done {
		return false
	}
	if r.reportedCount.Add(1) > maxReported {
		r.reported.Clear()
		r.reportedCount.Store(0)
	}
	return true
}

// What --unbillable-pods does with a pod no account may pay for (its user
// is not in the account it names, or it names no user): report it (an
// Event and hubcredits_integrity_decisions_total, the pod runs unbilled),
// or also stop it by deleting the pod.
const (
	UnbillableReport = "report"
	UnbillableStop   = "stop"
)

var _ reconcile.Reconciler = (*CreditAccountReconciler)(nil)

// +kubebuilder:rbac:groups=hubcredits.io,namespace=system,resources=creditaccounts,verbs=get;list;watch
// +kubebuilder:rbac:groups=hubcredits.io,namespace=system,resources=creditaccounts/status,verbs=get;update
// +kubebuilder:rbac:groups="",namespace=system,resources=pods,verbs=get;list;watch;delete
// +kubebuilder:rbac:groups="",namespace=system,resources=events,verbs=create;patch

// maxConflictRetries bounds the settles of one Reconcile that lose a
// conflict (another writer, e.g. the webhook reserving, wrote first); each
// retry reads live.
const maxConflictRetries = 5

// Reconcile settles the account's servers and requeues at the next boundary.
func (r *CreditAccountReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var out *outcome
	var err error
	for attempt := range maxConflictRetries {
		out, err = r.settle(ctx, req.NamespacedName, attempt > 0)
		if !apierrors.IsConflict(err) {
			break
		}
	}
	if apierrors.IsNotFound(err) {
		r.seen.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	for _, lag := range out.result.Lags {
		billingLag.Observe(lag.Seconds())
	}
	r.act(ctx, out)
	r.actOnLife(ctx, out)
	if out.release {
		held, err := r.release(ctx, out.account, out.forcedRunning > 0)
		if err != nil {
			return ctrl.Result{}, err
		}
		if held {
			// The tombstone ConfigMap is not watched: try again.
			return ctrl.Result{RequeueAfter: tombstoneRetry}, nil
		}
	}
	return ctrl.Result{RequeueAfter: out.result.RequeueAfter}, nil
}

// outcome is what a committed settle asks for.
type outcome struct {
	account *hcv1.CreditAccount
	result  billing.Result
	life
	// moved are the pods this ledger bills that name another account now.
	moved []*corev1.Pod
}

// ledgers is what one settle reads and changes: the account, the project
// pools that co-fund its servers, each with its status as read, and the pods
// billed to it.
type ledgers struct {
	wallet       *hcv1.CreditAccount
	walletBefore *hcv1.CreditAccountStatus
	pools        map[string]*hcv1.CreditAccount
	poolsBefore  map[string]*hcv1.CreditAccountStatus
	// pods are the account's pods by entry id (billing.EntryPods, and the
	// pods offered for adoption by their adopted id).
	pods  map[string]*corev1.Pod
	adopt []billing.Unreserved
	life
	moved []*corev1.Pod
	// awaitingRecord are the ended servers whose usage record could not
	// be written (recordUsage): their entries stay until it is.
	awaitingRecord map[string]bool
}

// settle is one attempt: load the ledgers (live after a conflict), compute
// the settle, and commit it, pools first and the account last.
func (r *CreditAccountReconciler) settle(ctx context.Context, key types.NamespacedName, live bool) (*outcome, error) {
	l, err := r.load(ctx, key, live)
	if err != nil {
		return nil, err
	}
	res := r.compute(ctx, l)
	if err := r.commit(ctx, l); err != nil {
		return nil, err
	}
	if err := r.claim(ctx, l); err != nil {
		return nil, err
	}
	return &outcome{account: l.wallet, result: res, life: l.life, moved: l.moved}, nil
}

// load reads the account, its pools and its pods, and finds the pods to
// adopt.
func (r *CreditAccountReconciler) load(ctx context.Context, key types.NamespacedName, live bool) (*ledgers, error) {
	reader := client.Reader(r.Client)
	if live {
		reader = r.APIReader
	}
	wallet := &hcv1.CreditAccount{}
	if err := reader.Get(ctx, key, wallet); err != nil {
		return nil, err
	}
	l := &ledgers{wallet: wallet, walletBefore: wallet.Status.DeepCopy()}
	var err error
	if l.tombstone, err = r.loadTombstone(ctx, wallet); err != nil {
		return nil, err
	}
	if l.pools, l.poolsBefore, err = r.projects(ctx, reader, wallet); err != nil {
		return nil, err
	}
	candidates, err := r.pods(ctx, wallet)
	if err != nil {
		return nil, err
	}
	l.pods = billing.EntryPods(wallet, slices.Collect(maps.Values(candidates)))
	for _, pod := range l.pods {
		if names := indexer.PodAccounts(pod); len(names) > 0 && names[0] != wallet.Name {
			l.moved = append(l.moved, pod)
		}
	}
	adopt, offered, err := r.unreserved(ctx, wallet, candidates)
	if err != nil {
		return nil, err
	}
	l.adopt = adopt
	for id, pod := range offered {
		l.pods[id] = pod
	}
	l.awaitingRecord = r.recordUsage(ctx, wallet)
	return l, nil
}

// compute settles the ledgers in memory: a tombstone taken over, the pure
// billing core, then the pool's orphaned shares, the Ready condition and
// the decision about an account being deleted.
func (r *CreditAccountReconciler) compute(ctx context.Context, l *ledgers) billing.Result {
	wallet := l.wallet
	now := r.Clock.Now()
	l.reopen(now)
	opts := r.Options
	opts.Seen = r.seen.observe(wallet, now, r.Options.OrphanGrace)
	opts.AwaitingRecord = l.awaitingRecord
	res := billing.Settle(wallet, l.pools, func(e hcv1.ServerCharge) billing.PodObservation {
		return billing.ObserveEntry(l.pods[e.ID], e)
	}, l.adopt, now, opts)
	// Whether anything changed is answered by commit (statusChanged).
	_, wait := billing.SettleOrphans(wallet, func(owner, id string) bool {
		return r.walletHas(ctx, wallet.Namespace, owner, id)
	}, now, opts)
	if wait > 0 && (res.RequeueAfter == 0 || wait < res.RequeueAfter) {
		res.RequeueAfter = wait
	}
	if len(l.awaitingRecord) > 0 && (res.RequeueAfter == 0 || usageRetry < res.RequeueAfter) {
		res.RequeueAfter = usageRetry
	}
	billing.SetReady(wallet, l.pools[wallet.Spec.Project], now)
	l.release = l.deletion(now)
	wallet.Status.ObservedGeneration = wallet.Generation
	return res
}

// commit writes every changed status, each with the resourceVersion it was
// read at. Pools first, the wallet last: the wallet's entry commits the
// charge, and a run that stops between the writes is repaired by the next
// (billing.Settle's inFlight and completeRefunds).
func (r *CreditAccountReconciler) commit(ctx context.Context, l *ledgers) error {
	for _, name := range slices.Sorted(maps.Keys(l.pools)) {
		if pool := l.pools[name]; statusChanged(l.poolsBefore[name], &pool.Status) {
			if err := r.Client.Status().Update(ctx, pool); err != nil {
				return err
			}
		}
	}
	if statusChanged(l.walletBefore, &l.wallet.Status) {
		return r.Client.Status().Update(ctx, l.wallet)
	}
	return nil
}

// statusChanged is the one answer to "did the account change": its status
// differs from the one it was read with.
func statusChanged(before, after *hcv1.CreditAccountStatus) bool {
	return !equality.Semantic.DeepEqual(before, after)
}

// projects loads the pools that co-fund the account's servers.
func (r *CreditAccountReconciler) projects(ctx context.Context, reader client.Reader, a *hcv1.CreditAccount) (map[string]*hcv1.CreditAccount, map[string]*hcv1.CreditAccountStatus, error) {
	names := map[string]bool{}
	if a.Spec.Project != "" && a.Spec.Project != a.Name {
		names[a.Spec.Project] = true
	}
	for _, e := range a.Status.Servers {
		if e.Wallet == a.Name && e.Project != "" && e.Project != a.Name {
			names[e.Project] = true
		}
	}
	projects := map[string]*hcv1.CreditAccount{}
	before := map[string]*hcv1.CreditAccountStatus{}
	for name := range names {
		p := &hcv1.CreditAccount{}
		err := reader.Get(ctx, types.NamespacedName{Namespace: a.Namespace, Name: name}, p)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		projects[name] = p
		before[name] = p.Status.DeepCopy()
	}
	return projects, before, nil
}

// pods returns the singleuser pods billed to the account, and the pods
// named like its own entries whatever account they name now (an edit of a
// running pod's account annotation must not take it off this ledger;
// billing.EntryPods binds each entry to its pod).
func (r *CreditAccountReconciler) pods(ctx context.Context, a *hcv1.CreditAccount) (map[string]*corev1.Pod, error) {
	var list corev1.PodList
	if err := r.Client.List(ctx, &list, client.InNamespace(a.Namespace),
		client.MatchingFields{indexer.PodAccountKey: a.Name}); err != nil {
		return nil, err
	}
	pods := make(map[string]*corev1.Pod, len(list.Items))
	listed := make(map[string]bool, len(list.Items))
	for i := range list.Items {
		pods[list.Items[i].Name] = &list.Items[i]
		listed[list.Items[i].Name] = true
	}
	for _, e := range a.Status.Servers {
		if e.Wallet != a.Name || listed[e.Pod] {
			continue
		}
		listed[e.Pod] = true
		p := &corev1.Pod{}
		err := r.Client.Get(ctx, types.NamespacedName{Namespace: a.Namespace, Name: e.Pod}, p)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		pods[p.Name] = p
	}
	return pods, nil
}

// unreserved finds the pods billed to the account that no ledger holds
// (billing.Adoptable): admitted in shadow mode (price pinned, nothing
// reserved), never seen by the webhook (failurePolicy Ignore while it was
// down, or labelled singleuser after its creation), or whose reservation
// was returned while the pod was out of sight. They are offered for
// adoption with admission's verdict on who may pay (billing.Adoption):
// Settle adopts those the account may pay for, their first period charged
// when they run, and returns the others as unbillable. It also returns the
// offered pods by adopted entry id (pods that name no account but belong
// to this wallet among them). A pod that cannot be priced is skipped (a
// policy that fails on it); a failed read is an error.
func (r *CreditAccountReconciler) unreserved(ctx context.Context, a *hcv1.CreditAccount, pods map[string]*corev1.Pod) ([]billing.Unreserved, map[string]*corev1.Pod, error) {
	pricer := &podPricer{r: r, namespace: a.Namespace}
	var adopt []billing.Unreserved
	offered := map[string]*corev1.Pod{}
	var readErr error
	own := map[string]bool{}
	for _, k := range billing.LedgerKeys(a) {
		own[k] = true
	}
	held := func(keys []string) bool {
		if slices.ContainsFunc(keys, func(k string) bool { return own[k] }) {
			return true
		}
		elsewhere, err := r.heldElsewhere(ctx, a.Namespace, keys)
		if err != nil {
			readErr = err
			return true // unsure: never bill twice
		}
		return elsewhere
	}
	consider := func(p *corev1.Pod) error {
		if offered[billing.AdoptedID(p.UID)] != nil || !billing.Adoptable(p, held) {
			return readErr
		}
		price, ok, err := pricer.price(ctx, p)
		if err != nil || !ok || price.Value <= 0 {
			return err
		}
		u, err := billing.Adoption(p, a, price)
		if !errors.As(err, &u.Denial) && err != nil {
			return err
		}
		adopt = append(adopt, u)
		offered[billing.AdoptedID(p.UID)] = p
		return nil
	}
	for _, p := range pods {
		if names := indexer.PodAccounts(p); len(names) == 0 || names[0] != a.Name {
			continue
		}
		if err := consider(p); err != nil {
			return nil, nil, err
		}
	}
	// Pods that name no account: billed to the user's wallet.
	for _, user := range a.Spec.Users {
		var list corev1.PodList
		if err := r.Client.List(ctx, &list, client.InNamespace(a.Namespace), client.MatchingFields{indexer.UnbilledPodUserKey: user}); err != nil {
			return nil, nil, err
		}
		if len(list.Items) == 0 {
			continue
		}
		isWallet, err := r.isWalletOf(ctx, a, user)
		if err != nil {
			return nil, nil, err
		}
		if !isWallet {
			continue
		}
		for i := range list.Items {
			if err := consider(&list.Items[i]); err != nil {
				return nil, nil, err
			}
		}
	}
	return adopt, offered, nil
}

// heldElsewhere reports whether any account's ledger holds a server under
// one of keys (from the cache).
func (r *CreditAccountReconciler) heldElsewhere(ctx context.Context, ns string, keys []string) (bool, error) {
	for _, k := range keys {
		var accts hcv1.CreditAccountList
		if err := r.Client.List(ctx, &accts, client.InNamespace(ns), client.MatchingFields{indexer.AccountServerKey: k},
			client.UnsafeDisableDeepCopy); err != nil {
			return true, err
		}
		if len(accts.Items) > 0 {
			return true, nil
		}
	}
	return false, nil
}

// isWalletOf reports whether a is the wallet that pays for user's servers
// that name no account (as the webhook would have chosen it). An ambiguous
// choice is no wallet.
func (r *CreditAccountReconciler) isWalletOf(ctx context.Context, a *hcv1.CreditAccount, user string) (bool, error) {
	var accts hcv1.CreditAccountList
	if err := r.Client.List(ctx, &accts, client.InNamespace(a.Namespace), client.MatchingFields{indexer.AccountUsersKey: user}); err != nil {
		return false, err
	}
	candidates := make([]*hcv1.CreditAccount, 0, len(accts.Items))
	for i := range accts.Items {
		candidates = append(candidates, &accts.Items[i])
	}
	wallet, err := billing.ResolveWallet(user, "", candidates)
	return err == nil && wallet != nil && wallet.Name == a.Name, nil
}

// podPricer prices the pods of one namespace the webhook did not price, as
// it would have; the policies are listed once, on first use.
type podPricer struct {
	r         *CreditAccountReconciler
	namespace string
	policies  *hcv1.BillingPolicyList
}

// price returns the pod's pinned price, else the one the webhook would have
// pinned. ok is false for a pod that cannot be priced (a policy fails on it,
// or it is gone); err is a failed read.
func (pp *podPricer) price(ctx context.Context, p *corev1.Pod) (price billing.Price, ok bool, err error) {
	if price, ok := billing.PinnedPrice(p.Annotations); ok {
		return price, true, nil
	}
	if pp.policies == nil {
		policies := &hcv1.BillingPolicyList{}
		if err := pp.r.Client.List(ctx, policies, client.InNamespace(pp.namespace)); err != nil {
			return billing.Price{}, false, err
		}
		pp.policies = policies
	}
	defaults := pp.r.Defaults.OrDefault()
	// The cache keeps a trimmed pod (no spec, few labels): price the pod as
	// the API server has it, as the webhook would have.
	full := &corev1.Pod{}
	if err := pp.r.APIReader.Get(ctx, client.ObjectKeyFromObject(p), full); err != nil {
		if apierrors.IsNotFound(err) {
			return billing.Price{}, false, nil
		}
		return billing.Price{}, false, err
	}
	price, err = billing.ResolvePrice(pp.r.Policies.Sorted(pp.policies.Items), full, defaults)
	if err != nil {
		// Not an error of this reconcile: no policy can price the pod (a CEL
		// error on its spec), and retrying will not change that until a
		// policy changes. Returning it would fail the whole pass and stop
		// billing the account's other servers meanwhile. The pod stays
		// unadopted and is priced again on the account's next pass. The
		// error is left out of the log: a CEL runtime error can quote a value
		// from the pod, such as the Hub token.
		log.FromContext(ctx).Info("No billing policy could price an unreserved pod; it is not adopted", "pod", klog.KObj(p))
		return billing.Price{}, false, nil //nolint:nilerr // an unpriceable pod is skipped, not a failed reconcile (above)
	}
	return price, true, nil
}

// walletHas reports whether wallet holds entry id (from the cache; a pool's
// orphan grace is longer than the cache's lag).
func (r *CreditAccountReconciler) walletHas(ctx context.Context, ns, wallet, id string) bool {
	w := &hcv1.CreditAccount{}
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: wallet}, w); err != nil {
		return !apierrors.IsNotFound(err) // unsure: keep the entry
	}
	return billing.FindServer(w, id) >= 0
}

// act emits Events and stops servers after a committed settle.
func (r *CreditAccountReconciler) act(ctx context.Context, out *outcome) {
	a := out.account
	for _, n := range out.result.Notes {
		if n.Orphaned {
			reservationsOrphaned.Inc()
		}
		typ := corev1.EventTypeNormal
		if n.Warning {
			typ = corev1.EventTypeWarning
		}
		if n.Pod != "" && n.PodUID != "" {
			r.Recorder.Event(podRef(a.Namespace, n.Pod, n.PodUID), typ, n.Reason, n.Message)
		}
		if n.Reason != billing.EventCreditsReserved {
			r.Recorder.Event(a, typ, n.Reason, n.Message)
		}
		if n.Reason == billing.EventReadopted {
			metrics.IntegrityDecisions.WithLabelValues(metrics.Readopted).Inc()
		}
	}
	for _, s := range out.result.Stops {
		r.stop(ctx, a, s)
	}
	for _, u := range out.result.Unbillable {
		r.unbillable(ctx, a, u)
	}
	for _, pod := range out.moved {
		if r.report(billing.EventAccountEditIgnored, pod.UID) {
			metrics.IntegrityDecisions.WithLabelValues(metrics.AccountEditIgnored).Inc()
			r.Recorder.Event(podRef(a.Namespace, pod.Name, pod.UID), corev1.EventTypeWarning, billing.EventAccountEditIgnored,
				billing.AccountEditIgnoredMessage(indexer.PodAccounts(pod)[0], a.Name))
		}
	}
}

// maxReported bounds the memory of reported pods.
const maxReported = 10000

// unbillable reports a pod no account may pay for, once per pod (an Event
// on the pod and the account, and the Unbillable decision), and with
// --unbillable-pods=stop deletes it. The pod is deleted rather than stopped
// through the Hub: the user it names may not be the one who runs it.
func (r *CreditAccountReconciler) unbillable(ctx context.Context, a *hcv1.CreditAccount, u billing.Unreserved) {
	stop := r.UnbillablePods == UnbillableStop && !r.Shadow
	pod := podRef(a.Namespace, u.Pod, u.UID)
	if r.report(billing.EventUnbillable, u.UID) {
		decision := metrics.Unbillable
		if stop {
			decision = metrics.UnbillableStopped
		}
		metrics.IntegrityDecisions.WithLabelValues(decision).Inc()
		msg := billing.UnbillableMessage(u.Denial.Message, stop)
		r.Recorder.Event(pod, corev1.EventTypeWarning, billing.EventUnbillable, msg)
		r.Recorder.Event(a, corev1.EventTypeWarning, billing.EventUnbillable, u.Pod+": "+msg)
	}
	if !stop {
		return
	}
	uid := u.UID
	err := r.Client.Delete(ctx, pod, client.Preconditions{UID: &uid})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		log.FromContext(ctx).Error(err, "Deleting an unbillable pod failed", "pod", klog.KObj(pod))
		return
	}
	log.FromContext(ctx).Info("Deleted a pod no account may pay for", "pod", klog.KObj(pod), "reason", u.Denial.Reason)
}

// stop stops a server: it tells the user and counts the stop here, and
// leaves the Hub API call (or the pod's deletion) to the stopper, which
// runs outside the reconcile workers.
func (r *CreditAccountReconciler) stop(ctx context.Context, a *hcv1.CreditAccount, s billing.Stop) {
	pod := podRef(a.Namespace, s.Server.Pod, s.Server.PodUID)
	if !s.Repeat {
		reason := "credits"
		if r.Shadow {
			reason = "shadow" // counted, never carried out
		}
		stopsTotal.WithLabelValues(reason).Inc()
	}
	if !s.Repeat {
		r.Recorder.Event(pod, corev1.EventTypeWarning, billing.EventServerStopped, s.Message)
		r.Recorder.Event(a, corev1.EventTypeWarning, billing.EventServerStopped, s.Server.Pod+": "+s.Message)
	}
	if r.Shadow {
		log.FromContext(ctx).Info("Shadow mode: would stop server", "pod", klog.KObj(pod), "user", s.Server.User)
		return
	}
	r.stopper().Request(ctx, stopRequest{
		account: client.ObjectKeyFromObject(a), user: s.Server.User, server: s.Server.ServerName,
		pod: s.Server.Pod, podUID: s.Server.PodUID,
	})
}

// stopper is Stops, or (in tests that build the reconciler by hand) one
// that stops inline.
func (r *CreditAccountReconciler) stopper() *Stopper {
	r.inlineOnce.Do(func() {
		if r.Stops == nil {
			r.Stops = &Stopper{Client: r.Client, Hub: r.Hub, Recorder: r.Recorder, Clock: r.Clock}
		}
	})
	return r.Stops
}

func podRef(ns, name string, uid types.UID) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: uid},
	}
}

// SetupWithManager watches accounts and the singleuser pods billed to them.
func (r *CreditAccountReconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	if err := registerAccountCollector(&AccountCollector{Reader: mgr.GetCache(), Elected: mgr.Elected()}); err != nil {
		return err
	}
	if r.Tombstones == nil {
		r.Tombstones = mgr.GetAPIReader()
	}
	if r.Stops == nil {
		r.Stops = NewStopper(&Stopper{Client: r.Client, Hub: r.Hub, Recorder: r.Recorder, Clock: r.Clock})
		if err := mgr.Add(r.Stops); err != nil {
			return err
		}
	}
	return ctrl.NewControllerManagedBy(mgr).
		// The account's own charges (status writes) need no second look: its
		// work is driven by spec changes, its pods, and RequeueAfter. A
		// server entry added or removed by another writer (the webhook's
		// reservation, whose pod may never come) does wake it.
		For(&hcv1.CreditAccount{}, builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool {
				o, n := e.ObjectOld.(*hcv1.CreditAccount), e.ObjectNew.(*hcv1.CreditAccount)
				return o.Generation != n.Generation || !sameServers(o, n) || lifeChanged(o, n)
			},
		})).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.podToLedgers)).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.unbilledPodToWallets)).
		Watches(&hcv1.CreditAccount{}, handler.EnqueueRequestsFromMapFunc(r.accountToRelated)).
		// No low priority for the initial list: after an outage, catching up
		// on every account must not be starved by the boundaries of the
		// accounts already done.
		WithOptions(controller.Options{MaxConcurrentReconciles: max(workers, 1), UsePriorityQueue: ptr.To(false)}).
		Named("creditaccount").
		Complete(r)
}

// lifeChanged reports a change that decides the account's life: its
// deletion, its finalizer, the force annotation.
func lifeChanged(o, n *hcv1.CreditAccount) bool {
	return o.DeletionTimestamp.IsZero() != n.DeletionTimestamp.IsZero() ||
		controllerutil.ContainsFinalizer(o, hcv1.FinalizerLedger) != controllerutil.ContainsFinalizer(n, hcv1.FinalizerLedger) ||
		o.Annotations[hcv1.AnnotationForceDelete] != n.Annotations[hcv1.AnnotationForceDelete]
}

// sameServers reports whether two versions of an account hold the same
// server entries (by id).
func sameServers(a, b *hcv1.CreditAccount) bool {
	if len(a.Status.Servers) != len(b.Status.Servers) {
		return false
	}
	for i := range a.Status.Servers {
		if a.Status.Servers[i].ID != b.Status.Servers[i].ID {
			return false
		}
	}
	return true
}

// podToAccounts maps a pod to the accounts it is billed to.
func podToAccounts(_ context.Context, o client.Object) []reconcile.Request {
	var out []reconcile.Request
	for _, name := range indexer.PodAccounts(o) {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}})
	}
	return out
}

// podToLedgers maps a pod to the accounts it is billed to (podToAccounts)
// and to those whose ledger holds it: they differ once its account
// annotation was edited, and the ledger that admitted it keeps billing it.
func (r *CreditAccountReconciler) podToLedgers(ctx context.Context, o client.Object) []reconcile.Request {
	out := podToAccounts(ctx, o)
	seen := map[string]bool{}
	for _, req := range out {
		seen[req.Name] = true
	}
	add := func(name string) {
		if !seen[name] {
			seen[name] = true
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}})
		}
	}
	var accts hcv1.CreditAccountList
	key := billing.PodUIDKey(o.GetUID())
	if err := r.Client.List(ctx, &accts, client.InNamespace(o.GetNamespace()), client.MatchingFields{indexer.AccountServerKey: key},
		client.UnsafeDisableDeepCopy); err == nil {
		for i := range accts.Items {
			add(accts.Items[i].Name)
		}
	}
	return out
}

// unbilledPodToWallets maps a pod that names no account to the accounts
// that list its user (the one that is its wallet adopts it).
func (r *CreditAccountReconciler) unbilledPodToWallets(ctx context.Context, o client.Object) []reconcile.Request {
	users := indexer.UnbilledPodUser(o)
	if len(users) == 0 {
		return nil
	}
	var accts hcv1.CreditAccountList
	if err := r.Client.List(ctx, &accts, client.InNamespace(o.GetNamespace()), client.MatchingFields{indexer.AccountUsersKey: users[0]}); err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(accts.Items))
	for _, a := range accts.Items {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: a.Namespace, Name: a.Name}})
	}
	return out
}

// accountToRelated wakes the wallets whose servers a pool co-funds (the
// pool's balance changes what they can pay) and the wallets that name it
// (their Ready condition depends on it existing).
func (r *CreditAccountReconciler) accountToRelated(ctx context.Context, o client.Object) []reconcile.Request {
	a := o.(*hcv1.CreditAccount)
	seen := map[string]bool{}
	var out []reconcile.Request
	add := func(name string) {
		if name != "" && name != a.Name && !seen[name] {
			seen[name] = true
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: a.Namespace, Name: name}})
		}
	}
	for _, e := range a.Status.Servers {
		add(e.Wallet)
	}
	var wallets hcv1.CreditAccountList
	if err := r.Client.List(ctx, &wallets, client.InNamespace(a.Namespace), client.MatchingFields{indexer.AccountProjectKey: a.Name}); err == nil {
		for i := range wallets.Items {
			add(wallets.Items[i].Name)
		}
	}
	return out
}
