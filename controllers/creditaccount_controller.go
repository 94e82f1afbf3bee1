// Package controllers keeps the ledgers: it bills running servers at each
// boundary, returns reservations whose pod never ran, applies grants and
// top-ups, and stops servers whose next period cannot be paid.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
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
	"github.com/hubcredits/hubcredits/internal/ledgerpages"
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
	// Singleuser selects the user pods as the cache does (nil: Z2JH's
	// component=singleuser-server): a pod read live around the cache
	// counts only when it matches.
	Singleuser labels.Selector
	Clock      clock.Clock
	Recorder   record.EventRecorder
	Options    billing.Options
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

	// Pages reads and writes the accounts' LedgerPages (nil: a
	// ledgerpages.Store on Client and APIReader).
	Pages PageStore
	// PageLimits bound where entries go (zero: billing.DefaultPageLimits).
	PageLimits billing.PageLimits
	pagesOnce  sync.Once

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
// +kubebuilder:rbac:groups=hubcredits.io,namespace=system,resources=ledgerpages,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups=hubcredits.io,namespace=system,resources=ledgerpages/status,verbs=get;update
// +kubebuilder:rbac:groups="",namespace=system,resources=pods,verbs=get;list;watch;delete
// +kubebuilder:rbac:groups="",namespace=system,resources=events,verbs=create;patch

// maxConflictRetries bounds the settles of one Reconcile that lose a
// conflict (another writer, e.g. the webhook reserving, wrote first); each
// retry reads live.
const maxConflictRetries = 5

// maxRounds bounds the rounds of one Reconcile over an account's pages
// (each commits up to PageLimits.Pending page transactions in one account
// write, then writes the pages): 256 pages, 8 a round, and a grant
// interval a round while they catch up. The rest goes on in a second.
const maxRounds = 64

// Reconcile settles the account's servers, inline and on its LedgerPages,
// and requeues at the next boundary. A round commits the account (one
// status write), then writes the pages it committed transfers for; the
// next round, at once and from the objects as written, confirms them and
// goes on while pages are left or the catch-up waits (Result.Waiting).
func (r *CreditAccountReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var l *ledgers
	var out *outcome
	for round := 0; ; round++ {
		var err error
		out, err = r.settle(ctx, req.NamespacedName, l)
		if out != nil {
			r.reportRound(ctx, out)
		}
		if apierrors.IsNotFound(err) && out == nil {
			r.seen.forget(req.NamespacedName)
			return ctrl.Result{}, r.releaseOrphanedPages(ctx, req.NamespacedName)
		}
		if err != nil {
			r.reportPageIntegrity(ctx, req.NamespacedName, out, err)
			return ctrl.Result{}, err
		}
		if a := out.account; a.DeletionTimestamp != nil && !controllerutil.ContainsFinalizer(a, hcv1.FinalizerLedger) {
			// Let go (its tombstone written), and held by another
			// finalizer: a foreground deletion waits for its pages.
			return ctrl.Result{}, r.pageStore().Release(ctx, a)
		}
		if !out.again || round+1 >= maxRounds {
			break
		}
		l = out.next
	}
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
	requeue := out.result.RequeueAfter
	if out.again && (requeue == 0 || requeue > time.Second) {
		requeue = time.Second
	}
	return ctrl.Result{RequeueAfter: requeue}, nil
}

// reportPageIntegrity says on the account (a Warning Event; the error is
// logged by the caller's return) that its LedgerPages were changed by
// hand (billing.PageIntegrity): nothing of it is billed until an admin
// repairs them, and nothing is charged or returned meanwhile.
func (r *CreditAccountReconciler) reportPageIntegrity(ctx context.Context, key types.NamespacedName, out *outcome, err error) {
	if !billing.PageIntegrity(err) || r.Recorder == nil {
		return
	}
	var a client.Object
	if out != nil {
		a = out.account
	} else {
		acct := &hcv1.CreditAccount{}
		if r.Client.Get(ctx, key, acct) != nil {
			return
		}
		a = acct
	}
	r.Recorder.Event(a, corev1.EventTypeWarning, billing.EventPageIntegrity, err.Error())
}

