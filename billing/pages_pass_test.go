package billing

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// applyPass writes what a pass committed: each page the transfer's, then
// the account's confirmations (what the controller's next round does).
func applyPass(t *testing.T, a *hcv1.CreditAccount, pages map[int32]*hcv1.LedgerPage, p PagesPass) {
	t.Helper()
	for _, n := range p.Committed {
		page := pages[n]
		if page == nil {
			var err error
			if page, err = NewPage(a, n); err != nil {
				t.Fatal(err)
			}
			pages[n] = page
		}
		i := pendingFor(a, n)
		if i < 0 {
			t.Fatalf("page %d committed, no transfer pending for it", n)
		}
		if _, err := Apply(page, &a.Status.Pending[i]); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range p.Committed {
		if _, err := Confirm(a, pages[n]); err != nil {
			t.Fatal(err)
		}
	}
}

func pageList(pages map[int32]*hcv1.LedgerPage) []*hcv1.LedgerPage {
	var out []*hcv1.LedgerPage
	for n := int32(1); n <= int32(len(pages)); n++ {
		out = append(out, pages[n])
	}
	return out
}

// SettlePages: one transaction per page that changes, at most Pending per
// account write (the rest in the next round), the excess inline entries
// moved one batch at a time; the pages' results merged; conservation and
// the aggregates hold after every round.
func TestSettlePages(t *testing.T) {
	for name, tc := range map[string]struct {
		limits  PageLimits
		inline  []hcv1.ServerCharge
		pages   [][]hcv1.ServerCharge
		pods    map[string]PodObservation
		now     time.Duration
		balance int64
		// rounds are the pages committed in each round until nothing is left.
		rounds  [][]int32
		want    int64 // balance after the last round
		periods map[string]int64
		inlineN int
		stops   int
	}{
		"two pages charged at a boundary, one round": {
			limits: PageLimits{Inline: 2, PerPage: 2, Pending: 8},
			pages: [][]hcv1.ServerCharge{
				{labServer("a").Running(0).Obj(), labServer("b").Running(0).Obj()},
				{labServer("c").Running(0).Obj()},
			},
			pods: map[string]PodObservation{"a": running("u-a", 0), "b": running("u-b", 0), "c": running("u-c", 0)},
			now:  interval + time.Second, balance: 100,
			rounds:  [][]int32{{1, 2}, nil},
			want:    70,
			periods: map[string]int64{"a": 2, "b": 2, "c": 2},
		},
		"one transfer pending at most: a page a round": {
			limits: PageLimits{Inline: 2, PerPage: 2, Pending: 1},
			pages: [][]hcv1.ServerCharge{
				{labServer("a").Running(0).Obj()},
				{labServer("b").Running(0).Obj()},
				{labServer("c").Running(0).Obj()},
			},
			pods: map[string]PodObservation{"a": running("u-a", 0), "b": running("u-b", 0), "c": running("u-c", 0)},
			now:  interval + time.Second, balance: 100,
			rounds:  [][]int32{{1}, {2}, {3}, nil},
			want:    70,
			periods: map[string]int64{"a": 2, "b": 2, "c": 2},
		},
		"nothing due: nothing committed": {
			limits: PageLimits{Inline: 2, PerPage: 2, Pending: 8},
			pages:  [][]hcv1.ServerCharge{{labServer("a").Running(0).Obj()}},
			pods:   map[string]PodObservation{"a": running("u-a", 0)},
			now:    interval / 2, balance: 100,
			rounds:  [][]int32{nil},
			want:    100,
			periods: map[string]int64{"a": 1},
		},
		"short of credits: the page stops its servers": {
			limits: PageLimits{Inline: 2, PerPage: 2, Pending: 8},
			pages: [][]hcv1.ServerCharge{
				{labServer("a").Running(0).Obj(), labServer("b").Running(0).Obj()},
			},
			pods: map[string]PodObservation{"a": running("u-a", 0), "b": running("u-b", 0)},
			now:  interval + time.Second, balance: 15,
			rounds:  [][]int32{{1}, nil},
			want:    5,
			periods: map[string]int64{"a": 2, "b": 1},
			stops:   1,
		},
		// A reservation held twice (the same id inline and on a page, or
		// on two pages: a retried admission whose first attempt was on a
		// page the retry could not see, a pod adopted while its entry was
		// on a page the cache had not seen) bills one pod twice: the
		// later entry is returned whole, the first bills the pod.
		"a reservation held inline and on a page: the page's returned": {
			limits: PageLimits{Inline: 2, PerPage: 2, Pending: 8},
			inline: []hcv1.ServerCharge{labServer("a").Running(0).Obj()},
			pages:  [][]hcv1.ServerCharge{{labServer("a").Running(0).Obj(), labServer("b").Running(0).Obj()}},
			pods:   map[string]PodObservation{"a": running("u-a", 0), "b": running("u-b", 0)},
			now:    interval / 2, balance: 100,
			rounds:  [][]int32{{1}, nil},
			want:    110,
			periods: map[string]int64{"a": 1, "b": 1},
			inlineN: 1,
		},
		"a reservation held on two pages, at a boundary: charged once, the later returned": {
			limits: PageLimits{Inline: 2, PerPage: 2, Pending: 8},
			pages: [][]hcv1.ServerCharge{
				{labServer("a").Running(0).Obj()},
				{labServer("b").Running(0).Obj(), labServer("a").Running(0).Obj()},
			},
			pods: map[string]PodObservation{"a": running("u-a", 0), "b": running("u-b", 0)},
			now:  interval + time.Second, balance: 100,
			rounds:  [][]int32{{1, 2}, nil},
			want:    90,
			periods: map[string]int64{"a": 2, "b": 2},
		},
		"a pod billed by an entry inline and one on a page (adopted while its entry was out of sight)": {
			limits: PageLimits{Inline: 2, PerPage: 2, Pending: 8},
			inline: []hcv1.ServerCharge{labServer("pod-u-a").UID("u-a").Running(0).Obj()},
			pages:  [][]hcv1.ServerCharge{{labServer("a").Running(0).Obj()}},
			pods:   map[string]PodObservation{"a": running("u-a", 0), "pod-u-a": running("u-a", 0)},
			now:    interval / 2, balance: 100,
			rounds:  [][]int32{{1}, nil},
			want:    110,
			periods: map[string]int64{"pod-u-a": 1},
			inlineN: 1,
		},
		"migration: the excess inline entries move, one move at a time": {
			limits: PageLimits{Inline: 1, PerPage: 2, Pending: 8},
			inline: []hcv1.ServerCharge{labServer("a").Running(0).Obj(), labServer("b").Running(0).Obj(),
				labServer("c").Running(0).Obj(), labServer("d").Running(0).Obj()},
			pods: map[string]PodObservation{"a": running("u-a", 0), "b": running("u-b", 0), "c": running("u-c", 0),
				"d": running("u-d", 0)},
			now: interval / 2, balance: 60,
			// page 1 gets a and b, page 2 gets c; d stays inline.
			rounds:  [][]int32{{1}, {2}, nil},
			want:    60,
			periods: map[string]int64{"a": 1, "b": 1, "c": 1, "d": 1},
			inlineN: 1,
		},
	} {
		t.Run(name, func(t *testing.T) {
			a := labPool(tc.balance, tc.inline...)
			pages := map[int32]*hcv1.LedgerPage{}
			for i, servers := range tc.pages {
				pages[int32(i+1)] = mustPage(t, a, int32(i+1), servers...)
			}
			a.Status.Pages = int32(len(tc.pages))
			recountPaged(t, a, pageList(pages)...)
			before := pageLedger(t, a, pageList(pages)...)
			stops := 0
			for i, want := range tc.rounds {
				p, err := SettlePages(a, pages, podsByID(tc.pods), at(tc.now), testOptions, tc.limits)
				if err != nil {
					t.Fatalf("round %d: %v", i, err)
				}
				if d := cmp.Diff(want, p.Committed); d != "" {
					t.Fatalf("round %d committed (-want +got):\n%s", i, d)
				}
				if p.More && i == len(tc.rounds)-1 {
					t.Errorf("round %d: More, but nothing was left", i)
				}
				stops += len(p.Result.Stops)
				applyPass(t, a, pages, p)
				if len(a.Status.Pending) != 0 {
					t.Fatalf("round %d: %d transfers left pending", i, len(a.Status.Pending))
				}
				// Charges move credits from the balance to the entries:
				// balance + held is constant (nothing ended here).
				if got := pageLedger(t, a, pageList(pages)...); got != before {
					t.Fatalf("round %d: balance + held %d, want %d", i, got, before)
				}
			}
			if a.Status.Balance != tc.want {
				t.Errorf("balance %d, want %d", a.Status.Balance, tc.want)
			}
			got := map[string]int64{}
			for _, e := range slices.Concat(a.Status.Servers, mustEntries(t, a, pages)) {
				got[e.ID] = e.PeriodsPaid
			}
			if d := cmp.Diff(tc.periods, got); d != "" {
				t.Errorf("periods paid (-want +got):\n%s", d)
			}
			if len(a.Status.Servers) != tc.inlineN {
				t.Errorf("%d entries inline, want %d", len(a.Status.Servers), tc.inlineN)
			}
			if stops != tc.stops {
				t.Errorf("%d stops, want %d", stops, tc.stops)
			}
		})
	}
}

func mustEntries(t *testing.T, a *hcv1.CreditAccount, pages map[int32]*hcv1.LedgerPage) []hcv1.ServerCharge {
	t.Helper()
	e, err := PageEntries(a, pages)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// A round's results merged: the earlier requeue, every stop and note,
// Waiting from either.
func TestResultMerge(t *testing.T) {
	r := Result{RequeueAfter: time.Minute, Notes: []Note{{Reason: "a"}}}
	r.Merge(Result{RequeueAfter: time.Second, Notes: []Note{{Reason: "b"}}, Stops: []Stop{{Message: "s"}}, Waiting: true,
		ChangedProjects: map[string]bool{"lab": true}})
	r.Merge(Result{})
	if r.RequeueAfter != time.Second || len(r.Notes) != 2 || len(r.Stops) != 1 || !r.Waiting || !r.ChangedProjects["lab"] {
		t.Errorf("merged: %+v", r)
	}
}
