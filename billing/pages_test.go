package billing

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// The page protocol's steps, one by one (pages.go). Every test checks the
// conservation rule with pageLedger: balance + Held moves only by the
// credits of ended servers a transaction drops.

// smallPages are limits small enough for a test to fill.
var smallPages = PageLimits{Inline: 2, PerPage: 3, Pending: 2}

// labServer is an entry of a server billed to the pool "lab" itself.
func labServer(id string) *testutil.ServerChargeWrapper {
	return testutil.MakeServerCharge(id).Wallet("lab").Pod("jupyter-" + id).UID(types.UID("u-" + id))
}

func labPool(balance int64, servers ...hcv1.ServerCharge) *hcv1.CreditAccount {
	return openAccount("lab").Users("alice", "bob").Cap(1000).Balance(balance).Servers(servers...).Obj()
}

func mustPage(t *testing.T, a *hcv1.CreditAccount, n int32, servers ...hcv1.ServerCharge) *hcv1.LedgerPage {
	t.Helper()
	p, err := NewPage(a, n)
	if err != nil {
		t.Fatal(err)
	}
	p.Status.Servers = servers
	return p
}

// recountPaged sets the account's aggregates of its pages from pages built
// by hand (Commit keeps them in every other case).
func recountPaged(t *testing.T, a *hcv1.CreditAccount, pages ...*hcv1.LedgerPage) {
	t.Helper()
	byNumber := map[int32]*hcv1.LedgerPage{}
	for _, p := range pages {
		n, err := PageNumber(a.Name, p)
		if err != nil {
			t.Fatal(err)
		}
		byNumber[n] = p
	}
	agg, err := pagedSums(a, byNumber)
	if err != nil {
		t.Fatal(err)
	}
	a.Status.PagedServers, a.Status.PagedPaid = agg.servers, agg.paid
	a.Status.PagedRunning, a.Status.PagedCost, a.Status.PagedStopping = agg.counts.running, agg.counts.cost, agg.counts.stopping
	a.Status.PagedDue = agg.due
}

// pageLedger is balance + Held, after checking the account's aggregates.
func pageLedger(t *testing.T, a *hcv1.CreditAccount, pages ...*hcv1.LedgerPage) int64 {
	t.Helper()
	byNumber := map[int32]*hcv1.LedgerPage{}
	for _, p := range pages {
		n, err := PageNumber(a.Name, p)
		if err != nil {
			t.Fatal(err)
		}
		byNumber[n] = p
	}
	if err := CheckPaged(a, byNumber); err != nil {
		t.Fatal(err)
	}
	held, err := Held(a, byNumber)
	if err != nil {
		t.Fatal(err)
	}
	return a.Status.Balance + held
}

func TestPageNumber(t *testing.T) {
	page := func(name, account string) *hcv1.LedgerPage {
		p, _ := NewPage(labPool(0), 1)
		p.Name, p.Spec.Account = name, account
		return p
	}
	for name, tc := range map[string]struct {
		page *hcv1.LedgerPage
		want int32
	}{
		"first page":                  {page("lab-1", "lab"), 1},
		"page 12":                     {page("lab-12", "lab"), 12},
		"a leading zero":              {page("lab-012", "lab"), 0},
		"page 0 is status.servers":    {page("lab-0", "lab"), 0},
		"another account's page":      {page("lab-x-1", "lab"), 0},
		"the spec names another one":  {page("lab-1", "lab2"), 0},
		"no number":                   {page("lab-", "lab"), 0},
		"a number beyond int32":       {page("lab-4294967297", "lab"), 0},
		"a negative number is a name": {page("lab--1", "lab"), 0},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := PageNumber("lab", tc.page)
			if got != tc.want || (err == nil) != (tc.want > 0) {
				t.Fatalf("PageNumber(%q) = %d, %v; want %d", tc.page.Name, got, err, tc.want)
			}
			if err != nil && (!errors.Is(err, ErrForeignPage) || !PageIntegrity(err)) {
				t.Fatalf("PageNumber(%q): %v, want ErrForeignPage", tc.page.Name, err)
			}
		})
	}
	long := labPool(0)
	long.Name = fmt.Sprintf("%0253d", 0)
	if _, err := NewPage(long, 1); err == nil {
		t.Fatal("NewPage: a page name beyond 253 characters was accepted")
	}
}

