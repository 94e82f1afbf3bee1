package billing

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

func TestUsageRecordName(t *testing.T) {
	cases := map[string]struct {
		id, pod    string
		wantPrefix string
	}{
		"a KubeSpawner pod":       {id: "0d5a2c6e-req-1", pod: "jupyter-alice", wantPrefix: "jupyter-alice-"},
		"an adopted pod":          {id: "pod-6f1c", pod: "jupyter-bob---gpu", wantPrefix: "jupyter-bob---gpu-"},
		"a long pod name is cut":  {id: "r1", pod: strings.Repeat("a", 60) + "-x", wantPrefix: strings.Repeat("a", 40) + "-"},
		"a cut ends on no dash":   {id: "r1", pod: strings.Repeat("a", 39) + "-b", wantPrefix: strings.Repeat("a", 39) + "-"},
		"no pod name (defensive)": {id: "r1", pod: "", wantPrefix: "server-"},
	}
	seen := map[string]string{}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := UsageRecordName(tc.id, tc.pod)
			if !strings.HasPrefix(got, tc.wantPrefix) || len(got) != len(tc.wantPrefix)+16 {
				t.Errorf("UsageRecordName(%q, %q) = %q, want %q and 16 hex digits", tc.id, tc.pod, got, tc.wantPrefix)
			}
			if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 {
				t.Errorf("%q is no object name: %v", got, errs)
			}
			if again := UsageRecordName(tc.id, tc.pod); again != got {
				t.Errorf("not deterministic: %q then %q", got, again)
			}
			if other, dup := seen[got]; dup {
				t.Errorf("%q is also the name of %s", got, other)
			}
			seen[got] = name
		})
	}
	if UsageRecordName("r1", "jupyter-alice") == UsageRecordName("r2", "jupyter-alice") {
		t.Error("two sessions of one pod name get one record name")
	}
}

func TestUsageOf(t *testing.T) {
	ended := testutil.MakeServerCharge("r1").UID("u1").Started(30*time.Second).Paid(3, 30).Ended(25 * time.Minute)
	cases := map[string]struct {
		entry hcv1.ServerCharge
		want  *hcv1.UsageRecord
	}{
		"a wallet pays alone": {
			entry: ended.Obj(),
			want: &hcv1.UsageRecord{
				ObjectMeta:  metav1.ObjectMeta{Namespace: testNS, Name: UsageRecordName("r1", "jupyter-alice")},
				Reservation: "r1", User: "alice", Server: "jupyter-alice", Account: "alice",
				Price: hcv1.UsagePrice{Value: 10, IntervalSeconds: 600},
				Start: *mt(30 * time.Second), End: *mt(25 * time.Minute), Periods: 3,
				Payers: []hcv1.UsagePayer{{Account: "alice", Credits: 30}}, Total: 30,
			},
		},
		"the pool paid first: both payers, pool first": {
			entry: testutil.MakeServerCharge("r2").Pod("jupyter-alice-gpu").ServerName("gpu").Policy("gpu").Project("lab").
				Started(0).Paid(4, 15).ProjectPaid(25).Ended(interval * 4).Obj(),
			want: &hcv1.UsageRecord{
				ObjectMeta:  metav1.ObjectMeta{Namespace: testNS, Name: UsageRecordName("r2", "jupyter-alice-gpu")},
				Reservation: "r2", User: "alice", Server: "jupyter-alice-gpu", ServerName: "gpu", Account: "alice",
				Project: "lab", Policy: "gpu", Price: hcv1.UsagePrice{Value: 10, IntervalSeconds: 600},
				Start: *mt(0), End: *mt(interval * 4), Periods: 4,
				Payers: []hcv1.UsagePayer{{Account: "lab", Credits: 25}, {Account: "alice", Credits: 15}}, Total: 40,
			},
		},
	}
	w := wallet(0).Obj()
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if !NeedsUsageRecord(w, &tc.entry) {
				t.Fatal("an ended entry of the wallet needs no record?")
			}
			if d := cmp.Diff(tc.want, UsageOf(w, &tc.entry)); d != "" {
				t.Errorf("record (-want +got):\n%s", d)
			}
		})
	}
	if running := runningServer().Obj(); NeedsUsageRecord(w, &running) {
		t.Error("a running server needs a record")
	}
	if share := poolShare().Ended(interval).Obj(); NeedsUsageRecord(pool(0).Obj(), &share) {
		t.Error("a pool's share of a wallet's server needs a record of its own")
	}
}

