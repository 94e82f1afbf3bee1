package billing

// LedgerPages: per-server billing state out of an account's status (issue
// 14, target P6; design in docs/benchmarks.md, "P6 design"). An account
// keeps at most PageLimits.Inline entries in status.servers ("page 0");
// more go to LedgerPages <account>-1, -2, ..., PageLimits.PerPage each.
// Money moves on the account, entries on the page. One transaction on one
// page:
//
//  1. Read the account and the page; Complete(account, page) first (a
//     transaction of an earlier writer that is committed and not applied
//     is applied now: write the page, then Confirm).
//  2. Build the transaction from the page's entries: ReservePage (webhook,
//     a batch of reservations), SettlePage (controller: charge, refund,
//     stop, end — Settle's per-server rules, settleEntries, on the page's
//     entries), MovePage (migration of an account holding more than
//     Inline entries).
//  3. Commit(account, tx) and write the account with its resourceVersion:
//     the commit point. The credits moved, the ledger line is appended and
//     status.pending holds the transfer (seq = page.seq + 1). A failed
//     write changes nothing.
//  4. Apply(page, transfer) and write the page with its resourceVersion.
//     Apply is idempotent (a page at seq ≥ transfer.seq is left alone), so
//     a stale replica or a retry never applies a transfer twice.
//  5. Confirm(account, page) in the account's next write drops the
//     transfer from status.pending.
//
// A crash between any two writes leaves a state the next reader completes
// (step 1). A page holds the only copy of its entries: it carries the
// finalizer hcv1.FinalizerLedger until its account is released (a
// foreground deletion of the account deletes its pages first), so its seq
// never goes back. A server held twice (the same reservation or pod inline
// and on a page, or on two pages: a retried admission that could not see
// the page of its first attempt) is returned on the later page
// (SettlePages, EventHeldTwice). Conservation: balance + Held (the paid of status.servers and
// of every page as it is once its pending transfer is applied) moves only
// by credits added (Refresh) and by credits of ended servers whose entries
// are dropped (PageTransaction.Spent); CheckPaged checks the account's
// aggregates against its pages: pagedServers, pagedPaid, and the counters
// pagedRunning, pagedCost, pagedStopping and pagedDue (the earliest unpaid
// boundary of each page). Commit keeps all of them from the transaction's
// page before and after it (count): never from pages the account write
// does not hold.
//
// Counters and catch-up. updateCounters (runningServers, Low, Exhausted;
// UpdateCounters after the commits of a pass) adds the counters to
// status.servers' entries; ChargesOutstanding (RefreshForAdmission) reads
// pagedDue. After an outage a grant is applied after every charge due
// before its slot, on whichever page (pagedLimit, settle.go): grants wait
// for the pages' earliest unpaid boundary, charges (status.servers and
// SettlePage) for the next grant slot, refunds for a pass without a bound;
// Result.Waiting asks for the next round at once. A pass goes one grant
// interval at a time; between two slots the order of the charges does not
// change the balance, so the result equals Settle's over the same servers
// in status.servers (FuzzPages compares them) except where Settle's
// catchUp leaves a server to its main pass, after every grant: one that
// runs short (a page stops it in its grant interval), one whose start or
// end the controller first sees after the outage (the pages' rounds
// charge it in time order, and return periods charged after an end at
// once: the entry holds the bound back until its end is marked). A top-up
// is applied at the start of a catch-up, before the grants (as catchUp's
// first Refresh does), so a top-up seen while pages catch up can leave
// less of the grants under the cap than the same pass without pages.
//
// STATUS (2026-11-27, merged; --ledger-pages on by default):
//   - this file: the pure protocol, table-tested (pages_test.go,
//     pages_counters_test.go) and fuzzed (FuzzPages: a crash after every
//     commit and every page apply, stale replicas, moves, compared with a
//     run without crashes and with the same servers inline);
//     pages_pass.go: the controller's pass (SettlePages, the held-twice
//     net, the migration by MovePage).
//   - wired: the webhook's Reserver (ReserveBatch: rounds of one account
//     write, a spawn answered after its page write), the account
//     controller's pass, internal/ledgerpages.Store (Page, Pages, Write,
//     Complete, Release; pages carry hcv1.FinalizerLedger), the index of
//     ledger keys on pages (adoption, pod events), UsageRecords of page
//     entries, the users' view (kubectl credits status, the hub glue),
//     RBAC. Misuse fails closed (MissingPage, ErrForeignPage,
//     ErrPagesEdited: a LedgerPageInconsistent Warning, no credit moves
//     until the repair).
//   - tested against the API server: test/integration's page tests and
//     test/reliability's TestCrashAnywhereOnPages,
//     TestAPIServerRestartOnPages, TestTwoWebhookReplicasRaceOnPages and
//     TestMisuseOnPages; the bench's pool scenario (docs/benchmarks.md).
//   - limits: page entries are servers an account pays for alone (a pool
//     for a course); a project pool's records of the wallets it co-funds
//     stay in status.servers. An edit of a page that keeps every aggregate
//     the account holds is not seen (a per-page digest would be needed).
//     A page lost for good (its finalizer taken off by hand) stops its
//     account until it is restored.

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// PageLimits bound where entries go.
type PageLimits struct {
	// Inline is how many entries status.servers holds before new ones go
	// to pages.
	Inline int
	// PerPage is how many entries a page holds.
	PerPage int
	// Pending is how many transfers status.pending holds.
	Pending int
}

