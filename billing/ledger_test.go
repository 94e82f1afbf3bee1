package billing

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// ledgerView is the part of an account's status the ledger tests compare.
type ledgerView struct {
	Balance        int64
	OpenedAt       *metav1.Time
	GrantedThrough *metav1.Time
	AppliedTopUps  []string
	TotalGranted   int64
	TotalToppedUp  int64
	Ledger         []string
}

func ledgerViewOf(a *hcv1.CreditAccount) ledgerView {
	return ledgerView{
		Balance: a.Status.Balance, OpenedAt: a.Status.OpenedAt, GrantedThrough: a.Status.GrantedThrough,
		AppliedTopUps: a.Status.AppliedTopUps, TotalGranted: a.Status.TotalGranted,
		TotalToppedUp: a.Status.TotalToppedUp, Ledger: ledgerKinds(a),
	}
}

func TestInitialBalance(t *testing.T) {
	cases := map[string]struct {
		spec hcv1.CreditAccountSpec
		want int64
	}{
		"defaults to the cap":      {spec: hcv1.CreditAccountSpec{Cap: 100}, want: 100},
		"initialBalance wins":      {spec: hcv1.CreditAccountSpec{Cap: 100, InitialBalance: i64(30)}, want: 30},
		"initialBalance 0 is kept": {spec: hcv1.CreditAccountSpec{Cap: 100, InitialBalance: i64(0)}, want: 0},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := InitialBalance(&tc.spec); got != tc.want {
				t.Errorf("InitialBalance = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestRefresh(t *testing.T) {
	cases := map[string]struct {
		account     *hcv1.CreditAccount
		now         time.Time
		wantChanged bool
		want        ledgerView
	}{
		// Opening.
		"new account opens full": {
			account:     testutil.MakeAccount(testNS, "alice").CreatedAt(0).Obj(),
			now:         at(time.Minute),
			wantChanged: true,
			want:        ledgerView{Balance: 100, OpenedAt: mt(time.Minute), GrantedThrough: mt(0), Ledger: []string{"Opened +100"}},
		},
		"new account opens with initialBalance": {
			account:     testutil.MakeAccount(testNS, "alice").CreatedAt(0).InitialBalance(20).Obj(),
			now:         at(time.Minute),
			wantChanged: true,
			want:        ledgerView{Balance: 20, OpenedAt: mt(time.Minute), GrantedThrough: mt(0), Ledger: []string{"Opened +20"}},
		},
		"creation in the future (clock skew): schedule anchored now": {
			account:     testutil.MakeAccount(testNS, "alice").CreatedAt(time.Hour).Obj(),
			now:         at(0),
			wantChanged: true,
			want:        ledgerView{Balance: 100, OpenedAt: mt(0), GrantedThrough: mt(0), Ledger: []string{"Opened +100"}},
		},
		"no creation timestamp: schedule anchored now": {
			account: func() *hcv1.CreditAccount {
				a := testutil.MakeAccount(testNS, "alice").CreatedAt(0).Obj()
				a.CreationTimestamp = metav1.Time{}
				return a
			}(),
			now:         at(5 * time.Minute),
			wantChanged: true,
			want:        ledgerView{Balance: 100, OpenedAt: mt(5 * time.Minute), GrantedThrough: mt(5 * time.Minute), Ledger: []string{"Opened +100"}},
		},
		"opening applies the spec's top-ups, above the cap": {
			account:     testutil.MakeAccount(testNS, "alice").CreatedAt(0).TopUp("welcome", 50).Obj(),
			now:         at(time.Minute),
			wantChanged: true,
			want: ledgerView{Balance: 150, OpenedAt: mt(time.Minute), GrantedThrough: mt(0),
				AppliedTopUps: []string{"welcome"}, TotalToppedUp: 50, Ledger: []string{"Opened +100", "TopUp +50"}},
		},
		"opened late: the grant schedule runs from creation": {
			account:     testutil.MakeAccount(testNS, "alice").CreatedAt(0).InitialBalance(0).Grant(5, interval).Obj(),
			now:         at(25 * time.Minute),
			wantChanged: true,
			want: ledgerView{Balance: 10, OpenedAt: mt(25 * time.Minute), GrantedThrough: mt(20 * time.Minute),
				TotalGranted: 10, Ledger: []string{"Opened +0", "Grant +10"}},
		},
		"open account without grant or top-ups: nothing to do": {
			account: openAccount("alice").Balance(42).Obj(),
			now:     at(time.Hour),
			want:    ledgerView{Balance: 42, OpenedAt: mt(0), GrantedThrough: mt(0)},
		},

		// Grants.
		"grant not due yet": {
			account: openAccount("alice").Balance(50).Grant(5, interval).Obj(),
			now:     at(interval - time.Second),
			want:    ledgerView{Balance: 50, OpenedAt: mt(0), GrantedThrough: mt(0)},
		},
		"one grant exactly at its slot": {
			account:     openAccount("alice").Balance(50).Grant(5, interval).Obj(),
			now:         at(interval),
			wantChanged: true,
			want:        ledgerView{Balance: 55, OpenedAt: mt(0), GrantedThrough: mt(interval), TotalGranted: 5, Ledger: []string{"Grant +5"}},
		},
		"three slots late: grantedThrough moves by whole intervals, no drift": {
			account:     openAccount("alice").Balance(50).Grant(5, interval).Obj(),
			now:         at(37 * time.Minute),
			wantChanged: true,
			want:        ledgerView{Balance: 65, OpenedAt: mt(0), GrantedThrough: mt(30 * time.Minute), TotalGranted: 15, Ledger: []string{"Grant +15"}},
		},
		"grants stop at the cap": {
			account:     openAccount("alice").Balance(95).Grant(5, interval).Obj(),
			now:         at(30 * time.Minute),
			wantChanged: true,
			want:        ledgerView{Balance: 100, OpenedAt: mt(0), GrantedThrough: mt(30 * time.Minute), TotalGranted: 5, Ledger: []string{"Grant +5"}},
		},
		"at the cap the schedule keeps running without a grant": {
			account:     openAccount("alice").Balance(100).Grant(5, interval).Obj(),
			now:         at(25 * time.Minute),
			wantChanged: true,
			want:        ledgerView{Balance: 100, OpenedAt: mt(0), GrantedThrough: mt(20 * time.Minute)},
		},
		"above the cap after a top-up: no grant and nothing taken away": {
			account:     openAccount("alice").Balance(150).Grant(5, interval).Obj(),
			now:         at(interval),
			wantChanged: true,
			want:        ledgerView{Balance: 150, OpenedAt: mt(0), GrantedThrough: mt(interval)},
		},
		"clock behind grantedThrough: nothing": {
			account: openAccount("alice").Balance(50).Grant(5, interval).GrantedThrough(interval).Obj(),
			now:     at(5 * time.Minute),
			want:    ledgerView{Balance: 50, OpenedAt: mt(0), GrantedThrough: mt(interval)},
		},
		"a year of 1s grants of MaxCredits saturates at a MaxCredits cap": {
			account:     openAccount("alice").Cap(maxCredits).Balance(0).Grant(maxCredits, time.Second).Obj(),
			now:         at(8760 * time.Hour),
			wantChanged: true,
			want: ledgerView{Balance: maxCredits, OpenedAt: mt(0), GrantedThrough: mt(8760 * time.Hour),
				TotalGranted: maxCredits, Ledger: []string{fmt.Sprintf("Grant +%d", maxCredits)}},
		},
		"grant amount equal to a MaxCredits cap from MaxCredits-1": {
			account:     openAccount("alice").Cap(maxCredits).Balance(maxCredits-1).Grant(maxCredits, time.Second).Obj(),
			now:         at(time.Second),
			wantChanged: true,
			want: ledgerView{Balance: maxCredits, OpenedAt: mt(0), GrantedThrough: mt(time.Second),
				TotalGranted: 1, Ledger: []string{"Grant +1"}},
		},

		// Top-ups.
		"a top-up is applied": {
			account:     openAccount("alice").Balance(10).TopUp("course-2026", 30).Obj(),
			now:         at(time.Minute),
			wantChanged: true,
			want: ledgerView{Balance: 40, OpenedAt: mt(0), GrantedThrough: mt(0),
				AppliedTopUps: []string{"course-2026"}, TotalToppedUp: 30, Ledger: []string{"TopUp +30"}},
		},
		"an applied top-up is not applied again": {
			account: openAccount("alice").Balance(10).TopUp("course-2026", 30).Applied("course-2026").Obj(),
			now:     at(time.Minute),
			want:    ledgerView{Balance: 10, OpenedAt: mt(0), GrantedThrough: mt(0), AppliedTopUps: []string{"course-2026"}},
		},
		"a top-up removed and added again is not applied again": {
			// status.appliedTopUps remembers ids of top-ups no longer in spec.
			account: openAccount("alice").Balance(10).TopUp("b", 5).TopUp("a", 30).Applied("a", "b").Obj(),
			now:     at(time.Minute),
			want:    ledgerView{Balance: 10, OpenedAt: mt(0), GrantedThrough: mt(0), AppliedTopUps: []string{"a", "b"}},
		},
		"only the new top-up of two": {
			account:     openAccount("alice").Balance(10).TopUp("old", 30).TopUp("new", 7).Applied("old").Obj(),
			now:         at(time.Minute),
			wantChanged: true,
			want: ledgerView{Balance: 17, OpenedAt: mt(0), GrantedThrough: mt(0),
				AppliedTopUps: []string{"old", "new"}, TotalToppedUp: 7, Ledger: []string{"TopUp +7"}},
		},
		"a top-up may exceed the cap": {
			account:     openAccount("alice").Balance(100).TopUp("bonus", 50).Obj(),
			now:         at(time.Minute),
			wantChanged: true,
			want: ledgerView{Balance: 150, OpenedAt: mt(0), GrantedThrough: mt(0),
				AppliedTopUps: []string{"bonus"}, TotalToppedUp: 50, Ledger: []string{"TopUp +50"}},
		},
		"a top-up saturates the balance at MaxCredits and records what it added": {
			account:     openAccount("alice").Balance(maxCredits-10).TopUp("huge", maxCredits).Obj(),
			now:         at(time.Minute),
			wantChanged: true,
			want: ledgerView{Balance: maxCredits, OpenedAt: mt(0), GrantedThrough: mt(0),
				AppliedTopUps: []string{"huge"}, TotalToppedUp: 10, Ledger: []string{"TopUp +10"}},
		},
		"grants are applied before top-ups": {
			account:     openAccount("alice").Balance(95).Grant(5, interval).TopUp("t", 50).Obj(),
			now:         at(20 * time.Minute),
			wantChanged: true,
			want: ledgerView{Balance: 150, OpenedAt: mt(0), GrantedThrough: mt(20 * time.Minute),
				AppliedTopUps: []string{"t"}, TotalGranted: 5, TotalToppedUp: 50, Ledger: []string{"Grant +5", "TopUp +50"}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := tc.account.DeepCopy()
			changed := Refresh(a, tc.now)
			if changed != tc.wantChanged {
				t.Errorf("Refresh changed = %v, want %v", changed, tc.wantChanged)
			}
			if d := cmp.Diff(tc.want, ledgerViewOf(a)); d != "" {
				t.Errorf("Refresh mismatch (-want +got):\n%s", d)
			}
			again := a.DeepCopy()
			if Refresh(again, tc.now) {
				t.Errorf("a second Refresh at the same time changed the account")
			}
			if d := cmp.Diff(a, again); d != "" {
				t.Errorf("a second Refresh at the same time changed (-want +got):\n%s", d)
			}
		})
	}
}

func TestRefreshLedgerMessages(t *testing.T) {
	a := openAccount("alice").Balance(50).Grant(5, interval).Obj()
	a.Spec.TopUps = []hcv1.TopUp{{ID: "course-2026", Amount: 30, Reason: "spring course"}, {ID: "plain", Amount: 1}}
	Refresh(a, at(interval))
	want := []hcv1.LedgerEntry{
		{Time: metav1.NewTime(at(interval)), Kind: hcv1.LedgerGrant, Amount: 5, Balance: 55, Message: "grant of 5"},
		{Time: metav1.NewTime(at(interval)), Kind: hcv1.LedgerTopUp, Amount: 30, Balance: 85, Subject: "course-2026", Message: "top-up course-2026: spring course"},
		{Time: metav1.NewTime(at(interval)), Kind: hcv1.LedgerTopUp, Amount: 1, Balance: 86, Subject: "plain", Message: "top-up plain"},
	}
	if d := cmp.Diff(want, a.Status.Ledger); d != "" {
		t.Errorf("ledger mismatch (-want +got):\n%s", d)
	}
}

// TestGrantScheduleDoesNotDrift refreshes at irregular times, spending in
// between, and checks that grants land exactly on creation + k·interval.
func TestGrantScheduleDoesNotDrift(t *testing.T) {
	a := openAccount("alice").Balance(100).Grant(5, interval).Obj()
	start := a.DeepCopy()
	steps := []struct {
		now               time.Duration
		spend             int64 // taken out after the refresh
		wantBalance       int64
		wantGrantedThough time.Duration
	}{
		{now: 7 * time.Minute, wantBalance: 100, wantGrantedThough: 0},
		{now: 13 * time.Minute, spend: 40, wantBalance: 60, wantGrantedThough: interval}, // at cap: slot used, no grant
		{now: 19*time.Minute + 59*time.Second, wantBalance: 60, wantGrantedThough: interval},
		{now: 20 * time.Minute, wantBalance: 65, wantGrantedThough: 20 * time.Minute},
		{now: 41 * time.Minute, spend: 5, wantBalance: 70, wantGrantedThough: 40 * time.Minute},
		{now: 95 * time.Minute, wantBalance: 95, wantGrantedThough: 90 * time.Minute},
		{now: 200 * time.Minute, wantBalance: 100, wantGrantedThough: 200 * time.Minute},
	}
	for _, s := range steps {
		Refresh(a, at(s.now))
		a.Status.Balance -= s.spend
		a.Status.TotalCharged += s.spend
		got := struct {
			Balance        int64
			GrantedThrough time.Time
		}{a.Status.Balance, a.Status.GrantedThrough.Time}
		want := struct {
			Balance        int64
			GrantedThrough time.Time
		}{s.wantBalance, at(s.wantGrantedThough)}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("after Refresh at t0+%s (-want +got):\n%s", s.now, d)
		}
		if err := conserved(start, a); err != nil {
			t.Error(err)
		}
	}
}

func TestLedgerIsBounded(t *testing.T) {
	a := openAccount("alice").Balance(0).Obj()
	for i := 1; i <= LedgerLength+5; i++ {
		a.Spec.TopUps = append(a.Spec.TopUps, hcv1.TopUp{ID: fmt.Sprintf("t%02d", i), Amount: int64(i)})
	}
	Refresh(a, at(time.Minute))
	if got := len(a.Status.Ledger); got != LedgerLength {
		t.Fatalf("ledger holds %d entries, want %d", got, LedgerLength)
	}
	first, last := a.Status.Ledger[0], a.Status.Ledger[LedgerLength-1]
	if first.Subject != "t06" || last.Subject != fmt.Sprintf("t%02d", LedgerLength+5) {
		t.Errorf("ledger keeps %s..%s, want the newest t06..t%02d, newest last", first.Subject, last.Subject, LedgerLength+5)
	}
	if got, want := a.Status.Balance, int64((LedgerLength+5)*(LedgerLength+6)/2); got != want {
		t.Errorf("balance = %d, want %d (every top-up counted even when its ledger entry was dropped)", got, want)
	}
	if len(a.Status.AppliedTopUps) != LedgerLength+5 {
		t.Errorf("appliedTopUps has %d ids, want %d", len(a.Status.AppliedTopUps), LedgerLength+5)
	}
}

func TestNextGrant(t *testing.T) {
	type result struct {
		At     time.Time
		Amount int64
		OK     bool
	}
	cases := map[string]struct {
		account *hcv1.CreditAccount
		now     time.Time
		want    result
	}{
		"no grant": {
			account: openAccount("alice").Balance(10).Obj(),
			now:     at(time.Minute),
			want:    result{},
		},
		"next slot on the schedule": {
			account: openAccount("alice").Balance(10).Grant(5, interval).Obj(),
			now:     at(7 * time.Minute),
			want:    result{At: at(interval), Amount: 5, OK: true},
		},
		"exactly on a slot already granted: the following one": {
			account: openAccount("alice").Balance(10).Grant(5, interval).GrantedThrough(interval).Obj(),
			now:     at(interval),
			want:    result{At: at(20 * time.Minute), Amount: 5, OK: true},
		},
		"limited by the room under the cap": {
			account: openAccount("alice").Balance(98).Grant(5, interval).Obj(),
			now:     at(time.Minute),
			want:    result{At: at(interval), Amount: 2, OK: true},
		},
		"at the cap: nothing": {
			account: openAccount("alice").Balance(100).Grant(5, interval).Obj(),
			now:     at(time.Minute),
			want:    result{At: at(interval), Amount: 0, OK: true},
		},
		"above the cap: nothing, not negative": {
			account: openAccount("alice").Balance(150).Grant(5, interval).Obj(),
			now:     at(time.Minute),
			want:    result{At: at(interval), Amount: 0, OK: true},
		},
		"unopened account: one interval from now": {
			account: testutil.MakeAccount(testNS, "alice").CreatedAt(0).Grant(5, interval).Obj(),
			now:     at(3 * time.Minute),
			want:    result{At: at(13 * time.Minute), Amount: 5, OK: true},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var got result
			got.At, got.Amount, got.OK = NextGrant(tc.account, tc.now)
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("NextGrant mismatch (-want +got):\n%s", d)
			}
		})
	}
}