func TestChoosePage(t *testing.T) {
	three := []hcv1.ServerCharge{labServer("a").Obj(), labServer("b").Obj(), labServer("c").Obj()}
	for name, tc := range map[string]struct {
		inline     int
		pages      int32
		lastLen    int
		want       int32
		wantCreate bool
	}{
		"room in status.servers":                   {inline: 1, want: 0},
		"status.servers full: the first page":      {inline: 2, want: 1, wantCreate: true},
		"room on the last page":                    {inline: 2, pages: 2, lastLen: 2, want: 2},
		"the last page full: the next one":         {inline: 3, pages: 2, lastLen: 3, want: 3, wantCreate: true},
		"room again in status.servers (one ended)": {inline: 1, pages: 4, lastLen: 3, want: 0},
	} {
		t.Run(name, func(t *testing.T) {
			a := labPool(100, three[:tc.inline]...)
			a.Status.Pages = tc.pages
			n, create := ChoosePage(a, tc.lastLen, smallPages)
			if n != tc.want || create != tc.wantCreate {
				t.Fatalf("ChoosePage = %d, %t; want %d, %t", n, create, tc.want, tc.wantCreate)
			}
		})
	}
}

func labReservation(id string, value int64) PageReservation {
	return PageReservation{Reservation: Reservation{ID: id, Pod: "jupyter-" + id, User: "bob", Wallet: "lab",
		Price: Price{Value: value, Interval: interval}}, Need: value, Want: value}
}

