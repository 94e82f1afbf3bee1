package controllers

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/indexer"
	"github.com/hubcredits/hubcredits/internal/scheme"
)

// Shared fixtures for the controller unit tests. Every time is fixed: t0 is
// a Monday morning, and tests speak in offsets from it.

var t0 = time.Date(2026, time.January, 5, 9, 0, 0, 0, time.UTC)

const testNS = "hub"

func at(d time.Duration) time.Time { return t0.Add(d) }

func mt(d time.Duration) *metav1.Time {
	t := metav1.NewTime(at(d))
	return &t
}

func tp(d time.Duration) *time.Time {
	t := at(d)
	return &t
}

// newAPI is a fake API server holding objs, with the status subresources
// and the pod index the controller lists by. funcs may be nil.
func newAPI(funcs *interceptor.Funcs, objs ...client.Object) client.WithWatch {
	b := fake.NewClientBuilder().
		WithScheme(scheme.New()).
		WithStatusSubresource(&hcv1.CreditAccount{}, &hcv1.BillingPolicy{})
	b = indexer.WithIndexes(b).WithObjects(objs...)
	if funcs != nil {
		b = b.WithInterceptorFuncs(*funcs)
	}
	return b.Build()
}

// ---- accounts ----

type accountBuilder struct{ a *hcv1.CreditAccount }

// makeAccount builds an account whose ledger is open (opened at t0, balance
// 100, cap 100), so nothing but billing moves its balance.
func makeAccount(name string, users ...string) *accountBuilder {
	return &accountBuilder{a: &hcv1.CreditAccount{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name, CreationTimestamp: metav1.NewTime(t0), Generation: 1},
		Spec:       hcv1.CreditAccountSpec{Users: users, Cap: 100},
		Status:     hcv1.CreditAccountStatus{OpenedAt: mt(0), GrantedThrough: mt(0), Balance: 100},
	}}
}

func (b *accountBuilder) balance(v int64) *accountBuilder  { b.a.Status.Balance = v; return b }
func (b *accountBuilder) project(p string) *accountBuilder { b.a.Spec.Project = p; return b }
func (b *accountBuilder) servers(s ...hcv1.ServerCharge) *accountBuilder {
	b.a.Status.Servers = append(b.a.Status.Servers, s...)
	return b
}
func (b *accountBuilder) obj() *hcv1.CreditAccount { return b.a.DeepCopy() }

// ---- server entries ----

type serverBuilder struct{ e hcv1.ServerCharge }

// makeServer is alice's server entry for reservation id, reserved at t0 for
// 10 credits every 10m and not seen running yet.
func makeServer(id string) *serverBuilder {
	return &serverBuilder{e: hcv1.ServerCharge{
		ID: id, Pod: "jupyter-alice", User: "alice", Wallet: "alice",
		BillingValue: 10, BillingInterval: metav1.Duration{Duration: 10 * time.Minute},
		ReservedAt: metav1.NewTime(t0), PeriodsPaid: 1, Paid: 10,
	}}
}

func (b *serverBuilder) pod(name string, uid types.UID) *serverBuilder {
	b.e.Pod, b.e.PodUID = name, uid
	return b
}
func (b *serverBuilder) serverName(s string) *serverBuilder { b.e.ServerName = s; return b }

// startedAt marks the server seen running since t0+d, paid through its
// first period.
func (b *serverBuilder) startedAt(d time.Duration) *serverBuilder {
	b.e.StartedAt = mt(d)
	b.e.PaidThrough = mt(d + b.e.BillingInterval.Duration)
	return b
}
func (b *serverBuilder) obj() hcv1.ServerCharge { return *b.e.DeepCopy() }

// ---- pods ----

type podBuilder struct{ p *corev1.Pod }

// makePod is a singleuser pod billed to account under reservation id.
func makePod(name string, uid types.UID, account, id string) *podBuilder {
	ann := map[string]string{hcv1.AnnotationUsername: "alice", hcv1.AnnotationAccount: account}
	if id != "" {
		ann[hcv1.AnnotationReservation] = id
	}
	return &podBuilder{p: &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: testNS, Name: name, UID: uid, CreationTimestamp: metav1.NewTime(t0),
			Labels:      map[string]string{hcv1.ComponentLabel: hcv1.SingleuserComponent},
			Annotations: ann,
		},
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}}
}

// running marks the pod Running with its container started at t0+d.
func (b *podBuilder) running(d time.Duration) *podBuilder {
	b.p.Status.Phase = corev1.PodRunning
	b.p.Status.StartTime = mt(d)
	b.p.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name:  "notebook",
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: *mt(d)}},
	}}
	return b
}

