package billing

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// Issue 13, "Ledger integrity under everyday faults and misuse": one table
// per fault, each written to fail before its fix.

// Row: the pod was marked Failed while its container statuses still said
// running (PodGC on a lost node). Used periods stay paid: the end is when
// the failure is seen, never the start.
func TestObservePodFailedWhileRunning(t *testing.T) {
	cases := map[string]struct {
		pod  *corev1.Pod
		want PodObservation
	}{
		"failed by PodGC while its container still ran: lost, its end not recorded": {
			pod:  seenPod("jupyter-alice", "u1").Running(time.Minute).FailedByPodGC().Obj(),
			want: PodObservation{Exists: true, UID: "u1", StartedAt: tp(time.Minute), Lost: true},
		},
		"lost, then deleted: the deletion is the end": {
			pod:  seenPod("jupyter-alice", "u1").Running(time.Minute).FailedByPodGC().Deleting(time.Hour, 0).Obj(),
			want: PodObservation{Exists: true, UID: "u1", StartedAt: tp(time.Minute), EndedAt: tp(time.Hour)},
		},
		"failed before it ran: ends at creation, as before": {
			pod:  seenPod("jupyter-alice", "u1").FailedByPodGC().Obj(),
			want: PodObservation{Exists: true, UID: "u1", EndedAt: tp(0)},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, ObservePod(tc.pod)); d != "" {
				t.Errorf("ObservePod (-want +got):\n%s", d)
			}
		})
	}
}

func TestSettleLostPod(t *testing.T) {
	lost := seenPod("jupyter-alice", "u1").Running(0).FailedByPodGC().Obj()
	cases := map[string]struct {
		wallet   *hcv1.CreditAccount
		now      time.Time
		want     accountView
		wantNext accountView
	}{
		"the periods it ran stay paid; it ends when the failure is seen": {
			wallet: wallet(60).Servers(runningServer().Paid(4, 40).PaidThrough(40 * time.Minute).Obj()).Obj(),
			now:    at(35 * time.Minute),
			want: accountView{Balance: 60, Conditions: healthy,
				Servers: []hcv1.ServerCharge{runningServer().Paid(4, 40).PaidThrough(40 * time.Minute).Ended(35 * time.Minute).Obj()}},
			wantNext: accountView{Balance: 60, Conditions: healthy},
		},
		"seen late: the boundaries it was not charged for while unseen are charged up to the sighting": {
			wallet: wallet(60).Servers(runningServer().Paid(2, 20).PaidThrough(20 * time.Minute).Obj()).Obj(),
			now:    at(35 * time.Minute),
			want: accountView{Balance: 40, TotalCharged: 20, Conditions: healthy,
				Servers: []hcv1.ServerCharge{runningServer().Paid(4, 40).PaidThrough(40 * time.Minute).Ended(35 * time.Minute).Obj()}},
			wantNext: accountView{Balance: 40, TotalCharged: 20, Conditions: healthy},
		},
	}
	// Seen lost in the second it started (or with the node's clock ahead):
	// it ran, so the reservation stays paid, in every run alike.
	cases["seen lost in the second it started: it ran, its reservation stays paid"] = struct {
		wallet   *hcv1.CreditAccount
		now      time.Time
		want     accountView
		wantNext accountView
	}{
		wallet: wallet(90).Servers(testutil.MakeServerCharge("r1").UID("u1").Obj()).Obj(),
		now:    at(0),
		want: accountView{Balance: 90, Conditions: healthy,
			Servers: []hcv1.ServerCharge{testutil.MakeServerCharge("r1").UID("u1").Started(0).PaidThrough(interval).Ended(0).Obj()}},
		wantNext: accountView{Balance: 90, Conditions: healthy},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := tc.wallet.DeepCopy()
			pods := func(hcv1.ServerCharge) PodObservation { return ObservePod(lost) }
			Settle(w, nil, pods, nil, tc.now, testOptions)
			if d := cmp.Diff(tc.want, viewOf(w), cmpopts.EquateEmpty()); d != "" {
				t.Errorf("first run (-want +got):\n%s", d)
			}
			Settle(w, nil, pods, nil, tc.now.Add(time.Minute), testOptions)
			if d := cmp.Diff(tc.wantNext, viewOf(w), cmpopts.EquateEmpty()); d != "" {
				t.Errorf("second run (-want +got):\n%s", d)
			}
			if err := conserved(tc.wallet, w); err != nil {
				t.Error(err)
			}
		})
	}
}

