package billing

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"k8s.io/apimachinery/pkg/types"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// FuzzPages drives a pool that bills its own servers, with small page
// limits (2 entries in status.servers, 3 per page, 2 transfers pending),
// through a sequence of events chosen by the fuzzer: time passes (with
// grants and top-ups), the webhook reserves batches (status.servers while
// it has room, then pages: ReservePage), pods start, end or vanish, an old
// webhook replica appends to status.servers beyond its bound (migration:
// MovePage), and the billing controller's passes settle status.servers
// (Settle) and the pages (SettlePage, up to 2 pages per account write).
// The store checks each write's resourceVersion, as the API server does.
//
// The same events run twice: once as given, and once with the writes
// that the crash events name lost — a process dies after an account write
// (the commit) or after a page write (the apply); its successor completes
// what it left (Complete, Confirm) and goes on; an old replica's late page
// write of a transfer meets a page that moved on. After every write both
// runs check the conservation rule (balance + what the entries paid +
// what ended servers paid for good = the opening balance + credits added)
// and the account's aggregates against its pages; at the end, after the
// passes settle down, the two runs must hold the same balances, totals,
// ledger lines and entries.

// FuzzPages ops: the low 3 bits of a byte pick the event, the rest is its
// argument.
const (
	pgTick   = iota // time passes: (arg+1)/4 of an interval; arg ≥ 28 also tops the pool up
	pgAdmit         // the webhook reserves (arg&3)+1 servers at simPrices[arg>>3]; arg&4: the first one's pod is never created
	pgStart         // a pod starts running
	pgEnd           // a pod ends; arg&16: the controller sees it only two passes later (the periods charged after it come back)
	pgVanish        // a pod disappears unobserved; arg&16: it fails while its container still says running (lost node)
	pgPass          // the controller's pass
	pgCrash         // a pass in which the process dies after account write arg>>1 (arg&1: after the first page write that follows instead)
	pgMisc          // arg&3: 0 an old replica's page write of the transfer its crash left; 1 an old webhook appends to status.servers; 2, 3 the webhook dies after its account write (2) or its page write (3), its pod never created
)

// pageStaleWrite is a page write a process that died left in flight: the
// page as it read it, and the transfer it was applying.
type pageStaleWrite struct {
	n        int32
	page     *hcv1.LedgerPage
	rv       int64
	transfer hcv1.PageTransfer
}

type pageSim struct {
	t        *testing.T
	name     string
	crashes  bool // this run loses the writes the crash events name
	limits   PageLimits
	interval time.Duration
	now      time.Time

	// The store: objects as written, with their resourceVersions.
	account   *hcv1.CreditAccount
	accountRV int64
	pages     map[int32]*hcv1.LedgerPage
	pageRV    map[int32]int64

	servers []*simServer
	// initial is the opening balance; spent what ended servers paid for
	// good (their entries dropped); entries the entries as last stored.
	initial int64
	spent   int64
	entries map[string]hcv1.ServerCharge

	// crashAt is the account write of the current pass after which the
	// process dies (-1: none); afterApply moves the crash after the first
	// page write that follows. commits counts the pass's account writes.
	crashAt    int
	afterApply bool
	commits    int
	stale      *pageStaleWrite
	// stats counts what the run did (logged with -v).
	stats struct {
		commits, crashes, rolledForward, dropped, staleLate, staleRefused, moves int
		// rounds counts the extra rounds of catch-up; stops the stops asked
		// for (repeats included).
		rounds, stops int
	}
	// startSeen: a pass saw the server running; lateStart: one first saw
	// a server running after a grant slot that followed its first
	// boundary (Settle's catchUp leaves such a server to its main pass,
	// after every grant: the pages' rounds charge it in time order).
	startSeen map[string]bool
	lateStart bool
	// lateEnd: a server's end was seen after periods charged after it;
	// while the pages catch up they come back before the grants that
	// follow, in Settle after every grant.
	lateEnd bool
	// topUpGranted: a top-up on an account with a grant. A catch-up
	// (Settle's catchUp, or the pages' rounds) applies it before the
	// grants that fell due, a pass without one after them; whether a pass
	// catches up depends on where the servers are.
	topUpGranted bool
}