// DefaultPageLimits are the API's bounds.
var DefaultPageLimits = PageLimits{Inline: hcv1.MaxInlineServers, PerPage: hcv1.MaxPageServers, Pending: hcv1.MaxPendingTransfers}

// orDefault is l within the API's bounds (DefaultPageLimits when unset).
func (l PageLimits) orDefault() PageLimits {
	if l == (PageLimits{}) {
		return DefaultPageLimits
	}
	l.Inline = min(max(l.Inline, 0), hcv1.MaxInlineServers)
	l.PerPage = min(max(l.PerPage, 1), hcv1.MaxPageServers)
	l.Pending = min(max(l.Pending, 1), hcv1.MaxPendingTransfers)
	return l
}

// Errors of the page protocol. Each means the caller read an inconsistent
// pair of objects or skipped a step; it re-reads and starts over.
var (
	// ErrPendingPage: the account holds a transfer for the page that is
	// not confirmed yet (Complete and Confirm first).
	ErrPendingPage = errors.New("the account has an unconfirmed transfer for this page")
	// ErrPendingFull: status.pending holds PageLimits.Pending transfers.
	ErrPendingFull = errors.New("the account has the most unconfirmed page transfers it may hold")
	// ErrStaleTransaction: the account changed since the transaction was
	// built from it.
	ErrStaleTransaction = errors.New("the account changed since the page transaction was built")
	// ErrPageGap: a transfer is more than one transaction ahead of its
	// page (a page that went back: deleted and created again).
	ErrPageGap = errors.New("the page is more than one transaction behind the account's transfer")
	// ErrTooManyPages: the account has hcv1.MaxPages pages already, all
	// of them full.
	ErrTooManyPages = errors.New("the account has the most ledger pages it may have")
	// ErrPageFull: the page has no room for another entry.
	ErrPageFull = errors.New("the page is full")
	// ErrBatchFull: the transaction adds hcv1.MaxReserveBatch entries
	// already; the rest go into the next one.
	ErrBatchFull = errors.New("the reservation batch is full")
	// ErrPageMissing: a page the account counts (n ≤ status.pages) does
	// not exist and no pending transfer creates it: it was deleted. Its
	// entries (servers and the credits they hold) are known only to it;
	// nothing is billed on the account until it is restored.
	ErrPageMissing = errors.New("the ledger page was deleted: restore it (from a backup of the LedgerPage with its status); until then the account is not billed, and its charges wait")
	// ErrPagesEdited: the account's aggregates of its pages (CheckPaged)
	// do not match the pages, read consistently: a page's status was
	// edited by hand. Nothing of the account is billed until the page is
	// put back as it was.
	ErrPagesEdited = errors.New("the account's pages do not match its aggregates (a LedgerPage's status was edited): put the page back as it was; until then the account is not billed, and its charges wait")
	// ErrForeignPage: an object named like one of the account's pages is
	// not its page (another account's, or an earlier account's of the
	// same name); the account cannot use that page number until it is
	// removed.
	ErrForeignPage = errors.New("the LedgerPage of that name is not this account's page: delete it (the account's pages are named <account>-<n>)")
)

// EventPageIntegrity is the Warning Event on an account whose pages fail
// PageIntegrity.
const EventPageIntegrity = "LedgerPageInconsistent"

// PageIntegrity reports whether err means that an account's LedgerPages
// were changed by someone else than this protocol (ErrPageMissing,
// ErrForeignPage, ErrPagesEdited, ErrPageGap): the account is not billed until an admin
// repairs them, and the operator says so (an Event on the account).
func PageIntegrity(err error) bool {
	return errors.Is(err, ErrPageMissing) || errors.Is(err, ErrForeignPage) || errors.Is(err, ErrPageGap) || errors.Is(err, ErrPagesEdited)
}

// MissingPage is the verdict on page n of account when the API server has
// no page of that name: nil when the page is not yet created (n beyond
// status.pages, or the account's pending transfer for it is its first,
// seq 1, and creates it), else ErrPageMissing. A page the account counts
// is created by its first transfer's write, before that transfer is
// confirmed, and never deleted by the operator while the account lives.
func MissingPage(account *hcv1.CreditAccount, n int32) error {
	if n > account.Status.Pages {
		return nil
	}
	if i := pendingFor(account, n); i >= 0 && account.Status.Pending[i].Seq == 1 {
		return nil
	}
	return fmt.Errorf("ledger page %s of account %s (page %d of %d, %d servers on pages): %w",
		PageName(account.Name, n), account.Name, n, account.Status.Pages, account.Status.PagedServers, ErrPageMissing)
}

// PageName is the name of page n (≥ 1) of account.
func PageName(account string, n int32) string { return fmt.Sprintf("%s-%d", account, n) }

// PageNumber is the number of page p of account: its name is
// <account>-<n> and its spec names the account.
func PageNumber(account string, p *hcv1.LedgerPage) (int32, error) {
	rest, ok := strings.CutPrefix(p.Name, account+"-")
	n, err := strconv.ParseInt(rest, 10, 32)
	if !ok || err != nil || n < 1 || PageName(account, int32(n)) != p.Name || p.Spec.Account != account {
		return 0, fmt.Errorf("ledger page %q is not a page of account %q (name <account>-<n>, n ≥ 1, spec.account %q): %w", p.Name, account, p.Spec.Account, ErrForeignPage)
	}
	return int32(n), nil
}

