package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
)

// Tombstones live in one ConfigMap per hub namespace, with a fixed name
// (--tombstone-configmap): one data key per deleted account (its name),
// whose value is billing.EncodeTombstone's. The operator's Role grants get
// and update of that ConfigMap by name, and nothing else about ConfigMaps
// (Z2JH keeps its hub config in ConfigMaps of the same namespace). The
// install (chart, kustomize) creates it empty; the operator creates it
// only where it is missing and it may (dev, tests).

// +kubebuilder:rbac:groups="",namespace=system,resources=configmaps,resourceNames=hubcredits-tombstones,verbs=get;update

const (
	// DefaultTombstoneConfigMap is the tombstone ConfigMap's name (the
	// default of --tombstone-configmap).
	DefaultTombstoneConfigMap = "hubcredits-tombstones"
	// TombstonesMaxBytes bounds the tombstone ConfigMap's data (keys and
	// values): the API server refuses a ConfigMap over 1 MiB. A tombstone
	// that would not fit holds its account's deletion (DeletionHeld,
	// reason TombstoneStoreFull) until an admin prunes old tombstones.
	TombstonesMaxBytes = 900 << 10
	// tombstoneRetry is how often a deletion held for its tombstone is
	// tried again (the ConfigMap is not watched).
	tombstoneRetry = 10 * time.Second
)

// tombstoneHold is why a tombstone cannot be written, for DeletionHeld.
type tombstoneHold struct {
	reason, msg string
}

func (h *tombstoneHold) Error() string { return h.msg }

// tombstonesName is the tombstone ConfigMap's name.
func (r *CreditAccountReconciler) tombstonesName() string {
	if r.TombstoneConfigMap != "" {
		return r.TombstoneConfigMap
	}
	return DefaultTombstoneConfigMap
}

func (r *CreditAccountReconciler) tombstoneReader() client.Reader {
	if r.Tombstones != nil {
		return r.Tombstones
	}
	return r.Client
}

// dataSize is what a ConfigMap's data counts towards its size limit.
func dataSize(cm *corev1.ConfigMap) int {
	n := 0
	for k, v := range cm.Data {
		n += len(k) + len(v)
	}
	for k, v := range cm.BinaryData {
		n += len(k) + len(v)
	}
	return n
}

// readTombstone reads, live, the tombstone of account in ns (nil: none).
func (r *CreditAccountReconciler) readTombstone(ctx context.Context, ns, account string) (*billing.Tombstone, error) {
	cm := &corev1.ConfigMap{}
	err := r.tombstoneReader().Get(ctx, types.NamespacedName{Namespace: ns, Name: r.tombstonesName()}, cm)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading ConfigMap %s/%s: %w", ns, r.tombstonesName(), err)
	}
	v, ok := cm.Data[account]
	if !ok {
		return nil, nil
	}
	t, err := billing.DecodeTombstone(v)
	if err != nil {
		// Never open an account from a tombstone that cannot be read, and
		// never open it as new either: an admin decides (fix or remove it).
		return nil, fmt.Errorf("tombstone %q in ConfigMap %s/%s: %w", account, ns, cm.Name, err)
	}
	return &t, nil
}

// writeTombstone adds the account's tombstone to the tombstone ConfigMap
// (replacing one an earlier account of that name left), with the
// ConfigMap's resourceVersion: a write of another account's tombstone in
// between makes it start over from a fresh read, so neither is lost. A
// missing ConfigMap is created when the operator may. Why it cannot be
// written (missing, forbidden, full) is a *tombstoneHold.
func (r *CreditAccountReconciler) writeTombstone(ctx context.Context, ns, account string, t billing.Tombstone) error {
	name := r.tombstonesName()
	value := billing.EncodeTombstone(t)
	retriable := func(err error) bool { return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) }
	return retry.OnError(retry.DefaultRetry, retriable, func() error {
		cm := &corev1.ConfigMap{}
		err := r.tombstoneReader().Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, cm)
		switch {
		case apierrors.IsNotFound(err):
			if size := len(account) + len(value); size > TombstonesMaxBytes {
				return fullHold(ns, name, size, 0)
			}
			cm = &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
					Labels: map[string]string{"app.kubernetes.io/part-of": "hubcredits"}},
				Data: map[string]string{account: value},
			}
			err = r.Client.Create(ctx, cm)
			if apierrors.IsForbidden(err) {
				return &tombstoneHold{reason: hcv1.ReasonTombstoneStoreMissing, msg: fmt.Sprintf(
					"Deletion held: the ConfigMap %s/%s that keeps the tombstones of deleted accounts does not exist, and the operator may not create it. "+
						"Create it empty (kubectl -n %s create configmap %s, or install the chart or config/ again); the account is then released with its tombstone.",
					ns, name, ns, name)}
			}
			return err
		case apierrors.IsForbidden(err):
			return forbiddenHold(ns, name, err)
		case err != nil:
			return err
		}
		used := dataSize(cm)
		size := used + len(account) + len(value)
		if old, ok := cm.Data[account]; ok {
			size -= len(account) + len(old)
		}
		if size > TombstonesMaxBytes {
			return fullHold(ns, name, len(account)+len(value), used)
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[account] = value
		err = r.Client.Update(ctx, cm)
		if apierrors.IsForbidden(err) {
			return forbiddenHold(ns, name, err)
		}
		return err
	})
}

func fullHold(ns, name string, need, used int) *tombstoneHold {
	return &tombstoneHold{reason: hcv1.ReasonTombstoneStoreFull, msg: fmt.Sprintf(
		"Deletion held: this account's tombstone (%d bytes) does not fit in ConfigMap %s/%s (%d of its %d bytes used). "+
			"Prune the tombstones of accounts that will not be created again (kubectl -n %s edit configmap %s, remove their keys); the account is then released with its tombstone.",
		need, ns, name, used, TombstonesMaxBytes, ns, name)}
}

func forbiddenHold(ns, name string, err error) *tombstoneHold {
	return &tombstoneHold{reason: hcv1.ReasonTombstoneStoreForbidden, msg: fmt.Sprintf(
		"Deletion held: the operator may not read or update ConfigMap %s/%s, which keeps the tombstones of deleted accounts (%v). "+
			"Its Role must grant get and update of it by name (--tombstone-configmap and the Role's resourceNames must agree); the account is then released with its tombstone.",
		ns, name, err)}
}

// removeTombstone removes the account's tombstone once taken over, if it
// still is the one of uid (with the ConfigMap's resourceVersion, from a
// fresh read on conflict).
func (r *CreditAccountReconciler) removeTombstone(ctx context.Context, ns, account string, uid types.UID) error {
	name := r.tombstonesName()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm := &corev1.ConfigMap{}
		if err := r.tombstoneReader().Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, cm); err != nil {
			return client.IgnoreNotFound(err)
		}
		if v, ok := cm.Data[account]; !ok || !tombstoneOf(v, uid) {
			return nil
		}
		delete(cm.Data, account)
		return r.Client.Update(ctx, cm)
	})
}

// tombstoneOf reports whether the stored value v is the tombstone of the
// account uid (one that cannot be read is not).
func tombstoneOf(v string, uid types.UID) bool {
	t, err := billing.DecodeTombstone(v)
	return err == nil && t.UID == uid
}

// asHold reports err's tombstoneHold (nil when it is another error).
func asHold(err error) *tombstoneHold {
	var h *tombstoneHold
	if errors.As(err, &h) {
		return h
	}
	return nil
}
