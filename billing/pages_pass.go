package billing

import (
	"errors"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// The account controller's pass over an account's LedgerPages (pages.go):
// after Settle has settled status.servers (and refreshed the account,
// holding grants back while the pages catch up), SettlePages builds and
// commits one transaction per page with something to change, at most
// PageLimits.Pending of them per account write, then moves one batch of
// excess inline entries to a page (the migration). The caller writes the
// account (the commit point), then each page the pass committed a
// transfer for; the next round confirms them and goes on while More.

// PagesPass is what SettlePages committed on the account.
type PagesPass struct {
	// Committed are the pages whose transfer the pass committed on the
	// account (in status.pending): each is written after the account.
	Committed []int32
	// Result merges the pages' results: stops, notes, lags, requeue,
	// Waiting. The results of pages left to the next round are not in it.
	Result Result
	// More: pages or a move were left for the next round (the account
	// holds PageLimits.Pending transfers, or one for the page).
	More bool
	// Spent is what the servers whose page entries were dropped after
	// their end paid (PageTransaction.Spent).
	Spent int64
}

// SettlePages settles every page of account (pages by number, as
// completed: Store.Complete or Complete first; a missing one is empty)
// up to now with SettlePage and commits each transaction that changes
// something, in page order, while status.pending has room; then it moves
// the oldest inline entries beyond PageLimits.Inline to the last page with
// room (MovePage, one move pending at a time). Call Settle on the account
// first. On an error nothing the caller must write is lost: the account
// is written only by the caller, and a failed pass is not written.
func SettlePages(account *hcv1.CreditAccount, pages map[int32]*hcv1.LedgerPage, pods func(hcv1.ServerCharge) PodObservation,
	now time.Time, o Options, l PageLimits) (PagesPass, error) {
	l = l.orDefault()
	p := PagesPass{Result: Result{ChangedProjects: map[string]bool{}}}
	page := func(n int32) (*hcv1.LedgerPage, error) {
		if pg := pages[n]; pg != nil {
			return pg, nil
		}
		return NewPage(account, n)
	}
	first, err := firstHolders(account, page)
	if err != nil {
		return p, err
	}
	for n := int32(1); n <= account.Status.Pages; n++ {
		if pendingFor(account, n) >= 0 || len(account.Status.Pending) >= l.Pending {
			p.More = true
			continue
		}
		pg, err := page(n)
		if err != nil {
			return p, err
		}
		t, err := settlePage(account, pg, pods, now, o, l, func(e *hcv1.ServerCharge) bool {
			return slices.ContainsFunc(entryKeys(nil, []hcv1.ServerCharge{*e}), func(k string) bool {
				at, held := first[k]
				return held && at < n
			})
		})
		if err != nil {
			return p, err
		}
		p.Result.Merge(t.Result)
		if len(t.Transfer.Entries) == 0 {
			continue
		}
		if err := Commit(account, t); err != nil {
			return p, err
		}
		p.Committed = append(p.Committed, n)
		p.Spent += t.Spent()
	}
	moved, err := movePass(account, page, now, l)
	if err != nil {
		return p, err
	}
	if moved > 0 {
		p.Committed = append(p.Committed, moved)
		p.More = true
	} else if moved < 0 {
		p.More = true
	}
	if due := earliestPageDue(account); due != nil {
		p.Result.requeueAt(now, *due)
	}
	return p, nil
}

// firstHolders maps every ledger key (entryKeys: reservation id, bound pod
// UID) of the account's ledger to where it is held first: 0 for
// status.servers, else the lowest page number (as PageView shows the
// pages). A key on a later page is held twice.
func firstHolders(account *hcv1.CreditAccount, page func(int32) (*hcv1.LedgerPage, error)) (map[string]int32, error) {
	first := map[string]int32{}
	for _, k := range entryKeys(nil, account.Status.Servers) {
		first[k] = 0
	}
	for n := int32(1); n <= account.Status.Pages; n++ {
		pg, err := page(n)
		if err != nil {
			return nil, err
		}
		view, err := PageView(account, pg)
		if err != nil {
			return nil, err
		}
		for _, k := range entryKeys(nil, view.Status.Servers) {
			if _, held := first[k]; !held {
				first[k] = n
			}
		}
	}
	return first, nil
}

// movePass commits the migration's next move: the oldest inline entries
// beyond PageLimits.Inline to the last page, or a new one when it is full.
// It returns the page moved to, 0 when nothing is to move, -1 when a move
// waits for the next round (a transfer pending for the last page, or
// status.pending full). An account at hcv1.MaxPages full pages keeps its
// entries inline.
func movePass(account *hcv1.CreditAccount, page func(int32) (*hcv1.LedgerPage, error), now time.Time, l PageLimits) (int32, error) {
	if len(account.Status.Servers) <= l.Inline {
		return 0, nil
	}
	movable := slices.ContainsFunc(account.Status.Servers, func(e hcv1.ServerCharge) bool { return ownPageEntry(account.Name, &e) == nil })
	if !movable {
		return 0, nil
	}
	n := max(account.Status.Pages, 1)
	if slices.ContainsFunc(account.Status.Pending, func(t hcv1.PageTransfer) bool { return t.Kind == hcv1.TransferMove }) ||
		len(account.Status.Pending) >= l.Pending || pendingFor(account, n) >= 0 {
		return -1, nil
	}
	pg, err := page(n)
	if err != nil {
		return 0, err
	}
	if len(pg.Status.Servers) >= l.PerPage && n == account.Status.Pages {
		if n++; n > hcv1.MaxPages {
			return 0, nil
		}
		if pg, err = NewPage(account, n); err != nil {
			return 0, err
		}
	}
	t, err := MovePage(account, pg, now, l)
	if errors.Is(err, ErrTooManyPages) || t == nil && err == nil {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if err := Commit(account, t); err != nil {
		return 0, err
	}
	return n, nil
}

// earliestPageDue is the earliest of the pages' unpaid boundaries
// (status.pagedDue), nil when no page runs a priced server.
func earliestPageDue(a *hcv1.CreditAccount) *time.Time {
	var due *time.Time
	for _, d := range a.Status.PagedDue {
		if at := d.At.Time; due == nil || at.Before(*due) {
			due = &at
		}
	}
	return due
}

// Merge adds the outcome of another settle of the same account (a page's)
// to r: its stops, notes, lags and unbillable pods, the earlier requeue,
// Waiting, and the changes it reports.
func (r *Result) Merge(o Result) {
	r.WalletChanged = r.WalletChanged || o.WalletChanged
	for name, changed := range o.ChangedProjects {
		if changed {
			if r.ChangedProjects == nil {
				r.ChangedProjects = map[string]bool{}
			}
			r.ChangedProjects[name] = true
		}
	}
	r.Stops = append(r.Stops, o.Stops...)
	r.Notes = append(r.Notes, o.Notes...)
	r.Lags = append(r.Lags, o.Lags...)
	r.Unbillable = append(r.Unbillable, o.Unbillable...)
	if o.RequeueAfter > 0 && (r.RequeueAfter == 0 || o.RequeueAfter < r.RequeueAfter) {
		r.RequeueAfter = o.RequeueAfter
	}
	r.Waiting = r.Waiting || o.Waiting
}

// PageEntries are the entries of the account's pages as every reader
// takes them (PageView: with the pending transfers applied), in page
// order. pages holds the account's pages by number; a missing one is empty.
func PageEntries(account *hcv1.CreditAccount, pages map[int32]*hcv1.LedgerPage) ([]hcv1.ServerCharge, error) {
	var out []hcv1.ServerCharge
	for n := int32(1); n <= account.Status.Pages; n++ {
		page := pages[n]
		if page == nil {
			var err error
			if page, err = NewPage(account, n); err != nil {
				return nil, err
			}
		}
		view, err := PageView(account, page)
		if err != nil {
			return nil, err
		}
		out = append(out, view.Status.Servers...)
	}
	return out, nil
}

// PageLedgerKeys are the keys under which a page holds servers, as
// LedgerKeys for an account: every entry's id and bound pod UID.
func PageLedgerKeys(p *hcv1.LedgerPage) []string {
	return entryKeys(nil, p.Status.Servers)
}

// entryKeys appends the ledger keys of entries to keys.
func entryKeys(keys []string, entries []hcv1.ServerCharge) []string {
	for _, e := range entries {
		keys = append(keys, e.ID)
		if e.PodUID != "" {
			keys = append(keys, PodUIDKey(e.PodUID))
		}
	}
	return keys
}

// EntryPodsOf is EntryPods for entries held elsewhere than in the
// account's status.servers (its pages): the pod of each of account's own
// entries, by the entry's binding, keyed by entry id.
func EntryPodsOf(account string, entries []hcv1.ServerCharge, pods []*corev1.Pod) map[string]*corev1.Pod {
	return entryPods(account, entries, pods)
}