func newPageSim(t *testing.T, name string, crashes bool, wd simWorld) *pageSim {
	s := &pageSim{t: t, name: name, crashes: crashes, limits: smallPages, interval: time.Duration(wd.intervalSec) * time.Second,
		now: t0, pages: map[int32]*hcv1.LedgerPage{}, pageRV: map[int32]int64{}, initial: wd.poolBal, crashAt: -1}
	b := openAccount("lab").Users("alice").Cap(1000).Balance(wd.poolBal)
	if wd.grant > 0 {
		b.Grant(int64(wd.grant), s.interval)
	}
	s.account = b.Obj()
	s.entries = map[string]hcv1.ServerCharge{}
	return s
}

func (s *pageSim) fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("%s run at %s: %s", s.name, s.now.Sub(t0), fmt.Sprintf(format, args...))
}

func (s *pageSim) readAccount() (*hcv1.CreditAccount, int64) {
	return s.account.DeepCopy(), s.accountRV
}

func (s *pageSim) readPage(n int32) (*hcv1.LedgerPage, int64) {
	if p := s.pages[n]; p != nil {
		return p.DeepCopy(), s.pageRV[n]
	}
	p, err := NewPage(s.account, n)
	if err != nil {
		s.fatalf("%v", err)
	}
	return p, 0
}

// writeAccount stores a if rv is the stored resourceVersion.
func (s *pageSim) writeAccount(a *hcv1.CreditAccount, rv int64) bool {
	if rv != s.accountRV {
		return false
	}
	s.account, s.accountRV = a.DeepCopy(), rv+1
	s.observe()
	return true
}

// writePage stores page n (creating it) if rv is its stored resourceVersion.
func (s *pageSim) writePage(n int32, p *hcv1.LedgerPage, rv int64) bool {
	if rv != s.pageRV[n] {
		return false
	}
	s.pages[n], s.pageRV[n] = p.DeepCopy(), rv+1
	s.observe()
	return true
}

// observe checks the stored state: the conservation rule, the account's
// aggregates, every id in one place, the bounds.
func (s *pageSim) observe() {
	s.t.Helper()
	a := s.account
	if err := CheckPaged(a, s.pages); err != nil {
		s.fatalf("%v", err)
	}
	now := map[string]hcv1.ServerCharge{}
	add := func(e hcv1.ServerCharge, where string) {
		if _, dup := now[e.ID]; dup {
			s.fatalf("entry %s held twice (again on %s)", e.ID, where)
		}
		now[e.ID] = e
	}
	for _, e := range a.Status.Servers {
		add(e, "status.servers")
	}
	for n := int32(1); n <= a.Status.Pages; n++ {
		page, _ := s.readPage(n)
		view, err := PageView(a, page)
		if err != nil {
			s.fatalf("%v", err)
		}
		if len(view.Status.Servers) > s.limits.PerPage {
			s.fatalf("page %d holds %d entries", n, len(view.Status.Servers))
		}
		for _, e := range view.Status.Servers {
			add(e, page.Name)
		}
	}
	if len(a.Status.Pending) > s.limits.Pending {
		s.fatalf("%d transfers pending", len(a.Status.Pending))
	}
	for id, e := range s.entries {
		if _, held := now[id]; !held && e.EndedAt != nil {
			s.spent += e.Paid // settled: paid for good
		}
	}
	s.entries = now
	var held int64
	for _, e := range now {
		held += e.Paid
	}
	added := a.Status.TotalGranted + a.Status.TotalToppedUp + a.Status.TotalAdjusted
	if got := a.Status.Balance + held + s.spent - added; got != s.initial {
		s.fatalf("balance %d + held %d + spent %d - added %d = %d, want the opening balance %d",
			a.Status.Balance, held, s.spent, added, got, s.initial)
	}
	if got, want := a.Status.TotalCharged-a.Status.TotalRefunded, held+s.spent; got != want {
		s.fatalf("charged - refunded = %d, but the entries hold %d and %d were spent", got, held, s.spent)
	}
}

