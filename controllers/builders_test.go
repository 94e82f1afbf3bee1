package controllers

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// Shared fixtures for the controller unit tests; the builders are the
// wrappers of internal/testutil. Every time is fixed: t0 is a Monday
// morning, and tests speak in offsets from it.

const testNS = "hub"

// at is t0 plus d.
var at = testutil.At

// openAccount is an account whose ledger is open (opened at t0, balance
// 100, cap 100), so nothing but billing moves its balance.
func openAccount(name string, users ...string) *testutil.AccountWrapper {
	return testutil.MakeAccount(testNS, name, users...).Generation(1).CreatedAt(0).OpenedAt(0).Balance(100)
}

// billedPod is alice's pending singleuser pod, created at t0 and billed to
// account under reservation id ("": none).
func billedPod(name string, uid types.UID, account, id string) *testutil.PodWrapper {
	return testutil.MakePod(testNS, name).UID(uid).CreatedAt(0).
		User("alice").Account(account).Reservation(id).Pending()
}

// pricedPolicy is a policy of 10 credits every 10m at priority, at
// generation 3.
func pricedPolicy(name string, priority int32) *testutil.PolicyWrapper {
	return testutil.MakePolicy(testNS, name).UID(types.UID("uid-" + name)).Generation(3).
		Priority(priority).Value(10)
}

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

// makeTombstone is the tombstone ConfigMap holding the tombstone a deleted
// account (uid) left.
func makeTombstone(account string, uid types.UID, balance int64, topUps ...string) *corev1.ConfigMap {
	return tombstoneStore(map[string]string{account: billing.EncodeTombstone(billing.Tombstone{UID: uid, Balance: balance, TopUps: topUps})})
}

// tombstoneStore is the tombstone ConfigMap with data.
func tombstoneStore(data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: DefaultTombstoneConfigMap},
		Data:       data,
	}
}

// storedTombstones reads the tombstone ConfigMap's data (nil: none).
func storedTombstones(t *testing.T, r client.Reader) map[string]string {
	t.Helper()
	cm := &corev1.ConfigMap{}
	err := r.Get(context.Background(), types.NamespacedName{Namespace: testNS, Name: DefaultTombstoneConfigMap}, cm)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return cm.Data
}

// storedTombstone is account's tombstone as stored, its deletedAt checked
// and dropped (nil: none).
func storedTombstone(t *testing.T, r client.Reader, account string) *billing.Tombstone {
	t.Helper()
	v, ok := storedTombstones(t, r)[account]
	if !ok {
		return nil
	}
	tomb, err := billing.DecodeTombstone(v)
	if err != nil {
		t.Fatalf("tombstone %s: %v", account, err)
	}
	if tomb.DeletedAt.IsZero() {
		t.Errorf("tombstone %s: no deletedAt", account)
	}
	tomb.DeletedAt = time.Time{}
	return &tomb
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
