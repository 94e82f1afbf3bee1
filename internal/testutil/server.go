package testutil

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// ServerChargeWrapper builds a server entry (a CreditAccount's
// status.servers item).
type ServerChargeWrapper struct{ s hcv1.ServerCharge }

// MakeServerCharge is alice's entry for reservation id: pod
// "jupyter-alice", billed to wallet "alice" at 10 credits every Interval,
// reserved at T0 with period 0 paid in full by the wallet, not seen running
// yet.
func MakeServerCharge(id string) *ServerChargeWrapper {
	return &ServerChargeWrapper{s: hcv1.ServerCharge{
		ID: id, Pod: "jupyter-alice", User: "alice", Wallet: "alice",
		BillingValue: 10, BillingInterval: metav1.Duration{Duration: Interval},
		ReservedAt: metav1.NewTime(T0), PeriodsPaid: 1, Paid: 10,
	}}
}

// Obj is a copy of the entry built so far.
func (w *ServerChargeWrapper) Obj() hcv1.ServerCharge { return *w.s.DeepCopy() }

// Pod sets the pod's name.
func (w *ServerChargeWrapper) Pod(name string) *ServerChargeWrapper { w.s.Pod = name; return w }

// UID sets the pod's UID (the entry is bound to its pod).
func (w *ServerChargeWrapper) UID(uid types.UID) *ServerChargeWrapper { w.s.PodUID = uid; return w }

// User sets the JupyterHub user.
func (w *ServerChargeWrapper) User(u string) *ServerChargeWrapper { w.s.User = u; return w }

// ServerName sets the named server ("" is the default server).
func (w *ServerChargeWrapper) ServerName(s string) *ServerChargeWrapper {
	w.s.ServerName = s
	return w
}

// Wallet sets the wallet account billed first.
func (w *ServerChargeWrapper) Wallet(a string) *ServerChargeWrapper { w.s.Wallet = a; return w }

// Project sets the project pool that funds the wallet.
func (w *ServerChargeWrapper) Project(p string) *ServerChargeWrapper { w.s.Project = p; return w }

// Policy sets the BillingPolicy that priced the pod.
func (w *ServerChargeWrapper) Policy(p string) *ServerChargeWrapper { w.s.Policy = p; return w }

// ReservedAt sets when the webhook reserved: T0+d.
func (w *ServerChargeWrapper) ReservedAt(d time.Duration) *ServerChargeWrapper {
	w.s.ReservedAt = metav1.NewTime(At(d))
	return w
}

// Price sets the pinned price: value credits every interval.
func (w *ServerChargeWrapper) Price(value int64, every time.Duration) *ServerChargeWrapper {
	w.s.BillingValue = value
	w.s.BillingInterval = metav1.Duration{Duration: every}
	return w
}

// Started marks the pod seen running since T0+d (status.startedAt only).
func (w *ServerChargeWrapper) Started(d time.Duration) *ServerChargeWrapper {
	w.s.StartedAt = MetaAt(d)
	return w
}

// Running marks the pod seen running since T0+d and paid through its
// first period (Started(d) and PaidThrough(d + the entry's interval)).
func (w *ServerChargeWrapper) Running(d time.Duration) *ServerChargeWrapper {
	return w.Started(d).PaidThrough(d + w.s.BillingInterval.Duration)
}

// Paid sets what this account paid: periods and credits.
func (w *ServerChargeWrapper) Paid(periods, credits int64) *ServerChargeWrapper {
	w.s.PeriodsPaid, w.s.Paid = periods, credits
	return w
}

// ProjectPaid sets the credits the project pool paid.
func (w *ServerChargeWrapper) ProjectPaid(v int64) *ServerChargeWrapper {
	w.s.ProjectPaid = v
	return w
}

// PaidThrough sets status.paidThrough to T0+d.
func (w *ServerChargeWrapper) PaidThrough(d time.Duration) *ServerChargeWrapper {
	w.s.PaidThrough = MetaAt(d)
	return w
}

// StopRequested records a stop asked of the hub at T0+d.
func (w *ServerChargeWrapper) StopRequested(d time.Duration) *ServerChargeWrapper {
	w.s.StopRequestedAt = MetaAt(d)
	return w
}

// Ended marks the server's end at T0+d, as the first pass of its end
// records it.
func (w *ServerChargeWrapper) Ended(d time.Duration) *ServerChargeWrapper {
	w.s.EndedAt = MetaAt(d)
	return w
}