// completeAll is what every reader does first: each transfer pending on
// the account is applied to its page if the page does not show it (the
// page written), then dropped (the account written).
func (s *pageSim) completeAll() {
	a, rv := s.readAccount()
	dropped := false
	for _, t := range slices.Clone(a.Status.Pending) {
		page, prv := s.readPage(t.Page)
		pageChanged, accountChanged, err := Complete(a, page)
		if err != nil {
			s.fatalf("Complete page %d: %v", t.Page, err)
		}
		if accountChanged {
			s.stats.dropped++
		}
		if pageChanged {
			s.stats.rolledForward++
			if !s.writePage(t.Page, page, prv) {
				s.fatalf("roll forward of page %d: conflict", t.Page)
			}
			if accountChanged, err = Confirm(a, page); err != nil || !accountChanged {
				s.fatalf("Confirm after the roll forward of page %d: %t, %v", t.Page, accountChanged, err)
			}
		}
		dropped = dropped || accountChanged
	}
	if dropped && !s.writeAccount(a, rv) {
		s.fatalf("confirming write: conflict")
	}
}

// crashNow reports whether the process dies at this point of the pass.
func (s *pageSim) crashNow(afterApply bool) bool {
	return s.crashes && s.crashAt >= 0 && s.commits == s.crashAt+1 && s.afterApply == afterApply
}

// commitGroup writes the account carrying the committed transactions txs
// (on pages read at pageRVs), then applies each to its page. It reports a
// crash; the successor completes what was left.
func (s *pageSim) commitGroup(a *hcv1.CreditAccount, rv int64, txs []*PageTransaction, pages []*hcv1.LedgerPage, pageRVs []int64) bool {
	if !s.writeAccount(a, rv) {
		s.fatalf("commit: conflict")
	}
	s.commits++
	s.stats.commits++
	if s.crashNow(false) {
		s.stats.crashes++
		s.stale = &pageStaleWrite{n: txs[0].Transfer.Page, page: pages[0], rv: pageRVs[0], transfer: *txs[0].Transfer.DeepCopy()}
		return true
	}
	for j, tx := range txs {
		page, prv := s.readPage(tx.Transfer.Page)
		changed, err := Apply(page, &tx.Transfer)
		if err != nil || !changed {
			s.fatalf("Apply page %d: %t, %v", tx.Transfer.Page, changed, err)
		}
		if !s.writePage(tx.Transfer.Page, page, prv) {
			s.fatalf("apply: conflict")
		}
		if j == 0 && s.crashNow(true) {
			s.stats.crashes++
			return true
		}
	}
	return false
}

// lastLen is the number of entries on the account's last page, as viewed.
func (s *pageSim) lastLen(a *hcv1.CreditAccount) int {
	if a.Status.Pages == 0 {
		return 0
	}
	page, _ := s.readPage(a.Status.Pages)
	view, err := PageView(a, page)
	if err != nil {
		s.fatalf("%v", err)
	}
	return len(view.Status.Servers)
}

func (s *pageSim) pods(e hcv1.ServerCharge) PodObservation {
	for _, x := range s.servers {
		if x.id == e.ID {
			return x.obs()
		}
	}
	return PodObservation{}
}

// admit is the webhook's reservation of n servers at value: status.servers
// while it has room, then the last page with room. noPod: the first one's
// pod is never created. crash: the webhook dies after the page
// transaction's account write (1) or page write (2); its pod is never
// created either way (in the run without crashes too).
func (s *pageSim) admit(n int, value int64, noPod bool, crash int) {
	var rs []PageReservation
	for i := range n {
		if len(s.servers) >= 14 {
			break
		}
		id := fmt.Sprintf("r%d", len(s.servers)+1)
		x := &simServer{id: id, uid: types.UID("u-" + id), value: value, hasPod: !(noPod && i == 0) && crash == 0}
		s.servers = append(s.servers, x)
		rs = append(rs, labReservation(id, value))
	}
	s.completeAll()
	for round := 0; len(rs) > 0; round++ {
		if round == 20 {
			s.fatalf("reservations %v found no page", rs)
		}
		a, rv := s.readAccount()
		RefreshForAdmission(a, s.now)
		if len(a.Status.Servers) < s.limits.Inline {
			r := rs[0]
			rs = rs[1:]
			if _, err := Take(a, r.Reservation, r.Need, r.Want, 0, s.now); err == nil {
				s.writeAccount(a, rv)
			}
			continue
		}
		n, _ := ChoosePage(a, s.lastLen(a), s.limits)
		page, prv := s.readPage(n)
		tx, errs, err := ReservePage(a, page, rs, s.now, s.limits)
		if err != nil {
			s.fatalf("ReservePage: %v", err)
		}
		var rest []PageReservation
		for i, e := range errs {
			if e != nil && !isInsufficient(e) {
				rest = append(rest, rs[i]) // no room: the next page
			}
		}
		rs = rest
		if tx.Empty() {
			continue
		}
		if err := Commit(a, tx); err != nil {
			s.fatalf("Commit: %v", err)
		}
		s.commits, s.crashAt, s.afterApply = 0, -1, false
		if crash > 0 {
			s.crashAt, s.afterApply = 0, crash == 2
		}
		if s.commitGroup(a, rv, []*PageTransaction{tx}, []*hcv1.LedgerPage{page}, []int64{prv}) {
			s.crashAt = -1
			return // the webhook died: the rest of its batch is not reserved
		}
		s.crashAt = -1
	}
}

