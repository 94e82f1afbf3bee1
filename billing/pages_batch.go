package billing

import (
	"errors"
	"fmt"
	"slices"
	"time"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// PageOutcome is what ReserveBatch did with one reservation.
type PageOutcome struct {
	// Page is where the reservation's entry is: 0 for status.servers, n
	// for page n (valid when Err is nil and Next is false).
	Page int32
	// Paid is what the account paid for it (now, or by an earlier attempt
	// of the same reservation).
	Paid int64
	// Err is its refusal (an *InsufficientError; ErrTooManyPages; an entry
	// a page cannot hold).
	Err error
	// Next says it was not placed: the page it goes to has a transfer in
	// this account write already (MaxReserveBatch reached), or
	// status.pending is full. It goes into the next account write, after
	// the pages of this one are written and confirmed.
	Next bool
}

// ReserveBatch places a batch of reservations that account pays for
// alone (no project pool) in one account write: in status.servers while
// it holds fewer than PageLimits.Inline entries (Take), then on its last
// page while that has room, then on new pages (ChoosePage), one
// ReservePage transaction per page, each committed on account (Commit).
// The caller writes the account (the commit point), then each page of
// status.pending (Apply), and answers a reservation only after its
// page's write.
//
// account must be completed first (no transfer pending: a page can take
// one transaction per account write, so a transfer already pending for a
// page would send its reservations to the next write). pages are the
// pages the caller has seen, completed, at least as new as account (read
// live after it, or written for it); page reads the others, live (a page
// from a cache may lag the account, and a transfer built on it would
// carry a seq the page has reached already). ReserveBatch adds the pages
// it reads to pages.
//
// A reservation already held (an earlier attempt of the same id whose
// answer was lost) takes nothing again: it is looked for in
// status.servers, in the pending transfers' new entries, and on every
// page in pages. Pages the batch has not read are not searched.
func ReserveBatch(account *hcv1.CreditAccount, pages map[int32]*hcv1.LedgerPage, page func(n int32) (*hcv1.LedgerPage, error),
	rs []PageReservation, now time.Time, l PageLimits) ([]PageOutcome, error) {
	l = l.orDefault()
	out := make([]PageOutcome, len(rs))
	var todo []int
	for i, r := range rs {
		if r.Wallet != account.Name || r.Project != "" {
			out[i].Err = ownPageEntry(account.Name, &hcv1.ServerCharge{ID: r.ID, Wallet: r.Wallet, Project: r.Project})
			continue
		}
		n, paid, held, err := findHeld(account, pages, r.ID)
		if err != nil {
			return nil, err
		}
		if held {
			out[i] = PageOutcome{Page: n, Paid: paid}
			continue
		}
		todo = append(todo, i)
	}
	for len(todo) > 0 {
		if len(account.Status.Pending) >= l.Pending {
			break
		}
		last, err := lastPageLen(account, pages, page)
		if err != nil {
			return nil, err
		}
		n, _ := ChoosePage(account, last, l)
		if n == 0 {
			// Inline room: the first reservation goes to status.servers.
			i := todo[0]
			todo = todo[1:]
			r := rs[i]
			paid, err := Take(account, r.Reservation, r.Need, r.Want, 0, now)
			out[i] = PageOutcome{Paid: paid, Err: err}
			continue
		}
		if pendingFor(account, n) >= 0 {
			break // the page's transaction of this write is full
		}
		p, err := pageOf(account, pages, page, n)
		if err != nil {
			return nil, err
		}
		batch := make([]PageReservation, len(todo))
		for j, i := range todo {
			batch[j] = rs[i]
		}
		tx, errs, err := ReservePage(account, p, batch, now, l)
		if errors.Is(err, ErrTooManyPages) {
			for _, i := range todo {
				out[i].Err = fmt.Errorf("account %s holds %d servers on its ledger pages: %w", account.Name, account.Status.PagedServers, err)
			}
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(tx.Transfer.Entries) > 0 {
			if err := Commit(account, tx); err != nil {
				return nil, err
			}
		}
		added := map[string]bool{}
		for _, d := range tx.Transfer.Entries {
			added[d.ID] = true
		}
		var again []int
		for j, i := range todo {
			switch e := errs[j]; {
			case e == nil:
				out[i] = PageOutcome{Page: n, Paid: tx.Taken[rs[i].ID]}
				if !added[rs[i].ID] {
					// Held already (an id twice in the batch): say where.
					if out[i].Page, _, _, err = findHeld(account, pages, rs[i].ID); err != nil {
						return nil, err
					}
				}
			case errors.Is(e, ErrPageFull):
				again = append(again, i) // the next page, in this write
			case errors.Is(e, ErrBatchFull):
				out[i].Next = true
			default:
				out[i].Err = e
			}
		}
		if len(again) == len(todo) && len(tx.Transfer.Entries) == 0 && last < l.PerPage {
			// Nothing placed and the page was not full: a page that
			// holds more than ChoosePage was told. Never loop.
			return nil, fmt.Errorf("page %s: full at %d entries, the account's view says %d", p.Name, len(p.Status.Servers), last)
		}
		todo = again
	}
	for _, i := range todo {
		out[i].Next = true
	}
	return out, nil
}

// lastPageLen is the number of entries of the account's last page, as
// PageView shows it (with the transfer of this write for it).
func lastPageLen(account *hcv1.CreditAccount, pages map[int32]*hcv1.LedgerPage, page func(int32) (*hcv1.LedgerPage, error)) (int, error) {
	n := account.Status.Pages
	if n == 0 {
		return 0, nil
	}
	p, err := pageOf(account, pages, page, n)
	if err != nil {
		return 0, err
	}
	view, err := PageView(account, p)
	if err != nil {
		return 0, err
	}
	return len(view.Status.Servers), nil
}

// pageOf is page n from pages, else read (and added to pages).
func pageOf(account *hcv1.CreditAccount, pages map[int32]*hcv1.LedgerPage, page func(int32) (*hcv1.LedgerPage, error), n int32) (*hcv1.LedgerPage, error) {
	if p := pages[n]; p != nil {
		return p, nil
	}
	p, err := page(n)
	if err != nil {
		return nil, err
	}
	if _, err := PageNumber(account.Name, p); err != nil {
		return nil, fmt.Errorf("reading page %d: %w", n, err)
	}
	if p.Name != PageName(account.Name, n) {
		return nil, fmt.Errorf("reading page %d of account %s: got page %q", n, account.Name, p.Name)
	}
	pages[n] = p
	return p, nil
}

// findHeld finds reservation id in status.servers, in the new entries of
// the pending transfers, and on pages (as PageView shows them): where it
// is and what it paid.
func findHeld(account *hcv1.CreditAccount, pages map[int32]*hcv1.LedgerPage, id string) (int32, int64, bool, error) {
	if i := FindServer(account, id); i >= 0 {
		return 0, account.Status.Servers[i].Paid, true, nil
	}
	for _, t := range account.Status.Pending {
		for _, d := range t.Entries {
			if d.Add != nil && d.ID == id {
				return t.Page, d.Add.Paid, true, nil
			}
		}
	}
	for n, p := range pages {
		view := p
		if pendingFor(account, n) >= 0 {
			var err error
			if view, err = PageView(account, p); err != nil {
				return 0, 0, false, err
			}
		}
		if j := slices.IndexFunc(view.Status.Servers, func(e hcv1.ServerCharge) bool { return e.ID == id }); j >= 0 {
			return n, view.Status.Servers[j].Paid, true, nil
		}
	}
	return 0, 0, false, nil
}