// NewPage is page n of account as it is created (whoever first needs it
// creates it; the name is the arbiter), and as a reader takes a page that
// does not exist yet: empty, at seq 0, owned by the account and with the
// finalizer hcv1.FinalizerLedger.
func NewPage(account *hcv1.CreditAccount, n int32) (*hcv1.LedgerPage, error) {
	name := PageName(account.Name, n)
	if n < 1 || len(name) > 253 {
		return nil, fmt.Errorf("account %q cannot have a ledger page %d (name %q: n ≥ 1, at most 253 characters)", account.Name, n, name)
	}
	p := &hcv1.LedgerPage{
		// The finalizer keeps the page, and the entries only it holds, until
		// its account is released (controllers: the account's release): a
		// foreground deletion of the account deletes its dependents while
		// the account's own finalizer still holds it.
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: account.Namespace, Finalizers: []string{hcv1.FinalizerLedger}},
		Spec:       hcv1.LedgerPageSpec{Account: account.Name},
	}
	if account.UID != "" {
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: hcv1.GroupVersion.String(), Kind: "CreditAccount",
			Name: account.Name, UID: account.UID}}
	}
	return p, nil
}

// ChoosePage says where the entry of a new reservation goes: 0 for the
// account's status.servers (while it holds fewer than PageLimits.Inline),
// else page n; create says page n is new (its commit bumps status.pages).
// lastLen is the number of entries on the account's last page (number
// status.pages) as PageView shows it, with those of the batch being built
// for it.
func ChoosePage(account *hcv1.CreditAccount, lastLen int, l PageLimits) (n int32, create bool) {
	l = l.orDefault()
	pages := account.Status.Pages
	switch {
	case len(account.Status.Servers) < l.Inline:
		return 0, false
	case pages > 0 && lastLen < l.PerPage:
		return pages, false
	}
	return pages + 1, true
}

// money is what a transaction moves on the account.
type money struct{ balance, charged, refunded int64 }

func moneyOf(a *hcv1.CreditAccount) money {
	return money{a.Status.Balance, a.Status.TotalCharged, a.Status.TotalRefunded}
}

// PageTransaction is a transaction on one page, built from the account and
// the page and not committed yet.
type PageTransaction struct {
	// Transfer is what status.pending records and Apply applies.
	Transfer hcv1.PageTransfer
	// Result holds Settle's outcome for the page's servers (stops, notes,
	// requeue, lags).
	Result Result
	// Taken is, for each reservation of ReservePage that is on the page
	// (now or already), what the account paid for it.
	Taken map[string]int64

	page           string
	now            time.Time
	limits         PageLimits
	before, after  money
	create         bool
	servers        int32      // change of pagedServers
	paid           int64      // change of pagedPaid
	counts         pageCounts // change of pagedRunning, pagedCost, pagedStopping
	due            *time.Time // the page's pagedDue after the transaction
	spent          int64
	chargedPeriods int64
	reserved       int64
	ended          int
	stops          []string
	moved          []string // ids leaving status.servers (Move)
}

// pageCounts are the aggregates of a page's entries that the account's
// counters (runningServers, Low, Exhausted: updateCounters) and
// ChargesOutstanding need.
type pageCounts struct {
	running, stopping int32
	cost              int64
}

// countEntries sums the counters of entries and finds the earliest
// boundary up to which the running servers that are not free are paid
// (nil when none runs): what updateCounters and ChargesOutstanding read
// from status.servers.
func countEntries(entries []hcv1.ServerCharge) (c pageCounts, due *time.Time) {
	for i := range entries {
		e := &entries[i]
		switch {
		case e.EndedAt != nil:
		case e.StopRequestedAt != nil:
			c.stopping++
		case e.StartedAt != nil:
			c.running++
			c.cost = addSat(c.cost, e.BillingValue)
			if e.BillingValue > 0 {
				if b := Boundary(e.StartedAt.Time, e.PeriodsPaid, e.BillingInterval.Duration); due == nil || b.Before(*due) {
					due = &b
				}
			}
		}
	}
	return c, due
}

// count sets the transaction's change of the account's page counters
// from the page's entries before it and the transfer's deltas.
func (t *PageTransaction) count(before []hcv1.ServerCharge) error {
	after, err := applyDeltas(before, t.Transfer.Entries)
	if err != nil {
		return fmt.Errorf("page %s: %w", t.page, err)
	}
	was, _ := countEntries(before)
	now, due := countEntries(after)
	t.counts = pageCounts{running: now.running - was.running, stopping: now.stopping - was.stopping, cost: now.cost - was.cost}
	t.due = pageDue(due)
	return nil
}

// pageDue is due as status.pagedDue holds it: in microseconds (the API
// server keeps a MicroTime so; a boundary has whole seconds, or the
// fraction of a billing interval such as 1500ms), rounded up, so that a
// page's due never comes before its boundary: pagedLimit's grants stop at
// or after it, and its charge is made in the round that bound allows.
func pageDue(due *time.Time) *time.Time {
	if due == nil {
		return nil
	}
	up := due.Truncate(time.Microsecond)
	if up.Before(*due) {
		up = up.Add(time.Microsecond)
	}
	return &up
}

// Empty reports a transaction with nothing to commit.
func (t *PageTransaction) Empty() bool {
	return len(t.Transfer.Entries) == 0 && t.before == t.after
}

// Spent is what the servers whose entries the transaction drops after
// their end paid: credits that leave the ledger for good.
func (t *PageTransaction) Spent() int64 { return t.spent }

// pendingFor returns the index of the account's transfer for page n, or -1.
func pendingFor(a *hcv1.CreditAccount, n int32) int {
	return slices.IndexFunc(a.Status.Pending, func(t hcv1.PageTransfer) bool { return t.Page == n })
}

