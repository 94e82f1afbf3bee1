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
