package billing

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// storedPages is the API server's pages of a test: ReserveBatch reads the
// ones it was not given from it; write applies the account's pending
// transfers to it and confirms them (the page writes after the commit).
type storedPages map[int32]*hcv1.LedgerPage

func (s storedPages) read(a *hcv1.CreditAccount) func(int32) (*hcv1.LedgerPage, error) {
	return func(n int32) (*hcv1.LedgerPage, error) {
		if p := s[n]; p != nil {
			return p.DeepCopy(), nil
		}
		return NewPage(a, n)
	}
}

func (s storedPages) write(t *testing.T, a *hcv1.CreditAccount) {
	t.Helper()
	for _, tr := range slices.Clone(a.Status.Pending) {
		p := s[tr.Page]
		if p == nil {
			p = mustPage(t, a, tr.Page)
			s[tr.Page] = p
		}
		if _, err := Apply(p, &tr); err != nil {
			t.Fatal(err)
		}
		if _, err := Confirm(a, p); err != nil {
			t.Fatal(err)
		}
	}
}

func (s storedPages) ledger(t *testing.T, a *hcv1.CreditAccount) int64 {
	t.Helper()
	return pageLedger(t, a, slices.Collect(maps.Values(s))...)
}

// outcome is a PageOutcome for the table: the error's text, or "next".
type outcome struct {
	Page int32
	Paid int64
	Err  string
}

func outcomes(out []PageOutcome) []outcome {
	var got []outcome
	for _, o := range out {
		g := outcome{Page: o.Page, Paid: o.Paid}
		switch {
		case o.Next:
			g = outcome{Err: "next"}
		case o.Err != nil:
			g = outcome{Err: errText(o.Err)}
		}
		got = append(got, g)
	}
	return got
}

func errText(err error) string {
	var short *InsufficientError
	switch {
	case errors.As(err, &short):
		return "insufficient"
	case errors.Is(err, ErrTooManyPages):
		return "too many pages"
	}
	return err.Error()
}

func labReservations(ids ...string) []PageReservation {
	rs := make([]PageReservation, len(ids))
	for i, id := range ids {
		rs[i] = labReservation(id, 10)
	}
	return rs
}