// begin starts a transaction on page (number n) of account.
func begin(account *hcv1.CreditAccount, page *hcv1.LedgerPage, kind hcv1.PageTransferKind, now time.Time, l PageLimits) (*PageTransaction, error) {
	n, err := PageNumber(account.Name, page)
	if err != nil {
		return nil, err
	}
	if pendingFor(account, n) >= 0 {
		return nil, fmt.Errorf("page %s: %w", page.Name, ErrPendingPage)
	}
	if n > account.Status.Pages+1 {
		return nil, fmt.Errorf("page %s: the account has %d page(s); the next new one is %d", page.Name, account.Status.Pages, account.Status.Pages+1)
	}
	if n > hcv1.MaxPages {
		return nil, fmt.Errorf("page %s: %w (%d)", page.Name, ErrTooManyPages, hcv1.MaxPages)
	}
	m := moneyOf(account)
	return &PageTransaction{
		Transfer: hcv1.PageTransfer{Page: n, Seq: page.Status.Seq + 1, Kind: kind},
		Result:   Result{ChangedProjects: map[string]bool{}},
		page:     page.Name, now: now, limits: l.orDefault(), before: m, after: m,
		create: n > account.Status.Pages,
	}, nil
}

// scratch is a copy of account for computing a transaction: the money,
// ledger and conditions, not the entries.
func scratch(account *hcv1.CreditAccount) *hcv1.CreditAccount {
	a := *account
	a.Status.Servers, a.Status.Pending = nil, nil
	return a.DeepCopy()
}

// ownPageEntry reports whether an entry may live on a page: a server
// billed to the account itself, without a project pool (pool records of a
// wallet's server, and servers a pool co-funds, stay in status.servers in
// this step).
func ownPageEntry(account string, e *hcv1.ServerCharge) error {
	if e.Wallet != account || e.Project != "" {
		return fmt.Errorf("entry %s (wallet %q, project %q) cannot be on a page of account %q: pages hold the account's own servers without a project pool",
			e.ID, e.Wallet, e.Project, account)
	}
	return nil
}

// PageReservation is one reservation of a batch on a page: it takes at
// least Need and at most Want, as Take does.
type PageReservation struct {
	Reservation
	Need, Want int64
}

// ReservePage builds the transaction that reserves the first period of
// each of rs on page (number n of account, as completed: no pending
// transfer). The money rule is Take's (reserve). errs[i] is rs[i]'s
// refusal (an *InsufficientError; ErrPageFull or ErrBatchFull: it goes
// into the next transaction; or a reservation a page cannot hold); a
// reservation already held (on the page, in status.servers, or added by a
// pending transfer: heldElsewhere) takes nothing again (Taken says what it
// took). Call Refresh (RefreshForAdmission) on the
// account first.
func ReservePage(account *hcv1.CreditAccount, page *hcv1.LedgerPage, rs []PageReservation, now time.Time, l PageLimits) (*PageTransaction, []error, error) {
	t, err := begin(account, page, hcv1.TransferReserve, now, l)
	if err != nil {
		return nil, nil, err
	}
	t.Taken = map[string]int64{}
	a := scratch(account)
	errs := make([]error, len(rs))
	size := len(page.Status.Servers)
	for i, r := range rs {
		if paid, held := heldElsewhere(account, page, r.ID); held {
			t.Taken[r.ID] = paid
			continue
		}
		if _, dup := t.Taken[r.ID]; dup {
			continue
		}
		if size >= t.limits.PerPage {
			errs[i] = fmt.Errorf("reservation %s on page %s: %w", r.ID, page.Name, ErrPageFull)
			continue
		}
		if t.reserved >= hcv1.MaxReserveBatch {
			errs[i] = fmt.Errorf("reservation %s on page %s: %w", r.ID, page.Name, ErrBatchFull)
			continue
		}
		if r.Wallet != account.Name || r.Project != "" {
			errs[i] = ownPageEntry(account.Name, &hcv1.ServerCharge{ID: r.ID, Wallet: r.Wallet, Project: r.Project})
			continue
		}
		e, err := reserve(a, r.Reservation, r.Need, r.Want, 0, now)
		if err != nil {
			errs[i] = err
			continue
		}
		size++
		t.Taken[r.ID] = e.Paid
		t.Transfer.Entries = append(t.Transfer.Entries, hcv1.PageDelta{ID: e.ID, Add: &e})
		t.servers++
		t.paid += e.Paid
		t.reserved++
		t.chargedPeriods++
	}
	t.after = moneyOf(a)
	t.Transfer.Amount = t.after.balance - t.before.balance
	t.Transfer.Periods = t.reserved
	if err := t.count(page.Status.Servers); err != nil {
		return nil, nil, err
	}
	return t, errs, nil
}

// heldElsewhere finds reservation id in what a transaction on page can
// see: page, the account's status.servers, and the entries its pending
// transfers add (an earlier attempt of the same reservation, committed,
// whose answer was lost). Other pages are the caller's to look up (the
// index of ledger keys).
func heldElsewhere(account *hcv1.CreditAccount, page *hcv1.LedgerPage, id string) (int64, bool) {
	if j := slices.IndexFunc(page.Status.Servers, func(e hcv1.ServerCharge) bool { return e.ID == id }); j >= 0 {
		return page.Status.Servers[j].Paid, true
	}
	if i := FindServer(account, id); i >= 0 {
		return account.Status.Servers[i].Paid, true
	}
	for _, t := range account.Status.Pending {
		for _, d := range t.Entries {
			if d.Add != nil && d.ID == id {
				return d.Add.Paid, true
			}
		}
	}
	return 0, false
}

