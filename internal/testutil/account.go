package testutil

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// AccountWrapper builds a CreditAccount.
type AccountWrapper struct{ a hcv1.CreditAccount }

// MakeAccount is account name in ns for users, as an admin creates it: a
// cap of 100 and no status (the ledger is not open). Unit tests that bill
// add CreatedAt(0).OpenedAt(0).
func MakeAccount(ns, name string, users ...string) *AccountWrapper {
	return &AccountWrapper{a: hcv1.CreditAccount{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       hcv1.CreditAccountSpec{Users: users, Cap: 100},
	}}
}

// Obj is a copy of the account built so far.
func (w *AccountWrapper) Obj() *hcv1.CreditAccount { return w.a.DeepCopy() }

// Users sets spec.users.
func (w *AccountWrapper) Users(users ...string) *AccountWrapper { w.a.Spec.Users = users; return w }

// Groups sets spec.groups: JupyterHub groups whose members may spend.
func (w *AccountWrapper) Groups(groups ...string) *AccountWrapper { w.a.Spec.Groups = groups; return w }

// Cap sets spec.cap.
func (w *AccountWrapper) Cap(c int64) *AccountWrapper { w.a.Spec.Cap = c; return w }

// InitialBalance sets spec.initialBalance (what the ledger opens with).
func (w *AccountWrapper) InitialBalance(v int64) *AccountWrapper {
	w.a.Spec.InitialBalance = &v
	return w
}

// Project sets spec.project, the pool that funds this wallet.
func (w *AccountWrapper) Project(p string) *AccountWrapper { w.a.Spec.Project = p; return w }

// Grant sets spec.grant: amount every interval.
func (w *AccountWrapper) Grant(amount int64, every time.Duration) *AccountWrapper {
	w.a.Spec.Grant = &hcv1.Grant{Amount: amount, Interval: metav1.Duration{Duration: every}}
	return w
}

// TopUp appends a top-up to spec.topUps.
func (w *AccountWrapper) TopUp(id string, amount int64) *AccountWrapper {
	w.a.Spec.TopUps = append(w.a.Spec.TopUps, hcv1.TopUp{ID: id, Amount: amount})
	return w
}

// Adjust appends an adjustment to spec.adjustments.
func (w *AccountWrapper) Adjust(id string, amount int64, reason string) *AccountWrapper {
	w.a.Spec.Adjustments = append(w.a.Spec.Adjustments, hcv1.Adjustment{ID: id, Amount: amount, Reason: reason})
	return w
}

// Generation sets metadata.generation.
func (w *AccountWrapper) Generation(g int64) *AccountWrapper { w.a.Generation = g; return w }

// CreatedAt sets metadata.creationTimestamp to T0+d.
func (w *AccountWrapper) CreatedAt(d time.Duration) *AccountWrapper {
	w.a.CreationTimestamp = metav1.NewTime(At(d))
	return w
}

// OpenedAt opens the ledger at T0+d, its grant schedule anchored there:
// status.openedAt and status.grantedThrough.
func (w *AccountWrapper) OpenedAt(d time.Duration) *AccountWrapper {
	w.a.Status.OpenedAt = MetaAt(d)
	w.a.Status.GrantedThrough = MetaAt(d)
	return w
}

// GrantedThrough sets status.grantedThrough to T0+d.
func (w *AccountWrapper) GrantedThrough(d time.Duration) *AccountWrapper {
	w.a.Status.GrantedThrough = MetaAt(d)
	return w
}

// Balance sets status.balance.
func (w *AccountWrapper) Balance(v int64) *AccountWrapper { w.a.Status.Balance = v; return w }

// Applied sets status.appliedTopUps.
func (w *AccountWrapper) Applied(ids ...string) *AccountWrapper {
	w.a.Status.AppliedTopUps = ids
	return w
}

// Servers appends server entries to status.servers.
func (w *AccountWrapper) Servers(s ...hcv1.ServerCharge) *AccountWrapper {
	w.a.Status.Servers = append(w.a.Status.Servers, s...)
	return w
}

// Condition appends a condition (no transition time) to status.conditions.
func (w *AccountWrapper) Condition(typ string, status metav1.ConditionStatus, reason string) *AccountWrapper {
	w.a.Status.Conditions = append(w.a.Status.Conditions, metav1.Condition{Type: typ, Status: status, Reason: reason})
	return w
}

// Finalizers appends finalizers (e.g. hcv1.FinalizerLedger: the operator
// has claimed the account).
func (w *AccountWrapper) Finalizers(f ...string) *AccountWrapper {
	w.a.Finalizers = append(w.a.Finalizers, f...)
	return w
}

// Deleting marks the account deleted at T0+d (held by its finalizers).
func (w *AccountWrapper) Deleting(d time.Duration) *AccountWrapper {
	w.a.DeletionTimestamp = MetaAt(d)
	return w
}

// Annotation sets an annotation.
func (w *AccountWrapper) Annotation(k, v string) *AccountWrapper {
	if w.a.Annotations == nil {
		w.a.Annotations = map[string]string{}
	}
	w.a.Annotations[k] = v
	return w
}

// UID sets the account's UID.
func (w *AccountWrapper) UID(u types.UID) *AccountWrapper { w.a.UID = u; return w }

// Unopened drops the status: the account as the admin created it.
func (w *AccountWrapper) Unopened() *AccountWrapper {
	w.a.Status = hcv1.CreditAccountStatus{}
	return w
}

// Retired sets status.retiredTopUps.
func (w *AccountWrapper) Retired(ids ...string) *AccountWrapper {
	w.a.Status.RetiredTopUps = ids
	return w
}