// reportRound acts on a committed round: lags, Events, stops, the account's
// life.
func (r *CreditAccountReconciler) reportRound(ctx context.Context, out *outcome) {
	for _, lag := range out.result.Lags {
		billingLag.Observe(lag.Seconds())
	}
	r.act(ctx, out)
	r.actOnLife(ctx, out)
}

// outcome is what a committed settle asks for.
type outcome struct {
	account *hcv1.CreditAccount
	result  billing.Result
	life
	// moved are the pods this ledger bills that name another account now.
	moved []*corev1.Pod
	// again: the round committed page transfers (or waits for its pages'
	// catch-up): go on at once from next.
	again bool
	next  *ledgers
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
	// recorded are the ended servers whose usage record exists.
	recorded map[string]bool
	// pages are the account's LedgerPages by number, as completed (no
	// transfer pending for them once Complete ran, or as written); fresh
	// are those read live, returned by the store's Complete or Write: a
	// transaction is committed only on a fresh page (a cached one may lag
	// the account, and a transfer built on it would be lost).
	pages map[int32]*hcv1.LedgerPage
	fresh map[int32]bool
	// committed are the pages whose transfer the round committed.
	committed []int32
	// more: pages or a move were left to the next round.
	more bool
	// wrote: the round wrote the account.
	wrote bool
}

// settle is one round: load the ledgers (cached, or live after a
// conflict; l continues a previous round from the objects as written),
// compute the settle, commit it (pools first, the account last), then
// write the pages it committed transfers for. A page write that fails
// after the commit returns the outcome with the error: the round is
// committed (its stops are carried out), the next pass completes the page.
func (r *CreditAccountReconciler) settle(ctx context.Context, key types.NamespacedName, l *ledgers) (*outcome, error) {
	var err error
	for attempt := range maxConflictRetries {
		if l == nil {
			if l, err = r.load(ctx, key, attempt > 0); err != nil {
				if apierrors.IsConflict(err) {
					continue
				}
				return nil, err
			}
		}
		var out *outcome
		out, err = r.round(ctx, l)
		if out != nil || !apierrors.IsConflict(err) {
			return out, err
		}
		l = nil // start over, live
	}
	return nil, err
}

// round computes and commits one round on l.
func (r *CreditAccountReconciler) round(ctx context.Context, l *ledgers) (*outcome, error) {
	res, err := r.compute(ctx, l)
	if err != nil {
		return nil, err
	}
	if err := r.commit(ctx, l); err != nil {
		return nil, err
	}
	out := &outcome{account: l.wallet, result: res, life: l.life, moved: l.moved}
	if err := r.claim(ctx, l); err != nil {
		return out, err
	}
	if err := r.writePages(ctx, l); err != nil {
		return out, err
	}
	if len(l.committed) > 0 || (res.Waiting && l.wrote) {
		out.again, out.next = true, l.continued()
	}
	return out, nil
}

// writePages writes each page the round committed a transfer for, and
// confirms it on the account in memory (the next round's write carries
// it).
func (r *CreditAccountReconciler) writePages(ctx context.Context, l *ledgers) error {
	for _, n := range l.committed {
		i := slices.IndexFunc(l.wallet.Status.Pending, func(t hcv1.PageTransfer) bool { return t.Page == n })
		if i < 0 {
			continue
		}
		page, err := r.pageStore().Write(ctx, l.wallet, l.wallet.Status.Pending[i].DeepCopy())
		if err != nil {
			return err
		}
		l.pages[n], l.fresh[n] = page, true
	}
	return nil
}

// continued is the ledgers of the next round: the objects as written, the
// account's written pages confirmed in memory.
func (l *ledgers) continued() *ledgers {
	next := &ledgers{
		wallet: l.wallet, walletBefore: l.wallet.Status.DeepCopy(),
		pools: l.pools, poolsBefore: map[string]*hcv1.CreditAccountStatus{},
		pods: l.pods, recorded: l.recorded, pages: l.pages, fresh: l.fresh,
	}
	for name, p := range l.pools {
		next.poolsBefore[name] = p.Status.DeepCopy()
	}
	for _, n := range l.committed {
		if p := l.pages[n]; p != nil {
			_, _ = billing.Confirm(next.wallet, p) // the page as written
		}
	}
	return next
}