// SettlePage builds the transaction that settles the servers on page
// (number n of account, as completed: no pending transfer) up to now,
// with Settle's per-server rules (settleEntries): charges, refunds of
// reservations that never ran and of periods charged after an end, stops,
// ends. Call Settle on the account first: it refreshes the account,
// holding grants back while the pages catch up (pagedLimit); SettlePage
// then charges only the boundaries before the account's next grant slot
// and leaves refunds to the pass without a bound (Result.Waiting).
func SettlePage(account *hcv1.CreditAccount, page *hcv1.LedgerPage, pods func(hcv1.ServerCharge) PodObservation,
	now time.Time, o Options, l PageLimits) (*PageTransaction, error) {
	return settlePage(account, page, pods, now, o, l, nil)
}

// settlePage is SettlePage; heldBefore reports an entry whose reservation
// id or pod the account's ledger holds before this page (in
// status.servers, or on a page of a lower number): it is a second entry,
// billing the same pod again, and is returned whole (refundEntry).
func settlePage(account *hcv1.CreditAccount, page *hcv1.LedgerPage, pods func(hcv1.ServerCharge) PodObservation,
	now time.Time, o Options, l PageLimits, heldBefore func(e *hcv1.ServerCharge) bool) (*PageTransaction, error) {
	t, err := begin(account, page, hcv1.TransferSettle, now, l)
	if err != nil {
		return nil, err
	}
	for i := range page.Status.Servers {
		if err := ownPageEntry(account.Name, &page.Status.Servers[i]); err != nil {
			return nil, err
		}
	}
	a := scratch(account)
	before := make([]hcv1.ServerCharge, len(page.Status.Servers))
	for i := range page.Status.Servers {
		page.Status.Servers[i].DeepCopyInto(&before[i])
	}
	work := make([]hcv1.ServerCharge, len(before))
	for i := range before {
		before[i].DeepCopyInto(&work[i])
	}
	if g := a.Spec.Grant; g != nil && g.Interval.Duration > 0 && a.Status.GrantedThrough != nil {
		// The account's catch-up rule (pagedLimit): the page's boundaries
		// before the next grant slot; the pass after that grant goes on.
		if next := a.Status.GrantedThrough.Add(g.Interval.Duration); !next.After(now) {
			o.chargeBefore = next
		}
	}
	returned := map[string]bool{}
	if heldBefore != nil {
		work = slices.DeleteFunc(work, func(e hcv1.ServerCharge) bool {
			if !heldBefore(&e) {
				return false
			}
			msg := HeldTwiceMessage(e.ID, page.Name, e.Paid)
			refundEntry(a, &e, now, msg)
			returned[e.ID] = true
			t.Result.Notes = append(t.Result.Notes, Note{Pod: e.Pod, PodUID: e.PodUID, Warning: true, Reason: EventHeldTwice, Message: msg})
			return true
		})
	}
	after := settleEntries(a, work, nil, endLostAt(pods, now), now, o, &t.Result)
	deltas, err := diffEntries(before, after)
	if err != nil {
		return nil, fmt.Errorf("page %s: %w", page.Name, err)
	}
	t.Transfer.Entries = deltas
	byID := map[string]*hcv1.ServerCharge{}
	for i := range before {
		byID[before[i].ID] = &before[i]
	}
	for _, d := range deltas {
		old := byID[d.ID]
		switch {
		case d.Remove:
			t.servers--
			t.paid -= old.Paid
			if old.EndedAt != nil && !returned[d.ID] {
				t.spent += old.Paid // settled: paid for good
			} else {
				t.Transfer.Periods -= old.PeriodsPaid // returned
			}
		default:
			t.paid += d.Paid - old.Paid
			t.Transfer.Periods += d.PeriodsPaid - old.PeriodsPaid
			t.chargedPeriods += max(0, d.PeriodsPaid-old.PeriodsPaid)
			if d.EndedAt != nil && old.EndedAt == nil {
				t.ended++
			}
		}
	}
	for _, s := range t.Result.Stops {
		if !s.Repeat {
			t.stops = append(t.stops, s.Message)
		}
	}
	t.after = moneyOf(a)
	t.Transfer.Amount = t.after.balance - t.before.balance
	if err := t.count(before); err != nil {
		return nil, err
	}
	return t, nil
}

// MovePage builds the migration transaction that moves the oldest of the
// account's own entries beyond PageLimits.Inline from status.servers to
// page (as many as it has room for). No credits move; the commit drops the
// entries from status.servers and holds them in status.pending until the
// page shows them. It returns nil when nothing is to be moved.
func MovePage(account *hcv1.CreditAccount, page *hcv1.LedgerPage, now time.Time, l PageLimits) (*PageTransaction, error) {
	t, err := begin(account, page, hcv1.TransferMove, now, l)
	if err != nil {
		return nil, err
	}
	excess := len(account.Status.Servers) - t.limits.Inline
	room := t.limits.PerPage - len(page.Status.Servers)
	for i := range account.Status.Servers {
		if excess <= 0 || room <= 0 {
			break
		}
		e := &account.Status.Servers[i]
		if ownPageEntry(account.Name, e) != nil || slices.ContainsFunc(page.Status.Servers, func(p hcv1.ServerCharge) bool { return p.ID == e.ID }) {
			continue
		}
		moved := e.DeepCopy()
		t.Transfer.Entries = append(t.Transfer.Entries, hcv1.PageDelta{ID: e.ID, Add: moved})
		t.moved = append(t.moved, e.ID)
		t.servers++
		t.paid += e.Paid
		excess--
		room--
	}
	if len(t.moved) == 0 {
		return nil, nil
	}
	if err := t.count(page.Status.Servers); err != nil {
		return nil, err
	}
	return t, nil
}