// TestSettleKeepsAnEndedServerUntilItsRecordIsWritten: the second pass of
// an ended server drops its entries (pool first, then the wallet's) only
// once its record is written; meanwhile the other servers are charged as
// usual, and nothing else changes.
func TestSettleKeepsAnEndedServerUntilItsRecordIsWritten(t *testing.T) {
	endedEntry := pooledServer().Paid(2, 6).ProjectPaid(14).PaidThrough(2 * interval).Ended(interval + time.Minute)
	other := testutil.MakeServerCharge("r2").Pod("jupyter-alice-2").UID("u2").Started(0).PaidThrough(interval)
	w0 := pooledWallet(50).Servers(endedEntry.Obj(), other.Obj()).Obj()
	p0 := pool(0).Servers(poolShareSeen().Paid(2, 14).Ended(interval + time.Minute).Obj()).Obj()
	pods := podsByID(map[string]PodObservation{"r2": running("u2", 0)})
	now := at(interval + 2*time.Minute)

	w, p := w0.DeepCopy(), p0.DeepCopy()
	o := testOptions
	o.AwaitingRecord = map[string]bool{"r1": true}
	res := Settle(w, map[string]*hcv1.CreditAccount{"lab": p}, pods, nil, now, o)
	if FindServer(w, "r1") < 0 || FindServer(p, "r1") < 0 {
		t.Fatalf("the ended server's entries were dropped before its record was written")
	}
	if i := FindServer(w, "r2"); i < 0 || w.Status.Servers[i].PeriodsPaid != 2 || w.Status.Balance != 40 {
		t.Fatalf("the other server was not charged: %+v, balance %d", w.Status.Servers, w.Status.Balance)
	}
	if d := cmp.Diff(p0.Status.Servers, p.Status.Servers); d != "" || p.Status.Balance != 0 {
		t.Errorf("the pool's share changed while the record was awaited (-before +after):\n%s", d)
	}
	if res.RequeueAfter == 0 {
		t.Error("no requeue for the running server")
	}
	if err := conserved(w0, w); err != nil {
		t.Error(err)
	}

	// Written: the next pass drops both entries, and moves nothing.
	before := w.DeepCopy()
	Settle(w, map[string]*hcv1.CreditAccount{"lab": p}, pods, nil, now, testOptions)
	if FindServer(w, "r1") >= 0 || FindServer(p, "r1") >= 0 {
		t.Fatalf("the ended server's entries are still there once recorded")
	}
	if w.Status.Balance != before.Status.Balance || p.Status.Balance != 0 {
		t.Errorf("dropping moved credits: wallet %d → %d, pool %d", before.Status.Balance, w.Status.Balance, p.Status.Balance)
	}
}

func TestUsageExpired(t *testing.T) {
	rec := &hcv1.UsageRecord{End: *mt(0)}
	cases := map[string]struct {
		now       time.Duration
		retention time.Duration
		want      bool
	}{
		"younger than the retention": {now: 89 * 24 * time.Hour, retention: 90 * 24 * time.Hour},
		"exactly the retention":      {now: 90 * 24 * time.Hour, retention: 90 * 24 * time.Hour},
		"older than the retention":   {now: 90*24*time.Hour + time.Second, retention: 90 * 24 * time.Hour, want: true},
		"0 keeps records for ever":   {now: 100 * 365 * 24 * time.Hour},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := UsageExpired(rec, at(tc.now), tc.retention); got != tc.want {
				t.Errorf("UsageExpired = %v, want %v", got, tc.want)
			}
		})
	}
}
