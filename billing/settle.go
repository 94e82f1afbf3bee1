package billing

import (
	"fmt"
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// Settling is the billing controller's pure core. Given an account, the
// project pools that co-fund its servers, and what is known about each
// server's pod, it charges every period that fell due, refunds reservations
// whose pod never ran, and says which servers must stop. The caller writes
// the changed pools first and the wallet last, each with its resourceVersion;
// the wallet's entry is the commit record, so a crash between the writes is
// repaired by the next run (see inFlight).

// PodObservation is what the controller knows about the pod of a server.
type PodObservation struct {
	// Exists is false when the pod is gone (or was never created).
	Exists bool
	UID    types.UID
	// StartedAt is when the server's clock started (its container started
	// running); nil while the pod is pending.
	StartedAt *time.Time
	// EndedAt is when the server stopped: its deletion was requested or its
	// containers terminated. nil while it runs.
	EndedAt *time.Time
}

// Options tune settling.
type Options struct {
	// OrphanGrace is how long a reservation waits for its pod to appear
	// before it is refunded (a later admission step refused the pod, or the
	// create call failed).
	OrphanGrace time.Duration
	// StopRetry is how often a stop that has not taken effect is repeated.
	StopRetry time.Duration
	// LowPeriods: the Low condition turns true when the balance covers fewer
	// than this many further periods of the running servers.
	LowPeriods int64
}

// DefaultOptions are the operator's defaults.
var DefaultOptions = Options{OrphanGrace: 30 * time.Second, StopRetry: 30 * time.Second, LowPeriods: 2}

// Stop asks for a server to be stopped.
type Stop struct {
	Server  hcv1.ServerCharge
	Message string
	// Repeat is true when an earlier stop did not take effect yet.
	Repeat bool
}

// Note is something worth an Event.
type Note struct {
	// Pod is the pod the note is about ("" for account-only notes).
	Pod     string
	PodUID  types.UID
	Warning bool
	Reason  string
	Message string
	// Orphaned marks the return of a reservation whose pod never appeared
	// (a later admission step refused it, or the review was forged).
	Orphaned bool
}

// Event reasons.
const (
	EventCreditsReserved = "CreditsReserved"
	EventServerStarted   = "ServerStarted"
	EventServerStopped   = "CreditsExhausted"
	EventRefunded        = "ReservationRefunded"
	EventLow             = "CreditsLow"
	EventAdopted         = "ServerAdopted"
)

// Result is the outcome of Settle.
type Result struct {
	// WalletChanged reports a change of the account's status.
	WalletChanged bool
	// ChangedProjects names the pools whose status changed.
	ChangedProjects map[string]bool
	Stops           []Stop
	Notes           []Note
	// RequeueAfter is when the account must be looked at again (0: only on
	// a change).
	RequeueAfter time.Duration
	// Lags are, for each boundary charged, how late the charge is.
	Lags []time.Duration
}

func (r *Result) requeueAt(now, t time.Time) {
	d := t.Sub(now)
	if d <= 0 {
		d = time.Second
	}
	if r.RequeueAfter == 0 || d < r.RequeueAfter {
		r.RequeueAfter = d
	}
}

// Unreserved is a pod billed to the account that has no reservation (it was
// admitted while the webhook was unreachable with failurePolicy Ignore, or
// its reservation was lost): the controller adopts it and charges its first
// period when it starts.
type Unreserved struct {
	Pod        string
	UID        types.UID
	User       string
	ServerName string
	Price      Price
}

// AdoptedID is the entry id of an adopted pod.
func AdoptedID(uid types.UID) string { return "pod-" + string(uid) }

// Settle brings account a's servers up to now. projects holds every pool
// named by a's server entries (or by a.spec.project), keyed by name; a
// missing pool is treated as empty. pods returns the observation for a
// server entry. All accounts are modified in place.
func Settle(a *hcv1.CreditAccount, projects map[string]*hcv1.CreditAccount, pods func(hcv1.ServerCharge) PodObservation,
	adopt []Unreserved, now time.Time, o Options) Result {
	res := Result{ChangedProjects: map[string]bool{}}
	addedBefore := a.Status.TotalGranted + a.Status.TotalToppedUp
	completeRefunds(a, projects, now, &res)
	catchUp(a, projects, pods, now, &res)
	if Refresh(a, now) {
		res.WalletChanged = true
	}
	creditsAdded := a.Status.TotalGranted+a.Status.TotalToppedUp > addedBefore
	for name, p := range projects {
		if p != nil && Refresh(p, now) {
			res.ChangedProjects[name] = true
		}
	}
	for _, u := range adopt {
		id := AdoptedID(u.UID)
		if FindServer(a, id) >= 0 {
			continue
		}
		a.Status.Servers = append(a.Status.Servers, hcv1.ServerCharge{
			ID: id, Pod: u.Pod, PodUID: u.UID, User: u.User, ServerName: u.ServerName, Wallet: a.Name,
			Policy: u.Price.Policy, BillingValue: u.Price.Value,
			BillingInterval: metav1.Duration{Duration: u.Price.Interval}, ReservedAt: metav1.NewTime(now),
			Project: a.Spec.Project,
		})
		res.WalletChanged = true
		res.Notes = append(res.Notes, Note{Pod: u.Pod, PodUID: u.UID, Reason: EventAdopted,
			Message: fmt.Sprintf("This server had no reservation; it costs %s, billed to account %s from when it starts.", PriceText(u.Price), a.Name)})
	}

	kept := a.Status.Servers[:0:0]
	for _, e := range a.Status.Servers {
		if e.Wallet != a.Name {
			// A project's share of another wallet's server: that wallet settles it.
			kept = append(kept, e)
			continue
		}
		var p *hcv1.CreditAccount
		if e.Project != "" {
			p = projects[e.Project]
		}
		keep, changed := settleServer(a, p, &e, pods(e), now, o, &res)
		if changed {
			res.WalletChanged = true
			if p != nil {
				res.ChangedProjects[p.Name] = true
			}
		}
		if keep {
			kept = append(kept, e)
		}
	}
	a.Status.Servers = kept
	var extra int64
	if p := projects[a.Spec.Project]; p != nil && a.Spec.Project != "" {
		extra = p.Status.Balance
	}
	if updateCounters(a, now, extra, o, &res, creditsAdded) {
		res.WalletChanged = true
	}
	if g := a.Spec.Grant; g != nil && a.Status.Balance < a.Spec.Cap && a.Status.GrantedThrough != nil {
		res.requeueAt(now, a.Status.GrantedThrough.Add(g.Interval.Duration))
	}
	for name, p := range projects {
		if p != nil && updateCounters(p, now, 0, o, nil, false) {
			res.ChangedProjects[name] = true
		}
	}
	return res
}

// catchUp charges the boundaries that passed since the last run in time
// order, with the grants that fell due in between, when grants are
// involved: after an outage a wallet at its cap must not lose the grants it
// would have received between the charges (applying all grants first, then
// all charges, would). Without grants the order does not matter and the main
// pass charges everything at once. Unaffordable boundaries are left to the
// main pass, which stops the server.
func catchUp(a *hcv1.CreditAccount, projects map[string]*hcv1.CreditAccount, pods func(hcv1.ServerCharge) PodObservation, now time.Time, res *Result) {
	if a.Status.OpenedAt == nil {
		return
	}
	granted := a.Spec.Grant != nil
	for _, p := range projects {
		granted = granted || (p != nil && p.Spec.Grant != nil && p.Status.OpenedAt != nil)
	}
	if !granted {
		return
	}
	type boundary struct {
		at time.Time
		id string
		k  int64 // the period that begins at 'at'
	}
	var due []boundary
	for _, e := range a.Status.Servers {
		if e.Wallet != a.Name || e.StartedAt == nil || e.StopRequestedAt != nil || e.EndedAt != nil || e.BillingValue == 0 {
			continue
		}
		obs := pods(e)
		if !obs.Exists {
			continue
		}
		end, ended := now, false
		if obs.EndedAt != nil && obs.EndedAt.Before(now) {
			end, ended = *obs.EndedAt, true
		}
		n := PeriodsDue(e.StartedAt.Time, end, e.BillingInterval.Duration, ended)
		for k := e.PeriodsPaid; k < n && len(due) < 100000; k++ {
			due = append(due, boundary{at: Boundary(e.StartedAt.Time, k, e.BillingInterval.Duration), id: e.ID, k: k})
		}
	}
	if len(due) < 2 {
		return // nothing to interleave
	}
	sort.SliceStable(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	blocked := map[string]bool{}
	for _, b := range due {
		if blocked[b.id] || !b.at.Before(now) {
			continue
		}
		e := &a.Status.Servers[FindServer(a, b.id)]
		p := projects[e.Project] // nil without a pool
		var pe *hcv1.ServerCharge
		if Refresh(a, b.at) {
			res.WalletChanged = true
		}
		if p != nil {
			if Refresh(p, b.at) {
				res.ChangedProjects[p.Name] = true
			}
			if j := FindServer(p, b.id); j >= 0 {
				pe = &p.Status.Servers[j]
			}
		}
		before := e.PeriodsPaid
		if charge(a, p, e, pe, b.k+1, b.at) {
			res.WalletChanged = true
			if p != nil {
				res.ChangedProjects[p.Name] = true
			}
		}
		if e.PeriodsPaid == before {
			blocked[b.id] = true // unaffordable: the main pass stops it
			continue
		}
		res.Lags = append(res.Lags, now.Sub(b.at))
	}
}

// inFlight returns what pool p has paid for periods that wallet entry e has
// not confirmed yet: it happens when the operator stopped between writing
// the pool and writing the wallet.
func inFlight(e *hcv1.ServerCharge, pe *hcv1.ServerCharge) (periods, amount int64) {
	if pe == nil || pe.PeriodsPaid <= e.PeriodsPaid {
		return 0, max(0, pePaid(pe)-e.ProjectPaid)
	}
	return pe.PeriodsPaid - e.PeriodsPaid, max(0, pe.Paid-e.ProjectPaid)
}

func pePaid(pe *hcv1.ServerCharge) int64 {
	if pe == nil {
		return 0
	}
	return pe.Paid
}

// settleServer handles one server; it returns whether to keep its entry and
// whether anything changed.
func settleServer(a, p *hcv1.CreditAccount, e *hcv1.ServerCharge, obs PodObservation, now time.Time, o Options, res *Result) (keep, changed bool) {
	var pe *hcv1.ServerCharge
	if p != nil {
		if i := FindServer(p, e.ID); i >= 0 {
			pe = &p.Status.Servers[i]
		}
	}
	price := Price{Value: e.BillingValue, Interval: e.BillingInterval.Duration, Policy: e.Policy}

	if e.EndedAt != nil {
		// Second pass of an ended server: its last period was charged and
		// written; drop the pool's record first (the caller writes pools
		// first), then this one.
		if p != nil {
			removeServer(p, e.ID)
		}
		return false, true
	}
	if !obs.Exists && e.PodUID == "" && now.Sub(e.ReservedAt.Time) < o.OrphanGrace {
		// The pod may still be on its way (or not in the cache yet).
		res.requeueAt(now, e.ReservedAt.Add(o.OrphanGrace))
		return true, false
	}
	if obs.Exists && e.PodUID == "" {
		e.PodUID = obs.UID
		changed = true
		res.Notes = append(res.Notes, Note{Pod: e.Pod, PodUID: obs.UID, Reason: EventCreditsReserved, Message: ReservedMessage(price, a, p)})
	}
	if e.StartedAt == nil && obs.StartedAt != nil && (obs.EndedAt == nil || obs.EndedAt.After(*obs.StartedAt)) {
		t := metav1.NewTime(*obs.StartedAt)
		if e.PeriodsPaid == 0 && t.Before(&e.ReservedAt) {
			// An adopted server that was already running (hubcredits was
			// installed on a live hub, or the webhook was bypassed): its
			// clock starts at adoption, never charging for time before it.
			t = e.ReservedAt
		}
		e.StartedAt = &t
		changed = true
		res.Notes = append(res.Notes, Note{Pod: e.Pod, PodUID: e.PodUID, Reason: EventServerStarted,
			Message: fmt.Sprintf("Server %s of %s started; it costs %s.", e.Pod, e.User, PriceText(price))})
	}
	ended := !obs.Exists || obs.EndedAt != nil
	if e.StartedAt == nil {
		if !ended {
			return true, changed // pending: the reservation covers it
		}
		// Never ran: give the reservation back, pool first.
		why := fmt.Sprintf("server %s never started; reservation returned", e.Pod)
		refunded := Release(a, e.ID, now, why)
		if p != nil {
			refunded += Release(p, e.ID, now, why)
		}
		// Release removed e from a.Status.Servers in place; re-add nothing.
		res.Notes = append(res.Notes, Note{Reason: EventRefunded, Orphaned: e.PodUID == "",
			Message: fmt.Sprintf("Returned %d credits reserved for %s, which never started.", refunded, e.Pod)})
		return false, true
	}

	start := e.StartedAt.Time
	interval := e.BillingInterval.Duration
	if obs.Exists && obs.EndedAt != nil {
		// Periods charged while the server looked alive but had already
		// ended (a cache that lagged, e.g. while kube-apiserver restarted)
		// are given back: a server pays for the time it ran, never more. A
		// period charged at a boundary that is the end itself is kept: it was
		// charged while the server ran (the end has whole seconds).
		if owed := PeriodsDue(start, *obs.EndedAt, interval, false); owed < e.PeriodsPaid {
			refundAfterEnd(a, p, e, pe, owed, now)
			changed = true
		}
	}
	t := now
	if obs.EndedAt != nil && obs.EndedAt.Before(now) {
		t = *obs.EndedAt
	}
	var due int64
	switch {
	case !obs.Exists:
		// The pod went away while nobody watched: in the user's favour,
		// nothing is charged beyond what was paid when it was last seen.
		due = e.PeriodsPaid
	case e.StopRequestedAt != nil:
		// A stop was asked for because the next period was unaffordable: no
		// further charges, whatever happens to the balance meanwhile.
		due = e.PeriodsPaid
	default:
		due = PeriodsDue(start, t, interval, obs.EndedAt != nil)
	}
	paidBefore := e.PeriodsPaid
	if charge(a, p, e, pe, due, now) {
		changed = true
		if e.PeriodsPaid > paidBefore {
			res.Lags = append(res.Lags, now.Sub(Boundary(start, e.PeriodsPaid-1, interval)))
		}
	}
	justStopped := false
	if e.PeriodsPaid < due {
		// The next period cannot be paid: stop the server, charge nothing for it.
		if !ended {
			justStopped = true
			st := metav1.NewTime(now)
			e.StopRequestedAt = &st
			changed = true
			msg := StopMessage(price, a, p)
			res.Stops = append(res.Stops, Stop{Server: *e, Message: msg})
			appendLedger(a, now, hcv1.LedgerStop, 0, e.Pod, msg)
			setCondition(a, now, hcv1.ConditionExhausted, metav1.ConditionTrue, hcv1.ReasonServerStopped, msg)
		}
	}
	paidThrough := metav1.NewTime(Boundary(start, e.PeriodsPaid, interval))
	if e.PaidThrough == nil || !e.PaidThrough.Equal(&paidThrough) {
		e.PaidThrough = &paidThrough
		changed = true
	}
	if ended {
		// First pass: the last charge is committed with the end marked; the
		// entries go on the next pass.
		t := metav1.NewTime(now)
		e.EndedAt = &t
		if p != nil {
			if i := FindServer(p, e.ID); i >= 0 {
				p.Status.Servers[i].EndedAt = &t
			}
		}
		appendLedger(a, now, hcv1.LedgerSettle, 0, e.Pod,
			fmt.Sprintf("server %s ended after %d period(s), %d credits", e.Pod, e.PeriodsPaid, e.Paid+e.ProjectPaid))
		res.requeueAt(now, now)
		return true, true
	}
	if e.StopRequestedAt != nil {
		if !justStopped && !now.Before(e.StopRequestedAt.Add(o.StopRetry)) {
			st := metav1.NewTime(now)
			e.StopRequestedAt = &st
			changed = true
			res.Stops = append(res.Stops, Stop{Server: *e, Message: StopMessage(price, a, p), Repeat: true})
		}
		res.requeueAt(now, e.StopRequestedAt.Add(o.StopRetry))
		return true, changed
	}
	res.requeueAt(now, Boundary(start, e.PeriodsPaid, interval))
	return true, changed
}

// charge pays periods e.PeriodsPaid .. due-1 of a server, project pool first,
// as many as the accounts can afford. It also completes or undoes a pool
// payment left in flight by an interrupted run. It reports a change.
func charge(a, p *hcv1.CreditAccount, e, pe *hcv1.ServerCharge, due int64, now time.Time) bool {
	_, flight := inFlight(e, pe)
	n := max(0, due-e.PeriodsPaid)
	if n == 0 && flight == 0 && (pe == nil || pe.PeriodsPaid == e.PeriodsPaid) {
		return false
	}
	value := e.BillingValue
	poolBal := int64(0)
	if p != nil {
		poolBal = p.Status.Balance
	}
	var k int64
	if value == 0 {
		k = n
	} else {
		avail := addSat(addSat(poolBal, flight), a.Status.Balance)
		k = min(n, avail/value)
	}
	cost := mulSat(k, value)
	poolShare := min(addSat(poolBal, flight), cost)
	walletShare := cost - poolShare
	// The pool's balance moves by what it pays now minus what was already in
	// flight (a negative move returns an in-flight payment that is not needed).
	if p != nil {
		delta := poolShare - flight
		p.Status.Balance -= delta
		if delta > 0 {
			p.Status.TotalCharged = addSat(p.Status.TotalCharged, delta)
			appendMerged(p, now, hcv1.LedgerCharge, -delta, e.Pod, k, func(n, _ int64) string {
				return fmt.Sprintf("share of %d period(s) of %s for %s", n, e.Pod, e.Wallet)
			})
		} else if delta < 0 {
			p.Status.TotalCharged -= min(-delta, p.Status.TotalCharged)
			appendLedger(p, now, hcv1.LedgerRefund, -delta, e.Pod, fmt.Sprintf("unconfirmed share of %s returned", e.Pod))
		}
	}
	a.Status.Balance -= walletShare
	if walletShare > 0 {
		a.Status.TotalCharged = addSat(a.Status.TotalCharged, walletShare)
		appendMerged(a, now, hcv1.LedgerCharge, -walletShare, e.Pod, k, func(n, _ int64) string {
			return fmt.Sprintf("%d period(s) of %s", n, e.Pod)
		})
	}
	e.PeriodsPaid += k
	e.Paid = addSat(e.Paid, walletShare)
	e.ProjectPaid = addSat(e.ProjectPaid, poolShare)
	if p != nil {
		if pe == nil && e.ProjectPaid > 0 {
			p.Status.Servers = append(p.Status.Servers, poolEntry(e))
			pe = &p.Status.Servers[len(p.Status.Servers)-1]
		}
		if pe != nil {
			pe.PeriodsPaid = e.PeriodsPaid
			pe.Paid = e.ProjectPaid
			pe.StartedAt = e.StartedAt
			pe.PodUID = e.PodUID
		}
	}
	return true
}

// completeRefunds finishes the refunds of periods charged after a server's
// end whose pool write committed while the wallet's was lost: the pool's
// entry then shows fewer periods than the wallet's (in every other case the
// pool, written first, is level with the wallet or ahead of it). Done before
// anything else, so no charge syncs the pool's entry back up.
func completeRefunds(a *hcv1.CreditAccount, projects map[string]*hcv1.CreditAccount, now time.Time, res *Result) {
	for i := range a.Status.Servers {
		e := &a.Status.Servers[i]
		p := projects[e.Project]
		if e.Wallet != a.Name || e.Project == "" || p == nil || e.EndedAt != nil {
			continue
		}
		j := FindServer(p, e.ID)
		if j < 0 || p.Status.Servers[j].PeriodsPaid >= e.PeriodsPaid {
			continue
		}
		refundAfterEnd(a, p, e, &p.Status.Servers[j], p.Status.Servers[j].PeriodsPaid, now)
		res.WalletChanged = true
		res.ChangedProjects[p.Name] = true
	}
}

// refundAfterEnd returns the periods from owed on, which were charged after
// the server had ended. The last periods are given back first, so the
// wallet's share goes back before the pool's (the pool pays first). The
// pool's entry is written first; if the wallet's write is lost, the next
// run finds the pool's entry already at its target and moves nothing twice.
func refundAfterEnd(a, p *hcv1.CreditAccount, e, pe *hcv1.ServerCharge, owed int64, now time.Time) {
	amount := mulSat(e.PeriodsPaid-owed, e.BillingValue)
	walletBack := min(amount, e.Paid)
	poolBack := min(amount-walletBack, e.ProjectPaid)
	poolTarget := e.ProjectPaid - poolBack
	why := fmt.Sprintf("%d period(s) of %s charged after it ended", e.PeriodsPaid-owed, e.Pod)
	if p != nil && pe != nil {
		// The end time only ever moves earlier (a second deletion with a
		// shorter grace), so the pool never gets less back than before.
		if back := pe.Paid - poolTarget; back > 0 {
			p.Status.Balance += back
			p.Status.TotalRefunded = addSat(p.Status.TotalRefunded, back)
			appendLedger(p, now, hcv1.LedgerRefund, back, e.Pod, why)
		}
		pe.Paid, pe.PeriodsPaid = poolTarget, owed
	}
	if walletBack > 0 {
		a.Status.Balance += walletBack
		a.Status.TotalRefunded = addSat(a.Status.TotalRefunded, walletBack)
		appendLedger(a, now, hcv1.LedgerRefund, walletBack, e.Pod, why)
	}
	e.PeriodsPaid = owed
	e.Paid -= walletBack
	e.ProjectPaid = poolTarget
}

// poolEntry is the record a project pool keeps of a wallet's server.
func poolEntry(e *hcv1.ServerCharge) hcv1.ServerCharge {
	pe := *e
	pe.Project, pe.ProjectPaid = "", 0
	pe.Paid = 0
	pe.PaidThrough = nil
	pe.StopRequestedAt = nil
	return pe
}

func removeServer(a *hcv1.CreditAccount, id string) {
	if i := FindServer(a, id); i >= 0 {
		a.Status.Servers = append(a.Status.Servers[:i:i], a.Status.Servers[i+1:]...)
	}
}

// SettleOrphans returns a pool's shares of servers whose wallet has no
// matching entry any more: a reservation whose wallet step never happened
// (the webhook stopped between its two writes), or a wallet that was
// deleted. walletHas reports whether wallet holds entry id. It reports a
// change.
func SettleOrphans(p *hcv1.CreditAccount, walletHas func(wallet, id string) bool, now time.Time, o Options) (bool, time.Duration) {
	changed := false
	var next time.Duration
	for _, e := range append([]hcv1.ServerCharge(nil), p.Status.Servers...) {
		if e.Wallet == p.Name || walletHas(e.Wallet, e.ID) {
			continue
		}
		if wait := e.ReservedAt.Add(o.OrphanGrace).Sub(now); wait > 0 {
			if next == 0 || wait < next {
				next = wait
			}
			continue
		}
		Release(p, e.ID, now, fmt.Sprintf("share of %s returned: wallet %s holds no such server", e.Pod, e.Wallet))
		changed = true
	}
	return changed, next
}

// updateCounters recomputes runningServers and the Low and Exhausted
// conditions from the entries. extra is what a co-funding pool holds. A
// Note is added to res (when not nil) as Low turns true. Exhausted, once
// true, stays true until credits are added (creditsAdded).
func updateCounters(a *hcv1.CreditAccount, now time.Time, extra int64, o Options, res *Result, creditsAdded bool) bool {
	changed := false
	var running int32
	var cost int64
	stopping := false
	for _, e := range a.Status.Servers {
		if e.EndedAt != nil {
			continue
		}
		if e.StopRequestedAt != nil {
			stopping = true
			continue
		}
		if e.StartedAt != nil {
			running++
			cost = addSat(cost, e.BillingValue)
		}
	}
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

// SetCondition is setCondition for the controllers (e.g. Ready=False).
func SetCondition(a *hcv1.CreditAccount, now time.Time, t string, st metav1.ConditionStatus, reason, msg string) bool {
	return setCondition(a, now, t, st, reason, msg)
}