func isInsufficient(err error) bool {
	var short *InsufficientError
	return errors.As(err, &short)
}

// oldWebhook is a webhook replica of the release before pages: it appends
// to status.servers whatever its length.
func (s *pageSim) oldWebhook(value int64) {
	if len(s.servers) >= 14 {
		return
	}
	id := fmt.Sprintf("r%d", len(s.servers)+1)
	a, rv := s.readAccount()
	RefreshForAdmission(a, s.now)
	if _, err := Take(a, labReservation(id, value).Reservation, value, value, 0, s.now); err != nil {
		return
	}
	s.servers = append(s.servers, &simServer{id: id, uid: types.UID("u-" + id), value: value, hasPod: true})
	s.writeAccount(a, rv)
}

// staleWrite is the late page write of a process that died after its
// account write: the resourceVersion it read decides.
func (s *pageSim) staleWrite() {
	st := s.stale
	if st == nil {
		return
	}
	s.stale = nil
	page := st.page.DeepCopy()
	if _, err := Apply(page, &st.transfer); err != nil {
		s.fatalf("stale Apply: %v", err)
	}
	if s.writePage(st.n, page, st.rv) {
		s.stats.staleLate++
		return // nobody had applied it yet: the late write is the roll forward
	}
	// Conflict: re-read. The page shows the transfer now; Apply leaves it.
	s.stats.staleRefused++
	page, _ = s.readPage(st.n)
	before := page.DeepCopy()
	changed, err := Apply(page, &st.transfer)
	if err != nil || changed || !cmp.Equal(page, before) {
		s.fatalf("stale transfer %d re-applied on page %d at seq %d: %t, %v", st.transfer.Seq, st.n, before.Status.Seq, changed, err)
	}
}

// pass is the controller's pass over the pool: rounds until no catch-up
// waits for a grant (pagedLimit: one grant interval per round, as the
// controller's requeues at once do). It reports whether anything was
// written.
func (s *pageSim) pass(crashAt int, afterApply bool) bool {
	if s.startSeen == nil {
		s.startSeen = map[string]bool{}
	}
	for _, x := range s.servers {
		if x.started == nil || !x.hasPod || x.vanish || s.startSeen[x.id] {
			continue
		}
		s.startSeen[x.id] = true
		lastSlot := t0.Add(s.now.Sub(t0).Truncate(s.interval))
		if s.account.Spec.Grant != nil && lastSlot.After(x.started.Add(interval)) {
			s.lateStart = true
		}
	}
	wrote, waiting := s.round(crashAt, afterApply)
	for rounds := 1; waiting; rounds++ {
		if rounds == 100 {
			s.fatalf("the catch-up of the pages still waits for a grant after %d rounds", rounds)
		}
		s.stats.rounds++
		var w bool
		w, waiting = s.round(-1, false)
		wrote = wrote || w
	}
	for _, x := range s.servers {
		x.staleRuns = max(0, x.staleRuns-1) // a lagging cache lags for a whole pass, its rounds included
	}
	return wrote
}

