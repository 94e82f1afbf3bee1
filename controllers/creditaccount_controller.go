// Package controllers keeps the ledgers: it bills running servers at each
// boundary, returns reservations whose pod never ran, applies grants and
// top-ups, and stops servers whose next period cannot be paid.
package controllers

import (
	"context"
	"fmt"
	"strconv"
	"time"

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
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
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
	// Hub stops servers through the Hub API; nil deletes the pod instead.
	Hub ServerStopper
	// Shadow counts without ever stopping a server.
	Shadow bool
	// Policies and Defaults price pods the webhook never saw.
	Policies *billing.PolicyCache
	Defaults billing.Defaults
}

var _ reconcile.Reconciler = (*CreditAccountReconciler)(nil)

// +kubebuilder:rbac:groups=hubcredits.io,namespace=system,resources=creditaccounts,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=hubcredits.io,namespace=system,resources=creditaccounts/status,verbs=get;update
// +kubebuilder:rbac:groups="",namespace=system,resources=pods,verbs=get;list;watch;delete
// +kubebuilder:rbac:groups="",namespace=system,resources=events,verbs=create;patch

// Reconcile settles the account's servers and requeues at the next boundary.
func (r *CreditAccountReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var out *outcome
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		out, err = r.settle(ctx, req.NamespacedName, attempt > 0)
		if !apierrors.IsConflict(err) {
			break
		}
	}
	if apierrors.IsNotFound(err) {
		return ctrl.Result{}, nil
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	for _, lag := range out.result.Lags {
		billingLag.Observe(lag.Seconds())
	}
	r.act(ctx, out)
	return ctrl.Result{RequeueAfter: out.result.RequeueAfter}, nil
}

// outcome is what a committed settle asks for.
type outcome struct {
	account  *hcv1.CreditAccount
	projects map[string]*hcv1.CreditAccount
	result   billing.Result
}

// settle reads the account (live after a conflict), settles it and writes
// the changed pools, then the account.
func (r *CreditAccountReconciler) settle(ctx context.Context, key types.NamespacedName, live bool) (*outcome, error) {
	reader := client.Reader(r.Client)
	if live {
		reader = r.APIReader
	}
	a := &hcv1.CreditAccount{}
	if err := reader.Get(ctx, key, a); err != nil {
		return nil, err
	}
	before := a.Status.DeepCopy()
	now := r.Clock.Now()

	projects, projBefore, err := r.projects(ctx, reader, a)
	if err != nil {
		return nil, err
	}
	pods, err := r.pods(ctx, a)
	if err != nil {
		return nil, err
	}
	adopt, err := r.unreserved(ctx, a, pods)
	if err != nil {
		return nil, err
	}
	res := billing.Settle(a, projects, func(e hcv1.ServerCharge) billing.PodObservation {
		return observe(pods, e)
	}, adopt, now, r.Options)
	orphansChanged, wait := billing.SettleOrphans(a, func(wallet, id string) bool {
		return r.walletHas(ctx, key.Namespace, wallet, id)
	}, now, r.Options)
	if orphansChanged {
		res.WalletChanged = true
	}
	if wait > 0 && (res.RequeueAfter == 0 || wait < res.RequeueAfter) {
		res.RequeueAfter = wait
	}
	r.setReady(a, projects, now)
	a.Status.ObservedGeneration = a.Generation

	// Pools first, the wallet last: the wallet's entry commits the charge.
	for name := range res.ChangedProjects {
		p := projects[name]
		if p == nil || equality.Semantic.DeepEqual(projBefore[name], &p.Status) {
			continue
		}
		if err := r.Client.Status().Update(ctx, p); err != nil {
			return nil, err
		}
	}
	if !equality.Semantic.DeepEqual(before, &a.Status) {
		if err := r.Client.Status().Update(ctx, a); err != nil {
			return nil, err
		}
	}
	return &outcome{account: a, projects: projects, result: res}, nil
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

// pods returns the account's singleuser pods by reservation id (and by
// adopted entry id).
func (r *CreditAccountReconciler) pods(ctx context.Context, a *hcv1.CreditAccount) (map[string]*corev1.Pod, error) {
	var list corev1.PodList
	if err := r.Client.List(ctx, &list, client.InNamespace(a.Namespace),
		client.MatchingFields{billing.IndexPodAccount: a.Name}); err != nil {
		return nil, err
	}
	byID := make(map[string]*corev1.Pod, len(list.Items))
	for i := range list.Items {
		p := &list.Items[i]
		if id := p.Annotations[hcv1.AnnotationReservation]; id != "" {
			byID[id] = p
		}
		byID[billing.AdoptedID(p.UID)] = p
	}
	return byID, nil
}

// unreserved finds the running pods billed to the account that have no
// reservation: admitted in shadow mode (price pinned, nothing reserved), or
// never seen by the webhook (failurePolicy Ignore while it was down). The
// account adopts them; their first period is charged when they run.
func (r *CreditAccountReconciler) unreserved(ctx context.Context, a *hcv1.CreditAccount, pods map[string]*corev1.Pod) ([]billing.Unreserved, error) {
	var out []billing.Unreserved
	seen := map[types.UID]bool{}
	consider := func(p *corev1.Pod, price billing.Price) {
		if seen[p.UID] || price.Value <= 0 || ObservePod(p).EndedAt != nil ||
			p.Annotations[hcv1.AnnotationReservation] != "" || billing.FindServer(a, billing.AdoptedID(p.UID)) >= 0 {
			return
		}
		seen[p.UID] = true
		out = append(out, billing.Unreserved{Pod: p.Name, UID: p.UID, User: p.Annotations[hcv1.AnnotationUsername],
			ServerName: p.Annotations[hcv1.AnnotationServerName], Price: price})
	}
	var policies *hcv1.BillingPolicyList
	priceOf := func(p *corev1.Pod) (billing.Price, error) {
		if price, ok := pinnedPrice(p); ok {
			return price, nil
		}
		// No price pinned: the one the webhook would have set.
		if policies == nil {
			policies = &hcv1.BillingPolicyList{}
			if err := r.Client.List(ctx, policies, client.InNamespace(a.Namespace)); err != nil {
				return billing.Price{}, err
			}
		}
		d := r.Defaults
		if d.Interval <= 0 {
			d = billing.DefaultPrice
		}
		// The cache keeps a trimmed pod (no spec, few labels): price the
		// pod as the API server has it, as the webhook would have.
		full := &corev1.Pod{}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(p), full); err != nil {
			return billing.Price{}, err
		}
		return billing.ResolvePrice(r.Policies.Sorted(policies.Items), full, d)
	}
	for _, p := range pods {
		if billing.PodAccounts(p)[0] != a.Name || p.Annotations[hcv1.AnnotationReservation] != "" {
			continue
		}
		if price, err := priceOf(p); err == nil {
			consider(p, price)
		}
	}
	// Pods that name no account: billed to the user's wallet.
	for _, user := range a.Spec.Users {
		var list corev1.PodList
		if err := r.Client.List(ctx, &list, client.InNamespace(a.Namespace), client.MatchingFields{billing.IndexUnbilledPodUser: user}); err != nil {
			return nil, err
		}
		for i := range list.Items {
			p := &list.Items[i]
			var accts hcv1.CreditAccountList
			if err := r.Client.List(ctx, &accts, client.InNamespace(a.Namespace), client.MatchingFields{billing.IndexAccountUsers: user}); err != nil {
				return nil, err
			}
			cands := make([]*hcv1.CreditAccount, 0, len(accts.Items))
			for j := range accts.Items {
				cands = append(cands, &accts.Items[j])
			}
			if w, err := billing.ResolveWallet(user, "", cands); err != nil || w == nil || w.Name != a.Name {
				continue
			}
			price, err := priceOf(p)
			if err != nil {
				continue
			}
			pods[billing.AdoptedID(p.UID)] = p
			consider(p, price)
		}
	}
	return out, nil
}