// Row: a project pool paid later periods (it was empty at admission and
// topped up after), then the server's end was seen late. Each refunded
// period goes back to whoever paid it.
func TestSettleRefundGoesToWhoPaid(t *testing.T) {
	// r1: the pool was empty at admission, so the wallet paid period 0.
	reserved := runningServer().Project("lab").Obj()
	cases := map[string]struct {
		poolTopUp  int64
		walletBal  int64
		endAt      time.Duration
		wantWallet int64
		wantPool   int64
		wantShares []hcv1.PeriodShare // after the charge, before the refund
	}{
		"the pool paid the periods after the end: the pool gets them back": {
			poolTopUp: 50, walletBal: 90, endAt: 15 * time.Minute,
			wantShares: []hcv1.PeriodShare{{Periods: 3, Pool: 10}},
			wantWallet: 90, wantPool: 40, // pool paid periods 1-3, keeps period 1
		},
		"the pool paid part of them: each period to its payer": {
			poolTopUp: 15, walletBal: 90, endAt: 5 * time.Minute,
			wantShares: []hcv1.PeriodShare{{Periods: 1, Pool: 10}, {Periods: 1, Pool: 5}, {Periods: 1, Pool: 0}},
			wantWallet: 90, wantPool: 15, // nothing after period 0 stays paid
		},
		"pool first from admission on: no record, refunded as before": {
			poolTopUp: 0, walletBal: 90, endAt: 15 * time.Minute,
			wantWallet: 90 - 10, wantPool: 0,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := pooledWallet(tc.walletBal).Servers(reserved).Obj()
			p := pool(0).TopUp("t1", tc.poolTopUp).Obj()
			w0, p0 := w.DeepCopy(), p.DeepCopy()
			pools := map[string]*hcv1.CreditAccount{"lab": p}
			// Seen running through three boundaries (the end not seen yet).
			Settle(w, pools, podsByID(map[string]PodObservation{"r1": running("u1", 0)}), nil, at(35*time.Minute), testOptions)
			if d := cmp.Diff(tc.wantShares, w.Status.Servers[0].Shares, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("shares after the charge (-want +got):\n%s", d)
			}
			Settle(w, pools, podsByID(map[string]PodObservation{"r1": ended("u1", 0, tc.endAt)}), nil, at(36*time.Minute), testOptions)
			if w.Status.Balance != tc.wantWallet || p.Status.Balance != tc.wantPool {
				t.Errorf("after the refund: wallet %d, pool %d; want %d and %d", w.Status.Balance, p.Status.Balance, tc.wantWallet, tc.wantPool)
			}
			for _, pair := range [][2]*hcv1.CreditAccount{{w0, w}, {p0, p}} {
				if err := conserved(pair[0], pair[1]); err != nil {
					t.Error(err)
				}
			}
			e := w.Status.Servers[0]
			if e.Paid+e.ProjectPaid != e.PeriodsPaid*e.BillingValue {
				t.Errorf("paid %d + projectPaid %d != %d periods", e.Paid, e.ProjectPaid, e.PeriodsPaid)
			}
		})
	}
}

// Rows: an account annotation changed on a running billed pod; a pod whose
// reservation was returned while it was out of sight. Entries are bound to
// their pod, not to what its annotations say now.
func TestEntryPods(t *testing.T) {
	bound := wallet(50).Servers(runningServer().Obj(), testutil.MakeServerCharge("r2").Pod("jupyter-alice-2").Obj(),
		adoptedServer(0).UID("u9").Obj()).Obj()
	cases := map[string]struct {
		pods []*corev1.Pod
		want map[string]types.UID
	}{
		"each entry's pod by its uid, reservation or adopted id": {
			pods: []*corev1.Pod{
				seenPod("jupyter-alice", "u1").Account("alice").Reservation("r1").Obj(),
				seenPod("jupyter-alice-2", "u2").Account("alice").Reservation("r2").Obj(),
				seenPod("jupyter-bob", "u9").User("bob").Label(hcv1.LabelAccount, "alice").Obj(),
			},
			want: map[string]types.UID{"r1": "u1", "r2": "u2", "pod-u9": "u9"},
		},
		"the account annotation now names another account: still the entry's pod": {
			pods: []*corev1.Pod{seenPod("jupyter-alice", "u1").Account("lab").Reservation("r1").Obj()},
			want: map[string]types.UID{"r1": "u1"},
		},
		"the reservation annotation moved to another pod: not the bound entry's pod": {
			pods: []*corev1.Pod{seenPod("jupyter-alice", "u5").Account("alice").Reservation("r1").Obj()},
			want: map[string]types.UID{},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := map[string]types.UID{}
			for id, p := range EntryPods(bound, tc.pods) {
				if FindServer(bound, id) >= 0 {
					got[id] = p.UID
				}
			}
			if d := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("EntryPods (-want +got):\n%s", d)
			}
		})
	}
}

