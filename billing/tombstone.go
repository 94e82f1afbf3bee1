package billing

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/types"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// Tombstone is what a deleted account leaves for an account created again
// under its name: the balance it ended with and every top-up id it applied.
// Without it a re-created account would open with spec.initialBalance and
// apply every top-up in its spec again.
type Tombstone struct {
	// UID is the deleted account's UID.
	UID types.UID
	// Balance is the deleted account's balance when it was released.
	Balance int64
	// TopUps are the ids of every top-up and adjustment it applied, sorted.
	TopUps []string
	// DeletedAt is when it was released (zero: unknown).
	DeletedAt time.Time
	// Forced: it was released by force (hubcredits.io/force-delete) with
	// servers still billed.
	Forced bool
}

// tombstoneJSON is a tombstone as one ConfigMap value (EncodeTombstone).
type tombstoneJSON struct {
	UID       string   `json:"uid"`
	Balance   *int64   `json:"balance"`
	TopUps    []string `json:"topUps,omitempty"`
	DeletedAt string   `json:"deletedAt,omitempty"`
	Forced    bool     `json:"forced,omitempty"`
}

// EncodeTombstone is the tombstone as one compact value (JSON on one
// line: uid, balance, the applied and retired top-up and adjustment ids, when it was
// deleted and whether by force), as kept under the account's name in the
// tombstone ConfigMap.
func EncodeTombstone(t Tombstone) string {
	v := tombstoneJSON{UID: string(t.UID), Balance: &t.Balance, TopUps: t.TopUps, Forced: t.Forced}
	if !t.DeletedAt.IsZero() {
		v.DeletedAt = t.DeletedAt.UTC().Format(time.RFC3339)
	}
	b, err := json.Marshal(v)
	if err != nil { // strings and numbers only: cannot fail
		panic(err)
	}
	return string(b)
}

// DecodeTombstone reads a value EncodeTombstone wrote. A value without a
// uid or a balance, or that is not such JSON, is an error: an account is
// never opened from a tombstone that cannot be read (nor as new).
func DecodeTombstone(s string) (Tombstone, error) {
	var v tombstoneJSON
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return Tombstone{}, err
	}
	if v.UID == "" {
		return Tombstone{}, errors.New("no uid")
	}
	if v.Balance == nil {
		return Tombstone{}, errors.New("no balance")
	}
	t := Tombstone{UID: types.UID(v.UID), Balance: *v.Balance, TopUps: v.TopUps, Forced: v.Forced}
	if v.DeletedAt != "" {
		at, err := time.Parse(time.RFC3339, v.DeletedAt)
		if err != nil {
			return Tombstone{}, fmt.Errorf("deletedAt: %w", err)
		}
		t.DeletedAt = at
	}
	return t, nil
}

// TombstoneOf is the tombstone a deleted account leaves. It carries at
// most hcv1.MaxRememberedTopUps ids, so that an account created again
// under its name can take them all over (status.retiredTopUps): every id
// its spec still listed (at most 512: the likeliest to be listed again,
// by the same manifest applied again), then its retired ids, the last in
// sort order first (rememberFirst). The ids left out, only along a chain
// of re-creations that removed more than 1024 ids in all, are the
// earliest-sorted retired ones: listed again, one would be applied again.
func TombstoneOf(a *hcv1.CreditAccount) Tombstone {
	ids := slices.Clone(a.Status.AppliedTopUps)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	var retired []string
	for _, id := range a.Status.RetiredTopUps {
		if _, applied := slices.BinarySearch(ids, id); !applied {
			retired = append(retired, id)
		}
	}
	ids = append(ids, rememberFirst(retired, hcv1.MaxRememberedTopUps-len(ids))...)
	slices.Sort(ids)
	return Tombstone{UID: a.UID, Balance: a.Status.Balance, TopUps: slices.Compact(ids)}
}

// rememberFirst keeps at most n of the sorted retired ids: the last in
// sort order (ids named by date or sequence sort the newest last).
func rememberFirst(ids []string, n int) []string {
	n = max(n, 0)
	if len(ids) <= n {
		return ids
	}
	return ids[len(ids)-n:]
}

