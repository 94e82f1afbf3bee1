package billing

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// Reservation describes the first period of a server being admitted.
type Reservation struct {
	// ID is the reservation id: the admission request's UID.
	ID         string
	Pod        string
	User       string
	ServerName string
	// Wallet is the account the server is billed to.
	Wallet string
	// Project is the pool that pays first ("" for none).
	Project string
	Price   Price
}

// InsufficientError says that an account could not pay.
type InsufficientError struct {
	Account string
	Balance int64
	Need    int64
}

func (e *InsufficientError) Error() string {
	return fmt.Sprintf("account %q has %d credits, %d needed", e.Account, e.Balance, e.Need)
}

// Take takes credits for reservation r from account a: as much as it holds up
// to want, and at least need (else an *InsufficientError and no change). It
// records the server entry with the first period paid. projectPaid is what the
// project pool already took for this reservation (recorded on the wallet's
// entry). Take is idempotent on r.ID: a second call returns what the first
// took. Call Refresh first.
func Take(a *hcv1.CreditAccount, r Reservation, need, want, projectPaid int64, now time.Time) (int64, error) {
	if i := FindServer(a, r.ID); i >= 0 {
		return a.Status.Servers[i].Paid, nil
	}
	e, err := reserve(a, r, need, want, projectPaid, now)
	if err != nil {
		return 0, err
	}
	a.Status.Servers = append(a.Status.Servers, e)
	return e.Paid, nil
}

// reserve is the money rule of a reservation, wherever its entry goes
// (status.servers: Take; a LedgerPage: ReservePage): it takes from account
// a as much as it holds up to want, and at least need (else an
// *InsufficientError and no change), records the movement in the ledger,
// and returns the server's entry with the first period paid.
func reserve(a *hcv1.CreditAccount, r Reservation, need, want, projectPaid int64, now time.Time) (hcv1.ServerCharge, error) {
	taken := min(want, a.Status.Balance)
	if taken < need || taken < 0 {
		return hcv1.ServerCharge{}, &InsufficientError{Account: a.Name, Balance: a.Status.Balance, Need: need}
	}
	a.Status.Balance -= taken
	a.Status.TotalCharged = addSat(a.Status.TotalCharged, taken)
	e := hcv1.ServerCharge{
		ID:              r.ID,
		Pod:             r.Pod,
		User:            r.User,
		ServerName:      r.ServerName,
		Wallet:          r.Wallet,
		Policy:          r.Price.Policy,
		BillingValue:    r.Price.Value,
		BillingInterval: metav1.Duration{Duration: r.Price.Interval},
		ReservedAt:      metav1.NewTime(now),
		PeriodsPaid:     1,
		Paid:            taken,
	}
	if a.Name == r.Wallet {
		e.Project = r.Project
		e.ProjectPaid = projectPaid
	}
	appendLedger(a, now, hcv1.LedgerReserve, -taken, r.Pod,
		fmt.Sprintf("first period of %s reserved for %s", r.Pod, r.User))
	return e, nil
}

// Release gives back everything account a took for reservation id and
// removes the entry. It returns the credits given back (0 if there was no
// entry).
func Release(a *hcv1.CreditAccount, id string, now time.Time, why string) int64 {
	i := FindServer(a, id)
	if i < 0 {
		return 0
	}
	e := a.Status.Servers[i]
	a.Status.Servers = append(a.Status.Servers[:i:i], a.Status.Servers[i+1:]...)
	return refundEntry(a, &e, now, why)
}

// refundEntry gives back to account a everything it paid for entry e
// (wherever e is kept: the caller removes it) and returns e.Paid.
func refundEntry(a *hcv1.CreditAccount, e *hcv1.ServerCharge, now time.Time, why string) int64 {
	if e.Paid > 0 {
		// Signed: a refund to a negative balance does not forgive the debt.
		before := a.Status.Balance
		a.Status.Balance = addSigned(before, e.Paid)
		back := a.Status.Balance - before
		a.Status.TotalRefunded = addSat(a.Status.TotalRefunded, back)
		appendLedger(a, now, hcv1.LedgerRefund, back, e.Pod, why)
	}
	return e.Paid
}
