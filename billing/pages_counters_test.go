package billing

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// The account's counters of its pages (pagedRunning, pagedCost,
// pagedStopping, pagedDue): kept by Commit, read by updateCounters,
// ChargesOutstanding and the catch-up rule (pagedLimit).

// TestCommitKeepsPageCounters: each kind of transaction moves the
// counters by what it changed on its page; CheckPaged (pageLedger) agrees
// after every step.
func TestCommitKeepsPageCounters(t *testing.T) {
	a := labPool(500, labServer("i1").Obj(), labServer("i2").Obj())
	a.Status.Pages = 1
	page := mustPage(t, a, 1)
	step := func(name string, tx *PageTransaction, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := Commit(a, tx); err != nil {
			t.Fatalf("%s: Commit: %v", name, err)
		}
		if _, err := Apply(page, &a.Status.Pending[0]); err != nil {
			t.Fatalf("%s: Apply: %v", name, err)
		}
		pageLedger(t, a, page)
		if _, err := Confirm(a, page); err != nil {
			t.Fatal(err)
		}
	}
	type counters struct {
		Running, Stopping int32
		Cost              int64
		Due               []string
	}
	check := func(name string, want counters) {
		t.Helper()
		got := counters{Running: a.Status.PagedRunning, Stopping: a.Status.PagedStopping, Cost: a.Status.PagedCost, Due: dueText(a.Status.PagedDue)}
		if d := cmp.Diff(want, got); d != "" {
			t.Fatalf("%s: counters (-want +got):\n%s", name, d)
		}
	}
	due := func(d time.Duration) string {
		return dueText([]hcv1.PageDue{{Page: 1, At: metav1.NewMicroTime(at(d))}})[0]
	}

	tx, errs, err := ReservePage(a, page, []PageReservation{labReservation("p1", 10), labReservation("p2", 25), labReservation("p3", 0)}, at(0), smallPages)
	if errs[0] != nil || errs[1] != nil || errs[2] != nil {
		t.Fatal(errs)
	}
	step("reserve", tx, err)
	check("reserved, none started", counters{Due: []string{}})

	pods := map[string]PodObservation{"p1": running("u-p1", 0), "p2": running("u-p2", time.Minute), "p3": running("u-p3", 0)}
	tx, err = SettlePage(a, page, podsByID(pods), at(2*time.Minute), testOptions, smallPages)
	step("started", tx, err)
	// p3 is free: it runs, costs nothing, is never due.
	check("started", counters{Running: 3, Cost: 35, Due: []string{due(interval)}})

	a.Status.Balance = 10 // p1's next period, not p2's
	tx, err = SettlePage(a, page, podsByID(pods), at(interval+time.Minute), testOptions, smallPages)
	step("p2 runs short", tx, err)
	check("p2 runs short", counters{Running: 2, Stopping: 1, Cost: 10, Due: []string{due(2 * interval)}})

	pods["p1"] = ended("u-p1", 0, interval+2*time.Minute)
	pods["p2"] = ended("u-p2", time.Minute, interval+2*time.Minute)
	tx, err = SettlePage(a, page, podsByID(pods), at(interval+3*time.Minute), testOptions, smallPages)
	step("p1 and p2 end", tx, err)
	check("p1 and p2 end", counters{Running: 1, Due: []string{}})

	// status.servers counts with the pages: i1 runs at 10 (not started on
	// the pool's builder: start it).
	a.Status.Servers[0].StartedAt = &metav1.Time{Time: at(0)}
	if !UpdateCounters(a, at(interval+3*time.Minute), 0, testOptions) || a.Status.RunningServers != 2 {
		t.Fatalf("runningServers %d, want 2 (i1 in status.servers, p3 on the page)", a.Status.RunningServers)
	}
}