func TestFindServer(t *testing.T) {
	a := openAccount("alice").Servers(testutil.MakeServerCharge("r1").Obj(), testutil.MakeServerCharge("r2").Obj()).Obj()
	cases := map[string]struct {
		id   string
		want int
	}{
		"first":   {id: "r1", want: 0},
		"second":  {id: "r2", want: 1},
		"missing": {id: "r3", want: -1},
		"empty":   {id: "", want: -1},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := FindServer(a, tc.id); got != tc.want {
				t.Errorf("FindServer(%q) = %d, want %d", tc.id, got, tc.want)
			}
		})
	}
}

// FuzzRefresh checks the grant and top-up arithmetic: balances stay within
// 0..MaxCredits, grants never lift the balance above the cap, the schedule
// only moves by whole intervals, each top-up id counts once, and the
// bookkeeping identity holds.
func FuzzRefresh(f *testing.F) {
	f.Add(int64(100), int64(50), int64(5), int64(600), []byte{1, 7, 200, 3})
	f.Add(int64(1), int64(0), int64(1), int64(1), []byte{255, 255})
	f.Add(maxCredits, maxCredits-1, maxCredits, int64(1), []byte{9})
	f.Add(int64(10), int64(10), int64(10), int64(31_536_000), []byte{0, 0, 0})
	f.Fuzz(func(t *testing.T, capacity, initial, amount, intervalSec int64, steps []byte) {
		if capacity < 0 || capacity > maxCredits || initial < 0 || initial > capacity ||
			amount < 1 || amount > capacity || intervalSec < 1 || intervalSec > 8760*3600 || len(steps) > 64 {
			t.Skip()
		}
		interval := time.Duration(intervalSec) * time.Second
		a := testutil.MakeAccount(testNS, "alice").CreatedAt(0).Cap(capacity).InitialBalance(initial).Grant(amount, interval).Obj()
		now := t0
		for i, s := range steps {
			// Low bits: how far the clock moves; high bit: add a top-up
			// (with an id that may repeat).
			now = now.Add(time.Duration(s&0x7f) * interval / 3)
			if now.After(t0.AddDate(100, 0, 0)) {
				break // beyond what a Duration measures from t0
			}
			if s&0x80 != 0 {
				a.Spec.TopUps = append(a.Spec.TopUps, hcv1.TopUp{ID: fmt.Sprintf("t%d", int(s)%5), Amount: int64(s)})
				a.Spec.TopUps = dedupTopUps(a.Spec.TopUps)
			}
			if i%3 == 2 {
				// Spend something, as a charge would.
				spend := min(a.Status.Balance, int64(s))
				a.Status.Balance -= spend
				a.Status.TotalCharged += spend
			}
			beforeAccount := a.DeepCopy()
			before := &beforeAccount.Status
			Refresh(a, now)
			if a.Status.Balance < 0 || a.Status.Balance > maxCredits {
				t.Fatalf("balance %d out of 0..MaxCredits", a.Status.Balance)
			}
			// At MaxCredits a top-up saturates the balance but is counted in
			// full in totalToppedUp, so the identity only holds below it.
			if a.Status.Balance < maxCredits {
				if err := conserved(beforeAccount, a); err != nil {
					t.Fatal(err)
				}
			}
			if before.OpenedAt != nil && a.Status.TotalGranted > before.TotalGranted {
				toppedUp := a.Status.TotalToppedUp - before.TotalToppedUp
				if a.Status.Balance-toppedUp > capacity {
					t.Fatalf("grants lifted the balance to %d above the cap %d", a.Status.Balance-toppedUp, capacity)
				}
			}
			gt := a.Status.GrantedThrough.Time
			if gt.After(now) {
				t.Fatalf("grantedThrough t0+%s is after now t0+%s", gt.Sub(t0), now.Sub(t0))
			}
			if now.Sub(gt) >= interval {
				t.Fatalf("a whole interval since grantedThrough was not accounted for")
			}
			if gt.Sub(t0)%interval != 0 {
				t.Fatalf("grantedThrough t0+%s drifted off the schedule of %s", gt.Sub(t0), interval)
			}
			seen := map[string]bool{}
			for _, id := range a.Status.AppliedTopUps {
				if seen[id] {
					t.Fatalf("top-up %s applied twice", id)
				}
				seen[id] = true
			}
		}
	})
}