// TestPageReservationLifecycle: a batch reserved on a new page, committed,
// applied, confirmed; every step keeps the ledger.
func TestPageReservationLifecycle(t *testing.T) {
	a := labPool(35, labServer("i1").Obj(), labServer("i2").Obj())
	page := mustPage(t, a, 1)
	ledger := pageLedger(t, a, page)

	tx, errs, err := ReservePage(a, page, []PageReservation{
		labReservation("r0", 50), labReservation("r1", 10), labReservation("r2", 10), labReservation("r3", 10), labReservation("r4", 5),
	}, at(time.Minute), smallPages)
	if err != nil {
		t.Fatal(err)
	}
	var short *InsufficientError
	if !errors.As(errs[0], &short) || errs[1] != nil || errs[2] != nil || errs[3] != nil || !errors.Is(errs[4], ErrPageFull) {
		t.Fatalf("errs = %v; want r0 short of credits, r1-r3 reserved, r4 beyond the page's room", errs)
	}
	if a.Status.Balance != 35 || len(a.Status.Pending) != 0 {
		t.Fatal("building a transaction changed the account")
	}
	if got := tx.Transfer; got.Seq != 1 || got.Page != 1 || got.Amount != -30 || got.Periods != 3 || len(got.Entries) != 3 {
		t.Fatalf("transfer = %+v", got)
	}
	if err := Commit(a, tx); err != nil {
		t.Fatal(err)
	}
	if a.Status.Balance != 5 || a.Status.TotalCharged != 30 || a.Status.Pages != 1 || a.Status.PagedServers != 3 || a.Status.PagedPaid != 30 {
		t.Fatalf("after commit: balance %d, charged %d, pages %d, paged %d/%d", a.Status.Balance, a.Status.TotalCharged,
			a.Status.Pages, a.Status.PagedServers, a.Status.PagedPaid)
	}
	if last := a.Status.Ledger[len(a.Status.Ledger)-1]; last.Kind != hcv1.LedgerReserve || last.Amount != -30 || last.Subject != "lab-1" || last.Count != 3 {
		t.Fatalf("ledger line %+v", last)
	}
	if got := pageLedger(t, a, page); got != ledger {
		t.Fatalf("commit: balance + held %d, was %d", got, ledger)
	}
	// The page as written: applied once, then never again.
	if changed, err := Apply(page, &a.Status.Pending[0]); !changed || err != nil {
		t.Fatalf("Apply = %t, %v", changed, err)
	}
	applied := page.DeepCopy()
	if changed, err := Apply(page, &a.Status.Pending[0]); changed || err != nil || !cmp.Equal(page, applied) {
		t.Fatalf("second Apply = %t, %v (page %s)", changed, err, cmp.Diff(applied, page))
	}
	if got := pageLedger(t, a, page); got != ledger {
		t.Fatalf("apply: balance + held %d, was %d", got, ledger)
	}
	// A second transaction waits for the first's confirmation.
	if _, _, err := ReservePage(a, page, nil, at(time.Minute), smallPages); !errors.Is(err, ErrPendingPage) {
		t.Fatalf("ReservePage before Confirm: %v, want ErrPendingPage", err)
	}
	if changed, err := Confirm(a, page); !changed || err != nil || len(a.Status.Pending) != 0 {
		t.Fatalf("Confirm = %t, %v; pending %v", changed, err, a.Status.Pending)
	}
	// A retried reservation takes nothing again.
	tx, errs, err = ReservePage(a, page, []PageReservation{labReservation("r1", 10)}, at(2*time.Minute), smallPages)
	if err != nil || errs[0] != nil || !tx.Empty() || tx.Taken["r1"] != 10 {
		t.Fatalf("retried reservation: %v %v, empty %t, taken %v", err, errs, tx.Empty(), tx.Taken)
	}
	if got := pageLedger(t, a, page); got != ledger {
		t.Fatalf("confirm: balance + held %d, was %d", got, ledger)
	}
	// A retry of a reservation held in status.servers, or added by a
	// transfer pending for another page, takes nothing either.
	a.Status.Pages = 2
	a.Status.Pending = []hcv1.PageTransfer{{Page: 2, Seq: 1, Kind: hcv1.TransferReserve,
		Entries: []hcv1.PageDelta{{ID: "p2", Add: ptrTo(labServer("p2").Paid(1, 7).Obj())}}}}
	tx, errs, err = ReservePage(a, page, []PageReservation{labReservation("i1", 10), labReservation("p2", 10)}, at(2*time.Minute), smallPages)
	if err != nil || errs[0] != nil || errs[1] != nil || !tx.Empty() || tx.Taken["i1"] != 10 || tx.Taken["p2"] != 7 {
		t.Fatalf("retried reservations: %v %v, empty %t, taken %v", err, errs, tx.Empty(), tx.Taken)
	}
}