func TestAdoptable(t *testing.T) {
	// What the ledgers hold: r1 bound to u1 (on any account), and bob's
	// adopted u9.
	ledger := wallet(50).Servers(runningServer().Obj(), adoptedServer(0).Obj()).Obj()
	held := func(keys []string) bool { return Holds(ledger, keys) }
	cases := map[string]struct {
		pod  *corev1.Pod
		want bool
	}{
		"a pod the webhook never saw, no ledger holds it": {
			pod: seenPod("jupyter-carol", "u3").User("carol").Running(0).Obj(), want: true,
		},
		"a reserved pod whose ledger holds it": {
			pod: seenPod("jupyter-alice", "u1").Reservation("r1").Running(0).Obj(), want: false,
		},
		"a reserved pod whose reservation no ledger holds (returned while it was out of sight)": {
			pod: seenPod("jupyter-alice-2", "u2").Reservation("r7").Running(0).Obj(), want: true,
		},
		"a pending pod whose reservation no ledger holds": {
			pod: seenPod("jupyter-alice-2", "u2").Reservation("r7").Obj(), want: true,
		},
		"a pod a ledger holds by its uid, whatever reservation it carries now": {
			pod: seenPod("jupyter-alice", "u1").Reservation("r-other").Running(0).Obj(), want: false,
		},
		"an adopted pod": {
			pod: seenPod("jupyter-bob", "u9").User("bob").Running(0).Obj(), want: false,
		},
		"an ended pod": {
			pod: seenPod("jupyter-alice-2", "u2").Reservation("r7").Running(0).Deleting(time.Hour, 0).Obj(), want: false,
		},
		"a lost pod (failed while running)": {
			pod: seenPod("jupyter-alice-2", "u2").Reservation("r7").Running(0).FailedByPodGC().Obj(), want: false,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := Adoptable(tc.pod, held); got != tc.want {
				t.Errorf("Adoptable = %v, want %v", got, tc.want)
			}
		})
	}
}

// Row: a pod the webhook never saw was labelled singleuser and for a pool
// its user is not in. Adoption obeys admission's membership rule.
func TestAdoption(t *testing.T) {
	lab := pool(50).Obj() // lists alice and bob
	price := Price{Value: 10, Interval: interval}
	cases := map[string]struct {
		pod        *corev1.Pod
		wantReason string // the Denial's reason; "" when adopted
		wantMsg    string
	}{
		"a member's pod": {pod: seenPod("jupyter-bob", "u9").User("bob").Label(hcv1.LabelAccount, "lab").Obj()},
		"a pod of a user the pool does not list": {
			pod: seenPod("jupyter-mallory", "u6").User("mallory").Label(hcv1.LabelAccount, "lab").Obj(), wantReason: DenyNotMember,
			wantMsg: NotMemberMessage("mallory", "lab"),
		},
		"a pod that names no user": {
			pod: seenPod("jupyter-x", "u7").User("").Label(hcv1.LabelAccount, "lab").Obj(), wantReason: DenyMissingUser, wantMsg: MissingUserMessage(),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			u, err := Adoption(tc.pod, lab, price)
			var denial *Denial
			switch {
			case tc.wantReason == "" && err != nil:
				t.Fatalf("Adoption denied: %v", err)
			case tc.wantReason == "":
				if u.UID != tc.pod.UID || u.User != "bob" || u.Price != price {
					t.Errorf("Adoption = %+v", u)
				}
			case !errors.As(err, &denial):
				t.Fatalf("Adoption = %+v, %v; want a %s denial", u, err, tc.wantReason)
			case denial.Reason != tc.wantReason || denial.Message != tc.wantMsg:
				t.Errorf("denial %s %q, want %s %q", denial.Reason, denial.Message, tc.wantReason, tc.wantMsg)
			}
		})
	}
}