// pinnedPrice reads the price the webhook pinned on a pod.
func pinnedPrice(p *corev1.Pod) (billing.Price, bool) {
	v, err1 := strconv.ParseInt(p.Annotations[hcv1.AnnotationBillingValue], 10, 64)
	d, err2 := time.ParseDuration(p.Annotations[hcv1.AnnotationBillingInterval])
	if err1 != nil || err2 != nil || v < 0 || d < time.Second {
		return billing.Price{}, false
	}
	return billing.Price{Value: v, Interval: d, Policy: p.Annotations[hcv1.AnnotationPolicy]}, true
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

func (r *CreditAccountReconciler) setReady(a *hcv1.CreditAccount, projects map[string]*hcv1.CreditAccount, now time.Time) {
	switch p := projects[a.Spec.Project]; {
	case a.Spec.Project != "" && p == nil:
		billing.SetCondition(a, now, hcv1.ConditionReady, metav1.ConditionFalse, hcv1.ReasonProjectNotFound,
			fmt.Sprintf("Project %q does not exist; spawns billed to this account are denied.", a.Spec.Project))
	case p != nil && p.Spec.Project != "":
		billing.SetCondition(a, now, hcv1.ConditionReady, metav1.ConditionFalse, hcv1.ReasonProjectChain,
			fmt.Sprintf("Project %q names a project itself; pools are one level deep, so spawns billed to this account are denied.", p.Name))
	default:
		billing.SetCondition(a, now, hcv1.ConditionReady, metav1.ConditionTrue, hcv1.ReasonLedgerOpen, "The ledger is kept.")
	}
}

// observe turns the cached pod behind an entry into what billing needs.
func observe(pods map[string]*corev1.Pod, e hcv1.ServerCharge) billing.PodObservation {
	p := pods[e.ID]
	if p == nil || (e.PodUID != "" && p.UID != e.PodUID) {
		return billing.PodObservation{}
	}
	return ObservePod(p)
}

// ObservePod reads a pod's run times: the clock starts when its first
// container started running and stops when deletion was requested or its
// containers terminated.
func ObservePod(p *corev1.Pod) billing.PodObservation {
	o := billing.PodObservation{Exists: true, UID: p.UID}
	var started, finished *time.Time
	for _, cs := range p.Status.ContainerStatuses {
		var t *metav1.Time
		switch {
		case cs.State.Running != nil:
			t = &cs.State.Running.StartedAt
		case cs.State.Terminated != nil:
			t = &cs.State.Terminated.StartedAt
			if f := cs.State.Terminated.FinishedAt.Time; !f.IsZero() && (finished == nil || f.After(*finished)) {
				finished = &f
			}
		case cs.LastTerminationState.Terminated != nil:
			t = &cs.LastTerminationState.Terminated.StartedAt
		}
		if t != nil && !t.IsZero() && (started == nil || t.Time.Before(*started)) {
			tt := t.Time
			started = &tt
		}
	}
	if started == nil && p.Status.Phase == corev1.PodRunning && p.Status.StartTime != nil {
		t := p.Status.StartTime.Time
		started = &t
	}
	o.StartedAt = started
	switch {
	case p.DeletionTimestamp != nil:
		// The API server sets deletionTimestamp to the request time plus the
		// grace period; the server stopped being the user's at the request.
		t := p.DeletionTimestamp.Time
		if g := p.DeletionGracePeriodSeconds; g != nil && *g > 0 {
			t = t.Add(-time.Duration(*g) * time.Second)
		}
		o.EndedAt = &t
	case p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed:
		if finished == nil {
			t := p.CreationTimestamp.Time
			if started != nil {
				t = *started
			}
			finished = &t
		}
		o.EndedAt = finished
	}
	return o
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
	}
	for _, s := range out.result.Stops {
		r.stop(ctx, a, s)
	}
}

