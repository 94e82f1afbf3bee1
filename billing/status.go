package billing

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// An account's status conditions, computed in one place: Ready (can its
// ledger be kept: SetReady), Low and Exhausted (can it pay for what runs:
// updateCounters, after every settle; Exhausted turns true where a stop is
// requested). Each reports whether it changed the status.

// SetReady sets the Ready condition of wallet, whose project pool is pool
// (nil when it names none or the pool does not exist). It is false for the
// same problems that deny the wallet's spawns (CheckProject), with the same
// sentence.
func SetReady(wallet, pool *hcv1.CreditAccount, now time.Time) bool {
	if problem := CheckProject(wallet, pool); problem != nil {
		return setCondition(wallet, now, hcv1.ConditionReady, metav1.ConditionFalse, problem.Reason, problem.Message)
	}
	return setCondition(wallet, now, hcv1.ConditionReady, metav1.ConditionTrue, hcv1.ReasonLedgerOpen, "The ledger is kept.")
}

// updateCounters recomputes runningServers and the Low and Exhausted
// conditions from the entries of status.servers and the aggregates of the
// account's pages (pagedRunning, pagedCost, pagedStopping, kept by
// Commit). extra is what a co-funding pool holds. A Note is added to res
// (when not nil) as Low turns true. Exhausted, once true, stays true until
// credits are added (creditsAdded).
func updateCounters(a *hcv1.CreditAccount, now time.Time, extra int64, o Options, res *Result, creditsAdded bool) bool {
	changed := false
	c, _ := countEntries(a.Status.Servers)
	running := c.running + a.Status.PagedRunning
	cost := addSat(c.cost, a.Status.PagedCost)
	stopping := c.stopping+a.Status.PagedStopping > 0
	if a.Status.RunningServers != running {
		a.Status.RunningServers = running
		changed = true
	}
	avail := addSat(a.Status.Balance, extra)
	if cost > 0 && avail < mulSat(o.LowPeriods, cost) {
		msg := fmt.Sprintf("Balance %d covers fewer than %d more periods of the running servers (%d credits per period).", avail, o.LowPeriods, cost)
		was := conditionTrue(a, hcv1.ConditionLow)
		if setCondition(a, now, hcv1.ConditionLow, metav1.ConditionTrue, hcv1.ReasonBalanceLow, msg) {
			changed = true
			if !was && res != nil {
				res.Notes = append(res.Notes, Note{Warning: true, Reason: EventLow, Message: msg})
			}
		}
	} else if setCondition(a, now, hcv1.ConditionLow, metav1.ConditionFalse, hcv1.ReasonBalanceSufficient,
		"The balance covers the running servers for the next periods.") {
		changed = true
	}
	if !stopping && (creditsAdded || !conditionTrue(a, hcv1.ConditionExhausted)) {
		if setCondition(a, now, hcv1.ConditionExhausted, metav1.ConditionFalse, hcv1.ReasonCreditsAvailable, "No server is being stopped for lack of credits.") {
			changed = true
		}
	}
	return changed
}

func conditionTrue(a *hcv1.CreditAccount, t string) bool {
	c := meta.FindStatusCondition(a.Status.Conditions, t)
	return c != nil && c.Status == metav1.ConditionTrue
}

// setCondition sets a condition with the account's generation; it reports a
// change; the transition time is the settle time, not the wall clock.
func setCondition(a *hcv1.CreditAccount, now time.Time, t string, st metav1.ConditionStatus, reason, msg string) bool {
	return meta.SetStatusCondition(&a.Status.Conditions, metav1.Condition{
		Type: t, Status: st, Reason: reason, Message: msg, ObservedGeneration: a.Generation,
		LastTransitionTime: metav1.NewTime(now),
	})
}

// UpdateCounters is updateCounters for a writer of page transactions
// (after Commit, before the account write): runningServers, Low and
// Exhausted with the pages' aggregates as they are now. extra is what a
// co-funding pool holds. Exhausted, once true, stays true here; the next
// Settle that adds credits clears it.
func UpdateCounters(a *hcv1.CreditAccount, now time.Time, extra int64, o Options) bool {
	return updateCounters(a, now, extra, o.OrDefault(), nil, false)
}

// SetCondition is setCondition for callers outside billing.
func SetCondition(a *hcv1.CreditAccount, now time.Time, t string, st metav1.ConditionStatus, reason, msg string) bool {
	return setCondition(a, now, t, st, reason, msg)
}