// dedupTopUps keeps the first top-up of each id, as the API's listMapKey does.
func dedupTopUps(in []hcv1.TopUp) []hcv1.TopUp {
	seen := map[string]bool{}
	var out []hcv1.TopUp
	for _, t := range in {
		if !seen[t.ID] {
			seen[t.ID] = true
			out = append(out, t)
		}
	}
	return out
}

func TestAppendMerged(t *testing.T) {
	type move struct {
		kind    hcv1.LedgerEntryKind
		amount  int64
		subject string
		count   int64
	}
	charge := func(pod string, amount, periods int64) move { return move{hcv1.LedgerCharge, -amount, pod, periods} }
	grant := func(amount, n int64) move { return move{hcv1.LedgerGrant, amount, "", n} }
	cases := map[string]struct {
		moves []move
		want  []string // kind amount subject count
	}{
		"charges of one server in a row are one line": {
			moves: []move{charge("a", 10, 1), charge("a", 10, 1), charge("a", 20, 2)},
			want:  []string{"Charge -40 a ×4"},
		},
		"another server's charge starts a new line": {
			moves: []move{charge("a", 10, 1), charge("b", 10, 1), charge("a", 10, 1)},
			want:  []string{"Charge -10 a ×0", "Charge -10 b ×0", "Charge -10 a ×0"},
		},
		"grants in a row merge; a charge in between separates them": {
			moves: []move{grant(5, 1), grant(5, 1), charge("a", 10, 1), grant(5, 1)},
			want:  []string{"Grant +10  ×2", "Charge -10 a ×0", "Grant +5  ×0"},
		},
		"a multi-period first charge records its count": {
			moves: []move{charge("a", 30, 3)},
			want:  []string{"Charge -30 a ×3"},
		},
		"merged amounts saturate instead of wrapping": {
			moves: []move{charge("a", maxCredits, 1), charge("a", maxCredits, 1)},
			want:  []string{fmt.Sprintf("Charge -%d a ×2", maxCredits)},
		},
		"the ledger keeps the newest LedgerLength entries": {
			moves: func() []move {
				var m []move
				for i := range LedgerLength + 3 {
					m = append(m, charge(fmt.Sprint(i), 1, 1))
				}
				return m
			}(),
			want: func() []string {
				var w []string
				for i := 3; i < LedgerLength+3; i++ {
					w = append(w, fmt.Sprintf("Charge -1 %d ×0", i))
				}
				return w
			}(),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := openAccount("alice").Obj()
			for i, m := range tc.moves {
				appendMerged(a, at(time.Duration(i)*time.Minute), m.kind, m.amount, m.subject, m.count, func(n, total int64) string {
					return fmt.Sprintf("%d of %d", n, total)
				})
			}
			var got []string
			for _, e := range a.Status.Ledger {
				got = append(got, fmt.Sprintf("%s %+d %s ×%d", e.Kind, e.Amount, e.Subject, e.Count))
				if want := fmt.Sprintf("%d of %d", max(e.Count, 1), e.Amount); e.Message != want {
					t.Errorf("message %q, want %q (rendered from the merged count and amount)", e.Message, want)
				}
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("ledger (-want +got):\n%s", d)
			}
			if n := len(a.Status.Ledger); n > 0 && !a.Status.Ledger[n-1].Time.Time.Equal(at(time.Duration(len(tc.moves)-1)*time.Minute)) {
				t.Errorf("the newest entry has time %v, want the time of the last movement", a.Status.Ledger[n-1].Time)
			}
		})
	}
}

