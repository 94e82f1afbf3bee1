package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/metrics"
)

// An account's life around its ledger: the operator claims every account
// with the finalizer hubcredits.io/ledger (taking over the tombstone of a
// deleted account of the same name first), holds the deletion of an
// account that still funds servers, and writes a tombstone when it lets
// one go.

// +kubebuilder:rbac:groups=hubcredits.io,namespace=system,resources=creditaccounts,verbs=patch

// Events about an account's life.
const (
	EventDeletionHeld    = "DeletionHeld"
	EventDeletionForced  = "DeletionForced"
	EventAccountReopened = "AccountReopened"
	EventTombstone       = "TombstoneWritten"
	// EventGraceFromFirstSight: a reservation appeared older than the
	// orphan grace; its grace runs from when the operator saw it.
	EventGraceFromFirstSight = "ReservationClockLags"
)

// loadTombstone reads, live, the tombstone a re-created account takes over.
// It is read once per account: before the operator claims it (adds the
// finalizer), and not once it has taken one over.
func (r *CreditAccountReconciler) loadTombstone(ctx context.Context, a *hcv1.CreditAccount) (*billing.Tombstone, error) {
	if !billing.MayReopen(a) {
		return nil, nil
	}
	return r.readTombstone(ctx, a.Namespace, a.Name)
}

// claim adds the finalizer to an account that lacks it, and then removes
// the tombstone it took over from the tombstone ConfigMap (its status
// records it; a tombstone left behind is harmless, it is never taken over
// twice, and the account's own tombstone replaces it).
func (r *CreditAccountReconciler) claim(ctx context.Context, l *ledgers) error {
	a := l.wallet
	if a.DeletionTimestamp != nil || controllerutil.ContainsFinalizer(a, hcv1.FinalizerLedger) {
		return nil
	}
	before := a.DeepCopy()
	controllerutil.AddFinalizer(a, hcv1.FinalizerLedger)
	if err := r.Client.Patch(ctx, a, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return err
	}
	if t := l.tombstone; t != nil && a.Status.ReopenedFrom == string(t.UID) {
		if err := r.removeTombstone(ctx, a.Namespace, a.Name, t.UID); err != nil {
			log.FromContext(ctx).Error(err, "Removing a tombstone taken over failed; it is left in place (never taken over twice)",
				"configMap", klog.KRef(a.Namespace, r.tombstonesName()), "key", a.Name)
		}
	}
	return nil
}

// life is what one settle decided about the account's life.
type life struct {
	// tombstone is the tombstone to take over (nil: none), as read.
	tombstone *billing.Tombstone
	// reopened is the message of a tombstone taken over ("" when not).
	reopened string
	// held is the message of a deletion just held ("" when not).
	held string
	// release: let the account go (write its tombstone, drop the finalizer).
	release bool
	// forcedRunning counts the servers still billed when released by force;
	// forced are its own running servers, to stop.
	forcedRunning int
	forced        []hcv1.ServerCharge
}

// reopen takes over a tombstone before anything else moves credits.
func (l *ledgers) reopen(now time.Time) {
	if t := l.tombstone; t != nil && billing.Reopen(l.wallet, *t, now) {
		kept := 0
		for _, id := range t.TopUps {
			if billing.TopUpApplied(l.wallet, id) {
				kept++
			}
		}
		l.reopened = fmt.Sprintf("Created again after account %s (uid %s) was deleted: its balance %d and %d applied top-up id(s) are taken over, so no top-up is applied twice.",
			l.wallet.Name, t.UID, t.Balance, kept)
		if forgotten := len(t.TopUps) - kept; forgotten > 0 {
			l.reopened += fmt.Sprintf(" %d older removed id(s) are not remembered (at most %d are).", forgotten, hcv1.MaxRememberedTopUps)
		}
	}
}

// deletion decides, after the settle, what happens to an account being
// deleted: kept (DeletionHeld) while servers it funds are in its ledger
// (inline or on its pages: pageEntries, as the pages show them after the
// settle), else released; with the force annotation released at once, its
// own running servers to be stopped. It reports whether to release it.
func (l *ledgers) deletion(pageEntries []hcv1.ServerCharge, now time.Time) bool {
	a := l.wallet
	if a.DeletionTimestamp == nil || !controllerutil.ContainsFinalizer(a, hcv1.FinalizerLedger) {
		return false
	}
	all := slices.Concat(a.Status.Servers, pageEntries)
	if len(all) == 0 && a.Status.PagedServers == 0 {
		return true
	}
	if a.Annotations[hcv1.AnnotationForceDelete] == "true" {
		for _, e := range all {
			if e.Wallet == a.Name && e.EndedAt == nil && e.PodUID != "" {
				l.forced = append(l.forced, e)
			}
		}
		l.forcedRunning = max(len(all), len(a.Status.Servers)+int(a.Status.PagedServers))
		return true
	}
	var pods []string
	for _, e := range all {
		if len(pods) < 5 {
			pods = append(pods, e.Pod)
		}
	}
	msg := fmt.Sprintf("Deletion held: %d server(s) funded by this account are still billed (%s); it is deleted when they end, or at once with the annotation %s=true (its own servers are then stopped).",
		max(len(all), len(a.Status.Servers)+int(a.Status.PagedServers)), strings.Join(pods, ", "), hcv1.AnnotationForceDelete)
	was := meta.IsStatusConditionTrue(a.Status.Conditions, hcv1.ConditionDeletionHeld)
	billing.SetCondition(a, now, hcv1.ConditionDeletionHeld, metav1.ConditionTrue, hcv1.ReasonServersRunning, msg)
	if !was {
		l.held = msg
	}
	return false
}