// TestPageCrashes: the state a crash leaves between two writes, and what
// the next reader does with it.
func TestPageCrashes(t *testing.T) {
	build := func(t *testing.T) (*hcv1.CreditAccount, *hcv1.LedgerPage) {
		a := labPool(50, labServer("i1").Obj(), labServer("i2").Obj())
		a.Status.Pages = 1
		page := mustPage(t, a, 1, labServer("p1").Running(0).Obj())
		recountPaged(t, a, page)
		page.Status.Seq = 4
		tx, err := SettlePage(a, page, podsByID(map[string]PodObservation{"p1": running("u-p1", 0)}), at(interval+time.Second), testOptions, smallPages)
		if err != nil {
			t.Fatal(err)
		}
		if err := Commit(a, tx); err != nil {
			t.Fatal(err)
		}
		return a, page
	}
	t.Run("after the account write: the reader rolls forward", func(t *testing.T) {
		a, page := build(t)
		ledger := pageLedger(t, a, page)
		pageChanged, accountChanged, err := Complete(a, page)
		if err != nil || !pageChanged || accountChanged {
			t.Fatalf("Complete = %t, %t, %v; want the page changed", pageChanged, accountChanged, err)
		}
		if page.Status.Seq != 5 || page.Status.Servers[0].PeriodsPaid != 2 || len(a.Status.Pending) != 1 {
			t.Fatalf("page seq %d, %d periods, pending %d", page.Status.Seq, page.Status.Servers[0].PeriodsPaid, len(a.Status.Pending))
		}
		if got := pageLedger(t, a, page); got != ledger {
			t.Fatalf("roll forward: balance + held %d, was %d", got, ledger)
		}
		// The page written; the next account write confirms.
		if changed, _ := Confirm(a, page); !changed || len(a.Status.Pending) != 0 {
			t.Fatal("Confirm after the roll forward did not drop the transfer")
		}
		if got := pageLedger(t, a, page); got != ledger {
			t.Fatalf("confirm: balance + held %d, was %d", got, ledger)
		}
	})
	t.Run("after the page write: the reader drops the transfer", func(t *testing.T) {
		a, page := build(t)
		if _, err := Apply(page, &a.Status.Pending[0]); err != nil {
			t.Fatal(err)
		}
		ledger := pageLedger(t, a, page)
		pageChanged, accountChanged, err := Complete(a, page)
		if err != nil || pageChanged || !accountChanged || len(a.Status.Pending) != 0 {
			t.Fatalf("Complete = %t, %t, %v; pending %d", pageChanged, accountChanged, err, len(a.Status.Pending))
		}
		if got := pageLedger(t, a, page); got != ledger {
			t.Fatalf("drop: balance + held %d, was %d", got, ledger)
		}
	})
	t.Run("a stale replica applies the old transfer to the page it read", func(t *testing.T) {
		a, page := build(t)
		old := page.DeepCopy()
		transfer := a.Status.Pending[0].DeepCopy()
		if _, err := Apply(page, transfer); err != nil {
			t.Fatal(err)
		}
		// Its write would fail on the resourceVersion; on re-read the page
		// shows the transfer, and Apply leaves it alone.
		now := page.DeepCopy()
		if changed, err := Apply(page, transfer); changed || err != nil || !cmp.Equal(page, now) {
			t.Fatalf("stale Apply on the re-read page = %t, %v", changed, err)
		}
		// The page it read is one behind: applying there gives the same page.
		if _, err := Apply(old, transfer); err != nil || !cmp.Equal(old.Status, page.Status) {
			t.Fatalf("applying on the old copy: %v, %s", err, cmp.Diff(page.Status, old.Status))
		}
	})
	t.Run("a page that went back is refused", func(t *testing.T) {
		a, page := build(t)
		page.Status.Seq = 2
		if _, _, err := Complete(a, page); !errors.Is(err, ErrPageGap) {
			t.Fatalf("Complete on a page two behind: %v, want ErrPageGap", err)
		}
	})
}

