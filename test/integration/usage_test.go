package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// usageRecords lists the namespace's UsageRecords by reservation.
func usageRecords(t *testing.T, ns string) map[string]hcv1.UsageRecord {
	t.Helper()
	var list hcv1.UsageRecordList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string]hcv1.UsageRecord{}
	for _, r := range list.Items {
		if _, dup := out[r.Reservation]; dup {
			t.Fatalf("two records of reservation %s", r.Reservation)
		}
		out[r.Reservation] = r
	}
	return out
}

// paid is what an account paid net of refunds.
func paid(a *hcv1.CreditAccount) int64 { return a.Status.TotalCharged - a.Status.TotalRefunded }

// TestUsageRecordWrittenByBilling: a server funded by a pool and a wallet
// ends; its record says who ran it, at what price, for how long, and what
// each payer paid — the same as the ledgers. It cannot be changed.
func TestUsageRecordWrittenByBilling(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createPolicy(t, testutil.MakePolicy(ns, "fast").Value(10).Every(period).Obj())
	createAccount(t, testutil.MakeAccount(ns, "physics").Cap(1000).InitialBalance(15).Obj())
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(1000).InitialBalance(100).Project("physics").Obj())
	p, start := spawn(t, ns, "alice", "")
	reservation := p.Annotations[hcv1.AnnotationReservation]
	testutil.Eventually(t, 3*period+5*time.Second, func() error {
		if c := testutil.GetAccount(t, k8s, ns, "alice").Status.TotalCharged; c < 10 {
			return fmt.Errorf("wallet charged %d", c)
		}
		return nil
	})
	end := stopPod(t, p, start)
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := len(testutil.GetAccount(t, k8s, ns, "alice").Status.Servers); n != 0 {
			return fmt.Errorf("%d entries left", n)
		}
		return nil
	})
	forget(t, p)
	// What a record costs the reconcile that writes it (every record
	// written by this test process so far).
	if n, sum := testutil.Histogram(t, "hubcredits_usage_record_write_seconds"); n > 0 {
		t.Logf("usage record writes: %d, mean %.1f ms", n, 1000*sum/float64(n))
	}
	recs := usageRecords(t, ns)
	rec, ok := recs[reservation]
	if !ok || len(recs) != 1 {
		t.Fatalf("records %v, want one of reservation %s", recs, reservation)
	}
	pool, wallet := testutil.GetAccount(t, k8s, ns, "physics"), testutil.GetAccount(t, k8s, ns, "alice")
	total := owed(start, end, 10)
	want := []hcv1.UsagePayer{{Account: "physics", Credits: paid(pool)}, {Account: "alice", Credits: paid(wallet)}}
	if rec.Total != total || rec.Total != paid(pool)+paid(wallet) || testutil.Diff(want, rec.Payers) != "" {
		t.Fatalf("record total %d, payers %+v; want %d = the ledgers' %+v", rec.Total, rec.Payers, total, want)
	}
	if rec.Name != billing.UsageRecordName(reservation, p.Name) || rec.User != "alice" || rec.Server != p.Name ||
		rec.Account != "alice" || rec.Project != "physics" || rec.Policy != "fast" ||
		rec.Price != (hcv1.UsagePrice{Value: 10, IntervalSeconds: 2}) ||
		rec.Periods != billing.PeriodsDue(start, end, period, true) || !rec.Start.Time.Equal(start) || rec.End.Before(&rec.Start) {
		t.Fatalf("record %+v", rec)
	}
	// Immutable: the API server refuses an edit.
	rec.Total = 0
	if err := k8s.Update(context.Background(), &rec); err == nil {
		t.Fatal("a usage record was changed")
	} else {
		t.Logf("edit refused: %v", err)
	}
}