// load reads the account, its pools, its pages (completing the transfers
// the account holds pending) and its pods, and finds the pods to adopt.
func (r *CreditAccountReconciler) load(ctx context.Context, key types.NamespacedName, live bool) (*ledgers, error) {
	reader := client.Reader(r.Client)
	if live {
		reader = r.APIReader
	}
	wallet := &hcv1.CreditAccount{}
	if err := reader.Get(ctx, key, wallet); err != nil {
		return nil, err
	}
	l := &ledgers{wallet: wallet, walletBefore: wallet.Status.DeepCopy(), recorded: map[string]bool{},
		pages: map[int32]*hcv1.LedgerPage{}, fresh: map[int32]bool{}}
	var err error
	if l.tombstone, err = r.loadTombstone(ctx, wallet); err != nil {
		return nil, err
	}
	if l.pools, l.poolsBefore, err = r.projects(ctx, reader, wallet); err != nil {
		return nil, err
	}
	if err := l.loadPages(ctx, r.pageStore(), live); err != nil {
		return nil, err
	}
	if err := billing.CheckPaged(wallet, l.pages); err != nil {
		if err := r.checkPagesLive(ctx, key); err != nil {
			return nil, err
		}
	}
	for {
		pageEntries, err := billing.PageEntries(wallet, l.pages)
		if err != nil {
			return nil, err
		}
		candidates, err := r.pods(ctx, wallet, pageEntries)
		if err != nil {
			return nil, err
		}
		list := slices.Collect(maps.Values(candidates))
		l.pods = billing.EntryPods(wallet, list)
		maps.Copy(l.pods, billing.EntryPodsOf(wallet.Name, pageEntries, list))
		l.moved = nil
		for _, pod := range l.pods {
			if names := indexer.PodAccounts(pod); len(names) > 0 && names[0] != wallet.Name {
				l.moved = append(l.moved, pod)
			}
		}
		adopt, offered, err := r.unreserved(ctx, wallet, pageEntries, candidates)
		if err != nil {
			return nil, err
		}
		if len(adopt) > 0 && l.stalePages() {
			// A page from the cache may lag the account (the page's watch
			// behind the account's, which has confirmed its write): a pod
			// whose entry is on it would look held by no ledger, and be
			// billed twice. Adopt only what the pages as they are hold not.
			if err := l.readPagesLive(ctx, r.pageStore()); err != nil {
				return nil, err
			}
			continue
		}
		l.adopt = adopt
		for id, pod := range offered {
			l.pods[id] = pod
		}
		break
	}
	return l, nil
}

// stalePages reports whether one of the account's pages was read from the
// cache (not live, nor as completed or written).
func (l *ledgers) stalePages() bool {
	for n := int32(1); n <= l.wallet.Status.Pages; n++ {
		if !l.fresh[n] {
			return true
		}
	}
	return false
}

// readPagesLive reads the account's pages that are not fresh, live.
func (l *ledgers) readPagesLive(ctx context.Context, store PageStore) error {
	for n := int32(1); n <= l.wallet.Status.Pages; n++ {
		if l.fresh[n] {
			continue
		}
		p, err := store.Page(ctx, l.wallet, n, true)
		if err != nil {
			return err
		}
		l.pages[n], l.fresh[n] = p, true
	}
	return nil
}

// checkPagesLive checks the account against its pages (billing.CheckPaged)
// on a consistent live read: the account, its pages, and the account
// again at the same resourceVersion (a page is written only for a
// transfer its account committed first, so pages read between two reads of
// an unchanged account show nothing it does not hold). Cached pages may
// lag the account, or lead it; only a mismatch on such a read is a page
// edited by hand (billing.ErrPagesEdited). A read that is not consistent
// (the account changed meanwhile) reports nothing: the next pass checks
// again.
func (r *CreditAccountReconciler) checkPagesLive(ctx context.Context, key types.NamespacedName) error {
	a := &hcv1.CreditAccount{}
	if err := r.APIReader.Get(ctx, key, a); err != nil {
		return err
	}
	pages, err := r.pageStore().Pages(ctx, a, true)
	if err != nil {
		return err
	}
	again := &hcv1.CreditAccount{}
	if err := r.APIReader.Get(ctx, key, again); err != nil {
		return err
	}
	if again.ResourceVersion != a.ResourceVersion {
		return nil
	}
	if err := billing.CheckPaged(a, pages); err != nil {
		return fmt.Errorf("%w: %w", billing.ErrPagesEdited, err)
	}
	return nil
}