// TestRefreshForAdmissionLeavesOutageGrantsToTheCatchUp: the operator was
// down for an hour while alice's server ran on a wallet at its cap; a spawn
// (the webhook) looks at the wallet before the operator comes back. The
// grants of that hour must be interleaved with the charges by the catch-up:
// applied at once by the webhook they would be capped away.
func TestRefreshForAdmissionLeavesOutageGrantsToTheCatchUp(t *testing.T) {
	outage := func() *hcv1.CreditAccount {
		return openAccount("alice").Users("alice").Cap(100).Balance(90).Grant(10, interval).
			Servers(testutil.MakeServerCharge("r1").UID("u1").Started(0).PaidThrough(interval).Obj()).Obj()
	}
	pods := podsByID(map[string]PodObservation{"r1": running("u1", 0)})
	settleAfter := func(refresh func(*hcv1.CreditAccount, time.Time) bool) int64 {
		a := outage()
		refresh(a, at(time.Hour)) // the webhook, during the outage
		Settle(a, nil, pods, nil, at(time.Hour+time.Minute), testOptions)
		return a.Status.Balance
	}
	untouched := outage()
	Settle(untouched, nil, pods, nil, at(time.Hour+time.Minute), testOptions)
	// Every 10 minutes a grant (back to the cap) and a charge: 90 at the end.
	if got := untouched.Status.Balance; got != 90 {
		t.Fatalf("catch-up alone leaves %d, want 90", got)
	}
	if got := settleAfter(RefreshForAdmission); got != 90 {
		t.Errorf("after the webhook's RefreshForAdmission the catch-up leaves %d, want 90 (as without the webhook)", got)
	}
	// What Refresh would do instead: all six grants capped away at once.
	if got := settleAfter(Refresh); got != 40 {
		t.Errorf("after Refresh the catch-up leaves %d; this test expects the loss it guards against (40)", got)
	}
	// Once nothing is outstanding, RefreshForAdmission grants as Refresh does.
	idle := openAccount("alice").Users("alice").Cap(100).Balance(50).Grant(10, interval).Obj()
	if !RefreshForAdmission(idle, at(30*time.Minute)) || idle.Status.Balance != 80 {
		t.Errorf("an account with nothing outstanding: balance %d after RefreshForAdmission, want 80", idle.Status.Balance)
	}
}