// Commit records transaction t on the account it was built from: the
// credits it moved, the ledger line, the aggregates, and the transfer in
// status.pending (for Move, the entries leave status.servers). The account
// write that follows is the transaction's commit point.
func Commit(account *hcv1.CreditAccount, t *PageTransaction) error {
	n := t.Transfer.Page
	switch {
	case moneyOf(account) != t.before:
		return ErrStaleTransaction
	case pendingFor(account, n) >= 0:
		return fmt.Errorf("page %s: %w", t.page, ErrPendingPage)
	case len(account.Status.Pending) >= t.limits.Pending:
		return ErrPendingFull
	case t.Transfer.Kind == hcv1.TransferMove && slices.ContainsFunc(account.Status.Pending, func(p hcv1.PageTransfer) bool { return p.Kind == hcv1.TransferMove }):
		return fmt.Errorf("one move at a time (a move carries whole entries): %w", ErrPendingFull)
	case t.create && n != account.Status.Pages+1, !t.create && n > account.Status.Pages:
		return ErrStaleTransaction
	}
	for _, id := range t.moved {
		if FindServer(account, id) < 0 {
			return ErrStaleTransaction
		}
	}
	for _, id := range t.moved {
		removeServer(account, id)
	}
	if t.create {
		account.Status.Pages = n
	}
	account.Status.Balance, account.Status.TotalCharged, account.Status.TotalRefunded = t.after.balance, t.after.charged, t.after.refunded
	account.Status.PagedServers += t.servers
	account.Status.PagedPaid += t.paid
	account.Status.PagedRunning += t.counts.running
	account.Status.PagedStopping += t.counts.stopping
	account.Status.PagedCost += t.counts.cost
	setPageDue(account, n, t.due)
	t.ledger(account)
	transfer := *t.Transfer.DeepCopy()
	i, _ := slices.BinarySearchFunc(account.Status.Pending, n, func(p hcv1.PageTransfer, n int32) int { return int(p.Page - n) })
	account.Status.Pending = slices.Insert(account.Status.Pending, i, transfer)
	return nil
}

// setPageDue records when the next charge of page n is due (nil: none of
// its servers runs at a price).
func setPageDue(a *hcv1.CreditAccount, n int32, due *time.Time) {
	i, found := slices.BinarySearchFunc(a.Status.PagedDue, n, func(d hcv1.PageDue, n int32) int { return int(d.Page - n) })
	switch {
	case due == nil && found:
		a.Status.PagedDue = slices.Delete(a.Status.PagedDue, i, i+1)
		if len(a.Status.PagedDue) == 0 {
			a.Status.PagedDue = nil
		}
	case due == nil:
	case found:
		a.Status.PagedDue[i].At = metav1.NewMicroTime(*due)
	default:
		a.Status.PagedDue = slices.Insert(a.Status.PagedDue, i, hcv1.PageDue{Page: n, At: metav1.NewMicroTime(*due)})
	}
}

// ledger appends the transaction's lines: one per kind of movement on the
// page, the page as subject (a page's 64 servers would fill the ledger).
func (t *PageTransaction) ledger(a *hcv1.CreditAccount) {
	charged, refunded := t.after.charged-t.before.charged, t.after.refunded-t.before.refunded
	switch t.Transfer.Kind {
	case hcv1.TransferReserve:
		if t.reserved > 0 {
			appendMerged(a, t.now, hcv1.LedgerReserve, -charged, t.page, t.reserved, func(n, _ int64) string {
				return fmt.Sprintf("first period of %d server(s) reserved", n)
			})
		}
		return
	case hcv1.TransferMove:
		return
	}
	if charged > 0 {
		appendMerged(a, t.now, hcv1.LedgerCharge, -charged, t.page, t.chargedPeriods, func(n, _ int64) string {
			return fmt.Sprintf("%d period(s) of the servers on page %s", n, t.page)
		})
	}
	if refunded > 0 {
		appendLedger(a, t.now, hcv1.LedgerRefund, refunded, t.page,
			fmt.Sprintf("returned for servers on page %s: reservations that never started, periods charged after an end", t.page))
	}
	if len(t.stops) > 0 {
		appendLedger(a, t.now, hcv1.LedgerStop, 0, t.page, fmt.Sprintf("%d server(s) on page %s stopped. %s", len(t.stops), t.page, t.stops[0]))
		setCondition(a, t.now, hcv1.ConditionExhausted, metav1.ConditionTrue, hcv1.ReasonServerStopped, t.stops[0])
	}
	if t.ended > 0 {
		appendLedger(a, t.now, hcv1.LedgerSettle, 0, t.page, fmt.Sprintf("%d server(s) on page %s ended", t.ended, t.page))
	}
}

// Apply applies transfer to page: the page's entries become what the
// transaction made of them and its seq moves to the transfer's. A page that
// already shows the transfer (seq ≥ transfer.seq: applied by this process
// before a crash, or by another replica) is left alone; Apply reports
// whether it changed the page. The result depends only on the page at
// seq-1 and the transfer: whoever applies it, however often, the page ends
// the same.
func Apply(page *hcv1.LedgerPage, transfer *hcv1.PageTransfer) (bool, error) {
	switch {
	case page.Status.Seq >= transfer.Seq:
		return false, nil
	case page.Status.Seq != transfer.Seq-1:
		return false, fmt.Errorf("page %s at seq %d, transfer %d: %w", page.Name, page.Status.Seq, transfer.Seq, ErrPageGap)
	}
	servers, err := applyDeltas(page.Status.Servers, transfer.Entries)
	if err != nil {
		return false, fmt.Errorf("page %s, transfer %d: %w", page.Name, transfer.Seq, err)
	}
	page.Status.Servers, page.Status.Seq = servers, transfer.Seq
	return true, nil
}

