package webhooks

import (
	"context"
	"errors"
	"time"

	"k8s.io/apimachinery/pkg/types"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
)

// Reserve pays the first period of a server: the project pool first (as
// much as it holds), then the wallet the rest. If the wallet cannot pay its
// part, the pool's part is given back. wallet and project (nil for none) are
// the payers as the cache shows them: when they cannot pay together, the
// reservation is denied without a write. A refusal is a *billing.Denial.
func (r *Reserver) Reserve(ctx context.Context, ns string, res billing.Reservation, wallet, project *hcv1.CreditAccount) error {
	if err := affordable(res.Price, wallet, project, r.Clock.Now()); err != nil {
		return err // the cache already says no: deny without a write
	}
	var poolPaid int64
	pool := project
	if project != nil {
		res.Project = project.Name
		var err error
		if poolPaid, pool, err = r.takeFromPool(ctx, ns, res, project); err != nil {
			return err
		}
	}
	written, err := r.takeFromWallet(ctx, ns, res, poolPaid)
	if err == nil {
		return nil
	}
	if poolPaid > 0 {
		// Give the pool's share back. If this fails too, the controller
		// returns it once the pool's entry outlives the orphan grace.
		if returned := r.returnPoolShare(ctx, ns, res); returned != nil {
			pool = returned
		}
	}
	if written == nil {
		written = wallet
	}
	return walletRefusal(err, res, written, pool, r.Clock.Now())
}

// walletRefusal is what the user is told when the wallet step failed with
// err: a Denial when the wallet could not pay or is gone, else err. wallet
// and pool are the accounts as last seen.
func walletRefusal(err error, res billing.Reservation, wallet, pool *hcv1.CreditAccount, now time.Time) error {
	var short *billing.InsufficientError
	if errors.As(err, &short) {
		return billing.NotEnoughDenial(res.Price, wallet, pool, now)
	}
	if errors.Is(err, ErrAccountGone) {
		return &billing.Denial{Reason: billing.DenyNoAccount, Message: billing.NoAccountMessage(res.User), Account: wallet.Name}
	}
	return err
}

// takeFromPool takes the pool's part of the price (billing.SplitCost: as
// much as it holds). It returns what it took and the pool as written (as the
// cache showed it, when the batch returned no copy).
func (r *Reserver) takeFromPool(ctx context.Context, ns string, res billing.Reservation, pool *hcv1.CreditAccount) (int64, *hcv1.CreditAccount, error) {
	var paid int64
	written, err := r.Do(ctx, key(ns, pool.Name), func(a *hcv1.CreditAccount, now time.Time) error {
		// Every attempt decides from the fresh copy alone: a retry after a
		// lost write must not keep the failed attempt's share.
		paid = 0
		fromPool, _ := billing.SplitCost(res.Price.Value, a.Status.Balance)
		if fromPool <= 0 {
			return errNothingTaken // the pool is empty: no entry, no write
		}
		taken, err := billing.Take(a, res, 0, fromPool, 0, now)
		paid = taken
		return err
	})
	if err != nil && !errors.Is(err, errNothingTaken) {
		return 0, nil, err
	}
	if written == nil {
		written = pool
	}
	return paid, written, nil
}

// takeFromWallet takes the wallet's part of the price (what the pool did
// not pay), all or nothing. A server the wallet pays for alone (no project
// pool: a pool for a course, billed itself) may go to a LedgerPage
// (Reserver.Pages).
func (r *Reserver) takeFromWallet(ctx context.Context, ns string, res billing.Reservation, poolPaid int64) (*hcv1.CreditAccount, error) {
	_, fromWallet := billing.SplitCost(res.Price.Value, poolPaid)
	take := func(a *hcv1.CreditAccount, now time.Time) error {
		_, err := billing.Take(a, res, fromWallet, fromWallet, poolPaid, now)
		return err
	}
	if res.Project == "" {
		return r.doReservation(ctx, key(ns, res.Wallet), billing.PageReservation{Reservation: res, Need: fromWallet, Want: fromWallet}, take)
	}
	return r.Do(ctx, key(ns, res.Wallet), take)
}

// returnPoolShare releases the pool's entry for the reservation, even when
// the request has given up meanwhile. It returns the pool as written, or nil.
func (r *Reserver) returnPoolShare(ctx context.Context, ns string, res billing.Reservation) *hcv1.CreditAccount {
	written, err := r.Do(context.WithoutCancel(ctx), key(ns, res.Project), func(a *hcv1.CreditAccount, now time.Time) error {
		billing.Release(a, res.ID, now, "reservation returned: the wallet could not pay its part")
		return nil
	})
	if err != nil {
		return nil
	}
	return written
}

// affordable checks, without writing, whether the accounts could pay (for
// dry-run requests, which must change nothing, and before any write).
func affordable(price billing.Price, wallet, project *hcv1.CreditAccount, now time.Time) error {
	w := wallet.DeepCopy()
	billing.RefreshForAdmission(w, now)
	var p *hcv1.CreditAccount
	var pool int64
	if project != nil {
		p = project.DeepCopy()
		billing.RefreshForAdmission(p, now)
		pool = p.Status.Balance
	}
	if !billing.CanPay(price.Value, w.Status.Balance, pool) {
		return billing.NotEnoughDenial(price, w, p, now)
	}
	return nil
}

// errNothingTaken fails the pool step of a reservation when the pool is
// empty, so that nothing of it is written.
var errNothingTaken = errors.New("nothing taken")

func key(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}