// deleted marks the pod as being deleted: requested at t0+d with grace.
func (b *podBuilder) deleted(d time.Duration, grace int64) *podBuilder {
	b.p.DeletionTimestamp = mt(d + time.Duration(grace)*time.Second)
	b.p.DeletionGracePeriodSeconds = &grace
	b.p.Finalizers = []string{"test/keep"} // the fake client needs one to hold a deleting object
	return b
}
func (b *podBuilder) obj() *corev1.Pod { return b.p.DeepCopy() }

// ---- the hub ----

type stopCall struct{ User, Server string }

// fakeHub records StopServer calls and answers with err.
type fakeHub struct {
	mu    sync.Mutex
	calls []stopCall
	err   error
}

func (h *fakeHub) StopServer(_ context.Context, user, server string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, stopCall{user, server})
	return h.err
}

func (h *fakeHub) stops() []stopCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]stopCall(nil), h.calls...)
}

// ---- the reconciler under test ----

type controllerEnv struct {
	api   client.WithWatch
	clock *clocktesting.FakeClock
	rec   *record.FakeRecorder
	r     *CreditAccountReconciler
}

func newControllerEnv(api client.WithWatch, now time.Time) *controllerEnv {
	clk := clocktesting.NewFakeClock(now)
	rec := record.NewFakeRecorder(100)
	return &controllerEnv{api: api, clock: clk, rec: rec, r: &CreditAccountReconciler{
		Client: api, APIReader: api, Clock: clk, Recorder: rec, Options: billing.DefaultOptions,
	}}
}

// events drains the recorder: "Type Reason" of each Event, in order.
func (e *controllerEnv) events() []string {
	var out []string
	for {
		select {
		case ev := <-e.rec.Events:
			f := strings.SplitN(ev, " ", 3)
			out = append(out, f[0]+" "+f[1])
		default:
			return out
		}
	}
}

func getAccount(t *testing.T, r client.Reader, name string) *hcv1.CreditAccount {
	t.Helper()
	a := &hcv1.CreditAccount{}
	if err := r.Get(context.Background(), types.NamespacedName{Namespace: testNS, Name: name}, a); err != nil {
		t.Fatal(err)
	}
	return a
}

// periods is each server entry's periodsPaid, by id.
func periods(a *hcv1.CreditAccount) map[string]int64 {
	out := map[string]int64{}
	for _, e := range a.Status.Servers {
		out[e.ID] = e.PeriodsPaid
	}
	return out
}

func ledgerKinds(a *hcv1.CreditAccount) []hcv1.LedgerEntryKind {
	var out []hcv1.LedgerEntryKind
	for _, l := range a.Status.Ledger {
		out = append(out, l.Kind)
	}
	return out
}

// claimed gives the account the operator's finalizer.
func (b *accountBuilder) claimed() *accountBuilder {
	b.a.Finalizers = append(b.a.Finalizers, hcv1.FinalizerLedger)
	return b
}

// deleting marks the account deleted at t0 (held by its finalizer).
func (b *accountBuilder) deleting() *accountBuilder {
	b.a.DeletionTimestamp = mt(0)
	return b
}

func (b *accountBuilder) annotate(k, v string) *accountBuilder {
	if b.a.Annotations == nil {
		b.a.Annotations = map[string]string{}
	}
	b.a.Annotations[k] = v
	return b
}

func (b *accountBuilder) uid(u types.UID) *accountBuilder { b.a.UID = u; return b }

// unopened makes the account look as the admin created it: no status.
func (b *accountBuilder) unopened() *accountBuilder {
	b.a.Status = hcv1.CreditAccountStatus{}
	return b
}

func (b *accountBuilder) topUp(id string, amount int64) *accountBuilder {
	b.a.Spec.TopUps = append(b.a.Spec.TopUps, hcv1.TopUp{ID: id, Amount: amount})
	return b
}

func (b *accountBuilder) applied(ids ...string) *accountBuilder {
	b.a.Status.AppliedTopUps = ids
	return b
}

func (b *accountBuilder) retired(ids ...string) *accountBuilder {
	b.a.Status.RetiredTopUps = ids
	return b
}

// makeTombstone is the tombstone a deleted account (uid) left.
func makeTombstone(account string, uid types.UID, balance int64, topUps ...string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: TombstoneName(account), UID: "cm-" + uid,
			Labels:      map[string]string{hcv1.LabelTombstone: account},
			Annotations: map[string]string{hcv1.AnnotationTombstoneAccount: account}},
		Data: map[string]string{"uid": string(uid), "balance": fmt.Sprint(balance), "topUps": strings.Join(topUps, "\n")},
	}
}

// eventList drains the recorder: every Event in full, in order.
func (e *controllerEnv) eventList() []string {
	var out []string
	for {
		select {
		case ev := <-e.rec.Events:
			out = append(out, ev)
		default:
			return out
		}
	}
}

func reconcileKey(name string) reconcile.Request {
	return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: testNS, Name: name}}
}
