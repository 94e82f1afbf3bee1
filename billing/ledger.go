package billing

import (
	"fmt"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// LedgerLength bounds status.ledger: only the most recent movements are
// kept. Every entry is re-sent and re-validated by the API server on every
// status write (measured: ~0.15 ms of kube-apiserver CPU per entry and
// write), so the ledger is short and merges runs of the same movement.
const LedgerLength = 10

// InitialBalance is the balance a new account opens with.
func InitialBalance(spec *hcv1.CreditAccountSpec) int64 {
	if spec.InitialBalance != nil {
		return *spec.InitialBalance
	}
	return spec.Cap
}

// Refresh brings an account's ledger up to now: it opens a new account,
// applies the grants that fell due and the top-ups and adjustments not
// applied yet. Every
// writer calls it before moving credits, so the result only depends on the
// spec, the stored status and the time. It reports whether the status
// changed.
func Refresh(a *hcv1.CreditAccount, now time.Time) bool {
	opened := open(a, now)
	granted := applyGrants(a, now)
	toppedUp := applyTopUps(a, now)
	return opened || granted || toppedUp
}

// RefreshForAdmission is Refresh for the webhook. It opens the ledger and
// applies top-ups as Refresh does, but applies the grants that fell due only
// when no charge is outstanding on the account. While a boundary of a
// running server is unpaid (the operator is down or behind), the operator's
// catch-up must interleave those grants with the charges in time order:
// applied all at once now, on a wallet at its cap, they would be capped
// away, and the charges then taken from what is left. A spawn in that
// window sees the balance without the pending grants (never more than the
// account will have).
func RefreshForAdmission(a *hcv1.CreditAccount, now time.Time) bool {
	if !ChargesOutstanding(a, now) {
		return Refresh(a, now)
	}
	opened := open(a, now)
	toppedUp := applyTopUps(a, now)
	return opened || toppedUp
}

// ChargesOutstanding reports whether a server billed to (or co-funded by)
// the account has a boundary at or before now that is not paid yet: one of
// status.servers, or one on a page (status.pagedDue, kept by Commit).
func ChargesOutstanding(a *hcv1.CreditAccount, now time.Time) bool {
	for _, d := range a.Status.PagedDue {
		if !now.Before(d.At.Time) {
			return true
		}
	}
	_, due := countEntries(a.Status.Servers)
	return due != nil && !now.Before(*due)
}

func open(a *hcv1.CreditAccount, now time.Time) bool {
	if a.Status.OpenedAt != nil {
		return false
	}
	openWith(a, now, InitialBalance(&a.Spec), "ledger opened")
	return true
}

// openWith opens the ledger with balance.
func openWith(a *hcv1.CreditAccount, now time.Time, balance int64, msg string) {
	t := metav1.NewTime(now)
	a.Status.OpenedAt = &t
	a.Status.Balance = balance
	// The grant schedule is anchored at the account's creation.
	anchor := a.CreationTimestamp
	if anchor.IsZero() || anchor.After(now) {
		anchor = t
	}
	a.Status.GrantedThrough = &anchor
	appendLedger(a, now, hcv1.LedgerOpened, a.Status.Balance, "", msg)
}

// applyGrants adds amount for every whole grant interval that passed since
// status.grantedThrough, up to the cap, and moves grantedThrough on by whole
// intervals so the schedule never drifts, also while the balance sits at the
// cap. It reports whether the status changed.
func applyGrants(a *hcv1.CreditAccount, now time.Time) bool {
	g := a.Spec.Grant
	if g == nil || g.Interval.Duration <= 0 || a.Status.GrantedThrough == nil {
		return false
	}
	last := a.Status.GrantedThrough.Time
	if now.Before(last) {
		return false
	}
	slots := int64(now.Sub(last) / g.Interval.Duration)
	if slots <= 0 {
		return false
	}
	next := metav1.NewTime(Boundary(last, slots, g.Interval.Duration))
	a.Status.GrantedThrough = &next
	before := a.Status.Balance
	if before >= a.Spec.Cap {
		return true
	}
	// Signed: a grant on a negative balance (a re-created account that
	// spent more than its tombstone held) pays the debt off first.
	after := min(addSigned(before, mulSat(slots, g.Amount)), a.Spec.Cap)
	added := after - before
	a.Status.Balance = after
	a.Status.TotalGranted = addSat(a.Status.TotalGranted, added)
	appendMerged(a, now, hcv1.LedgerGrant, added, "", slots, func(n, total int64) string {
		if n == 1 {
			return fmt.Sprintf("grant of %d", total)
		}
		return fmt.Sprintf("%d grants, %d credits", n, total)
	})
	return true
}

// NextGrant returns when the next grant is due and how much it will add (0
// when the account is at its cap or has no grant).
func NextGrant(a *hcv1.CreditAccount, now time.Time) (at time.Time, amount int64, ok bool) {
	g := a.Spec.Grant
	if g == nil || g.Interval.Duration <= 0 {
		return time.Time{}, 0, false
	}
	last := now
	if a.Status.GrantedThrough != nil {
		last = a.Status.GrantedThrough.Time
	}
	at = NextBoundary(last, now, g.Interval.Duration)
	amount = max(0, min(g.Amount, a.Spec.Cap-a.Status.Balance))
	return at, amount, true
}

// applyTopUps applies the top-ups and adjustments of the spec not applied
// yet, and keeps the record of applied ids bounded (retireTopUps). Both
// are one-off movements named by an id and share one bookkeeping
// (status.appliedTopUps, status.retiredTopUps): an id is applied exactly
// once, ever, whichever list names it. While the account may still take
// over a tombstone (MayReopen), what each one really moved is recorded in
// status.appliedAmounts for Reopen; afterwards that record is dropped. It
// reports a change.
func applyTopUps(a *hcv1.CreditAccount, now time.Time) bool {
	changed := retireTopUps(a)
	if a.Status.AppliedAmounts != nil && !MayReopen(a) {
		a.Status.AppliedAmounts = nil
		changed = true
	}
	for _, t := range a.Spec.TopUps {
		apply, marked := markApplied(a, t.ID)
		changed = changed || marked
		if !apply {
			continue
		}
		before := a.Status.Balance
		// Signed: a top-up on a negative balance pays the debt off first.
		a.Status.Balance = addSigned(before, t.Amount)
		added := a.Status.Balance - before
		a.Status.TotalToppedUp = addSat(a.Status.TotalToppedUp, added)
		msg := "top-up " + t.ID
		if added != t.Amount {
			msg = fmt.Sprintf("top-up %s of %d, %d added (a balance holds at most %d)", t.ID, t.Amount, added, hcv1.MaxCredits)
		}
		if t.Reason != "" {
			msg += ": " + t.Reason
		}
		appendLedger(a, now, hcv1.LedgerTopUp, added, t.ID, msg)
		recordApplied(a, t.ID, hcv1.LedgerTopUp, added)
	}
	for _, j := range a.Spec.Adjustments {
		apply, marked := markApplied(a, j.ID)
		changed = changed || marked
		if apply {
			applyAdjustment(a, j, now)
		}
	}
	return changed
}

// applyAdjustment moves the balance by the adjustment's amount, never
// below 0: a negative adjustment larger than the balance takes the balance
// (what was reserved or charged for running servers is not taken back; a
// server whose next period cannot be paid is stopped at that boundary),
// and takes nothing from a negative balance. A positive one on a negative
// balance pays the debt off first, and saturates at hcv1.MaxCredits. The
// ledger, totalAdjusted and status.appliedAmounts record the amount really
// applied.
func applyAdjustment(a *hcv1.CreditAccount, j hcv1.Adjustment, now time.Time) {
	before := a.Status.Balance
	applied := j.Amount
	if j.Amount < 0 && -j.Amount > before {
		applied = -max(before, 0)
	}
	a.Status.Balance = addSigned(before, applied)
	applied = a.Status.Balance - before
	msg := fmt.Sprintf("adjustment %s: %s", j.ID, j.Reason)
	switch {
	case applied != j.Amount && j.Amount < 0:
		msg = fmt.Sprintf("adjustment %s of %d clamped to %d (the balance never goes below 0): %s", j.ID, j.Amount, applied, j.Reason)
	case applied != j.Amount:
		msg = fmt.Sprintf("adjustment %s of %d clamped to %d (a balance holds at most %d): %s", j.ID, j.Amount, applied, hcv1.MaxCredits, j.Reason)
	}
	a.Status.TotalAdjusted = addSigned(a.Status.TotalAdjusted, applied)
	appendLedger(a, now, hcv1.LedgerAdjust, applied, j.ID, msg)
	recordApplied(a, j.ID, hcv1.LedgerAdjust, applied)
}

// MayReopen reports whether the account may still take over the tombstone
// of a deleted account of the same name (Reopen): it is not being
// deleted, the operator has not claimed it (hcv1.FinalizerLedger) and it
// has not taken one over.
func MayReopen(a *hcv1.CreditAccount) bool {
	return a.DeletionTimestamp == nil && a.Status.ReopenedFrom == "" && !slices.Contains(a.Finalizers, hcv1.FinalizerLedger)
}

// recordApplied records in status.appliedAmounts what the one-off id
// really moved, while Reopen may still need it (MayReopen). Its ids are a
// subset of appliedTopUps and retiredTopUps, so the record is bounded by
// theirs.
func recordApplied(a *hcv1.CreditAccount, id string, kind hcv1.LedgerEntryKind, amount int64) {
	if !MayReopen(a) {
		return
	}
	a.Status.AppliedAmounts = append(a.Status.AppliedAmounts, hcv1.AppliedAmount{ID: id, Kind: kind, Amount: amount})
}

// markApplied records the one-off id as applied. apply says it was never
// applied before and must be applied now; an id retired earlier (removed
// from the spec and added again) moves back to status.appliedTopUps without
// being applied again. changed reports a change of the bookkeeping.
func markApplied(a *hcv1.CreditAccount, id string) (apply, changed bool) {
	if slices.Contains(a.Status.AppliedTopUps, id) {
		return false, false
	}
	a.Status.AppliedTopUps = append(a.Status.AppliedTopUps, id)
	if i, retired := slices.BinarySearch(a.Status.RetiredTopUps, id); retired {
		// Removed and added again: applied once already, never again.
		a.Status.RetiredTopUps = slices.Delete(a.Status.RetiredTopUps, i, i+1)
		return false, true
	}
	return true, true
}

// oneOffIDs are the ids the spec lists in spec.topUps and spec.adjustments.
func oneOffIDs(spec *hcv1.CreditAccountSpec) map[string]bool {
	ids := make(map[string]bool, len(spec.TopUps)+len(spec.Adjustments))
	for _, t := range spec.TopUps {
		ids[t.ID] = true
	}
	for _, j := range spec.Adjustments {
		ids[j.ID] = true
	}
	return ids
}

// retireTopUps moves the applied ids that the spec (spec.topUps and
// spec.adjustments) no longer lists to status.retiredTopUps (sorted), so
// status.appliedTopUps stays as long as the spec's lists (at most 512) and
// the ids that can never be applied again are kept compactly, bounded by
// the CRD (hcv1.MaxRetiredTopUps retired by spec changes). Nothing is ever
// forgotten: forgetting an id would apply it again when re-added. It
// reports a change.
func retireTopUps(a *hcv1.CreditAccount) bool {
	if len(a.Status.AppliedTopUps) == 0 {
		return false
	}
	inSpec := oneOffIDs(&a.Spec)
	kept := a.Status.AppliedTopUps[:0:0]
	for _, id := range a.Status.AppliedTopUps {
		if inSpec[id] {
			kept = append(kept, id)
			continue
		}
		if i, found := slices.BinarySearch(a.Status.RetiredTopUps, id); !found {
			a.Status.RetiredTopUps = slices.Insert(a.Status.RetiredTopUps, i, id)
		}
	}
	if len(kept) == len(a.Status.AppliedTopUps) {
		return false
	}
	if len(kept) == 0 {
		kept = nil
	}
	a.Status.AppliedTopUps = kept
	return true
}

// TopUpApplied reports whether the account has applied the top-up or
// adjustment id (it is listed in the spec or was removed from it).
func TopUpApplied(a *hcv1.CreditAccount, id string) bool {
	_, retired := slices.BinarySearch(a.Status.RetiredTopUps, id)
	return retired || slices.Contains(a.Status.AppliedTopUps, id)
}

func appendLedger(a *hcv1.CreditAccount, now time.Time, kind hcv1.LedgerEntryKind, amount int64, subject, msg string) {
	a.Status.Ledger = append(a.Status.Ledger, hcv1.LedgerEntry{
		Time: metav1.NewTime(now), Kind: kind, Amount: amount,
		Balance: a.Status.Balance, Subject: subject, Message: msg,
	})
	if n := len(a.Status.Ledger); n > LedgerLength {
		a.Status.Ledger = append([]hcv1.LedgerEntry(nil), a.Status.Ledger[n-LedgerLength:]...)
	}
}

// appendMerged records a movement of count units (periods, grants); when
// the newest entry is of the same kind and subject, the movement is added
// to it instead of taking a new line. msg renders the entry from its count
// and total amount.
func appendMerged(a *hcv1.CreditAccount, now time.Time, kind hcv1.LedgerEntryKind, amount int64, subject string, count int64, msg func(count, amount int64) string) {
	count = max(count, 1)
	if n := len(a.Status.Ledger); n > 0 {
		if last := &a.Status.Ledger[n-1]; last.Kind == kind && last.Subject == subject {
			total := addSat(max(last.Count, 1), count)
			last.Time, last.Amount, last.Balance = metav1.NewTime(now), addSatSigned(last.Amount, amount), a.Status.Balance
			last.Count, last.Message = total, msg(total, last.Amount)
			return
		}
	}
	appendLedger(a, now, kind, amount, subject, msg(count, amount))
	if count > 1 {
		a.Status.Ledger[len(a.Status.Ledger)-1].Count = count
	}
}

// FindServer returns the index of the server entry with the given
// reservation id, or -1.
func FindServer(a *hcv1.CreditAccount, id string) int {
	for i := range a.Status.Servers {
		if a.Status.Servers[i].ID == id {
			return i
		}
	}
	return -1
}