func TestReserveBatch(t *testing.T) {
	limits := PageLimits{Inline: 2, PerPage: 3, Pending: 3}
	ok := func(page int32) outcome { return outcome{Page: page, Paid: 10} }
	next := outcome{Err: "next"}
	ids := func(prefix string, n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("%s%d", prefix, i))
		}
		return out
	}
	for name, tc := range map[string]struct {
		balance   int64
		inline    []string // entries in status.servers
		pages     [][]string
		given     []int32 // pages given to ReserveBatch (the rest it reads)
		limits    *PageLimits
		rs        []PageReservation
		want      []outcome
		wantPages int32
		wantReads []int32
	}{
		"inline first, then a new page": {
			balance: 100, inline: []string{"i0"},
			rs:   labReservations("a", "b", "c"),
			want: []outcome{ok(0), ok(1), ok(1)}, wantPages: 1, wantReads: []int32{1},
		},
		"the last page's room, then new pages, one transfer each": {
			balance: 100, inline: []string{"i0", "i1"}, pages: [][]string{{"p0", "p1", "p2"}, {"q0"}},
			rs:   labReservations(ids("r", 6)...),
			want: []outcome{ok(2), ok(2), ok(3), ok(3), ok(3), ok(4)}, wantPages: 4, wantReads: []int32{2, 3, 4},
		},
		"the pending transfers are bounded: the rest in the next write": {
			balance: 100, inline: []string{"i0", "i1"}, limits: &PageLimits{Inline: 2, PerPage: 3, Pending: 1},
			rs:   labReservations(ids("r", 4)...),
			want: []outcome{ok(1), ok(1), ok(1), next}, wantPages: 1, wantReads: []int32{1},
		},
		"a transfer adds at most MaxReserveBatch: the rest in the next write": {
			balance: 1000, limits: &PageLimits{Inline: 0, PerPage: 64, Pending: 8},
			rs:        labReservations(ids("r", hcv1.MaxReserveBatch+2)...),
			want:      append(slices.Repeat([]outcome{ok(1)}, hcv1.MaxReserveBatch), next, next),
			wantPages: 1, wantReads: []int32{1},
		},
		"a retried reservation takes nothing twice, on a page it was given": {
			balance: 100, inline: []string{"i0", "i1"}, pages: [][]string{{"p0", "p1", "p2"}, {"q0", "q1", "q2"}, {"s0"}},
			given: []int32{1, 3},
			rs:    labReservations("p1", "i1", "s0", "new"),
			want:  []outcome{ok(1), ok(0), ok(3), ok(3)}, wantPages: 3,
		},
		"the same id twice in a batch": {
			balance: 100, inline: []string{"i0"},
			rs:   labReservations("a", "a", "b", "b"),
			want: []outcome{ok(0), ok(0), ok(1), ok(1)}, wantPages: 1, wantReads: []int32{1},
		},
		"the account runs out": {
			balance: 25, inline: []string{"i0", "i1"},
			rs:   labReservations("a", "b", "c"),
			want: []outcome{ok(1), ok(1), {Err: "insufficient"}}, wantPages: 1, wantReads: []int32{1},
		},
		"a reservation a pool co-funds stays off the pages": {
			balance: 100, inline: []string{"i0", "i1"},
			rs:   []PageReservation{{Reservation: Reservation{ID: "w", Wallet: "alice", Project: "lab"}, Need: 10, Want: 10}},
			want: []outcome{{Err: `entry w (wallet "alice", project "lab") cannot be on a page of account "lab": pages hold the account's own servers without a project pool`}},
		},
	} {
		t.Run(name, func(t *testing.T) {
			l := limits
			if tc.limits != nil {
				l = *tc.limits
			}
			var inline []hcv1.ServerCharge
			for _, id := range tc.inline {
				inline = append(inline, labServer(id).Paid(1, 10).Obj())
			}
			a := labPool(tc.balance, inline...)
			stored := storedPages{}
			for i, ids := range tc.pages {
				var servers []hcv1.ServerCharge
				for _, id := range ids {
					servers = append(servers, labServer(id).Paid(1, 10).Obj())
				}
				stored[int32(i+1)] = mustPage(t, a, int32(i+1), servers...)
			}
			a.Status.Pages = int32(len(tc.pages))
			recountPaged(t, a, slices.Collect(maps.Values(stored))...)
			before := stored.ledger(t, a)
			given := map[int32]*hcv1.LedgerPage{}
			for _, n := range tc.given {
				given[n] = stored[n].DeepCopy()
			}
			var reads []int32
			read := stored.read(a)
			out, err := ReserveBatch(a, given, func(n int32) (*hcv1.LedgerPage, error) {
				reads = append(reads, n)
				return read(n)
			}, tc.rs, at(time.Minute), l)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, outcomes(out)); d != "" {
				t.Errorf("outcomes (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantReads, reads); d != "" {
				t.Errorf("pages read (-want +got):\n%s", d)
			}
			if len(a.Status.Pending) > l.Pending {
				t.Errorf("%d transfers pending, the limit is %d", len(a.Status.Pending), l.Pending)
			}
			stored.write(t, a)
			if a.Status.Pages != tc.wantPages {
				t.Errorf("pages %d, want %d", a.Status.Pages, tc.wantPages)
			}
			if after := stored.ledger(t, a); after != before {
				t.Errorf("balance + held: %d before, %d after", before, after)
			}
			// Every reservation that is placed is held exactly once.
			for i, o := range out {
				if o.Err != nil || o.Next {
					continue
				}
				held := 0
				for _, e := range a.Status.Servers {
					if e.ID == tc.rs[i].ID {
						held++
					}
				}
				for _, p := range stored {
					for _, e := range p.Status.Servers {
						if e.ID == tc.rs[i].ID {
							held++
						}
					}
				}
				if held != 1 {
					t.Errorf("reservation %s is held %d times", tc.rs[i].ID, held)
				}
			}
		})
	}
}

func TestReserveBatchWhenThePagesAreFull(t *testing.T) {
	l := PageLimits{Inline: 0, PerPage: 1, Pending: 8}
	a := labPool(100)
	a.Status.Pages = hcv1.MaxPages
	full := mustPage(t, a, hcv1.MaxPages, labServer("last").Paid(1, 10).Obj())
	recountPaged(t, a, full)
	out, err := ReserveBatch(a, map[int32]*hcv1.LedgerPage{hcv1.MaxPages: full}, func(n int32) (*hcv1.LedgerPage, error) {
		return NewPage(a, n)
	}, labReservations("a"), at(time.Minute), l)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]outcome{{Err: "too many pages"}}, outcomes(out)); d != "" {
		t.Fatalf("outcomes (-want +got):\n%s", d)
	}
	if a.Status.Balance != 100 || len(a.Status.Pending) != 0 {
		t.Fatalf("balance %d, pending %v: want nothing taken", a.Status.Balance, a.Status.Pending)
	}
}
