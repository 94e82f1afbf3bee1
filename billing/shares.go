package billing

import hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"

// Who paid which period of a server. The pool pays first: within a charge
// of several periods it pays the earliest ones, so as long as its share
// never rises from one period to the next, "pool first over the server's
// whole life" says who paid every period and nothing needs recording. When
// it does rise (the pool ran dry, then was topped up), the wallet's entry
// records runs of periods with the pool's share of each (status.servers[].
// shares) from then on. A refund of periods charged after the server's end
// returns each period to whoever paid it.

// maxShareRuns bounds the runs kept (the CRD's MaxItems). Refunds only reach
// back over periods charged while the server's end was not seen; the oldest
// runs are dropped and counted pool first again.
const maxShareRuns = 16

// poolFirst is what the pool paid of periods [from, from+n) of a server whose
// pool paid poolPaid of its first periods, pool first, at value a period.
func poolFirst(poolPaid, from, n, value int64) int64 {
	return min(max(poolPaid-mulSat(from, value), 0), mulSat(n, value))
}

// chargeRuns splits a charge of n periods at value, of which the pool paid
// poolShare, into runs: the pool's full periods first, then the one it paid
// part of, then the wallet's.
func chargeRuns(n, poolShare, value int64) []hcv1.PeriodShare {
	full := min(poolShare/value, n)
	part := poolShare - full*value
	var runs []hcv1.PeriodShare
	if full > 0 {
		runs = append(runs, hcv1.PeriodShare{Periods: full, Pool: value})
	}
	if part > 0 && full < n {
		runs = append(runs, hcv1.PeriodShare{Periods: 1, Pool: part})
		full++
	}
	if rest := n - full; rest > 0 {
		runs = append(runs, hcv1.PeriodShare{Periods: rest, Pool: 0})
	}
	return runs
}

// recordShares records a charge of periods [from, from+n) of which the pool
// paid poolShare; entry.ProjectPaid already includes it. Nothing is recorded
// while the whole life is still pool first.
func recordShares(entry *hcv1.ServerCharge, from, n, poolShare int64) {
	value := entry.BillingValue
	if n <= 0 || value <= 0 {
		return
	}
	runs := chargeRuns(n, poolShare, value)
	if len(entry.Shares) == 0 {
		first := true
		at := from
		for _, r := range runs {
			first = first && poolFirst(entry.ProjectPaid, at, r.Periods, value) == mulSat(r.Periods, r.Pool)
			at += r.Periods
		}
		if first {
			return
		}
	}
	for _, r := range runs {
		if last := len(entry.Shares) - 1; last >= 0 && entry.Shares[last].Pool == r.Pool {
			entry.Shares[last].Periods += r.Periods
			continue
		}
		entry.Shares = append(entry.Shares, r)
	}
	if extra := len(entry.Shares) - maxShareRuns; extra > 0 {
		entry.Shares = append([]hcv1.PeriodShare(nil), entry.Shares[extra:]...)
	}
}

// poolShareOfLast is what the pool paid of entry's last n periods: from the
// recorded runs, and pool first before them.
func poolShareOfLast(entry *hcv1.ServerCharge, n int64) int64 {
	var pool, runPeriods, runPool int64
	for _, r := range entry.Shares {
		runPeriods += r.Periods
		runPool = addSat(runPool, mulSat(r.Periods, r.Pool))
	}
	for i := len(entry.Shares) - 1; i >= 0 && n > 0; i-- {
		k := min(n, entry.Shares[i].Periods)
		pool = addSat(pool, mulSat(k, entry.Shares[i].Pool))
		n -= k
	}
	if n > 0 {
		before := max(entry.PeriodsPaid-runPeriods, 0)
		from := max(before-n, 0)
		pool = addSat(pool, poolFirst(max(entry.ProjectPaid-runPool, 0), from, before-from, entry.BillingValue))
	}
	return min(pool, entry.ProjectPaid)
}

// dropLastShares removes the last n periods from the recorded runs.
func dropLastShares(entry *hcv1.ServerCharge, n int64) {
	for n > 0 && len(entry.Shares) > 0 {
		last := &entry.Shares[len(entry.Shares)-1]
		k := min(n, last.Periods)
		last.Periods -= k
		n -= k
		if last.Periods == 0 {
			entry.Shares = entry.Shares[:len(entry.Shares)-1]
		}
	}
	if len(entry.Shares) == 0 {
		entry.Shares = nil
	}
}