// applyDeltas returns entries with deltas applied; entries is not modified.
func applyDeltas(entries []hcv1.ServerCharge, deltas []hcv1.PageDelta) ([]hcv1.ServerCharge, error) {
	out := make([]hcv1.ServerCharge, 0, len(entries)+len(deltas))
	index := map[string]int{}
	for i := range entries {
		out = append(out, *entries[i].DeepCopy())
		index[entries[i].ID] = i
	}
	removed := map[string]bool{}
	for i := range deltas {
		d := &deltas[i]
		j, found := index[d.ID]
		switch {
		case d.Add != nil:
			if found || d.Add.ID != d.ID {
				return nil, fmt.Errorf("entry %s: added twice, or under another id", d.ID)
			}
			index[d.ID] = len(out)
			out = append(out, *d.Add.DeepCopy())
		case !found || removed[d.ID]:
			return nil, fmt.Errorf("entry %s: changed, but the page does not hold it", d.ID)
		case d.Remove:
			removed[d.ID] = true
		default:
			applyDelta(&out[j], d)
		}
	}
	if len(removed) > 0 {
		out = slices.DeleteFunc(out, func(e hcv1.ServerCharge) bool { return removed[e.ID] })
	}
	if len(out) > hcv1.MaxPageServers {
		return nil, fmt.Errorf("%d entries, a page holds at most %d", len(out), hcv1.MaxPageServers)
	}
	if len(out) == 0 {
		out = nil
	}
	return out, nil
}

// applyDelta sets the fields a transaction changes on e.
func applyDelta(e *hcv1.ServerCharge, d *hcv1.PageDelta) {
	e.PeriodsPaid, e.Paid, e.ProjectPaid = d.PeriodsPaid, d.Paid, d.ProjectPaid
	if d.PodUID != "" {
		e.PodUID = d.PodUID
	}
	for _, f := range []struct{ to, from **metav1.Time }{
		{&e.StartedAt, &d.StartedAt}, {&e.PaidThrough, &d.PaidThrough}, {&e.StopRequestedAt, &d.StopRequestedAt}, {&e.EndedAt, &d.EndedAt},
	} {
		if *f.from != nil {
			*f.to = (*f.from).DeepCopy()
		}
	}
	e.Shares = slices.Clone(d.Shares)
}

// diffEntries is the transfer that turns before into after: removed
// entries, added ones, and the changed fields of the others. It fails on a
// change a PageDelta cannot carry (a field cleared, or one a transaction
// never changes), so a transfer always reproduces after exactly.
func diffEntries(before, after []hcv1.ServerCharge) ([]hcv1.PageDelta, error) {
	next := map[string]*hcv1.ServerCharge{}
	for i := range after {
		next[after[i].ID] = &after[i]
	}
	var deltas []hcv1.PageDelta
	for i := range before {
		old := &before[i]
		e, kept := next[old.ID]
		delete(next, old.ID)
		switch {
		case !kept:
			deltas = append(deltas, hcv1.PageDelta{ID: old.ID, Remove: true})
		case equality.Semantic.DeepEqual(old, e):
		default:
			d := hcv1.PageDelta{ID: e.ID, PeriodsPaid: e.PeriodsPaid, Paid: e.Paid, ProjectPaid: e.ProjectPaid,
				Shares: slices.Clone(e.Shares)}
			if e.PodUID != old.PodUID {
				d.PodUID = e.PodUID
			}
			for _, f := range []struct {
				to       **metav1.Time
				old, new *metav1.Time
			}{
				{&d.StartedAt, old.StartedAt, e.StartedAt}, {&d.PaidThrough, old.PaidThrough, e.PaidThrough},
				{&d.StopRequestedAt, old.StopRequestedAt, e.StopRequestedAt}, {&d.EndedAt, old.EndedAt, e.EndedAt},
			} {
				if !equality.Semantic.DeepEqual(f.old, f.new) {
					*f.to = f.new.DeepCopy()
				}
			}
			check := *old.DeepCopy()
			applyDelta(&check, &d)
			if !equality.Semantic.DeepEqual(&check, e) {
				return nil, fmt.Errorf("entry %s: a change a page transfer cannot carry", e.ID)
			}
			deltas = append(deltas, d)
		}
	}
	for i := range after {
		if e, added := next[after[i].ID]; added {
			deltas = append(deltas, hcv1.PageDelta{ID: e.ID, Add: e.DeepCopy()})
		}
	}
	return deltas, nil
}

// Confirm drops the account's transfers that page shows applied (its seq
// is at theirs). It reports a change. Call it with the page as read from
// (or written to) the API server: dropping a transfer the stored page does
// not show would lose it.
func Confirm(account *hcv1.CreditAccount, page *hcv1.LedgerPage) (bool, error) {
	n, err := PageNumber(account.Name, page)
	if err != nil {
		return false, err
	}
	i := pendingFor(account, n)
	if i < 0 || account.Status.Pending[i].Seq > page.Status.Seq {
		return false, nil
	}
	account.Status.Pending = slices.Delete(account.Status.Pending, i, i+1)
	if len(account.Status.Pending) == 0 {
		account.Status.Pending = nil
	}
	return true, nil
}

