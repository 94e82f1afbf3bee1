package billing

import (
	"fmt"
	"testing"
	"time"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// Adversarial review (wt-review): these tests fail on main and show a ledger
// that lies. They are left failing on purpose.

// smallTopUps lists n top-ups of 1 credit, enough to push older entries
// out of status.ledger (LedgerLength).
func smallTopUps(a *hcv1.CreditAccount, n int) {
	for i := range n {
		a.Spec.TopUps = append(a.Spec.TopUps, hcv1.TopUp{ID: fmt.Sprintf("small-%d", i), Amount: 1})
	}
}

// TestReviewReopenClampedAdjustmentOutOfLedger: a re-created account is
// opened by a spawn (the webhook) before the operator reads the tombstone;
// it applies a negative adjustment the deleted account had applied, clamped
// at 0; by the time the operator reopens it, the ledger no longer shows the
// adjustment. Reopen takes back the adjustment's spec amount (-1000)
// instead of what was applied (-100): 900 credits appear.
func TestReviewReopenClampedAdjustmentOutOfLedger(t *testing.T) {
	a := openAccount("alice").Cap(100).Adjust("fix", -1000, "double grant").Unopened().Obj()
	a.UID = "new-uid"
	Refresh(a, at(time.Second)) // opened with 100, fix clamped to -100: 0
	if a.Status.Balance != 0 {
		t.Fatalf("balance after the clamped adjustment = %d, want 0", a.Status.Balance)
	}
	smallTopUps(a, LedgerLength)
	Refresh(a, at(2*time.Second)) // +10, the adjustment's entry rolls out
	tomb := Tombstone{UID: "old-uid", Balance: 40, TopUps: []string{"fix"}}
	Reopen(a, tomb, at(3*time.Second))
	// The deleted account ended with 40 (fix applied there); the new one
	// added 10 small top-ups of its own since.
	if want := int64(40 + LedgerLength); a.Status.Balance != want {
		t.Errorf("balance after Reopen = %d, want %d (the tombstone's 40 + %d new top-ups)", a.Status.Balance, want, LedgerLength)
	}
	if a.Status.TotalAdjusted != 0 {
		t.Errorf("totalAdjusted after Reopen = %d, want 0 (fix belongs to the deleted account)", a.Status.TotalAdjusted)
	}
}

// TestReviewReopenRetiredTopUpOutOfLedger: as above, with a top-up the
// deleted account had applied, which the re-created account applied again
// and the admin then removed from the spec (retired). Neither the ledger
// nor the spec shows its amount any more: Reopen takes back 0, and the
// top-up is paid twice.
func TestReviewReopenRetiredTopUpOutOfLedger(t *testing.T) {
	a := openAccount("alice").Cap(100).TopUp("welcome", 50).Unopened().Obj()
	a.UID = "new-uid"
	Refresh(a, at(time.Second)) // 100 + 50
	a.Spec.TopUps = nil         // the admin removes the applied entry
	smallTopUps(a, LedgerLength)
	Refresh(a, at(2*time.Second)) // welcome retired, +10
	tomb := Tombstone{UID: "old-uid", Balance: 35, TopUps: []string{"welcome"}}
	Reopen(a, tomb, at(3*time.Second))
	if want := int64(35 + LedgerLength); a.Status.Balance != want {
		t.Errorf("balance after Reopen = %d, want %d: the top-up welcome, applied by the deleted account, was applied again", a.Status.Balance, want)
	}
}

// TestReviewTombstoneChainExceedsRetiredBound: "nothing is ever forgotten"
// and a tombstone carries applied + retired ids. An account re-created
// from a tombstone of 1024 ids, whose spec then holds 256 top-ups and 256
// adjustments (all applied), leaves a tombstone of 1536 ids; the next
// re-creation puts them all in status.retiredTopUps, whose CRD bound is
// 1024 (MaxItems): the API server refuses every status write of that
// account from then on.
func TestReviewTombstoneChainExceedsRetiredBound(t *testing.T) {
	const crdMaxRetired = 1024
	var old []string
	for i := range crdMaxRetired {
		old = append(old, fmt.Sprintf("gen1-%04d", i))
	}
	gen2 := openAccount("alice").Unopened().Obj()
	gen2.UID = "gen2"
	for i := range 256 {
		gen2.Spec.TopUps = append(gen2.Spec.TopUps, hcv1.TopUp{ID: fmt.Sprintf("gen2-t-%03d", i), Amount: 1})
		gen2.Spec.Adjustments = append(gen2.Spec.Adjustments, hcv1.Adjustment{ID: fmt.Sprintf("gen2-a-%03d", i), Amount: 1, Reason: "r"})
	}
	Reopen(gen2, Tombstone{UID: "gen1", Balance: 0, TopUps: old}, at(time.Second))
	Refresh(gen2, at(time.Second))
	if n := len(gen2.Status.RetiredTopUps); n > crdMaxRetired {
		t.Fatalf("generation 2 already retires %d ids", n)
	}
	tomb := TombstoneOf(gen2)
	gen3 := openAccount("alice").Unopened().Obj()
	gen3.UID = "gen3"
	Reopen(gen3, tomb, at(2*time.Second))
	Refresh(gen3, at(2*time.Second))
	if n := len(gen3.Status.RetiredTopUps); n > crdMaxRetired {
		t.Errorf("status.retiredTopUps holds %d ids after two re-creations; the CRD allows %d, so the API server refuses the account's status", n, crdMaxRetired)
	}
}

// TestReviewMovementsOnNegativeBalance: a re-created account corrected by
// Reopen can be negative (docs/operations.md: "negative if more was spent
// than the tombstone held"). A top-up or a grant on it then goes through
// addSat, which clamps the negative balance to 0 first: the debt is
// forgiven and the ledger (and totalGranted) records more than was added.
func TestReviewMovementsOnNegativeBalance(t *testing.T) {
	cases := map[string]struct {
		before *hcv1.CreditAccount
		want   int64
	}{
		"top-up of 50": {openAccount("alice").Cap(100).Balance(-100).TopUp("t", 50).Obj(), -50},
		"grant of 10":  {openAccount("alice").Cap(100).Balance(-100).Grant(10, time.Minute).Obj(), -90},
		"adjust +50":   {openAccount("alice").Cap(100).Balance(-100).Adjust("j", 50, "r").Obj(), -50},
		// Cosmetic: at the API's bound the balance saturates but the
		// totals and the ledger count the whole amount.
		"adjust +100 at the bound": {openAccount("alice").Cap(100).Balance(hcv1.MaxCredits-10).Adjust("j", 100, "r").Obj(), hcv1.MaxCredits},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := tc.before.DeepCopy()
			Refresh(a, at(time.Minute))
			if a.Status.Balance != tc.want {
				t.Errorf("balance %d -> %d, want %d (ledger: %+v)", tc.before.Status.Balance, a.Status.Balance, tc.want, a.Status.Ledger)
			}
			if err := conserved(tc.before, a); err != nil {
				t.Error(err)
			}
		})
	}
}
