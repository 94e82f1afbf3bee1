package billing

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// adjustView is the part of an account's status that records adjustments.
type adjustView struct {
	Balance       int64
	Applied       []string
	Retired       []string
	TotalAdjusted int64
	TotalToppedUp int64
	Ledger        []string
}

func adjustViewOf(a *hcv1.CreditAccount) adjustView {
	return adjustView{Balance: a.Status.Balance, Applied: a.Status.AppliedTopUps, Retired: a.Status.RetiredTopUps,
		TotalAdjusted: a.Status.TotalAdjusted, TotalToppedUp: a.Status.TotalToppedUp, Ledger: ledgerKinds(a)}
}

func TestRefreshAppliesAdjustmentsOnce(t *testing.T) {
	cases := map[string]struct {
		account     *hcv1.CreditAccount
		wantChanged bool
		want        adjustView
		// wantMessage is a part of the newest ledger line's message.
		wantMessage string
	}{
		"a positive adjustment adds, above the cap too": {
			account:     openAccount("alice").Balance(90).Adjust("bonus", 30, "tutor").Obj(),
			wantChanged: true,
			want:        adjustView{Balance: 120, Applied: []string{"bonus"}, TotalAdjusted: 30, Ledger: []string{"Adjust +30"}},
			wantMessage: "adjustment bonus: tutor",
		},
		"a negative adjustment takes away": {
			account:     openAccount("alice").Balance(50).Adjust("fix", -20, "double grant").Obj(),
			wantChanged: true,
			want:        adjustView{Balance: 30, Applied: []string{"fix"}, TotalAdjusted: -20, Ledger: []string{"Adjust -20"}},
			wantMessage: "adjustment fix: double grant",
		},
		"a negative adjustment larger than the balance stops at 0 and says so": {
			account:     openAccount("alice").Balance(15).Adjust("fix", -20, "double grant").Obj(),
			wantChanged: true,
			want:        adjustView{Balance: 0, Applied: []string{"fix"}, TotalAdjusted: -15, Ledger: []string{"Adjust -15"}},
			wantMessage: "adjustment fix of -20 clamped to -15",
		},
		"a negative adjustment on an empty account applies 0, once": {
			account:     openAccount("alice").Balance(0).Adjust("fix", -20, "double grant").Obj(),
			wantChanged: true,
			want:        adjustView{Balance: 0, Applied: []string{"fix"}, Ledger: []string{"Adjust +0"}},
			wantMessage: "clamped to 0",
		},
		"an applied adjustment is not applied again": {
			account: openAccount("alice").Balance(50).Adjust("fix", -20, "double grant").Applied("fix").Obj(),
			want:    adjustView{Balance: 50, Applied: []string{"fix"}},
		},
		"a removed adjustment is retired, not forgotten": {
			account:     openAccount("alice").Balance(50).Applied("fix").Obj(),
			wantChanged: true,
			want:        adjustView{Balance: 50, Retired: []string{"fix"}},
		},
		"a retired adjustment added again is not applied again": {
			account:     openAccount("alice").Balance(50).Adjust("fix", -20, "double grant").Retired("fix").Obj(),
			wantChanged: true,
			want:        adjustView{Balance: 50, Applied: []string{"fix"}},
		},
		"top-ups and adjustments share ids: a retired top-up id is not applied as an adjustment": {
			account:     openAccount("alice").Balance(50).Adjust("t1", 20, "again").Retired("t1").Obj(),
			wantChanged: true,
			want:        adjustView{Balance: 50, Applied: []string{"t1"}},
		},
		"top-ups apply before adjustments: a top-up and a correction in one edit": {
			account:     openAccount("alice").Balance(0).TopUp("course", 100).Adjust("too-much", -60, "half a course").Obj(),
			wantChanged: true,
			want: adjustView{Balance: 40, Applied: []string{"course", "too-much"}, TotalToppedUp: 100, TotalAdjusted: -60,
				Ledger: []string{"TopUp +100", "Adjust -60"}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := tc.account.DeepCopy()
			if changed := Refresh(a, at(time.Minute)); changed != tc.wantChanged {
				t.Errorf("Refresh changed = %v, want %v", changed, tc.wantChanged)
			}
			if d := cmp.Diff(tc.want, adjustViewOf(a), cmpopts.EquateEmpty()); d != "" {
				t.Errorf("adjustments (-want +got):\n%s", d)
			}
			if n := len(a.Status.Ledger); tc.wantMessage != "" && (n == 0 || !strings.Contains(a.Status.Ledger[n-1].Message, tc.wantMessage)) {
				t.Errorf("ledger %+v, want the newest line to say %q", a.Status.Ledger, tc.wantMessage)
			}
			if err := conserved(tc.account, a); err != nil {
				t.Error(err)
			}
			// A second pass (a re-applied object, another replica) changes nothing.
			again := a.DeepCopy()
			if Refresh(again, at(2*time.Minute)) {
				t.Errorf("a second Refresh changed the account: %+v", again.Status)
			}
		})
	}
}