// Complete is what every reader does first with a page: a transfer the
// account committed and the page does not show yet is applied (roll
// forward: pageChanged, write the page, then Confirm); one the page shows is
// dropped (accountChanged). A page that does not exist yet is NewPage.
func Complete(account *hcv1.CreditAccount, page *hcv1.LedgerPage) (pageChanged, accountChanged bool, err error) {
	n, err := PageNumber(account.Name, page)
	if err != nil {
		return false, false, err
	}
	i := pendingFor(account, n)
	if i < 0 {
		return false, false, nil
	}
	if account.Status.Pending[i].Seq <= page.Status.Seq {
		changed, err := Confirm(account, page)
		return false, changed, err
	}
	changed, err := Apply(page, &account.Status.Pending[i])
	return changed, false, err
}

// PageView is page as every reader takes it: with the account's pending
// transfer for it applied. page is not modified.
func PageView(account *hcv1.CreditAccount, page *hcv1.LedgerPage) (*hcv1.LedgerPage, error) {
	n, err := PageNumber(account.Name, page)
	if err != nil {
		return nil, err
	}
	view := page.DeepCopy()
	if i := pendingFor(account, n); i >= 0 {
		if _, err := Apply(view, &account.Status.Pending[i]); err != nil {
			return nil, err
		}
	}
	return view, nil
}

// Held is what the account holds for its servers: the paid of the entries
// in status.servers and of those on its pages as PageView shows them.
// pages holds the account's pages by number; a missing one is empty.
func Held(account *hcv1.CreditAccount, pages map[int32]*hcv1.LedgerPage) (int64, error) {
	var held int64
	for _, e := range account.Status.Servers {
		held += e.Paid
	}
	_, paid, err := pagedTotals(account, pages)
	return held + paid, err
}

// pagedAggregates are the account's aggregates of its pages.
type pagedAggregates struct {
	servers int32
	paid    int64
	counts  pageCounts
	due     []hcv1.PageDue
}

func aggregatesOf(a *hcv1.CreditAccount) pagedAggregates {
	return pagedAggregates{servers: a.Status.PagedServers, paid: a.Status.PagedPaid, due: a.Status.PagedDue,
		counts: pageCounts{running: a.Status.PagedRunning, stopping: a.Status.PagedStopping, cost: a.Status.PagedCost}}
}

// pagedTotals sums the entries and their paid over the views of the
// account's pages.
func pagedTotals(account *hcv1.CreditAccount, pages map[int32]*hcv1.LedgerPage) (servers int32, paid int64, err error) {
	agg, err := pagedSums(account, pages)
	return agg.servers, agg.paid, err
}

// pagedSums computes the account's aggregates of its pages from the
// pages' views: what CheckPaged compares with those Commit kept.
func pagedSums(account *hcv1.CreditAccount, pages map[int32]*hcv1.LedgerPage) (agg pagedAggregates, err error) {
	for _, t := range account.Status.Pending {
		if t.Page < 1 || t.Page > account.Status.Pages {
			return agg, fmt.Errorf("a pending transfer for page %d, the account has %d page(s)", t.Page, account.Status.Pages)
		}
	}
	for n := int32(1); n <= account.Status.Pages; n++ {
		page := pages[n]
		if page == nil {
			if page, err = NewPage(account, n); err != nil {
				return agg, err
			}
		}
		view, err := PageView(account, page)
		if err != nil {
			return agg, err
		}
		agg.servers += int32(len(view.Status.Servers))
		for _, e := range view.Status.Servers {
			agg.paid += e.Paid
		}
		c, due := countEntries(view.Status.Servers)
		agg.counts.running += c.running
		agg.counts.stopping += c.stopping
		agg.counts.cost = addSat(agg.counts.cost, c.cost)
		if due = pageDue(due); due != nil {
			agg.due = append(agg.due, hcv1.PageDue{Page: n, At: metav1.NewMicroTime(*due)})
		}
	}
	return agg, nil
}

// CheckPaged checks the account's aggregates of its pages (pagedServers,
// pagedPaid, pagedRunning, pagedCost, pagedStopping, pagedDue) against the
// pages' views.
func CheckPaged(account *hcv1.CreditAccount, pages map[int32]*hcv1.LedgerPage) error {
	got, err := pagedSums(account, pages)
	if err != nil {
		return err
	}
	kept := aggregatesOf(account)
	if got.servers != kept.servers || got.paid != kept.paid {
		return fmt.Errorf("account %s: pagedServers %d, pagedPaid %d, but its pages hold %d entries that paid %d",
			account.Name, kept.servers, kept.paid, got.servers, got.paid)
	}
	if got.counts != kept.counts {
		return fmt.Errorf("account %s: pagedRunning %d, pagedCost %d, pagedStopping %d, but its pages run %d servers costing %d and stop %d",
			account.Name, kept.counts.running, kept.counts.cost, kept.counts.stopping, got.counts.running, got.counts.cost, got.counts.stopping)
	}
	if !equality.Semantic.DeepEqual(got.due, kept.due) && (len(got.due) > 0 || len(kept.due) > 0) {
		return fmt.Errorf("account %s: pagedDue %v, but its pages are due at %v", account.Name, dueText(kept.due), dueText(got.due))
	}
	return nil
}

func dueText(due []hcv1.PageDue) []string {
	out := make([]string, 0, len(due))
	for _, d := range due {
		out = append(out, fmt.Sprintf("page %d at %s", d.Page, d.At.UTC().Format(time.RFC3339)))
	}
	return out
}