// TestSettlePageIsSettle: the servers of a page are settled by Settle's
// rules; a page's entries end as the same entries in status.servers do,
// and the account's money moves the same.
func TestSettlePageIsSettle(t *testing.T) {
	for name, tc := range map[string]struct {
		balance int64
		servers []hcv1.ServerCharge
		pods    map[string]PodObservation
		now     time.Duration
	}{
		"charged over two boundaries": {
			balance: 100, servers: []hcv1.ServerCharge{labServer("a").Running(0).Obj()},
			pods: map[string]PodObservation{"a": running("u-a", 0)}, now: 2*interval + time.Second,
		},
		"first seen running: the clock starts": {
			balance: 100, servers: []hcv1.ServerCharge{labServer("a").UID("").Obj()},
			pods: map[string]PodObservation{"a": running("u-a", time.Minute)}, now: 2 * time.Minute,
		},
		"short of credits: one charged, one stopped": {
			balance: 15, servers: []hcv1.ServerCharge{labServer("a").Running(0).Obj(), labServer("b").Running(0).Obj()},
			pods: map[string]PodObservation{"a": running("u-a", 0), "b": running("u-b", 0)}, now: interval + time.Second,
		},
		"ended: the last period charged and the end marked": {
			balance: 100, servers: []hcv1.ServerCharge{labServer("a").Running(0).Obj()},
			pods: map[string]PodObservation{"a": ended("u-a", 0, interval+time.Minute)}, now: interval + 2*time.Minute,
		},
		"marked ended: dropped": {
			balance: 100, servers: []hcv1.ServerCharge{labServer("a").Running(0).Ended(interval).Obj()},
			pods: map[string]PodObservation{"a": ended("u-a", 0, interval/2)}, now: interval + time.Minute,
		},
		"a reservation whose pod never came: returned": {
			balance: 0, servers: []hcv1.ServerCharge{labServer("a").UID("").Obj()},
			pods: map[string]PodObservation{}, now: time.Hour,
		},
		"an end seen late: the periods after it come back": {
			balance: 100, servers: []hcv1.ServerCharge{labServer("a").Running(0).Paid(3, 30).PaidThrough(3 * interval).Obj()},
			pods: map[string]PodObservation{"a": ended("u-a", 0, interval/2)}, now: 3*interval + time.Minute,
		},
	} {
		t.Run(name, func(t *testing.T) {
			inline := labPool(tc.balance, tc.servers...)
			res := Settle(inline, nil, podsByID(tc.pods), nil, at(tc.now), testOptions)

			a := labPool(tc.balance)
			a.Status.Pages = 1
			page := mustPage(t, a, 1, tc.servers...)
			recountPaged(t, a, page)
			ledger := pageLedger(t, a, page)
			tx, err := SettlePage(a, page, podsByID(tc.pods), at(tc.now), testOptions, smallPages)
			if err != nil {
				t.Fatal(err)
			}
			if err := Commit(a, tx); err != nil {
				t.Fatal(err)
			}
			if got := pageLedger(t, a, page); got != ledger-tx.Spent() {
				t.Fatalf("balance + held %d, was %d, %d spent", got, ledger, tx.Spent())
			}
			if _, err := Apply(page, &a.Status.Pending[0]); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(inline.Status.Servers, page.Status.Servers, cmpopts.EquateEmpty()); d != "" {
				t.Fatalf("page entries differ from Settle's (-settle +page):\n%s", d)
			}
			want := money{inline.Status.Balance, inline.Status.TotalCharged, inline.Status.TotalRefunded}
			if got := moneyOf(a); got != want {
				t.Fatalf("account money %+v, Settle's %+v", got, want)
			}
			// The account's own notes (Low) come from its counters, which
			// do not look at pages yet.
			serverNotes := slices.DeleteFunc(res.Notes, func(n Note) bool { return n.Reason == EventLow })
			if !cmp.Equal(tx.Result.Stops, res.Stops, cmpopts.EquateEmpty()) || !cmp.Equal(tx.Result.Notes, serverNotes, cmpopts.EquateEmpty()) || tx.Result.RequeueAfter != res.RequeueAfter {
				t.Fatalf("result: stops %v, notes %v, requeue %s; Settle's %v, %v, %s", tx.Result.Stops, tx.Result.Notes,
					tx.Result.RequeueAfter, res.Stops, serverNotes, res.RequeueAfter)
			}
			if len(res.Stops) > 0 && conds(a)[hcv1.ConditionExhausted] != exhaustedTrue {
				t.Fatalf("a stop on the page, Exhausted %q", conds(a)[hcv1.ConditionExhausted])
			}
		})
	}
}