// TestCountersWithPages: runningServers, Low and Exhausted count the
// servers on pages through the account's counters.
func TestCountersWithPages(t *testing.T) {
	cases := map[string]struct {
		inline                []hcv1.ServerCharge
		running, stopping     int32
		cost, balance         int64
		exhausted, added      bool
		wantRunning           int32
		wantLow, wantExhaused bool
	}{
		"pages only: running and covered": {running: 3, cost: 30, balance: 60, wantRunning: 3},
		"pages only: low":                 {running: 3, cost: 30, balance: 59, wantRunning: 3, wantLow: true},
		"status.servers and pages add up": {inline: []hcv1.ServerCharge{labServer("i1").Running(0).Obj()}, running: 2, cost: 20,
			balance: 59, wantRunning: 3, wantLow: true},
		"a stop pending on a page keeps Exhausted when credits come": {running: 1, cost: 10, stopping: 1, balance: 500,
			exhausted: true, added: true, wantRunning: 1, wantExhaused: true},
		"no stop pending: credits clear Exhausted":  {running: 1, cost: 10, balance: 500, exhausted: true, added: true, wantRunning: 1},
		"stopped servers on a page are not running": {stopping: 4, balance: 0, wantRunning: 0},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := labPool(tc.balance, tc.inline...)
			a.Status.Pages, a.Status.PagedRunning, a.Status.PagedStopping, a.Status.PagedCost = 1, tc.running, tc.stopping, tc.cost
			if tc.exhausted {
				setCondition(a, at(0), hcv1.ConditionExhausted, metav1.ConditionTrue, hcv1.ReasonServerStopped, "stopped")
			}
			var res Result
			updateCounters(a, at(time.Minute), 0, testOptions, &res, tc.added)
			if a.Status.RunningServers != tc.wantRunning || conditionTrue(a, hcv1.ConditionLow) != tc.wantLow ||
				conditionTrue(a, hcv1.ConditionExhausted) != tc.wantExhaused {
				t.Fatalf("runningServers %d, Low %t, Exhausted %t; want %d, %t, %t", a.Status.RunningServers,
					conditionTrue(a, hcv1.ConditionLow), conditionTrue(a, hcv1.ConditionExhausted), tc.wantRunning, tc.wantLow, tc.wantExhaused)
			}
		})
	}
}

func TestChargesOutstandingWithPages(t *testing.T) {
	due := func(at time.Time) []hcv1.PageDue { return []hcv1.PageDue{{Page: 2, At: metav1.NewMicroTime(at)}} }
	for name, tc := range map[string]struct {
		due  []hcv1.PageDue
		want bool
	}{
		"no page due":                 {nil, false},
		"a page due later":            {due(at(interval + time.Second)), false},
		"a page due now":              {due(at(interval)), true},
		"a page due before":           {due(at(time.Minute)), true},
		"one of two pages due before": {append(due(at(2*interval)), hcv1.PageDue{Page: 3, At: metav1.NewMicroTime(at(0))}), true},
	} {
		t.Run(name, func(t *testing.T) {
			a := labPool(100, labServer("i1").Running(0).Obj()) // status.servers: due at interval + 10 min
			a.Status.Servers[0].PeriodsPaid = 2
			a.Status.PagedDue = tc.due
			if got := ChargesOutstanding(a, at(interval)); got != tc.want {
				t.Fatalf("ChargesOutstanding = %t, want %t", got, tc.want)
			}
		})
	}
}