// Reopen carries a tombstone over to an account created again under the
// deleted one's name. An account not opened yet opens with the tombstone's
// balance. One already opened (the webhook opens an account on its first
// spawn, possibly before the operator has read the tombstone) is corrected:
// its opening balance is replaced by the tombstone's, and the top-ups it
// applied that the deleted account had applied are taken back. Either way
// the tombstone's ids are recorded as applied, so none is applied again,
// and status.reopenedFrom records the tombstone, so it is taken over once.
// The ledger keeps its identity: opening + granted + toppedUp + adjusted −
// charged + refunded = balance, the opening being the tombstone's balance.
// It reports a change.
func Reopen(a *hcv1.CreditAccount, t Tombstone, now time.Time) bool {
	if a.Status.ReopenedFrom != "" || t.UID == "" || t.UID == a.UID {
		return false
	}
	inSpec := oneOffIDs(&a.Spec)
	var reToppedUp, reAdjusted int64
	var ids, retire []string
	for _, id := range t.TopUps {
		if TopUpApplied(a, id) {
			kind, amount := appliedAmount(a, id)
			if kind == hcv1.LedgerAdjust {
				reAdjusted = addSigned(reAdjusted, amount)
			} else {
				reToppedUp = addSat(reToppedUp, amount)
			}
			ids = append(ids, id)
			continue
		}
		if inSpec[id] {
			a.Status.AppliedTopUps = append(a.Status.AppliedTopUps, id)
		} else {
			retire = append(retire, id)
		}
	}
	// Only as many as status.retiredTopUps holds (a tombstone of an
	// earlier version may carry more than TombstoneOf now writes).
	slices.Sort(retire)
	kept := rememberFirst(retire, hcv1.MaxRememberedTopUps-len(a.Status.RetiredTopUps))
	forgotten := len(retire) - len(kept)
	for _, id := range kept {
		if i, found := slices.BinarySearch(a.Status.RetiredTopUps, id); !found {
			a.Status.RetiredTopUps = slices.Insert(a.Status.RetiredTopUps, i, id)
		}
	}
	a.Status.ReopenedFrom = string(t.UID)
	a.Status.AppliedAmounts = nil // needed no more (MayReopen)
	var note string
	if forgotten > 0 {
		note = fmt.Sprintf("; %d of its removed ids not remembered (at most %d are)", forgotten, hcv1.MaxRememberedTopUps)
	}
	if a.Status.OpenedAt == nil {
		openWith(a, now, t.Balance, fmt.Sprintf("ledger reopened with the balance of the deleted account %s%s", a.Name, note))
		return true
	}
	st := &a.Status
	opening := st.Balance - st.TotalGranted - st.TotalToppedUp - st.TotalAdjusted + st.TotalCharged - st.TotalRefunded
	reToppedUp = min(reToppedUp, st.TotalToppedUp)
	delta := t.Balance - opening - reToppedUp - reAdjusted
	st.Balance += delta
	st.TotalToppedUp -= reToppedUp
	st.TotalAdjusted -= reAdjusted
	msg := fmt.Sprintf("reopened with the balance of the deleted account %s (%d instead of %d)", a.Name, t.Balance, opening)
	if len(ids) > 0 {
		msg += fmt.Sprintf("; top-ups and adjustments it had applied taken back: %v", ids)
	}
	msg += note
	appendLedger(a, now, hcv1.LedgerOpened, delta, "", msg)
	return true
}

// appliedAmount is what the applied top-up or adjustment id really moved
// and which it was, as status.appliedAmounts recorded it when it was
// applied (an adjustment may have been clamped, a movement saturated).
// Every id this version applies before Reopen is recorded there; only an
// account opened by an earlier version (which kept no record) falls back
// to the ledger's entry, else the spec's amount (0 when neither has it).
func appliedAmount(a *hcv1.CreditAccount, id string) (hcv1.LedgerEntryKind, int64) {
	for _, r := range a.Status.AppliedAmounts {
		if r.ID == id {
			return r.Kind, r.Amount
		}
	}
	for _, l := range a.Status.Ledger {
		if (l.Kind == hcv1.LedgerTopUp || l.Kind == hcv1.LedgerAdjust) && l.Subject == id {
			return l.Kind, l.Amount
		}
	}
	for _, t := range a.Spec.TopUps {
		if t.ID == id {
			return hcv1.LedgerTopUp, t.Amount
		}
	}
	for _, j := range a.Spec.Adjustments {
		if j.ID == id {
			return hcv1.LedgerAdjust, j.Amount
		}
	}
	return hcv1.LedgerTopUp, 0
}
