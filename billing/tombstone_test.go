package billing

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// topUpView is the part of an account's status that records top-ups.
type topUpView struct {
	Balance       int64
	Applied       []string
	Retired       []string
	TotalToppedUp int64
	Ledger        []string
}

func topUpViewOf(a *hcv1.CreditAccount) topUpView {
	return topUpView{Balance: a.Status.Balance, Applied: a.Status.AppliedTopUps, Retired: a.Status.RetiredTopUps,
		TotalToppedUp: a.Status.TotalToppedUp, Ledger: ledgerKinds(a)}
}

func TestRefreshBoundsAppliedTopUps(t *testing.T) {
	cases := map[string]struct {
		account     *hcv1.CreditAccount
		wantChanged bool
		want        topUpView
	}{
		"an id removed from spec is retired, not forgotten": {
			account:     openAccount("alice").Balance(10).TopUp("b", 5).Applied("a", "b").Obj(),
			wantChanged: true,
			want:        topUpView{Balance: 10, Applied: []string{"b"}, Retired: []string{"a"}},
		},
		"a retired id added again is not applied again": {
			account:     openAccount("alice").Balance(10).TopUp("a", 30).Retired("a").Obj(),
			wantChanged: true,
			want:        topUpView{Balance: 10, Applied: []string{"a"}},
		},
		"retired ids stay sorted": {
			account:     openAccount("alice").Balance(10).Applied("m", "c", "x").Retired("b", "d").Obj(),
			wantChanged: true,
			want:        topUpView{Balance: 10, Retired: []string{"b", "c", "d", "m", "x"}},
		},
		"a new id next to retired ones is applied once": {
			account:     openAccount("alice").Balance(10).TopUp("new", 7).Retired("old").Obj(),
			wantChanged: true,
			want:        topUpView{Balance: 17, Applied: []string{"new"}, Retired: []string{"old"}, TotalToppedUp: 7, Ledger: []string{"TopUp +7"}},
		},
		"nothing removed: nothing changes": {
			account: openAccount("alice").Balance(10).TopUp("a", 5).Applied("a").Retired("z").Obj(),
			want:    topUpView{Balance: 10, Applied: []string{"a"}, Retired: []string{"z"}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := tc.account.DeepCopy()
			if changed := Refresh(a, at(time.Minute)); changed != tc.wantChanged {
				t.Errorf("Refresh changed = %v, want %v", changed, tc.wantChanged)
			}
			if d := cmp.Diff(tc.want, topUpViewOf(a), cmpopts.EquateEmpty()); d != "" {
				t.Errorf("top-ups (-want +got):\n%s", d)
			}
			if err := conserved(tc.account, a); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestAppliedTopUpsStayBounded churns 10,000 top-ups through a spec that
// holds at most 3 at a time, removing and re-adding old ones: each id is
// applied exactly once, and appliedTopUps never holds more than the spec.
func TestAppliedTopUpsStayBounded(t *testing.T) {
	a := openAccount("alice").Balance(0).Obj()
	applied := map[string]int{}
	for i := range 10000 {
		id := fmt.Sprintf("t%d", i%400) // ids come back: removed, then added again
		a.Spec.TopUps = append(a.Spec.TopUps, hcv1.TopUp{ID: id, Amount: 1})
		if len(a.Spec.TopUps) > 3 {
			a.Spec.TopUps = a.Spec.TopUps[1:]
		}
		before := a.Status.TotalToppedUp
		Refresh(a, at(time.Duration(i)*time.Second))
		if a.Status.TotalToppedUp > before {
			applied[id]++
		}
		if n := len(a.Status.AppliedTopUps); n > len(a.Spec.TopUps) {
			t.Fatalf("step %d: %d applied ids for %d top-ups in spec", i, n, len(a.Spec.TopUps))
		}
	}
	for id, n := range applied {
		if n != 1 {
			t.Errorf("top-up %s applied %d times", id, n)
		}
	}
	if len(applied) != 400 || a.Status.Balance != 400 || len(a.Status.RetiredTopUps)+len(a.Status.AppliedTopUps) != 400 {
		t.Errorf("%d ids applied, balance %d, %d retired + %d applied; want 400 each", len(applied), a.Status.Balance,
			len(a.Status.RetiredTopUps), len(a.Status.AppliedTopUps))
	}
}

func TestReopen(t *testing.T) {
	tomb := Tombstone{UID: "old-uid", Balance: 35, TopUps: []string{"gone", "welcome"}}
	cases := map[string]struct {
		account     *hcv1.CreditAccount
		tomb        Tombstone
		wantChanged bool
		want        topUpView
		// wantOpening is the opening balance the ledger's identity uses.
		wantOpening int64
	}{
		"not opened yet: opens with the tombstone's balance; its top-ups are not applied again": {
			account:     openAccount("alice").TopUp("welcome", 50).TopUp("new", 5).Unopened().Obj(),
			tomb:        tomb,
			wantChanged: true,
			want: topUpView{Balance: 40, Applied: []string{"welcome", "new"}, Retired: []string{"gone"},
				TotalToppedUp: 5, Ledger: []string{"Opened +35", "TopUp +5"}},
			wantOpening: 35,
		},
		"opened by a spawn first: the opening and the re-applied top-up are taken back": {
			// Opened with 100 + top-up 50, then 10 reserved: 140.
			account: func() *hcv1.CreditAccount {
				a := openAccount("alice").TopUp("welcome", 50).Balance(140).Applied("welcome").Obj()
				a.Status.TotalToppedUp, a.Status.TotalCharged = 50, 10
				return a
			}(),
			tomb:        tomb,
			wantChanged: true,
			// 35 − 10 charged since.
			want:        topUpView{Balance: 25, Applied: []string{"welcome"}, Retired: []string{"gone"}, Ledger: []string{"Opened -115"}},
			wantOpening: 35,
		},
		"taken over once": {
			account: func() *hcv1.CreditAccount {
				a := openAccount("alice").Balance(35).Applied("welcome").TopUp("welcome", 50).Obj()
				a.Status.ReopenedFrom = "old-uid"
				return a
			}(),
			tomb:        tomb,
			want:        topUpView{Balance: 35, Applied: []string{"welcome"}},
			wantOpening: 35,
		},
		"its own tombstone is not taken over": {
			account: func() *hcv1.CreditAccount {
				a := openAccount("alice").Balance(60).Obj()
				a.UID = "old-uid"
				return a
			}(),
			tomb:        tomb,
			want:        topUpView{Balance: 60},
			wantOpening: 60,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := tc.account.DeepCopy()
			changed := Reopen(a, tc.tomb, at(time.Minute))
			Refresh(a, at(time.Minute))
			if changed != tc.wantChanged {
				t.Errorf("Reopen changed = %v, want %v", changed, tc.wantChanged)
			}
			if d := cmp.Diff(tc.want, topUpViewOf(a), cmpopts.EquateEmpty()); d != "" {
				t.Errorf("reopened account (-want +got):\n%s", d)
			}
			st := a.Status
			if got := st.Balance - st.TotalGranted - st.TotalToppedUp + st.TotalCharged - st.TotalRefunded; got != tc.wantOpening {
				t.Errorf("the ledger's opening balance is %d, want %d", got, tc.wantOpening)
			}
			if Reopen(a, tc.tomb, at(2*time.Minute)) {
				t.Errorf("a second Reopen changed the account")
			}
		})
	}
}

func TestTombstoneOf(t *testing.T) {
	a := openAccount("alice").Balance(42).Applied("b", "a").Retired("a", "c").Obj()
	a.UID = "u1"
	want := Tombstone{UID: "u1", Balance: 42, TopUps: []string{"a", "b", "c"}}
	if d := cmp.Diff(want, TombstoneOf(a)); d != "" {
		t.Errorf("tombstone (-want +got):\n%s", d)
	}
}

func TestTombstoneEncoding(t *testing.T) {
	deleted := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := map[string]struct {
		tomb Tombstone
		want string
	}{
		"balance, top-ups, when and forced": {
			tomb: Tombstone{UID: "u1", Balance: 42, TopUps: []string{"a", "b"}, DeletedAt: deleted, Forced: true},
			want: `{"uid":"u1","balance":42,"topUps":["a","b"],"deletedAt":"2025-03-01T12:00:00Z","forced":true}`,
		},
		"a zero balance is kept, no top-ups left out": {
			tomb: Tombstone{UID: "u1", Balance: 0},
			want: `{"uid":"u1","balance":0}`,
		},
		"a negative balance": {
			tomb: Tombstone{UID: "u1", Balance: -7, TopUps: []string{"x"}, DeletedAt: deleted},
			want: `{"uid":"u1","balance":-7,"topUps":["x"],"deletedAt":"2025-03-01T12:00:00Z"}`,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := EncodeTombstone(tc.tomb)
			if got != tc.want {
				t.Errorf("EncodeTombstone = %s, want %s", got, tc.want)
			}
			back, err := DecodeTombstone(got)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.tomb, back); d != "" {
				t.Errorf("round trip (-want +got):\n%s", d)
			}
		})
	}
}

func TestDecodeTombstoneRefusesWhatItCannotRead(t *testing.T) {
	for _, v := range []string{
		"",
		"uid: u1",
		`{"balance":5}`,
		`{"uid":"u1"}`,
		`{"uid":"u1","balance":"5"}`,
		`{"uid":"u1","balance":5,"deletedAt":"yesterday"}`,
	} {
		if got, err := DecodeTombstone(v); err == nil {
			t.Errorf("DecodeTombstone(%q) = %+v, want an error", v, got)
		}
	}
}

// TestReopenTakesBackWhatWasReallyApplied: a re-created account is
// opened by a spawn (the webhook) before the operator reads the tombstone;
// it applies a negative adjustment the deleted account had applied, clamped
// at 0; by the time the operator reopens it, the ledger no longer shows the
// adjustment. Reopen takes back what was applied (-100, recorded in
// status.appliedAmounts), not the adjustment's amount (-1000): no credit
// appears (found by the adversarial review).
func TestReopenTakesBackWhatWasReallyApplied(t *testing.T) {
	a := openAccount("alice").Cap(100).Adjust("fix", -1000, "double grant").Unopened().Obj()
	a.UID = "new-uid"
	Refresh(a, at(time.Second)) // opened with 100, fix clamped to -100: 0
	if a.Status.Balance != 0 {
		t.Fatalf("balance after the clamped adjustment = %d, want 0", a.Status.Balance)
	}
	smallTopUps(a, LedgerLength)
	Refresh(a, at(2*time.Second)) // +10, the adjustment's entry rolls out
	tomb := Tombstone{UID: "old-uid", Balance: 40, TopUps: []string{"fix"}}
	if len(a.Status.AppliedAmounts) != 1+LedgerLength {
		t.Fatalf("appliedAmounts before Reopen = %+v, want fix and the %d small top-ups", a.Status.AppliedAmounts, LedgerLength)
	}
	Reopen(a, tomb, at(3*time.Second))
	if a.Status.AppliedAmounts != nil {
		t.Errorf("appliedAmounts after Reopen = %+v, want none (needed no more)", a.Status.AppliedAmounts)
	}
	// The deleted account ended with 40 (fix applied there); the new one
	// added 10 small top-ups of its own since.
	if want := int64(40 + LedgerLength); a.Status.Balance != want {
		t.Errorf("balance after Reopen = %d, want %d (the tombstone's 40 + %d new top-ups)", a.Status.Balance, want, LedgerLength)
	}
	if a.Status.TotalAdjusted != 0 {
		t.Errorf("totalAdjusted after Reopen = %d, want 0 (fix belongs to the deleted account)", a.Status.TotalAdjusted)
	}
}

// TestReopenTakesBackARetiredTopUp: as above, with a top-up the deleted
// account had applied, which the re-created account applied again and the
// admin then removed from the spec (retired). Neither the ledger nor the
// spec shows its amount any more; status.appliedAmounts does: Reopen takes
// it back and the top-up is paid once.
func TestReopenTakesBackARetiredTopUp(t *testing.T) {
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

// TestAppliedAmountsAreKeptOnlyWhileReopenPossible: status.appliedAmounts
// records what each one-off moved only while the account may still take
// over a tombstone; once the operator claimed it (its finalizer), the
// next Refresh drops the record and records nothing more.
func TestAppliedAmountsAreKeptOnlyWhileReopenPossible(t *testing.T) {
	a := openAccount("alice").Cap(100).TopUp("t", 50).Adjust("j", -500, "r").Unopened().Obj()
	if !MayReopen(a) {
		t.Fatal("a new account may take over a tombstone")
	}
	Refresh(a, at(time.Second))
	want := []hcv1.AppliedAmount{{ID: "t", Kind: hcv1.LedgerTopUp, Amount: 50}, {ID: "j", Kind: hcv1.LedgerAdjust, Amount: -150}}
	if !slices.Equal(a.Status.AppliedAmounts, want) {
		t.Fatalf("appliedAmounts = %+v, want %+v", a.Status.AppliedAmounts, want)
	}
	a.Finalizers = append(a.Finalizers, hcv1.FinalizerLedger)
	if MayReopen(a) {
		t.Fatal("a claimed account never takes over a tombstone")
	}
	if !Refresh(a, at(2*time.Second)) || a.Status.AppliedAmounts != nil {
		t.Fatalf("after the claim, appliedAmounts = %+v, want dropped (a change)", a.Status.AppliedAmounts)
	}
	a.Spec.TopUps = append(a.Spec.TopUps, hcv1.TopUp{ID: "u", Amount: 5})
	Refresh(a, at(3*time.Second))
	if a.Status.AppliedAmounts != nil || a.Status.Balance != 5 {
		t.Errorf("a top-up after the claim: balance %d, appliedAmounts %+v; want 5 and none", a.Status.Balance, a.Status.AppliedAmounts)
	}
}

// smallTopUps lists n top-ups of 1 credit, enough to push older entries
// out of status.ledger (LedgerLength).
func smallTopUps(a *hcv1.CreditAccount, n int) {
	for i := range n {
		a.Spec.TopUps = append(a.Spec.TopUps, hcv1.TopUp{ID: fmt.Sprintf("small-%d", i), Amount: 1})
	}
}

// TestTombstoneChainFitsTheStatus: a tombstone carries applied + retired
// ids. An account re-created from a tombstone of 1024 ids, whose spec then
// holds 256 top-ups and 256 adjustments (all applied), would leave a
// tombstone of 1536 ids, more than the next re-creation's
// status.retiredTopUps holds (its CRD bound is 1024: the API server would
// refuse every status write of that account). The tombstone keeps at most
// 1024: all the ids its spec listed, then the last retired ids in sort
// order. Found by the adversarial review.
func TestTombstoneChainFitsTheStatus(t *testing.T) {
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
	if n := len(tomb.TopUps); n != hcv1.MaxRememberedTopUps {
		t.Errorf("generation 2's tombstone carries %d ids, want %d", n, hcv1.MaxRememberedTopUps)
	}
	// Every id generation 2's spec listed is remembered: its manifest
	// applied again applies none of them again.
	for _, id := range gen2.Status.AppliedTopUps {
		if !TopUpApplied(gen3, id) {
			t.Errorf("generation 3 forgot %s, which generation 2's spec listed", id)
		}
	}
	// The retired ids kept are the last in sort order.
	if !TopUpApplied(gen3, "gen1-1023") || TopUpApplied(gen3, "gen1-0000") {
		t.Errorf("generation 3 remembers gen1-1023: %v, gen1-0000: %v; want the last retired ids kept",
			TopUpApplied(gen3, "gen1-1023"), TopUpApplied(gen3, "gen1-0000"))
	}
}

// TestReopenTakesOverOnlyWhatFits: a tombstone of an earlier version may
// carry more ids than status.retiredTopUps holds: Reopen takes over the
// ids the new spec lists, then as many others as fit, and says how many
// it could not remember.
func TestReopenTakesOverOnlyWhatFits(t *testing.T) {
	var old []string
	for i := range 1536 {
		old = append(old, fmt.Sprintf("old-%04d", i))
	}
	a := openAccount("alice").TopUp("old-0000", 5).Unopened().Obj()
	a.UID = "new-uid"
	a.Status.RetiredTopUps = []string{"mine"}
	Reopen(a, Tombstone{UID: "old-uid", Balance: 7, TopUps: old}, at(time.Second))
	if n := len(a.Status.RetiredTopUps); n != hcv1.MaxRememberedTopUps {
		t.Errorf("retiredTopUps holds %d ids, want %d", n, hcv1.MaxRememberedTopUps)
	}
	if !slices.Equal(a.Status.AppliedTopUps, []string{"old-0000"}) {
		t.Errorf("appliedTopUps = %v, want the listed old-0000 taken over", a.Status.AppliedTopUps)
	}
	if !TopUpApplied(a, "mine") || !TopUpApplied(a, "old-1535") || TopUpApplied(a, "old-0001") {
		t.Error("want its own retired id and the last ids in sort order remembered, the first forgotten")
	}
	Refresh(a, at(time.Second))
	if a.Status.Balance != 7 {
		t.Errorf("balance %d, want the tombstone's 7 (old-0000 not applied again)", a.Status.Balance)
	}
	if msg := a.Status.Ledger[0].Message; !strings.Contains(msg, "512 of its removed ids not remembered") {
		t.Errorf("ledger says %q, want the ids not remembered counted", msg)
	}
}