// stop stops a server through the Hub API, and deletes its pod when there
// is no Hub API or it failed.
func (r *CreditAccountReconciler) stop(ctx context.Context, a *hcv1.CreditAccount, s billing.Stop) {
	logger := log.FromContext(ctx)
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
		logger.Info("Shadow mode: would stop server", "pod", klog.KObj(pod), "user", s.Server.User)
		return
	}
	if r.Hub != nil {
		err := r.Hub.StopServer(ctx, s.Server.User, s.Server.ServerName)
		if err == nil {
			logger.Info("Stopped server through the Hub API", "pod", klog.KObj(pod), "user", s.Server.User)
			return
		}
		logger.Error(err, "Stopping through the Hub API failed; deleting the pod", "pod", klog.KObj(pod))
	}
	uid := s.Server.PodUID
	err := r.Client.Delete(ctx, pod, client.Preconditions{UID: &uid})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		logger.Error(err, "Deleting the pod of an unpaid server failed", "pod", klog.KObj(pod))
		return
	}
	logger.Info("Deleted the pod of an unpaid server", "pod", klog.KObj(pod), "user", s.Server.User)
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
	return ctrl.NewControllerManagedBy(mgr).
		// The account's own charges (status writes) need no second look: its
		// work is driven by spec changes, its pods, and RequeueAfter. A
		// server entry added or removed by another writer (the webhook's
		// reservation, whose pod may never come) does wake it.
		For(&hcv1.CreditAccount{}, builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool {
				o, n := e.ObjectOld.(*hcv1.CreditAccount), e.ObjectNew.(*hcv1.CreditAccount)
				return o.Generation != n.Generation || !sameServers(o, n)
			},
		})).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(podToAccounts)).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.unbilledPodToWallets)).
		Watches(&hcv1.CreditAccount{}, handler.EnqueueRequestsFromMapFunc(r.accountToRelated)).
		// No low priority for the initial list: after an outage, catching up
		// on every account must not be starved by the boundaries of the
		// accounts already done.
		WithOptions(controller.Options{MaxConcurrentReconciles: max(workers, 1), UsePriorityQueue: ptr.To(false)}).
		Named("creditaccount").
		Complete(r)
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
	for _, name := range billing.PodAccounts(o) {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}})
	}
	return out
}

// unbilledPodToWallets maps a pod that names no account to the accounts
// that list its user (the one that is its wallet adopts it).
func (r *CreditAccountReconciler) unbilledPodToWallets(ctx context.Context, o client.Object) []reconcile.Request {
	users := billing.UnbilledPodUser(o)
	if len(users) == 0 {
		return nil
	}
	var accts hcv1.CreditAccountList
	if err := r.Client.List(ctx, &accts, client.InNamespace(o.GetNamespace()), client.MatchingFields{billing.IndexAccountUsers: users[0]}); err != nil {
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
	if err := r.Client.List(ctx, &wallets, client.InNamespace(a.Namespace), client.MatchingFields{billing.IndexAccountProject: a.Name}); err == nil {
		for i := range wallets.Items {
			add(wallets.Items[i].Name)
		}
	}
	return out
}