// loadPages reads the account's pages (live after a conflict) and
// completes the transfers the account holds pending: each is applied to
// its page (written) and confirmed on the account in memory.
func (l *ledgers) loadPages(ctx context.Context, store PageStore, live bool) error {
	a := l.wallet
	if a.Status.Pages == 0 && len(a.Status.Pending) == 0 {
		return nil
	}
	pages, err := store.Pages(ctx, a, live)
	if err != nil {
		return err
	}
	for n, p := range pages {
		l.pages[n], l.fresh[n] = p, live
	}
	completed, _, err := store.Complete(ctx, a)
	if err != nil {
		return err
	}
	for n, p := range completed {
		l.pages[n], l.fresh[n] = p, true
	}
	return nil
}

// compute settles the ledgers in memory: a tombstone taken over, the pure
// billing core on status.servers, then the account's pages (one
// transaction each, committed on the account, PageLimits.Pending at
// most), the pool's orphaned shares, the Ready condition and the decision
// about an account being deleted.
func (r *CreditAccountReconciler) compute(ctx context.Context, l *ledgers) (billing.Result, error) {
	wallet := l.wallet
	now := r.Clock.Now()
	l.reopen(now)
	pageEntries, err := billing.PageEntries(wallet, l.pages)
	if err != nil {
		return billing.Result{}, err
	}
	opts := r.Options
	opts.Seen = r.seen.observe(wallet, pageEntries, now, r.Options.OrphanGrace)
	l.awaitingRecord = r.recordUsage(ctx, wallet, pageEntries, l.recorded)
	opts.AwaitingRecord = l.awaitingRecord
	res := billing.Settle(wallet, l.pools, l.observe, l.adopt, now, opts)
	// Whether anything changed is answered by commit (statusChanged).
	_, wait := billing.SettleOrphans(wallet, func(owner, id string) bool {
		return r.walletHas(ctx, wallet.Namespace, owner, id)
	}, now, opts)
	if wait > 0 && (res.RequeueAfter == 0 || wait < res.RequeueAfter) {
		res.RequeueAfter = wait
	}
	pass, err := r.settlePages(ctx, l, now, opts)
	if err != nil {
		return billing.Result{}, err
	}
	res.Merge(pass.Result)
	l.committed, l.more = pass.Committed, pass.More
	if len(pass.Committed) > 0 {
		var poolBalance int64
		if pool := l.pools[wallet.Spec.Project]; pool != nil && wallet.Spec.Project != "" {
			poolBalance = pool.Status.Balance
		}
		billing.UpdateCounters(wallet, now, poolBalance, opts)
	}
	if len(l.awaitingRecord) > 0 && (res.RequeueAfter == 0 || usageRetry < res.RequeueAfter) {
		res.RequeueAfter = usageRetry
	}
	billing.SetReady(wallet, l.pools[wallet.Spec.Project], now)
	if pageEntries, err = billing.PageEntries(wallet, l.pages); err != nil {
		return billing.Result{}, err
	}
	l.release = l.deletion(pageEntries, now)
	wallet.Status.ObservedGeneration = wallet.Generation
	return res, nil
}

// observe is what is known about the pod of entry e.
func (l *ledgers) observe(e hcv1.ServerCharge) billing.PodObservation {
	return billing.ObserveEntry(l.pods[e.ID], e)
}