// TestAdjustmentsChurnOnce removes and re-adds adjustments of both signs
// edit after edit (a spec holds at most 4 at a time; ids come back): each id
// moves the balance once, ever, and the balance never goes below 0.
func TestAdjustmentsChurnOnce(t *testing.T) {
	a := openAccount("alice").Balance(0).Obj()
	start := a.DeepCopy()
	applied := map[string]int{}
	for i := range 2000 {
		id, amount := fmt.Sprintf("a%d", i%300), int64(3)
		if i%2 == 1 {
			amount = -2
		}
		a.Spec.Adjustments = append(a.Spec.Adjustments, hcv1.Adjustment{ID: id, Amount: amount, Reason: "churn"})
		if len(a.Spec.Adjustments) > 4 {
			a.Spec.Adjustments = a.Spec.Adjustments[1:]
		}
		now := at(time.Duration(i) * time.Second)
		Refresh(a, now)
		if n := len(a.Status.Ledger); n > 0 && a.Status.Ledger[n-1].Time.Time.Equal(now) {
			applied[a.Status.Ledger[n-1].Subject]++
		}
		if a.Status.Balance < 0 {
			t.Fatalf("step %d: balance %d", i, a.Status.Balance)
		}
	}
	for id, n := range applied {
		if n != 1 {
			t.Errorf("adjustment %s applied %d times", id, n)
		}
	}
	if len(applied) != 300 {
		t.Errorf("%d adjustments applied, want 300", len(applied))
	}
	if err := conserved(start, a); err != nil {
		t.Error(err)
	}
}

func TestReopenTakesBackReappliedAdjustments(t *testing.T) {
	// The deleted account had applied "fix" (-30); the re-created account
	// was opened by a spawn first (100) and applied it again (-30 → 70),
	// then reserved 10 (60).
	a := openAccount("alice").Adjust("fix", -30, "correction").Balance(60).Applied("fix").Obj()
	a.Status.TotalAdjusted, a.Status.TotalCharged = -30, 10
	a.Status.Ledger = []hcv1.LedgerEntry{{Kind: hcv1.LedgerAdjust, Subject: "fix", Amount: -30}}
	if !Reopen(a, Tombstone{UID: "old", Balance: 45, TopUps: []string{"fix"}}, at(time.Minute)) {
		t.Fatal("Reopen changed nothing")
	}
	st := a.Status
	if st.Balance != 35 || st.TotalAdjusted != 0 {
		t.Errorf("balance %d, adjusted %d; want 45 − 10 charged since = 35, adjusted 0", st.Balance, st.TotalAdjusted)
	}
	if opening := st.Balance - st.TotalGranted - st.TotalToppedUp - st.TotalAdjusted + st.TotalCharged - st.TotalRefunded; opening != 45 {
		t.Errorf("the ledger's opening balance is %d, want the tombstone's 45", opening)
	}
}