func TestMovePage(t *testing.T) {
	share := labServer("w1").Wallet("alice").Obj() // a pool's record of alice's server: stays
	a := labPool(0, labServer("o1").Running(0).Obj(), share, labServer("o2").Obj(), labServer("o3").Obj(), labServer("o4").Obj())
	page := mustPage(t, a, 1)
	ledger := pageLedger(t, a, page)
	tx, err := MovePage(a, page, t0, smallPages)
	if err != nil {
		t.Fatal(err)
	}
	if err := Commit(a, tx); err != nil {
		t.Fatal(err)
	}
	var inline []string
	for _, e := range a.Status.Servers {
		inline = append(inline, e.ID)
	}
	if d := cmp.Diff([]string{"w1", "o4"}, inline); d != "" || a.Status.Pages != 1 || a.Status.PagedServers != 3 || a.Status.Balance != 0 {
		t.Fatalf("after the move: inline %v, pages %d, paged %d, balance %d", inline, a.Status.Pages, a.Status.PagedServers, a.Status.Balance)
	}
	if got := pageLedger(t, a, page); got != ledger {
		t.Fatalf("move committed: balance + held %d, was %d", got, ledger)
	}
	if _, err := Apply(page, &a.Status.Pending[0]); err != nil || len(page.Status.Servers) != 3 {
		t.Fatalf("Apply: %v, %d entries", err, len(page.Status.Servers))
	}
	if got := pageLedger(t, a, page); got != ledger {
		t.Fatalf("move applied: balance + held %d, was %d", got, ledger)
	}
	if _, err := Confirm(a, page); err != nil {
		t.Fatal(err)
	}
	if tx, err := MovePage(a, page, t0, smallPages); tx != nil || err != nil {
		t.Fatalf("nothing left to move, got %v, %v", tx, err)
	}
}

func TestPageProtocolRefusals(t *testing.T) {
	pods := podsByID(map[string]PodObservation{"p1": running("u-p1", 0)})
	setup := func(t *testing.T) (*hcv1.CreditAccount, *hcv1.LedgerPage, *PageTransaction) {
		a := labPool(50)
		a.Status.Pages = 1
		page := mustPage(t, a, 1, labServer("p1").Running(0).Obj())
		recountPaged(t, a, page)
		tx, err := SettlePage(a, page, pods, at(interval+time.Second), testOptions, smallPages)
		if err != nil {
			t.Fatal(err)
		}
		return a, page, tx
	}
	t.Run("the account changed since the transaction was built", func(t *testing.T) {
		a, _, tx := setup(t)
		a.Status.Balance += 5
		if err := Commit(a, tx); !errors.Is(err, ErrStaleTransaction) {
			t.Fatalf("Commit: %v", err)
		}
	})
	t.Run("pending is full", func(t *testing.T) {
		a, _, tx := setup(t)
		a.Status.Pages = 3
		a.Status.Pending = []hcv1.PageTransfer{{Page: 2, Seq: 1}, {Page: 3, Seq: 1}}
		if err := Commit(a, tx); !errors.Is(err, ErrPendingFull) {
			t.Fatalf("Commit: %v", err)
		}
	})
	t.Run("a page beyond the next new one", func(t *testing.T) {
		a, _, _ := setup(t)
		if _, err := SettlePage(a, mustPage(t, a, 3), pods, t0, testOptions, smallPages); err == nil {
			t.Fatal("SettlePage on page 3 of an account with 1")
		}
	})
	t.Run("a co-funded entry on a page", func(t *testing.T) {
		a, page, _ := setup(t)
		page.Status.Servers = append(page.Status.Servers, labServer("x").Wallet("alice").Project("lab").Obj())
		if _, err := SettlePage(a, page, pods, t0, testOptions, smallPages); err == nil {
			t.Fatal("SettlePage accepted another wallet's server")
		}
	})
	t.Run("transfers that do not fit the page", func(t *testing.T) {
		for name, deltas := range map[string][]hcv1.PageDelta{
			"added twice":          {{ID: "p1", Add: ptrTo(labServer("p1").Obj())}},
			"changed, not held":    {{ID: "zz", PeriodsPaid: 2}},
			"removed, not held":    {{ID: "zz", Remove: true}},
			"changed once removed": {{ID: "p1", Remove: true}, {ID: "p1", PeriodsPaid: 3}},
		} {
			_, page, _ := setup(t)
			before := page.DeepCopy()
			if _, err := Apply(page, &hcv1.PageTransfer{Page: 1, Seq: 1, Entries: deltas}); err == nil || !cmp.Equal(page, before) {
				t.Fatalf("%s: Apply = %v, page changed %t", name, err, !cmp.Equal(page, before))
			}
		}
	})
	t.Run("a change a delta cannot carry", func(t *testing.T) {
		old := labServer("p1").Running(0).Obj()
		cleared := *old.DeepCopy()
		cleared.PaidThrough = nil
		if _, err := diffEntries([]hcv1.ServerCharge{old}, []hcv1.ServerCharge{cleared}); err == nil {
			t.Fatal("diffEntries accepted a cleared paidThrough")
		}
		renamed := *old.DeepCopy()
		renamed.Pod = "other"
		if _, err := diffEntries([]hcv1.ServerCharge{old}, []hcv1.ServerCharge{renamed}); err == nil {
			t.Fatal("diffEntries accepted a renamed pod")
		}
	})
	t.Run("aggregates that disagree with the pages", func(t *testing.T) {
		a, page, _ := setup(t)
		a.Status.PagedPaid++
		if err := CheckPaged(a, map[int32]*hcv1.LedgerPage{1: page}); err == nil {
			t.Fatal("CheckPaged accepted pagedPaid off by one")
		}
	})
}

