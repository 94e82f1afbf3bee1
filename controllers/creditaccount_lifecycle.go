package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
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
// +kubebuilder:rbac:groups="",namespace=system,resources=configmaps,verbs=get;create;update;delete

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

// Keys of a tombstone ConfigMap's data.
const (
	tombstoneUID     = "uid"
	tombstoneBalance = "balance"
	tombstoneTopUps  = "topUps"
	tombstoneDeleted = "deletedAt"
	tombstoneForced  = "forced"
)

// TombstoneName is the name of the ConfigMap that keeps a deleted account's
// balance and applied top-ups ("hubcredits-tombstone-<account>", with a
// hash for names too long for that).
func TombstoneName(account string) string {
	const prefix = "hubcredits-tombstone-"
	if len(prefix)+len(account) <= validation.DNS1123SubdomainMaxLength {
		return prefix + account
	}
	sum := sha256.Sum256([]byte(account))
	keep := validation.DNS1123SubdomainMaxLength - len(prefix) - 17
	return prefix + strings.TrimRight(account[:keep], "-.") + "-" + hex.EncodeToString(sum[:8])
}

// tombstoneLabel is the account's name as a label value (a hash when it
// cannot be one).
func tombstoneLabel(account string) string {
	if len(validation.IsValidLabelValue(account)) == 0 {
		return account
	}
	sum := sha256.Sum256([]byte(account))
	return hex.EncodeToString(sum[:16])
}

// loadTombstone reads, live, the tombstone a re-created account takes over.
// It is read once per account: before the operator claims it (adds the
// finalizer), and not once it has taken one over.
func (r *CreditAccountReconciler) loadTombstone(ctx context.Context, a *hcv1.CreditAccount) (*billing.Tombstone, *corev1.ConfigMap, error) {
	if a.DeletionTimestamp != nil || controllerutil.ContainsFinalizer(a, hcv1.FinalizerLedger) || a.Status.ReopenedFrom != "" {
		return nil, nil, nil
	}
	reader := r.Tombstones
	if reader == nil {
		reader = r.Client
	}
	cm := &corev1.ConfigMap{}
	err := reader.Get(ctx, types.NamespacedName{Namespace: a.Namespace, Name: TombstoneName(a.Name)}, cm)
	if apierrors.IsNotFound(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	tomb, err := parseTombstone(cm, a.Name)
	if err != nil {
		// Never open an account from a tombstone that cannot be read, and
		// never open it as new either: an admin decides (delete it).
		return nil, nil, fmt.Errorf("tombstone %s of account %s: %w", cm.Name, a.Name, err)
	}
	return tomb, cm, nil
}

func parseTombstone(cm *corev1.ConfigMap, account string) (*billing.Tombstone, error) {
	if of := cm.Annotations[hcv1.AnnotationTombstoneAccount]; of != account {
		return nil, fmt.Errorf("it is of account %q", of)
	}
	balance, err := strconv.ParseInt(cm.Data[tombstoneBalance], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("balance: %w", err)
	}
	if cm.Data[tombstoneUID] == "" {
		return nil, fmt.Errorf("no uid")
	}
	var ids []string
	for id := range strings.FieldsSeq(cm.Data[tombstoneTopUps]) {
		ids = append(ids, id)
	}
	return &billing.Tombstone{UID: types.UID(cm.Data[tombstoneUID]), Balance: balance, TopUps: ids}, nil
}

// claim adds the finalizer to an account that lacks it, and then deletes
// the tombstone it took over (its status records it; a tombstone left
// behind is harmless, it is never taken over twice).
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
	if cm := l.tombstoneObj; cm != nil && a.Status.ReopenedFrom == cm.Data[tombstoneUID] {
		uid := cm.UID
		if err := r.Client.Delete(ctx, cm, client.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) {
			log.FromContext(ctx).Error(err, "Deleting a tombstone taken over failed; it is left in place (never taken over twice)", "configMap", klog.KObj(cm))
		}
	}
	return nil
}

