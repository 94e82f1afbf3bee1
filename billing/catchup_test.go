package billing

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// TestCatchUpInterleavesGrantsAndCharges: after an outage, the boundaries
// and the grants that fell due are applied in time order, so a wallet at
// its cap keeps the grants it would have had between the charges.
func TestCatchUpInterleavesGrantsAndCharges(t *testing.T) {
	created := time.Date(2026, 1, 5, 8, 55, 0, 0, time.UTC) // grant slots at :05, :15, ...
	start := created.Add(5 * time.Minute)                   // boundaries at :10, :20, ...
	cases := map[string]struct {
		grant       *hcv1.Grant
		outage      time.Duration
		wantBalance int64
		wantPaid    int64
	}{
		"grant equal to the price keeps the wallet full": {
			grant: &hcv1.Grant{Amount: 10, Interval: metav1.Duration{Duration: 10 * time.Minute}},
			// 90 at :05; -10 at :10, +10 at :15, ..., -10 at 10:00: 80.
			// (All grants first, capped at 100, then all charges: 40.)
			outage: time.Hour + time.Second, wantBalance: 80, wantPaid: 7,
		},
		"no grant: every period charged": {
			outage: time.Hour + time.Second, wantBalance: 30, wantPaid: 7,
		},
		"half the price as grant: the deficit is the difference": {
			grant: &hcv1.Grant{Amount: 5, Interval: metav1.Duration{Duration: 10 * time.Minute}},
			// 90 - 6 charges of 10 + 5 grants of 5.
			outage: time.Hour + time.Second, wantBalance: 55, wantPaid: 7,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			opened := metav1.NewTime(created)
			st := metav1.NewTime(start)
			a := &hcv1.CreditAccount{
				ObjectMeta: metav1.ObjectMeta{Name: "alice", CreationTimestamp: opened},
				Spec:       hcv1.CreditAccountSpec{Users: []string{"alice"}, Cap: 100, Grant: tc.grant},
				Status: hcv1.CreditAccountStatus{OpenedAt: &opened, GrantedThrough: &opened, Balance: 90, TotalCharged: 10,
					Servers: []hcv1.ServerCharge{{ID: "r1", Pod: "jupyter-alice", PodUID: "u1", User: "alice", Wallet: "alice",
						BillingValue: 10, BillingInterval: metav1.Duration{Duration: 10 * time.Minute},
						ReservedAt: opened, StartedAt: &st, PeriodsPaid: 1, Paid: 10}}},
			}
			// The state at :05: full after that grant, minus the reservation.
			a.Status.Balance = 100
			gt := metav1.NewTime(created.Add(10 * time.Minute))
			a.Status.GrantedThrough = &gt
			a.Status.Balance -= 10
			if tc.grant == nil {
				a.Status.GrantedThrough = nil
			}
			running := func(hcv1.ServerCharge) PodObservation {
				return PodObservation{Exists: true, UID: "u1", StartedAt: &start}
			}
			Settle(a, nil, running, nil, start.Add(tc.outage), DefaultOptions)
			e := a.Status.Servers[0]
			if a.Status.Balance != tc.wantBalance || e.PeriodsPaid != tc.wantPaid || e.StopRequestedAt != nil {
				t.Fatalf("balance %d, periods paid %d, stop %v; want %d, %d, no stop",
					a.Status.Balance, e.PeriodsPaid, e.StopRequestedAt, tc.wantBalance, tc.wantPaid)
			}
			if a.Status.Balance != 100+a.Status.TotalGranted-a.Status.TotalCharged+a.Status.TotalRefunded {
				t.Fatalf("not conserved: %+v", a.Status)
			}
		})
	}
}

// TestCatchUpOfOneBoundary: a single boundary seen after a grant slot that
// followed it is charged before that grant, as two would be (a wallet at
// its cap lost the grant when the grant was applied first: found while
// comparing LedgerPages' catch-up with status.servers').
func TestCatchUpOfOneBoundary(t *testing.T) {
	created := time.Date(2026, 1, 5, 8, 55, 0, 0, time.UTC) // grant slots at :05, :15, ...
	start := created.Add(5 * time.Minute)                   // boundaries at :10, :20, ...
	opened, st, gt := metav1.NewTime(created), metav1.NewTime(start), metav1.NewTime(created.Add(10*time.Minute))
	a := &hcv1.CreditAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "alice", CreationTimestamp: opened},
		Spec: hcv1.CreditAccountSpec{Users: []string{"alice"}, Cap: 100,
			Grant: &hcv1.Grant{Amount: 10, Interval: metav1.Duration{Duration: 10 * time.Minute}}},
		// At :05, full after that grant; the reservation was paid before.
		Status: hcv1.CreditAccountStatus{OpenedAt: &opened, GrantedThrough: &gt, Balance: 100, TotalCharged: 10,
			Servers: []hcv1.ServerCharge{{ID: "r1", Pod: "jupyter-alice", PodUID: "u1", User: "alice", Wallet: "alice",
				BillingValue: 10, BillingInterval: metav1.Duration{Duration: 10 * time.Minute},
				ReservedAt: opened, StartedAt: &st, PeriodsPaid: 1, Paid: 10}}},
	}
	running := func(hcv1.ServerCharge) PodObservation {
		return PodObservation{Exists: true, UID: "u1", StartedAt: &start}
	}
	steady := a.DeepCopy()
	// Seen at :16: -10 at :10, +10 at :15 (applied first: capped, then -10: 90).
	Settle(a, nil, running, nil, start.Add(16*time.Minute), DefaultOptions)
	if e := a.Status.Servers[0]; a.Status.Balance != 100 || e.PeriodsPaid != 2 || a.Status.TotalGranted != 10 {
		t.Fatalf("balance %d, periods paid %d, granted %d; want 100, 2, 10", a.Status.Balance, e.PeriodsPaid, a.Status.TotalGranted)
	}
	// Seen at :14, before the next grant: the usual pass, the charge
	// written at the time of the pass.
	now := start.Add(14 * time.Minute)
	Settle(steady, nil, running, nil, now, DefaultOptions)
	last := steady.Status.Ledger[len(steady.Status.Ledger)-1]
	if steady.Status.Balance != 90 || last.Kind != hcv1.LedgerCharge || !last.Time.Time.Equal(now) {
		t.Fatalf("balance %d, last ledger line %s at %s; want 90, a charge at %s", steady.Status.Balance, last.Kind, last.Time, now)
	}
}