func TestChargesOutstanding(t *testing.T) {
	cases := map[string]struct {
		server hcv1.ServerCharge
		now    time.Duration
		want   bool
	}{
		"paid through the next boundary":      {testutil.MakeServerCharge("r1").Started(0).Obj(), 9 * time.Minute, false},
		"a boundary reached, not paid":        {testutil.MakeServerCharge("r1").Started(0).Obj(), interval, true},
		"pending pod (not started)":           {testutil.MakeServerCharge("r1").Obj(), time.Hour, false},
		"stop requested: nothing more to pay": {testutil.MakeServerCharge("r1").Started(0).StopRequested(interval).Obj(), time.Hour, false},
		"ended":                               {testutil.MakeServerCharge("r1").Started(0).Ended(interval).Obj(), time.Hour, false},
		"free":                                {testutil.MakeServerCharge("r1").Started(0).Price(0, interval).Obj(), time.Hour, false},
		"adopted, first period unpaid":        {testutil.MakeServerCharge("pod-u9").Started(0).Paid(0, 0).Obj(), 0, true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := openAccount("alice").Servers(tc.server).Obj()
			if got := ChargesOutstanding(a, at(tc.now)); got != tc.want {
				t.Errorf("ChargesOutstanding = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestMovementsOnANegativeBalanceKeepTheDebt: a re-created account
// corrected by Reopen can be negative (docs/operations.md: "negative if
// more was spent than the tombstone held"). A top-up, a grant or a refund
// on it pays the debt off first (the debt is never forgiven), a grant still
// stops at the cap, and the ledger and the totals record what was really
// added (found by the adversarial review).
func TestMovementsOnANegativeBalanceKeepTheDebt(t *testing.T) {
	cases := map[string]struct {
		before *hcv1.CreditAccount
		want   int64
	}{
		"top-up of 50":             {openAccount("alice").Cap(100).Balance(-100).TopUp("t", 50).Obj(), -50},
		"grant of 10":              {openAccount("alice").Cap(100).Balance(-100).Grant(10, time.Minute).Obj(), -90},
		"adjust +50":               {openAccount("alice").Cap(100).Balance(-100).Adjust("j", 50, "r").Obj(), -50},
		"adjust -50 takes nothing": {openAccount("alice").Cap(100).Balance(-100).Adjust("j", -50, "r").Obj(), -100},
		"grants stop at the cap":   {openAccount("alice").Cap(100).Balance(-100).Grant(500, time.Minute).Obj(), 100},
		"top-up at the bound":      {openAccount("alice").Cap(100).Balance(hcv1.MaxCredits-10).TopUp("t", 100).Obj(), hcv1.MaxCredits},
		// At the API's bound the balance saturates, and the totals and
		// the ledger count what was really added.
		"adjust +100 at the bound": {openAccount("alice").Cap(100).Balance(hcv1.MaxCredits-10).Adjust("j", 100, "r").Obj(), hcv1.MaxCredits},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := tc.before.DeepCopy()
			Refresh(a, at(time.Minute))
			if a.Status.Balance != tc.want {
				t.Errorf("balance %d -> %d, want %d (ledger: %+v)", tc.before.Status.Balance, a.Status.Balance, tc.want, a.Status.Ledger)
			}
			if err := conserved(tc.before, a); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestReleaseToANegativeBalanceKeepsTheDebt: a reservation given back to
// an account whose balance went negative since (Reopen) adds what it took,
// without forgiving the debt.
func TestReleaseToANegativeBalanceKeepsTheDebt(t *testing.T) {
	before := openAccount("alice").Cap(100).Balance(-100).Obj()
	before.Status.Servers = []hcv1.ServerCharge{{ID: "r1", Pod: "jupyter-alice", Wallet: "alice", Paid: 30}}
	a := before.DeepCopy()
	if back := Release(a, "r1", at(time.Minute), "never ran"); back != 30 {
		t.Errorf("Release gave back %d, want 30", back)
	}
	if a.Status.Balance != -70 {
		t.Errorf("balance -100 -> %d, want -70", a.Status.Balance)
	}
	if err := conserved(before, a); err != nil {
		t.Error(err)
	}
}