// round is one pass over the pool: status.servers (Settle), the
// migration of entries beyond its bound (MovePage), then the pages, up to
// limits.Pending per account write. crashAt: the account write after which
// the process dies (-1: none); its successor completes and goes on. It
// reports whether anything was written, and whether charges wait for a
// grant (Result.Waiting).
func (s *pageSim) round(crashAt int, afterApply bool) (wrote, waiting bool) {
	rvs := s.versions()
	s.commits, s.crashAt, s.afterApply = 0, crashAt, afterApply
	defer func() { s.crashAt = -1 }()
	s.completeAll()
	a, rv := s.readAccount()
	res := Settle(a, nil, s.pods, nil, s.now, testOptions)
	s.stats.stops += len(res.Stops)
	waiting = res.Waiting
	if res.WalletChanged {
		s.writeAccount(a, rv)
	}
	for range 20 {
		s.completeAll()
		a, rv = s.readAccount()
		if len(a.Status.Servers) <= s.limits.Inline {
			break
		}
		n, _ := ChoosePage(a, s.lastLen(a), s.limits)
		page, prv := s.readPage(n)
		tx, err := MovePage(a, page, s.now, s.limits)
		if err != nil {
			s.fatalf("MovePage: %v", err)
		}
		if tx == nil {
			break
		}
		if err := Commit(a, tx); err != nil {
			s.fatalf("Commit move: %v", err)
		}
		s.stats.moves++
		s.commitGroup(a, rv, []*PageTransaction{tx}, []*hcv1.LedgerPage{page}, []int64{prv})
	}
	for g := int32(1); g <= s.account.Status.Pages; g += int32(s.limits.Pending) {
		s.completeAll()
		a, rv = s.readAccount()
		var txs []*PageTransaction
		var pages []*hcv1.LedgerPage
		var prvs []int64
		for n := g; n < g+int32(s.limits.Pending) && n <= a.Status.Pages; n++ {
			page, prv := s.readPage(n)
			tx, err := SettlePage(a, page, s.pods, s.now, testOptions, s.limits)
			if err != nil {
				s.fatalf("SettlePage %d: %v", n, err)
			}
			waiting = waiting || tx.Result.Waiting
			if tx.Empty() {
				continue
			}
			s.stats.stops += len(tx.Result.Stops)
			if err := Commit(a, tx); err != nil {
				s.fatalf("Commit page %d: %v", n, err)
			}
			txs, pages, prvs = append(txs, tx), append(pages, page), append(prvs, prv)
		}
		if len(txs) > 0 {
			UpdateCounters(a, s.now, 0, testOptions)
			s.commitGroup(a, rv, txs, pages, prvs)
		}
	}
	return !cmp.Equal(rvs, s.versions()), waiting
}

func (s *pageSim) versions() map[int32]int64 {
	v := map[int32]int64{0: s.accountRV}
	for n, rv := range s.pageRV {
		v[n] = rv
	}
	return v
}

// quiesce runs passes at the same time until one writes nothing, as the
// controller's requeues do, and completes what is pending.
func (s *pageSim) quiesce() {
	for _, x := range s.servers {
		x.staleRuns = 0
	}
	for run := 1; s.pass(-1, false); run++ {
		if run == 4 {
			s.fatalf("the passes still write on pass %d at the same time", run)
		}
	}
	s.completeAll()
	if len(s.account.Status.Pending) != 0 {
		s.fatalf("transfers still pending after the passes settled down: %v", s.account.Status.Pending)
	}
	if len(s.account.Status.Servers) > s.limits.Inline {
		s.fatalf("status.servers holds %d entries after the passes settled down", len(s.account.Status.Servers))
	}
	s.checkCounters()
}

// checkCounters checks runningServers and the Low condition against the
// entries held (status.servers and the pages), and that no charge is
// outstanding once the passes settled down.
func (s *pageSim) checkCounters() {
	s.t.Helper()
	a := s.account
	var running int32
	var cost int64
	for _, e := range s.entries {
		if e.EndedAt == nil && e.StopRequestedAt == nil && e.StartedAt != nil {
			running++
			cost += e.BillingValue
		}
	}
	if a.Status.RunningServers != running {
		s.fatalf("runningServers %d, but %d servers run (status.servers and pages)", a.Status.RunningServers, running)
	}
	low := cost > 0 && a.Status.Balance < testOptions.LowPeriods*cost
	if conditionTrue(a, hcv1.ConditionLow) != low {
		s.fatalf("Low is %t with balance %d and running servers costing %d per period", !low, a.Status.Balance, cost)
	}
	if ChargesOutstanding(a, s.now) {
		s.fatalf("a charge is outstanding after the passes settled down (pagedDue %v)", dueText(a.Status.PagedDue))
	}
}