// settlePages runs billing.SettlePages on the account's pages. A
// transaction is committed only on a page read live (or as written) since
// the account was read: one from the cache may lag the account (it may
// miss a transfer another writer committed and confirmed), and a transfer
// built on it would carry a seq the page has reached already, its credits
// moved and its entries never applied. So the pass is tried on a copy of
// the account; the pages it would commit on that are not fresh are read
// live (their ended entries' usage records written) and the pass tried
// again, until every page it commits on is fresh.
func (r *CreditAccountReconciler) settlePages(ctx context.Context, l *ledgers, now time.Time, opts billing.Options) (billing.PagesPass, error) {
	for {
		trial := l.wallet.DeepCopy()
		pass, err := billing.SettlePages(trial, l.pages, l.observe, now, opts, r.PageLimits)
		if err != nil {
			return pass, err
		}
		stale := slices.DeleteFunc(slices.Clone(pass.Committed), func(n int32) bool { return l.fresh[n] })
		if len(stale) == 0 {
			trial.DeepCopyInto(l.wallet)
			return pass, nil
		}
		for _, n := range stale {
			p, err := r.pageStore().Page(ctx, l.wallet, n, true)
			if err != nil {
				return pass, err
			}
			l.pages[n], l.fresh[n] = p, true
		}
		entries, err := billing.PageEntries(l.wallet, l.pages)
		if err != nil {
			return pass, err
		}
		// An entry the cached page did not show (moved or reserved onto
		// it meanwhile) is bound to its pod as load binds the others:
		// without, its pod looks gone and the pass ends the server where
		// it stands, a period charged after its end (by a pass whose pod
		// cache lagged) kept. (A running pod is adoptable, so load read
		// the pages live already; an ended one is not.)
		candidates, err := r.pods(ctx, l.wallet, entries)
		if err != nil {
			return pass, err
		}
		for id, pod := range billing.EntryPodsOf(l.wallet.Name, entries, slices.Collect(maps.Values(candidates))) {
			if l.pods[id] == nil {
				l.pods[id] = pod
			}
		}
		maps.Copy(l.awaitingRecord, r.recordUsage(ctx, l.wallet, entries, l.recorded))
		opts.AwaitingRecord = l.awaitingRecord
		// A reservation the cached page did not show yet is seen now: its
		// grace runs from here, not from its reservedAt.
		opts.Seen = r.seen.observe(l.wallet, entries, now, r.Options.OrphanGrace)
	}
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
		if err := r.Client.Status().Update(ctx, l.wallet); err != nil {
			return err
		}
		l.wrote = true
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
// named like its own entries (inline and on its pages) whatever account
// they name now (an edit of a running pod's account annotation must not
// take it off this ledger; billing.EntryPods binds each entry to its pod).
func (r *CreditAccountReconciler) pods(ctx context.Context, a *hcv1.CreditAccount, pageEntries []hcv1.ServerCharge) (map[string]*corev1.Pod, error) {
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
	for _, e := range slices.Concat(a.Status.Servers, pageEntries) {
		if e.Wallet != a.Name || listed[e.Pod] {
			continue
		}
		listed[e.Pod] = true
		p := &corev1.Pod{}
		key := types.NamespacedName{Namespace: a.Namespace, Name: e.Pod}
		err := r.Client.Get(ctx, key, p)
		if apierrors.IsNotFound(err) && e.EndedAt == nil && r.APIReader != nil {
			// The pod's absence decides that its reservation is returned
			// (never came) or its server ended (lost): confirm it live.
			// The cache can lag far behind (a watch cut by kube-apiserver
			// restarts backs off), and a pod created meanwhile would run
			// unbilled.
			if err = r.APIReader.Get(ctx, key, p); err == nil {
				p.Spec, p.ManagedFields = corev1.PodSpec{}, nil // the spec holds the Hub token
				if !r.singleuser().Matches(labels.Set(p.Labels)) {
					continue // out of the controller's sight, as in the cache
				}
			}
		}
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
// policy that fails on it); a failed read is an error. A pod held by the
// account's pages (pageEntries), or by any account's or page's ledger (the
// indexes), is never adopted: it would be charged twice.
func (r *CreditAccountReconciler) unreserved(ctx context.Context, a *hcv1.CreditAccount, pageEntries []hcv1.ServerCharge,
	pods map[string]*corev1.Pod) ([]billing.Unreserved, map[string]*corev1.Pod, error) {
	pricer := &podPricer{r: r, namespace: a.Namespace}
	var adopt []billing.Unreserved
	offered := map[string]*corev1.Pod{}
	var readErr error
	own := map[string]bool{}
	for _, k := range billing.LedgerKeys(a) {
		own[k] = true
	}
	for _, k := range billing.PageLedgerKeys(&hcv1.LedgerPage{Status: hcv1.LedgerPageStatus{Servers: pageEntries}}) {
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
// one of keys, inline or on one of its LedgerPages (from the cache).
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
		var pages hcv1.LedgerPageList
		if err := r.Client.List(ctx, &pages, client.InNamespace(ns), client.MatchingFields{indexer.PageServerKey: k},
			client.UnsafeDisableDeepCopy); err != nil {
			return true, err
		}
		if len(pages.Items) > 0 {
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

// PageStore reads and writes accounts' LedgerPages
// (internal/ledgerpages.Store).
type PageStore interface {
	Page(ctx context.Context, account *hcv1.CreditAccount, n int32, live bool) (*hcv1.LedgerPage, error)
	Pages(ctx context.Context, account *hcv1.CreditAccount, live bool) (map[int32]*hcv1.LedgerPage, error)
	Write(ctx context.Context, account *hcv1.CreditAccount, t *hcv1.PageTransfer) (*hcv1.LedgerPage, error)
	Complete(ctx context.Context, account *hcv1.CreditAccount) (map[int32]*hcv1.LedgerPage, bool, error)
	Release(ctx context.Context, account *hcv1.CreditAccount) error
}

// releaseOrphanedPages releases the pages left by an account that is gone
// without its release (its finalizer removed by hand): they carry the
// finalizer hcv1.FinalizerLedger, and their owner's garbage collection
// would wait on it for ever. The cache says whether there are any; the
// account's absence is checked live, and the store reads them live.
func (r *CreditAccountReconciler) releaseOrphanedPages(ctx context.Context, key types.NamespacedName) error {
	var pages hcv1.LedgerPageList
	if err := r.Client.List(ctx, &pages, client.InNamespace(key.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	if !slices.ContainsFunc(pages.Items, func(p hcv1.LedgerPage) bool {
		return p.Spec.Account == key.Name && controllerutil.ContainsFinalizer(&p, hcv1.FinalizerLedger)
	}) {
		return nil
	}
	gone := &hcv1.CreditAccount{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	if err := r.APIReader.Get(ctx, key, &hcv1.CreditAccount{}); !apierrors.IsNotFound(err) {
		return err // there is an account of that name (or no answer): its pass keeps its pages
	}
	return r.pageStore().Release(ctx, gone)
}

// singleuser is Singleuser or Z2JH's selector of user pods.
func (r *CreditAccountReconciler) singleuser() labels.Selector {
	if r.Singleuser != nil {
		return r.Singleuser
	}
	return labels.SelectorFromSet(labels.Set{hcv1.ComponentLabel: hcv1.SingleuserComponent})
}

// pageStore is Pages, or a ledgerpages.Store on the reconciler's clients.
func (r *CreditAccountReconciler) pageStore() PageStore {
	r.pagesOnce.Do(func() {
		if r.Pages == nil {
			r.Pages = &ledgerpages.Store{Client: r.Client, APIReader: r.APIReader}
		}
	})
	return r.Pages
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
		// A page wakes its account when entries come or go (the webhook's
		// reservations on it; the account's own charges need no second
		// look, as above).
		Watches(&hcv1.LedgerPage{}, handler.EnqueueRequestsFromMapFunc(pageToAccount), builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool {
				o, n := e.ObjectOld.(*hcv1.LedgerPage), e.ObjectNew.(*hcv1.LedgerPage)
				return !sameEntries(o.Status.Servers, n.Status.Servers)
			},
		})).
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
	return sameEntries(a.Status.Servers, b.Status.Servers)
}

// sameEntries reports whether two lists hold the same entries (by id).
func sameEntries(a, b []hcv1.ServerCharge) bool {
	return slices.EqualFunc(a, b, func(x, y hcv1.ServerCharge) bool { return x.ID == y.ID })
}

// pageToAccount maps a LedgerPage to its account.
func pageToAccount(_ context.Context, o client.Object) []reconcile.Request {
	p, ok := o.(*hcv1.LedgerPage)
	if !ok || p.Spec.Account == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: p.Namespace, Name: p.Spec.Account}}}
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
	var pages hcv1.LedgerPageList
	if err := r.Client.List(ctx, &pages, client.InNamespace(o.GetNamespace()), client.MatchingFields{indexer.PageServerKey: key},
		client.UnsafeDisableDeepCopy); err == nil {
		for i := range pages.Items {
			add(pages.Items[i].Spec.Account)
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