func ptrTo[T any](v T) *T { return &v }

// TestPendingSize: status.pending at its largest under the bounds (one move
// of a whole page, the other transfers full reservation batches; or every
// transfer a charge of a whole page) stays near 100 KB, so a pool with
// 1,000 users by name, its ledger and 64 inline entries stays within the
// 256 KiB of issue 14's P6. The entries are large ones: a 36-character
// reservation id and pod UID, long pod and user names.
func TestPendingSize(t *testing.T) {
	stamp := mt(time.Hour)
	id := func(i int) string { return fmt.Sprintf("%08d-1234-4234-8234-123456789012", i) }
	entry := func(i int) hcv1.ServerCharge {
		return hcv1.ServerCharge{ID: id(i), Pod: fmt.Sprintf("jupyter-student-%024d-gpu-large", i), PodUID: types.UID(id(i + 1000)),
			User: fmt.Sprintf("student-%024d@university.example.org", i), ServerName: "gpu-large", Wallet: "physics-101-pool",
			Policy: "gpu-large", BillingValue: 120, BillingInterval: metav1.Duration{Duration: 10 * time.Minute}, ReservedAt: *stamp,
			StartedAt: stamp, PeriodsPaid: 12345, Paid: 1234567, PaidThrough: stamp}
	}
	transfer := func(page int32, kind hcv1.PageTransferKind, n int, whole bool) hcv1.PageTransfer {
		tr := hcv1.PageTransfer{Page: page, Seq: 123456, Kind: kind, Amount: -1234567, Periods: int64(n)}
		for i := range n {
			d := hcv1.PageDelta{ID: id(i), PeriodsPaid: 12345, Paid: 1234567, PaidThrough: stamp}
			if whole {
				e := entry(i)
				d = hcv1.PageDelta{ID: e.ID, Add: &e}
			}
			tr.Entries = append(tr.Entries, d)
		}
		return tr
	}
	moveAndBatches := []hcv1.PageTransfer{transfer(1, hcv1.TransferMove, hcv1.MaxPageServers, true)}
	var charges []hcv1.PageTransfer
	for n := int32(2); n <= hcv1.MaxPendingTransfers; n++ {
		moveAndBatches = append(moveAndBatches, transfer(n, hcv1.TransferReserve, hcv1.MaxReserveBatch, true))
	}
	for n := int32(1); n <= hcv1.MaxPendingTransfers; n++ {
		charges = append(charges, transfer(n, hcv1.TransferSettle, hcv1.MaxPageServers, false))
	}
	for name, pending := range map[string][]hcv1.PageTransfer{"a move and full batches": moveAndBatches, "charges of full pages": charges} {
		raw, err := json.Marshal(pending)
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) > 100_000 {
			t.Errorf("%s: status.pending is %d bytes, more than 100 KB", name, len(raw))
		}
		t.Logf("%s: %d bytes", name, len(raw))
	}
	// The bounds that keep it there.
	a := labPool(1000, labServer("i1").Obj(), labServer("i2").Obj())
	page := mustPage(t, a, 1)
	var rs []PageReservation
	for i := range hcv1.MaxReserveBatch + 1 {
		rs = append(rs, labReservation(fmt.Sprintf("r%d", i), 1))
	}
	_, errs, err := ReservePage(a, page, rs, t0, PageLimits{Inline: 2, PerPage: 64, Pending: 8})
	if err != nil || errs[hcv1.MaxReserveBatch-1] != nil || !errors.Is(errs[hcv1.MaxReserveBatch], ErrBatchFull) {
		t.Fatalf("a batch of %d: %v, the last two %v", len(rs), err, errs[hcv1.MaxReserveBatch-1:])
	}
	a = labPool(0, labServer("o1").Obj(), labServer("o2").Obj(), labServer("o3").Obj())
	a.Status.Pages = 2
	a.Status.Pending = []hcv1.PageTransfer{{Page: 2, Seq: 1, Kind: hcv1.TransferMove}}
	tx, err := MovePage(a, mustPage(t, a, 1), t0, smallPages)
	if err != nil {
		t.Fatal(err)
	}
	if err := Commit(a, tx); !errors.Is(err, ErrPendingFull) {
		t.Fatalf("a second move pending: %v, want ErrPendingFull", err)
	}
}

