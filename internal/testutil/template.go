package testutil

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// TemplateWrapper builds a CreditAccountTemplate.
type TemplateWrapper struct{ t hcv1.CreditAccountTemplate }

// MakeTemplate is template name in ns for the members of groups, as an
// admin creates it: a cap of 100, no grant, no project.
func MakeTemplate(ns, name string, groups ...string) *TemplateWrapper {
	return &TemplateWrapper{t: hcv1.CreditAccountTemplate{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       hcv1.CreditAccountTemplateSpec{Groups: groups, Cap: 100},
	}}
}

// Obj is a copy of the template built so far.
func (w *TemplateWrapper) Obj() *hcv1.CreditAccountTemplate { return w.t.DeepCopy() }

// Cap sets spec.cap.
func (w *TemplateWrapper) Cap(c int64) *TemplateWrapper { w.t.Spec.Cap = c; return w }

// InitialBalance sets spec.initialBalance.
func (w *TemplateWrapper) InitialBalance(v int64) *TemplateWrapper {
	w.t.Spec.InitialBalance = &v
	return w
}

// Grant sets spec.grant: amount every interval.
func (w *TemplateWrapper) Grant(amount int64, every time.Duration) *TemplateWrapper {
	w.t.Spec.Grant = &hcv1.Grant{Amount: amount, Interval: metav1.Duration{Duration: every}}
	return w
}

// Project sets spec.project, the pool that pays first for the wallets.
func (w *TemplateWrapper) Project(p string) *TemplateWrapper { w.t.Spec.Project = p; return w }