// run applies ops.
func (s *pageSim) run(ops []byte) {
	for _, b := range ops {
		code, arg := int(b&7), int(b>>3)
		pick := func() *simServer {
			if len(s.servers) == 0 {
				return nil
			}
			return s.servers[arg%len(s.servers)]
		}
		switch code {
		case pgTick:
			s.now = s.now.Add(time.Duration(arg+1) * s.interval / 4)
			if arg >= 28 {
				s.topUpGranted = s.topUpGranted || s.account.Spec.Grant != nil
				s.account.Spec.TopUps = append(s.account.Spec.TopUps, hcv1.TopUp{ID: fmt.Sprintf("t%d", len(s.account.Spec.TopUps)+1), Amount: int64(arg)})
			}
		case pgAdmit:
			s.admit(arg&3+1, simPrices[(arg>>3)%len(simPrices)], arg&4 != 0, 0)
		case pgStart:
			if x := pick(); x != nil && x.hasPod && !x.vanish && x.started == nil && x.ended == nil {
				now := s.now
				x.started = &now
			}
		case pgEnd:
			if x := pick(); x != nil && x.hasPod && !x.vanish && x.ended == nil && !x.lost {
				now := s.now
				x.ended = &now
				if arg&16 != 0 && x.started != nil {
					x.staleRuns = 2
					s.lateEnd = true
				}
			}
		case pgVanish:
			switch x := pick(); {
			case x == nil:
			case arg&16 != 0:
				if x.hasPod && !x.vanish && x.started != nil && x.ended == nil {
					x.lost = true
				}
			default:
				x.vanish = true
			}
		case pgPass:
			s.pass(-1, false)
		case pgCrash:
			s.pass(arg>>1, arg&1 != 0)
		case pgMisc:
			switch arg & 3 {
			case 0:
				if s.crashes {
					s.staleWrite()
				}
			case 1:
				s.oldWebhook(simPrices[(arg>>2)%len(simPrices)])
			default:
				s.admit(1, simPrices[(arg>>2)%len(simPrices)], true, arg&3-1)
			}
		}
	}
	s.quiesce()
}

// pageOutcome is what both runs must agree on.
type pageOutcome struct {
	Status  hcv1.CreditAccountStatus
	Entries map[string]hcv1.ServerCharge
}

func (s *pageSim) outcome() pageOutcome {
	st := *s.account.Status.DeepCopy()
	st.Servers = nil
	return pageOutcome{Status: st, Entries: s.entries}
}

// inlineLimits keep every entry of a run in status.servers (FuzzPages
// holds at most 14 servers).
var inlineLimits = PageLimits{Inline: hcv1.MaxInlineServers, PerPage: 3, Pending: 2}

// sameAsInline is what a run on pages and the same run with every entry
// in status.servers must agree on: the money, the counters and the
// entries (the ledger lines and the conditions' messages name pages).
type sameAsInline struct {
	Balance, TotalCharged, TotalRefunded, TotalGranted, TotalToppedUp int64
	RunningServers                                                    int32
	Entries                                                           map[string]hcv1.ServerCharge
}

func (s *pageSim) sameAsInline() sameAsInline {
	st := s.account.Status
	return sameAsInline{Balance: st.Balance, TotalCharged: st.TotalCharged, TotalRefunded: st.TotalRefunded, TotalGranted: st.TotalGranted,
		TotalToppedUp: st.TotalToppedUp, RunningServers: st.RunningServers, Entries: s.entries}
}

func runPageSim(t *testing.T, wd simWorld, ops []byte) {
	t.Helper()
	plain := newPageSim(t, "without crashes", false, wd)
	plain.run(ops)
	inline := newPageSim(t, "inline", false, wd)
	inline.limits = inlineLimits
	inline.run(ops)
	// Equal where the order of the charges between two grant slots does not
	// matter: no server ran short (a stop), no entry moved out of
	// status.servers (the order of the entries changes), and Settle's
	// catchUp saw every server start before the grants after its first
	// boundary (lateStart), no end was seen late (lateEnd), no top-up
	// came with grants (topUpGranted).
	compared := plain.stats.moves == 0 && plain.stats.stops == 0 && inline.stats.stops == 0 && !inline.lateStart && !inline.lateEnd &&
		!inline.topUpGranted
	if compared {
		if d := cmp.Diff(inline.sameAsInline(), plain.sameAsInline(), cmpopts.EquateEmpty()); d != "" {
			t.Fatalf("the run on pages and the same run in status.servers differ (-inline +pages):\n%s", d)
		}
	}
	crashed := newPageSim(t, "with crashes", true, wd)
	crashed.run(ops)
	t.Logf("%d pages, %d entries; compared with status.servers: %t; without crashes %+v; with crashes %+v",
		crashed.account.Status.Pages, len(crashed.entries), compared, plain.stats, crashed.stats)
	if d := cmp.Diff(plain.outcome(), crashed.outcome(), cmpopts.EquateEmpty()); d != "" {
		t.Fatalf("the runs with and without crashes differ (-without +with):\n%s", d)
	}
	if d := cmp.Diff(plain.account.Status.Servers, crashed.account.Status.Servers, cmpopts.EquateEmpty()); d != "" {
		t.Fatalf("status.servers differ (-without +with):\n%s", d)
	}
}