// A re-adopted server is billed from when it is seen again, once.
func TestSettleReadoption(t *testing.T) {
	readopt := Unreserved{Pod: "jupyter-alice", UID: "u1", User: "alice", Price: Price{Value: 10, Interval: interval}, Reservation: "r1"}
	readopted := testutil.MakeServerCharge("pod-u1").UID("u1").ReservedAt(20*time.Minute).Paid(0, 0)
	cases := map[string]struct {
		wallet     *hcv1.CreditAccount
		want       accountView
		wantNotes  []noteView
		wantCharge int64
	}{
		"no ledger holds its reservation: adopted again, billed from now": {
			wallet: wallet(50).Obj(),
			want: accountView{Balance: 40, TotalCharged: 10, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{readopted.Started(20*time.Minute).Paid(1, 10).PaidThrough(30 * time.Minute).Obj()}},
			wantNotes: []noteView{{Reason: EventReadopted, Pod: "jupyter-alice", Warning: true}, {Reason: EventServerStarted, Pod: "jupyter-alice"}},
		},
		"the wallet still holds it under its reservation: not adopted twice": {
			wallet: wallet(50).Servers(runningServer().Paid(2, 20).PaidThrough(20 * time.Minute).Obj()).Obj(),
			want: accountView{Balance: 40, TotalCharged: 10, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{runningServer().Paid(3, 30).PaidThrough(30 * time.Minute).Obj()}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := tc.wallet.DeepCopy()
			pods := podsByID(map[string]PodObservation{"r1": running("u1", 0), "pod-u1": running("u1", 0)})
			res := Settle(w, nil, pods, []Unreserved{readopt}, at(20*time.Minute), testOptions)
			if d := cmp.Diff(tc.want, viewOf(w), cmpopts.EquateEmpty()); d != "" {
				t.Errorf("wallet (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantNotes, resultViewOf(res).Notes, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("notes (-want +got):\n%s", d)
			}
		})
	}
}

// Who paid which period: recorded only once the pool's share rises, merged,
// bounded, and read back newest first with pool first before the runs.
func TestShares(t *testing.T) {
	type charge struct{ periods, pool int64 }
	cases := map[string]struct {
		period0Pool int64 // what the pool paid of the reserved period 0
		charges     []charge
		want        []hcv1.PeriodShare
		lastN       int64
		wantLast    int64 // the pool's share of the last lastN periods
	}{
		"pool first throughout: nothing recorded": {
			period0Pool: 10, charges: []charge{{3, 25}},
			lastN: 2, wantLast: 15,
		},
		"the pool ran dry, then paid again: recorded from then on": {
			period0Pool: 0, charges: []charge{{2, 10}},
			want:  []hcv1.PeriodShare{{Periods: 1, Pool: 10}, {Periods: 1, Pool: 0}},
			lastN: 2, wantLast: 10,
		},
		"equal runs merge": {
			period0Pool: 0, charges: []charge{{1, 10}, {2, 20}},
			want:  []hcv1.PeriodShare{{Periods: 3, Pool: 10}},
			lastN: 4, wantLast: 30,
		},
		"beyond the runs, pool first": {
			period0Pool: 4, charges: []charge{{1, 0}, {1, 10}},
			want:  []hcv1.PeriodShare{{Periods: 1, Pool: 10}},
			lastN: 3, wantLast: 14,
		},
		"at most 16 runs, the oldest dropped": {
			period0Pool: 0,
			charges: func() []charge {
				var c []charge
				for range 20 {
					c = append(c, charge{1, 10}, charge{1, 0})
				}
				return c
			}(),
			want: func() []hcv1.PeriodShare {
				var w []hcv1.PeriodShare
				for range 8 {
					w = append(w, hcv1.PeriodShare{Periods: 1, Pool: 10}, hcv1.PeriodShare{Periods: 1, Pool: 0})
				}
				return w
			}(),
			lastN: 4, wantLast: 20,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			e := testutil.MakeServerCharge("r1").Project("lab").Paid(1, 10-tc.period0Pool).ProjectPaid(tc.period0Pool).Obj()
			for _, c := range tc.charges {
				from := e.PeriodsPaid
				e.PeriodsPaid += c.periods
				e.ProjectPaid += c.pool
				e.Paid += c.periods*e.BillingValue - c.pool
				recordShares(&e, from, c.periods, c.pool)
			}
			if d := cmp.Diff(tc.want, e.Shares, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("shares (-want +got):\n%s", d)
			}
			if got := poolShareOfLast(&e, tc.lastN); got != tc.wantLast {
				t.Errorf("the pool's share of the last %d periods: %d, want %d", tc.lastN, got, tc.wantLast)
			}
		})
	}
}