// life is what one settle decided about the account's life.
type life struct {
	// tombstone is the tombstone to take over (nil: none), as read.
	tombstone    *billing.Tombstone
	tombstoneObj *corev1.ConfigMap
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
	if l.tombstone != nil && billing.Reopen(l.wallet, *l.tombstone, now) {
		l.reopened = fmt.Sprintf("Created again after account %s (uid %s) was deleted: its balance %d and %d applied top-up id(s) are taken over, so no top-up is applied twice.",
			l.wallet.Name, l.tombstone.UID, l.tombstone.Balance, len(l.tombstone.TopUps))
	}
}

// deletion decides, after the settle, what happens to an account being
// deleted: kept (DeletionHeld) while servers it funds are in its ledger,
// else released; with the force annotation released at once, its own
// running servers to be stopped. It reports whether to release it.
func (l *ledgers) deletion(now time.Time) bool {
	a := l.wallet
	if a.DeletionTimestamp == nil || !controllerutil.ContainsFinalizer(a, hcv1.FinalizerLedger) {
		return false
	}
	if len(a.Status.Servers) == 0 {
		return true
	}
	if a.Annotations[hcv1.AnnotationForceDelete] == "true" {
		for _, e := range a.Status.Servers {
			if e.Wallet == a.Name && e.EndedAt == nil && e.PodUID != "" {
				l.forced = append(l.forced, e)
			}
		}
		l.forcedRunning = len(a.Status.Servers)
		return true
	}
	var pods []string
	for _, e := range a.Status.Servers {
		if len(pods) < 5 {
			pods = append(pods, e.Pod)
		}
	}
	msg := fmt.Sprintf("Deletion held: %d server(s) funded by this account are still billed (%s); it is deleted when they end, or at once with the annotation %s=true (its own servers are then stopped).",
		len(a.Status.Servers), strings.Join(pods, ", "), hcv1.AnnotationForceDelete)
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
func (r *CreditAccountReconciler) release(ctx context.Context, a *hcv1.CreditAccount, forced bool) error {
	tomb := billing.TombstoneOf(a)
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: a.Namespace, Name: TombstoneName(a.Name),
			Labels:      map[string]string{hcv1.LabelTombstone: tombstoneLabel(a.Name)},
			Annotations: map[string]string{hcv1.AnnotationTombstoneAccount: a.Name},
		},
		Data: map[string]string{
			tombstoneUID:     string(tomb.UID),
			tombstoneBalance: strconv.FormatInt(tomb.Balance, 10),
			tombstoneTopUps:  strings.Join(tomb.TopUps, "\n"),
			tombstoneDeleted: r.Clock.Now().UTC().Format(time.RFC3339),
			tombstoneForced:  strconv.FormatBool(forced),
		},
	}
	err := r.Client.Create(ctx, cm)
	if apierrors.IsAlreadyExists(err) {
		// A tombstone of an earlier account of this name (never taken
		// over, or left behind): this account's replaces it.
		existing := &corev1.ConfigMap{}
		reader := r.Tombstones
		if reader == nil {
			reader = r.Client
		}
		if err = reader.Get(ctx, client.ObjectKeyFromObject(cm), existing); err == nil {
			existing.Labels, existing.Annotations, existing.Data = cm.Labels, cm.Annotations, cm.Data
			err = r.Client.Update(ctx, existing)
		}
	}
	if err != nil {
		return fmt.Errorf("writing the tombstone of account %s: %w", a.Name, err)
	}
	r.Recorder.Event(a, corev1.EventTypeNormal, EventTombstone,
		fmt.Sprintf("Balance %d and %d applied top-up id(s) kept in ConfigMap %s: an account created again under this name takes them over.",
			tomb.Balance, len(tomb.TopUps), cm.Name))
	before := a.DeepCopy()
	controllerutil.RemoveFinalizer(a, hcv1.FinalizerLedger)
	return r.Client.Patch(ctx, a, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
}