func pg(code, arg int) byte { return byte(arg<<3 | code) }

// pageScenarios are hand-written runs; they seed FuzzPages.
var pageScenarios = map[string]struct {
	world simWorld
	ops   []byte
}{
	"a course fills three pages, runs two periods, ends": {
		world: simWorld{poolBal: 400, intervalSec: 600},
		ops: []byte{pg(pgAdmit, 3|8), pg(pgAdmit, 3|8), pg(pgAdmit, 3|8), pg(pgPass, 0),
			pg(pgStart, 0), pg(pgStart, 1), pg(pgStart, 2), pg(pgStart, 3), pg(pgStart, 4), pg(pgStart, 5), pg(pgStart, 6), pg(pgStart, 7),
			pg(pgPass, 0), pg(pgTick, 5), pg(pgPass, 0), pg(pgTick, 7), pg(pgCrash, 0), pg(pgTick, 3), pg(pgCrash, 2|1),
			pg(pgEnd, 3), pg(pgEnd, 6), pg(pgPass, 0), pg(pgMisc, 0), pg(pgTick, 4), pg(pgPass, 0)},
	},
	"running short: stops spread over pages, a crash after each kind of write": {
		world: simWorld{poolBal: 90, intervalSec: 60},
		ops: []byte{pg(pgAdmit, 3|8), pg(pgAdmit, 3|8), pg(pgStart, 0), pg(pgStart, 2), pg(pgStart, 4), pg(pgStart, 5),
			pg(pgPass, 0), pg(pgTick, 3), pg(pgCrash, 0), pg(pgMisc, 0), pg(pgTick, 3), pg(pgCrash, 1), pg(pgTick, 31), pg(pgPass, 0),
			pg(pgVanish, 4), pg(pgTick, 3), pg(pgPass, 0)},
	},
	"reservations whose pods never come, a webhook dying after each write": {
		world: simWorld{poolBal: 200, grant: 5, intervalSec: 120},
		ops: []byte{pg(pgAdmit, 1|8), pg(pgAdmit, 3|4|16), pg(pgMisc, 2|8), pg(pgMisc, 3|8), pg(pgMisc, 0), pg(pgAdmit, 2|8),
			pg(pgStart, 1), pg(pgPass, 0), pg(pgTick, 3), pg(pgPass, 0), pg(pgTick, 8), pg(pgCrash, 2), pg(pgTick, 8), pg(pgPass, 0)},
	},
	"an old webhook overfills status.servers: moved to pages": {
		world: simWorld{poolBal: 300, intervalSec: 300},
		ops: []byte{pg(pgMisc, 1|8), pg(pgMisc, 1|8), pg(pgMisc, 1|12), pg(pgMisc, 1|8), pg(pgMisc, 1|16), pg(pgStart, 0), pg(pgStart, 3),
			pg(pgCrash, 0), pg(pgMisc, 0), pg(pgTick, 6), pg(pgCrash, 1), pg(pgAdmit, 2|8), pg(pgTick, 4), pg(pgPass, 0)},
	},
	"ends seen late and lost nodes on pages": {
		world: simWorld{poolBal: 500, intervalSec: 60},
		ops: []byte{pg(pgAdmit, 3|16), pg(pgAdmit, 3|16), pg(pgStart, 0), pg(pgStart, 1), pg(pgStart, 2), pg(pgStart, 3), pg(pgStart, 4),
			pg(pgStart, 5), pg(pgStart, 6), pg(pgPass, 0), pg(pgTick, 3), pg(pgPass, 0), pg(pgEnd, 16+2), pg(pgEnd, 16+5), pg(pgVanish, 16+4),
			pg(pgTick, 7), pg(pgPass, 0), pg(pgTick, 7), pg(pgCrash, 1), pg(pgTick, 3), pg(pgCrash, 2), pg(pgMisc, 0), pg(pgTick, 3), pg(pgPass, 0)},
	},
	"top-ups between charges of a dry pool": {
		world: simWorld{poolBal: 40, intervalSec: 60},
		ops: []byte{pg(pgAdmit, 3|24), pg(pgStart, 0), pg(pgStart, 1), pg(pgStart, 2), pg(pgStart, 3), pg(pgPass, 0), pg(pgTick, 3),
			pg(pgCrash, 0), pg(pgTick, 30), pg(pgPass, 0), pg(pgTick, 3), pg(pgCrash, 3), pg(pgEnd, 0), pg(pgTick, 3), pg(pgPass, 0)},
	},
}