// actOnLife emits the Events and metrics of the account's life decisions
// and stops the servers of an account deleted by force.
func (r *CreditAccountReconciler) actOnLife(ctx context.Context, out *outcome) {
	a := out.account
	if out.reopened != "" {
		metrics.IntegrityDecisions.WithLabelValues(metrics.AccountReopened).Inc()
		r.Recorder.Event(a, corev1.EventTypeNormal, EventAccountReopened, out.reopened)
	}
	if out.held != "" {
		metrics.IntegrityDecisions.WithLabelValues(metrics.DeletionHeld).Inc()
		r.Recorder.Event(a, corev1.EventTypeWarning, EventDeletionHeld, out.held)
	}
	for _, e := range r.seen.takeLagging(client.ObjectKeyFromObject(a)) {
		metrics.IntegrityDecisions.WithLabelValues(metrics.GraceFromFirstSight).Inc()
		r.Recorder.Event(a, corev1.EventTypeWarning, EventGraceFromFirstSight, fmt.Sprintf(
			"The reservation for %s appeared %s after the time it carries (reservedAt %s): the clock of the webhook replica that wrote it may lag. Its pod gets the whole grace from now.",
			e.Pod, r.Clock.Now().Sub(e.ReservedAt.Time).Round(time.Second), e.ReservedAt.UTC().Format(time.RFC3339)))
	}
	if !out.release || out.forcedRunning == 0 {
		return
	}
	metrics.IntegrityDecisions.WithLabelValues(metrics.DeletionForced).Inc()
	r.Recorder.Event(a, corev1.EventTypeWarning, EventDeletionForced,
		fmt.Sprintf("Deleted by force (%s) with %d server(s) still billed; its own %d running server(s) are stopped.",
			hcv1.AnnotationForceDelete, out.forcedRunning, len(out.forced)))
	for _, e := range out.forced {
		msg := fmt.Sprintf("Stopped: account %s, which paid for this server, was deleted.", a.Name)
		r.Recorder.Event(podRef(a.Namespace, e.Pod, e.PodUID), corev1.EventTypeWarning, EventDeletionForced, msg)
		if r.Shadow {
			continue
		}
		r.stopper().Request(ctx, stopRequest{account: client.ObjectKeyFromObject(a), user: e.User, server: e.ServerName,
			pod: e.Pod, podUID: e.PodUID, deletePod: true})
	}
}

// release writes the account's tombstone and removes its finalizer (with
// its resourceVersion: a write that lands meanwhile, e.g. a reservation,
// makes it start over from a fresh read, and the tombstone is rewritten).
// A tombstone that cannot be written holds the deletion instead (held
// reports it): the account keeps its finalizer, never goes without one.
func (r *CreditAccountReconciler) release(ctx context.Context, a *hcv1.CreditAccount, forced bool) (held bool, err error) {
	tomb := billing.TombstoneOf(a)
	tomb.DeletedAt, tomb.Forced = r.Clock.Now(), forced
	err = r.writeTombstone(ctx, a.Namespace, a.Name, tomb)
	if h := asHold(err); h != nil {
		return true, r.holdForTombstone(ctx, a, h)
	}
	if err != nil {
		return false, fmt.Errorf("writing the tombstone of account %s: %w", a.Name, err)
	}
	r.Recorder.Event(a, corev1.EventTypeNormal, EventTombstone,
		fmt.Sprintf("Balance %d and %d applied top-up id(s) kept in ConfigMap %s (key %s): an account created again under this name takes them over.",
			tomb.Balance, len(tomb.TopUps), r.tombstonesName(), a.Name))
	before := a.DeepCopy()
	controllerutil.RemoveFinalizer(a, hcv1.FinalizerLedger)
	if err := r.Client.Patch(ctx, a, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return false, err
	}
	// Then its pages, which hold their finalizer until now (a foreground
	// deletion of the account deletes them while it is held): after the
	// account's write, so that no transfer is committed for a page that is
	// gone. Should this fail, the next pass (the account deleted without
	// the finalizer, or gone) releases them.
	return false, r.pageStore().Release(ctx, a)
}

// holdForTombstone keeps an account whose tombstone cannot be written:
// DeletionHeld says why and what the admin does, told once (Event and
// metric) per reason.
func (r *CreditAccountReconciler) holdForTombstone(ctx context.Context, a *hcv1.CreditAccount, h *tombstoneHold) error {
	c := meta.FindStatusCondition(a.Status.Conditions, hcv1.ConditionDeletionHeld)
	told := c != nil && c.Status == metav1.ConditionTrue && c.Reason == h.reason
	if told && c.Message == h.msg {
		return nil
	}
	billing.SetCondition(a, r.Clock.Now(), hcv1.ConditionDeletionHeld, metav1.ConditionTrue, h.reason, h.msg)
	if err := r.Client.Status().Update(ctx, a); err != nil {
		return err
	}
	if !told {
		metrics.IntegrityDecisions.WithLabelValues(metrics.DeletionHeld).Inc()
		r.Recorder.Event(a, corev1.EventTypeWarning, EventDeletionHeld, h.msg)
	}
	return nil
}
