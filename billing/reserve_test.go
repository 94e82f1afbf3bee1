package billing

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// reserveView is the part of an account Take and Release change.
type reserveView struct {
	Balance       int64
	TotalCharged  int64
	TotalRefunded int64
	Servers       []hcv1.ServerCharge
	Ledger        []string
}

func reserveViewOf(a *hcv1.CreditAccount) reserveView {
	return reserveView{
		Balance: a.Status.Balance, TotalCharged: a.Status.TotalCharged, TotalRefunded: a.Status.TotalRefunded,
		Servers: a.Status.Servers, Ledger: ledgerKinds(a),
	}
}

func reservation(id string) Reservation {
	return Reservation{
		ID: id, Pod: "jupyter-alice", User: "alice", Wallet: "alice",
		Price: Price{Value: 10, Interval: interval},
	}
}

func withProject(r Reservation, p string) Reservation { r.Project = p; return r }

func withPolicy(r Reservation, server, policy string) Reservation {
	r.ServerName, r.Price.Policy = server, policy
	return r
}

func TestTake(t *testing.T) {
	now := at(0)
	cases := map[string]struct {
		account                 *hcv1.CreditAccount
		r                       Reservation
		need, want, projectPaid int64
		wantTaken               int64
		wantErr                 error
		wantAccount             reserveView
	}{
		"the wallet pays the first period": {
			account:   openAccount("alice").Balance(50).Obj(),
			r:         reservation("r1"),
			need:      10,
			want:      10,
			wantTaken: 10,
			wantAccount: reserveView{Balance: 40, TotalCharged: 10,
				Servers: []hcv1.ServerCharge{testutil.MakeServerCharge("r1").Obj()}, Ledger: []string{"Reserve -10"}},
		},
		"the entry pins the price, policy and server name": {
			account:   openAccount("alice").Balance(50).Obj(),
			r:         withPolicy(reservation("r1"), "gpu", "gpu-policy"),
			need:      10,
			want:      10,
			wantTaken: 10,
			wantAccount: reserveView{Balance: 40, TotalCharged: 10,
				Servers: []hcv1.ServerCharge{func() hcv1.ServerCharge {
					s := testutil.MakeServerCharge("r1").Policy("gpu-policy").Obj()
					s.ServerName = "gpu"
					return s
				}()},
				Ledger: []string{"Reserve -10"}},
		},
		"the wallet takes exactly its balance": {
			account:     openAccount("alice").Balance(10).Obj(),
			r:           reservation("r1"),
			need:        10,
			want:        10,
			wantTaken:   10,
			wantAccount: reserveView{Balance: 0, TotalCharged: 10, Servers: []hcv1.ServerCharge{testutil.MakeServerCharge("r1").Obj()}, Ledger: []string{"Reserve -10"}},
		},
		"the wallet records the pool's part of the first period": {
			account:     openAccount("alice").Balance(50).Project("lab").Obj(),
			r:           withProject(reservation("r1"), "lab"),
			need:        6,
			want:        6,
			projectPaid: 4,
			wantTaken:   6,
			wantAccount: reserveView{Balance: 44, TotalCharged: 6,
				Servers: []hcv1.ServerCharge{testutil.MakeServerCharge("r1").Paid(1, 6).Project("lab").ProjectPaid(4).Obj()},
				Ledger:  []string{"Reserve -6"}},
		},
		"the pool takes what it holds, up to the price": {
			account:   openAccount("lab").Balance(4).Obj(),
			r:         withProject(reservation("r1"), "lab"),
			need:      0,
			want:      10,
			wantTaken: 4,
			wantAccount: reserveView{Balance: 0, TotalCharged: 4,
				// The pool's entry names the wallet and carries no project fields.
				Servers: []hcv1.ServerCharge{testutil.MakeServerCharge("r1").Paid(1, 4).Obj()},
				Ledger:  []string{"Reserve -4"}},
		},
		"a rich pool takes the whole price": {
			account:   openAccount("lab").Balance(500).Obj(),
			r:         withProject(reservation("r1"), "lab"),
			need:      0,
			want:      10,
			wantTaken: 10,
			wantAccount: reserveView{Balance: 490, TotalCharged: 10,
				Servers: []hcv1.ServerCharge{testutil.MakeServerCharge("r1").Obj()}, Ledger: []string{"Reserve -10"}},
		},
		"an empty pool takes nothing but records its (zero) share": {
			account:     openAccount("lab").Balance(0).Obj(),
			r:           withProject(reservation("r1"), "lab"),
			need:        0,
			want:        10,
			wantTaken:   0,
			wantAccount: reserveView{Servers: []hcv1.ServerCharge{testutil.MakeServerCharge("r1").Paid(1, 0).Obj()}, Ledger: []string{"Reserve +0"}},
		},
		"not enough: an error and no change": {
			account:     openAccount("alice").Balance(9).Obj(),
			r:           reservation("r1"),
			need:        10,
			want:        10,
			wantErr:     &InsufficientError{Account: "alice", Balance: 9, Need: 10},
			wantAccount: reserveView{Balance: 9},
		},
		"idempotent: a second Take returns what the first took": {
			account:   openAccount("alice").Balance(0).Servers(testutil.MakeServerCharge("r1").Obj()).Obj(),
			r:         reservation("r1"),
			need:      10,
			want:      10,
			wantTaken: 10,
			wantAccount: reserveView{Balance: 0,
				Servers: []hcv1.ServerCharge{testutil.MakeServerCharge("r1").Obj()}},
		},
		"a free server reserves nothing but is recorded": {
			account:   openAccount("alice").Balance(0).Obj(),
			r:         func() Reservation { r := reservation("r1"); r.Price.Value = 0; return r }(),
			wantTaken: 0,
			wantAccount: reserveView{
				Servers: []hcv1.ServerCharge{testutil.MakeServerCharge("r1").Price(0, interval).Paid(1, 0).Obj()},
				Ledger:  []string{"Reserve +0"}},
		},
		"a second server is added after the first": {
			account:   openAccount("alice").Balance(50).Servers(testutil.MakeServerCharge("r1").Pod("jupyter-alice-a").Obj()).Obj(),
			r:         reservation("r2"),
			need:      10,
			want:      10,
			wantTaken: 10,
			wantAccount: reserveView{Balance: 40, TotalCharged: 10,
				Servers: []hcv1.ServerCharge{testutil.MakeServerCharge("r1").Pod("jupyter-alice-a").Obj(), testutil.MakeServerCharge("r2").Obj()},
				Ledger:  []string{"Reserve -10"}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := tc.account.DeepCopy()
			taken, err := Take(a, tc.r, tc.need, tc.want, tc.projectPaid, now)
			if taken != tc.wantTaken {
				t.Errorf("Take = %d, want %d", taken, tc.wantTaken)
			}
			if d := cmp.Diff(tc.wantErr, err, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("Take error mismatch (-want +got):\n%s", d)
			}
			if tc.wantErr != nil {
				var ie *InsufficientError
				if !errors.As(err, &ie) {
					t.Errorf("Take error %v is not an *InsufficientError", err)
				}
			}
			if d := cmp.Diff(tc.wantAccount, reserveViewOf(a), cmpopts.EquateEmpty()); d != "" {
				t.Errorf("account mismatch (-want +got):\n%s", d)
			}
			if err := conserved(tc.account, a); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestInsufficientErrorMessage(t *testing.T) {
	err := &InsufficientError{Account: "alice", Balance: 4, Need: 10}
	if got, want := err.Error(), `account "alice" has 4 credits, 10 needed`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestRelease(t *testing.T) {
	now := at(time.Minute)
	cases := map[string]struct {
		account      *hcv1.CreditAccount
		id           string
		wantReturned int64
		wantAccount  reserveView
	}{
		"gives back the reservation and removes the entry": {
			account:      openAccount("alice").Balance(40).Servers(testutil.MakeServerCharge("r1").Obj()).Obj(),
			id:           "r1",
			wantReturned: 10,
			wantAccount:  reserveView{Balance: 50, TotalRefunded: 10, Ledger: []string{"Refund +10"}},
		},
		"gives back only this account's part": {
			account:      openAccount("alice").Balance(40).Servers(testutil.MakeServerCharge("r1").Paid(1, 6).Project("lab").ProjectPaid(4).Obj()).Obj(),
			id:           "r1",
			wantReturned: 6,
			wantAccount:  reserveView{Balance: 46, TotalRefunded: 6, Ledger: []string{"Refund +6"}},
		},
		"keeps the other entries in order": {
			account: openAccount("alice").Balance(0).Servers(
				testutil.MakeServerCharge("r1").Obj(), testutil.MakeServerCharge("r2").Paid(1, 7).Obj(), testutil.MakeServerCharge("r3").Obj()).Obj(),
			id:           "r2",
			wantReturned: 7,
			wantAccount: reserveView{Balance: 7, TotalRefunded: 7,
				Servers: []hcv1.ServerCharge{testutil.MakeServerCharge("r1").Obj(), testutil.MakeServerCharge("r3").Obj()}, Ledger: []string{"Refund +7"}},
		},
		"an unknown id returns nothing": {
			account:      openAccount("alice").Balance(40).Servers(testutil.MakeServerCharge("r1").Obj()).Obj(),
			id:           "r9",
			wantReturned: 0,
			wantAccount:  reserveView{Balance: 40, Servers: []hcv1.ServerCharge{testutil.MakeServerCharge("r1").Obj()}},
		},
		"an entry that paid nothing is removed without a ledger entry": {
			account:     openAccount("lab").Balance(0).Servers(testutil.MakeServerCharge("r1").Paid(1, 0).Obj()).Obj(),
			id:          "r1",
			wantAccount: reserveView{},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := tc.account.DeepCopy()
			before := a.DeepCopy()
			got := Release(a, tc.id, now, "test")
			if got != tc.wantReturned {
				t.Errorf("Release = %d, want %d", got, tc.wantReturned)
			}
			if d := cmp.Diff(tc.wantAccount, reserveViewOf(a), cmpopts.EquateEmpty()); d != "" {
				t.Errorf("account mismatch (-want +got):\n%s", d)
			}
			// Release must not disturb the caller's view of the old list.
			if d := cmp.Diff(before.Status.Servers, tc.account.Status.Servers, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("Release modified the original entries (-want +got):\n%s", d)
			}
		})
	}
}

func TestReleaseLedgerEntry(t *testing.T) {
	a := openAccount("alice").Balance(40).Servers(testutil.MakeServerCharge("r1").Obj()).Obj()
	Release(a, "r1", at(time.Minute), "server jupyter-alice never started; reservation returned")
	want := []hcv1.LedgerEntry{{
		Time: metav1.NewTime(at(time.Minute)), Kind: hcv1.LedgerRefund, Amount: 10, Balance: 50,
		Subject: "jupyter-alice", Message: "server jupyter-alice never started; reservation returned",
	}}
	if d := cmp.Diff(want, a.Status.Ledger, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("ledger mismatch (-want +got):\n%s", d)
	}
}

// TestTakeThenReleaseRoundTrip takes pool first, wallet second, as the
// webhook does, and releases both: every credit comes back.
func TestTakeThenReleaseRoundTrip(t *testing.T) {
	pool := openAccount("lab").Balance(4).Obj()
	wallet := openAccount("alice").Balance(50).Project("lab").Obj()
	start := map[string]*hcv1.CreditAccount{"lab": pool.DeepCopy(), "alice": wallet.DeepCopy()}
	r := withProject(reservation("r1"), "lab")
	fromPool, err := Take(pool, r, 0, r.Price.Value, 0, t0)
	if err != nil {
		t.Fatal(err)
	}
	rest := r.Price.Value - fromPool
	fromWallet, err := Take(wallet, r, rest, rest, fromPool, t0)
	if err != nil {
		t.Fatal(err)
	}
	if fromPool != 4 || fromWallet != 6 {
		t.Errorf("pool took %d and wallet %d, want 4 and 6", fromPool, fromWallet)
	}
	Release(wallet, "r1", at(time.Minute), "test")
	Release(pool, "r1", at(time.Minute), "test")
	got := []int64{pool.Status.Balance, wallet.Status.Balance, int64(len(pool.Status.Servers) + len(wallet.Status.Servers))}
	if d := cmp.Diff([]int64{4, 50, 0}, got, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("[pool, wallet, entries] after the round trip (-want +got):\n%s", d)
	}
	for _, a := range []*hcv1.CreditAccount{pool, wallet} {
		if err := conserved(start[a.Name], a); err != nil {
			t.Error(err)
		}
	}
}