// TestPagedLimit: the catch-up rule of an account with pages. Grant slots
// every 5 minutes from T0 (applied through grantedThrough).
func TestPagedLimit(t *testing.T) {
	due := func(ds ...time.Duration) []hcv1.PageDue {
		var out []hcv1.PageDue
		for i, d := range ds {
			out = append(out, hcv1.PageDue{Page: int32(i + 1), At: metav1.NewMicroTime(at(d))})
		}
		return out
	}
	for name, tc := range map[string]struct {
		grant          bool
		grantedThrough time.Duration
		due            []hcv1.PageDue
		now            time.Duration
		want           catchUpLimit
	}{
		"no grant: no bound":                   {due: due(time.Minute), now: time.Hour},
		"no page due: no bound":                {grant: true, now: time.Hour},
		"pages due later: no bound":            {grant: true, due: due(2 * time.Hour), now: time.Hour},
		"no grant slot since the earliest due": {grant: true, grantedThrough: 55 * time.Minute, due: due(57 * time.Minute), now: 59 * time.Minute},
		"the earliest of the pages decides": {grant: true, due: due(32*time.Minute, 12*time.Minute), now: time.Hour,
			want: catchUpLimit{grantsUntil: at(12 * time.Minute), chargeBefore: at(15 * time.Minute)}},
		"due on a grant slot: that grant first": {grant: true, due: due(10 * time.Minute), now: time.Hour,
			want: catchUpLimit{grantsUntil: at(10 * time.Minute), chargeBefore: at(15 * time.Minute)}},
		"grants applied beyond the due (an older release): the next slot": {grant: true, grantedThrough: 20 * time.Minute,
			due: due(10 * time.Minute), now: time.Hour, want: catchUpLimit{grantsUntil: at(10 * time.Minute), chargeBefore: at(25 * time.Minute)}},
		"the next slot is now": {grant: true, due: due(12 * time.Minute), now: 15 * time.Minute,
			want: catchUpLimit{grantsUntil: at(12 * time.Minute), chargeBefore: at(15 * time.Minute)}},
	} {
		t.Run(name, func(t *testing.T) {
			b := openAccount("lab").Cap(1000).Balance(100)
			if tc.grant {
				b.Grant(10, 5*time.Minute).GrantedThrough(tc.grantedThrough)
			}
			a := b.Obj()
			a.Status.PagedDue = tc.due
			if got := pagedLimit(a, at(tc.now)); !got.grantsUntil.Equal(tc.want.grantsUntil) || !got.chargeBefore.Equal(tc.want.chargeBefore) {
				t.Fatalf("pagedLimit = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestPageDueSurvivesTheAPIServer: status.pagedDue is a MicroTime, rounded
// up: a boundary with a fraction of a second (a 1500ms interval) reads
// back as CheckPaged computes it, and never before the boundary.
func TestPageDueSurvivesTheAPIServer(t *testing.T) {
	a := labPool(100)
	a.Status.Pages = 1
	started := 7*time.Second + 300*time.Nanosecond
	page := mustPage(t, a, 1, labServer("p1").Price(1, 1500*time.Millisecond).Started(started).Obj())
	recountPaged(t, a, page)
	boundary := at(started).Add(1500 * time.Millisecond)
	if got := a.Status.PagedDue[0].At.Time; got.Before(boundary) || got.Sub(boundary) >= time.Microsecond {
		t.Fatalf("pagedDue %s for the boundary %s", got.Format(time.RFC3339Nano), boundary.Format(time.RFC3339Nano))
	}
	raw, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var stored hcv1.CreditAccount
	if err := json.Unmarshal(raw, &stored); err != nil {
		t.Fatal(err)
	}
	if err := CheckPaged(&stored, map[int32]*hcv1.LedgerPage{1: page}); err != nil {
		t.Fatalf("after a round trip: %v", err)
	}
	if ChargesOutstanding(&stored, boundary.Add(-time.Nanosecond)) || !ChargesOutstanding(&stored, boundary.Add(time.Microsecond)) {
		t.Fatal("ChargesOutstanding around the boundary is off")
	}
}

// TestTooManyPages: an account has at most hcv1.MaxPages pages; a
// reservation that would open one more is refused with ErrTooManyPages.
func TestTooManyPages(t *testing.T) {
	noInline := PageLimits{Inline: 0, PerPage: hcv1.MaxPageServers, Pending: hcv1.MaxPendingTransfers}
	a := labPool(100)
	a.Status.Pages = hcv1.MaxPages
	n, create := ChoosePage(a, hcv1.MaxPageServers, noInline)
	if n != hcv1.MaxPages+1 || !create {
		t.Fatalf("ChoosePage = %d, %t", n, create)
	}
	page := mustPage(t, a, n)
	if _, _, err := ReservePage(a, page, []PageReservation{labReservation("p1", 10)}, at(0), noInline); !errors.Is(err, ErrTooManyPages) {
		t.Fatalf("ReservePage on page %d: %v, want ErrTooManyPages", n, err)
	}
	last := mustPage(t, a, hcv1.MaxPages)
	if _, _, err := ReservePage(a, last, []PageReservation{labReservation("p1", 10)}, at(0), noInline); err != nil {
		t.Fatalf("ReservePage on the last page: %v", err)
	}
}