// TestMissingPage: a page the API server does not have is new only when
// the account does not count it yet or its first transfer (seq 1), pending,
// creates it; any other is a page deleted by hand (ErrPageMissing), which
// a reader must not take as empty (its entries and their credits would be
// lost, its servers adopted and charged again, and a writer would start it
// over at seq 0).
func TestMissingPage(t *testing.T) {
	account := func(pages int32, pending ...hcv1.PageTransfer) *hcv1.CreditAccount {
		a := labPool(0)
		a.Status.Pages, a.Status.PagedServers, a.Status.Pending = pages, 3*pages, pending
		return a
	}
	for name, tc := range map[string]struct {
		account *hcv1.CreditAccount
		n       int32
		missing bool
	}{
		"the next page, not created yet":             {account(2), 3, false},
		"beyond the next one":                        {account(2), 5, false},
		"a new page whose first transfer is pending": {account(3, hcv1.PageTransfer{Page: 3, Seq: 1}), 3, false},
		"a counted page, nothing pending":            {account(2), 1, true},
		"the last counted page":                      {account(2), 2, true},
		"a later transfer pending for it":            {account(2, hcv1.PageTransfer{Page: 2, Seq: 4}), 2, true},
		"another page's first transfer pending":      {account(3, hcv1.PageTransfer{Page: 3, Seq: 1}), 2, true},
	} {
		t.Run(name, func(t *testing.T) {
			err := MissingPage(tc.account, tc.n)
			if (err != nil) != tc.missing || err != nil && (!errors.Is(err, ErrPageMissing) || !PageIntegrity(err)) {
				t.Fatalf("MissingPage(page %d of %d, pending %v) = %v; missing %v", tc.n, tc.account.Status.Pages, tc.account.Status.Pending, err, tc.missing)
			}
		})
	}
	if PageIntegrity(ErrPendingFull) || PageIntegrity(ErrStaleTransaction) {
		t.Fatal("PageIntegrity: a retryable protocol error taken for a page changed by hand")
	}
}