// catchUpScenario: 8 servers at 10 credits per 10 minutes on status.servers
// and two pages, a pool near its cap that gets 30 credits every 250 s; the
// controller is away for 7 grant intervals (3 boundaries of each server).
const catchUpScenario = "an outage at the cap: the pages catch up one grant interval at a time, as status.servers does"

func init() {
	pageScenarios[catchUpScenario] = struct {
		world simWorld
		ops   []byte
	}{
		world: simWorld{poolBal: 990, grant: 30, intervalSec: 250},
		ops: []byte{pg(pgAdmit, 3|24), pg(pgAdmit, 3|24), pg(pgStart, 0), pg(pgStart, 1), pg(pgStart, 2), pg(pgStart, 3), pg(pgStart, 4),
			pg(pgStart, 5), pg(pgStart, 6), pg(pgStart, 7), pg(pgPass, 0), pg(pgTick, 27), pg(pgCrash, 0), pg(pgTick, 3), pg(pgPass, 0)},
	}
}

// TestPagesCatchUpLikeInline: after an outage the pages' catch-up takes
// rounds (pagedLimit) and ends where the same servers in status.servers
// end (runPageSim compares them), which a pass that granted first would
// not: the pool at its cap would lose grants.
func TestPagesCatchUpLikeInline(t *testing.T) {
	tc := pageScenarios[catchUpScenario]
	runPageSim(t, tc.world, tc.ops)
	// Up to the pass after the outage (run settles down at that time).
	s := newPageSim(t, "with crashes", true, tc.world)
	s.run(tc.ops[:13])
	if s.stats.rounds == 0 || s.stats.crashes == 0 || s.stats.stops != 0 || s.stats.moves != 0 || s.account.Status.Pages != 2 {
		t.Fatalf("the scenario does not test the catch-up of pages: %+v, %d pages", s.stats, s.account.Status.Pages)
	}
	// 7 grants of 30 between the charges at 600 s and 1200 s: all kept.
	if s.account.Status.TotalGranted != 210 || s.account.Status.Balance != 960 {
		t.Fatalf("granted %d, balance %d after the outage; want 210, 960", s.account.Status.TotalGranted, s.account.Status.Balance)
	}
	// Granting first (Refresh to now before any charge) would cap them at 90.
	naive := newPageSim(t, "granting first", false, tc.world)
	naive.run(tc.ops[:11])
	a := naive.account.DeepCopy()
	Refresh(a, s.now)
	if a.Status.TotalGranted != 90 {
		t.Fatalf("granting first grants %d, want 90 (the loss this test guards against)", a.Status.TotalGranted)
	}
}

func TestPageSimulation(t *testing.T) {
	for name, tc := range pageScenarios {
		t.Run(name, func(t *testing.T) { runPageSim(t, tc.world, tc.ops) })
	}
}

// FuzzPages: `go test -run X -fuzz FuzzPages ./billing/`.
func FuzzPages(f *testing.F) {
	for _, tc := range pageScenarios {
		f.Add(tc.world.poolBal, tc.world.grant, tc.world.intervalSec, tc.ops)
	}
	f.Fuzz(func(t *testing.T, poolBal int64, grant uint8, intervalSec uint16, ops []byte) {
		if poolBal < 0 || poolBal > 1000 || intervalSec == 0 || len(ops) > 200 {
			t.Skip()
		}
		runPageSim(t, simWorld{poolBal: poolBal, grant: grant, intervalSec: intervalSec}, ops)
	})
}