// denyUsageRecords makes the API server refuse every UsageRecord write in
// ns (a ValidatingAdmissionPolicy), until the returned function lifts it.
func denyUsageRecords(t *testing.T, ns string) func() {
	t.Helper()
	ctx := context.Background()
	name := "deny-usage-" + ns
	pol := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule: admissionregistrationv1.Rule{APIGroups: []string{hcv1.GroupVersion.Group}, APIVersions: []string{"*"},
						Resources: []string{"usagerecords"}},
				},
			}}},
			Validations: []admissionregistrationv1.Validation{{Expression: "false", Message: "usage records are refused by this test"}},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
			MatchResources: &admissionregistrationv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}},
		},
	}
	for _, o := range []client.Object{pol, binding} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// The policy takes effect when the API server's informer sees it.
	probe := &hcv1.UsageRecord{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe"}, Reservation: "probe", Server: "probe",
		Price: hcv1.UsagePrice{IntervalSeconds: 1}, Payers: []hcv1.UsagePayer{}, Start: metav1.Now(), End: metav1.Now(),
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		err := k8s.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		if err == nil {
			return fmt.Errorf("the policy is not in force yet")
		}
		return nil
	})
	return func() {
		for _, o := range []client.Object{binding, pol} {
			if err := k8s.Delete(ctx, o); client.IgnoreNotFound(err) != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestUsageRecordRefusedKeepsTheEntryNotTheCharges: while the API server
// refuses usage records, an ended server's entry stays on the account
// (marked ended) and another server on the same account is charged as
// usual; once records are allowed again, the record is written — once —
// and the entry goes.
func TestUsageRecordRefusedKeepsTheEntryNotTheCharges(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createPolicy(t, testutil.MakePolicy(ns, "fast").Value(10).Every(period).Obj())
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(10000).Obj())
	allow := denyUsageRecords(t, ns)
	failed := testutil.Counter(t, "hubcredits_usage_records_total", map[string]string{"result": "failed"})
	ending, start := spawn(t, ns, "alice", "one")
	other, _ := spawn(t, ns, "alice", "two")
	stopPod(t, ending, start)
	testutil.Eventually(t, 10*time.Second, func() error {
		a := testutil.GetAccount(t, k8s, ns, "alice")
		for _, e := range a.Status.Servers {
			if e.Pod == ending.Name && e.EndedAt != nil {
				return nil
			}
		}
		return fmt.Errorf("the end of %s is not committed yet", ending.Name)
	})
	charged := testutil.GetAccount(t, k8s, ns, "alice").Status.TotalCharged
	testutil.Consistently(t, 2*period, func() error {
		a := testutil.GetAccount(t, k8s, ns, "alice")
		if len(a.Status.Servers) != 2 {
			return fmt.Errorf("%d entries: the ended server's entry was dropped without its record", len(a.Status.Servers))
		}
		if n := len(usageRecords(t, ns)); n != 0 {
			return fmt.Errorf("%d records written through the policy", n)
		}
		return nil
	})
	if a := testutil.GetAccount(t, k8s, ns, "alice"); a.Status.TotalCharged < charged+10 {
		t.Fatalf("charged %d → %d over two periods: the other server's charges were held up", charged, a.Status.TotalCharged)
	}
	if got := testutil.Counter(t, "hubcredits_usage_records_total", map[string]string{"result": "failed"}) - failed; got < 1 {
		t.Fatalf("failed writes counted %v", got)
	}
	allow()
	testutil.Eventually(t, 30*time.Second, func() error {
		a := testutil.GetAccount(t, k8s, ns, "alice")
		if len(a.Status.Servers) != 1 || a.Status.Servers[0].Pod != other.Name {
			return fmt.Errorf("entries %d", len(a.Status.Servers))
		}
		return nil
	})
	recs := usageRecords(t, ns)
	if rec, ok := recs[ending.Annotations[hcv1.AnnotationReservation]]; !ok || len(recs) != 1 || rec.Server != ending.Name {
		t.Fatalf("records %+v, want the one of %s", recs, ending.Name)
	}
	forget(t, ending)
	forget(t, other)
}

// TestUsageRecordsExpire: records older than the retention are deleted by
// the operator; younger ones stay.
func TestUsageRecordsExpire(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, func(o *operator.Options) {
		o.UsageRetention, o.UsageCollectEvery = time.Hour, 200*time.Millisecond
	})
	ctx := context.Background()
	old := metav1.NewTime(time.Now().Add(-time.Hour - time.Minute).Truncate(time.Second))
	young := metav1.NewTime(time.Now().Add(-59 * time.Minute).Truncate(time.Second))
	for name, end := range map[string]metav1.Time{"old": old, "young": young} {
		rec := &hcv1.UsageRecord{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Reservation: name, User: "alice", Server: "jupyter-alice",
			Account: "alice", Price: hcv1.UsagePrice{Value: 10, IntervalSeconds: 600},
			Start: end, End: end, Periods: 1, Payers: []hcv1.UsagePayer{{Account: "alice", Credits: 10}}, Total: 10,
		}
		if err := k8s.Create(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		recs := usageRecords(t, ns)
		if _, ok := recs["old"]; ok {
			return fmt.Errorf("the expired record is still there")
		}
		if _, ok := recs["young"]; !ok {
			return fmt.Errorf("the young record was deleted")
		}
		return nil
	})
	testutil.Consistently(t, time.Second, func() error {
		if _, ok := usageRecords(t, ns)["young"]; !ok {
			return fmt.Errorf("the young record was deleted")
		}
		return nil
	})
}
