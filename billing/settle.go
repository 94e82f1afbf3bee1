package billing

import (
	"fmt"
	"sort"
	"time"

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
	// Lost is true for a pod that was failed while its containers still
	// said running (PodGC after its node was lost): it has ended, but when
	// is not recorded. Settle ends it when it first sees this.
	Lost bool
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
	// AwaitingRecord holds the ids of ended servers whose UsageRecord is
	// not written yet: their entries (on the wallet and the pool) are kept
	// until it is, so every ended server gets its record exactly once, also
	// across crashes. Nothing else waits for it: the other servers are
	// charged as usual.
	AwaitingRecord map[string]bool
	// Seen, when set, tells when the caller first saw a reservation. The
	// orphan grace then runs from the later of that and reservedAt, which a
	// webhook replica wrote with its own clock: a replica whose clock lags
	// cannot make a reservation look older than it is.
	Seen ReservationClock

	// chargeBefore, when set, is the next grant slot of an account whose
	// pages catch up (pagedLimit): boundaries at or after it wait until
	// every charge due before it is made and the grant applied.
	chargeBefore time.Time
}

// ReservationClock tells when the caller first saw reservation id, on its
// own clock (zero when it does not know).
type ReservationClock interface {
	FirstSeen(id string) time.Time
}

// graceStart is when the orphan grace of entry begins.
func (o Options) graceStart(entry *hcv1.ServerCharge) time.Time {
	start := entry.ReservedAt.Time
	if o.Seen != nil {
		if seen := o.Seen.FirstSeen(entry.ID); seen.After(start) {
			start = seen
		}
	}
	return start
}

// DefaultOptions are the operator's defaults.
var DefaultOptions = Options{OrphanGrace: 30 * time.Second, StopRetry: 30 * time.Second, LowPeriods: 2}

// OrDefault is o, or DefaultOptions when o was never set: the one place
// unset settling options are defaulted.
func (o Options) OrDefault() Options {
	if o.OrphanGrace == 0 && o.StopRetry == 0 && o.LowPeriods == 0 {
		d := DefaultOptions
		d.Seen, d.AwaitingRecord = o.Seen, o.AwaitingRecord
		return d
	}
	return o
}

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
	// EventReadopted: a running pod whose reservation no ledger held any
	// more (it was returned while the pod was out of sight) is billed again.
	EventReadopted = "ServerReadopted"
	// EventUnbillable: a pod no account may pay for (Adoption's denial).
	EventUnbillable = "ServerUnbillable"
	// EventAccountEditIgnored: a billed pod names another account than the
	// one that admitted it (its annotation was edited); that one bills on.
	EventAccountEditIgnored = "AccountEditIgnored"
	// EventHeldTwice: a reservation held twice in one account's ledger
	// (inline and on a page, or on two pages) bills its pod twice; the
	// later entry is returned (SettlePages).
	EventHeldTwice = "ReservationHeldTwice"
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
	// Unbillable are the pods offered for adoption that no account may pay
	// for (their Denial set); the caller reports or stops them.
	Unbillable []Unreserved
	// Waiting: charges due by now wait for a grant that waits for charges
	// on the account's pages (pagedLimit); settle again at once, after the
	// pages (RequeueAfter is then at most a second).
	Waiting bool
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
	// Reservation is the reservation id the pod carries when no ledger holds
	// it any more (it was returned while the pod was out of sight): the pod
	// is adopted again.
	Reservation string
	// Denial, when set, is admission's answer for this pod (Adoption): no
	// account may pay for it. Settle does not adopt it; it returns it in
	// Result.Unbillable.
	Denial *Denial
}

// AdoptedID is the entry id of an adopted pod.
func AdoptedID(uid types.UID) string { return "pod-" + string(uid) }

// Settle brings wallet's servers up to now. pools holds every project pool
// named by the wallet's server entries (or by wallet.spec.project), keyed by
// name; a missing pool is treated as empty. pods returns the observation
// for a server entry. All accounts are modified in place.
func Settle(wallet *hcv1.CreditAccount, pools map[string]*hcv1.CreditAccount, pods func(hcv1.ServerCharge) PodObservation,
	adopt []Unreserved, now time.Time, o Options) Result {
	res := Result{ChangedProjects: map[string]bool{}}
	pods = endLostAt(pods, now)
	addedBefore, adjustedBefore := wallet.Status.TotalGranted+wallet.Status.TotalToppedUp, wallet.Status.TotalAdjusted
	limit := pagedLimit(wallet, now)
	o.chargeBefore = limit.chargeBefore
	completeRefunds(wallet, pools, now, &res)
	catchUp(wallet, pools, pods, now, limit.chargeBefore, &res)
	if refreshUntil(wallet, now, limit) {
		res.WalletChanged = true
	}
	creditsAdded := wallet.Status.TotalGranted+wallet.Status.TotalToppedUp > addedBefore || wallet.Status.TotalAdjusted > adjustedBefore
	for name, pool := range pools {
		if pool != nil && Refresh(pool, now) {
			res.ChangedProjects[name] = true
		}
	}
	adoptUnreserved(wallet, adopt, now, &res)
	settleServers(wallet, pools, pods, now, o, &res)

	var poolBalance int64
	if pool := pools[wallet.Spec.Project]; pool != nil && wallet.Spec.Project != "" {
		poolBalance = pool.Status.Balance
	}
	if updateCounters(wallet, now, poolBalance, o, &res, creditsAdded) {
		res.WalletChanged = true
	}
	if g := wallet.Spec.Grant; g != nil && wallet.Status.Balance < wallet.Spec.Cap && wallet.Status.GrantedThrough != nil {
		res.requeueAt(now, wallet.Status.GrantedThrough.Add(g.Interval.Duration))
	}
	for name, pool := range pools {
		if pool != nil && updateCounters(pool, now, 0, o, nil, false) {
			res.ChangedProjects[name] = true
		}
	}
	return res
}

// endLostAt gives a lost pod (Lost: failed while its containers still said
// running) the end now, the time its failure is seen: the periods it used
// stay paid, and nothing is charged after the run that marks its end. It
// ran, so its end is never before its start plus a second (seen in the
// second it started, or with the node's clock ahead): every run, whenever
// it happens, then agrees that it started (a run whose wallet write is lost
// must not have returned its reservation as "never started" while the
// next one bills it).
func endLostAt(pods func(hcv1.ServerCharge) PodObservation, now time.Time) func(hcv1.ServerCharge) PodObservation {
	return func(e hcv1.ServerCharge) PodObservation {
		o := pods(e)
		if o.Lost && o.EndedAt == nil {
			end := now
			if o.StartedAt != nil && !end.After(*o.StartedAt) {
				end = o.StartedAt.Add(time.Second)
			}
			o.EndedAt = &end
		}
		return o
	}
}

// catchUpLimit bounds a pass of an account whose pages have charges
// outstanding (the zero value: no bound).
type catchUpLimit struct {
	// grantsUntil: grants whose slot is later wait.
	grantsUntil time.Time
	// chargeBefore: boundaries at or after it wait (the first grant slot
	// after grantsUntil).
	chargeBefore time.Time
}

// pagedLimit is the catch-up rule of an account with LedgerPages
// (pages.go). A grant is applied after every charge whose boundary comes
// before its slot, whichever page holds the server, as Settle's catchUp
// does for status.servers. The account sees only the earliest unpaid
// boundary of each page (status.pagedDue, kept by Commit), so a pass goes
// one grant interval at a time: grants up to the earliest unpaid boundary
// of the pages, charges (status.servers and every page) before the next
// grant slot; the next pass applies that grant and goes on. Between two
// grant slots the order of the charges does not change the balance.
// Without a grant, or without a page boundary due before now, there is no
// bound.
func pagedLimit(a *hcv1.CreditAccount, now time.Time) catchUpLimit {
	g := a.Spec.Grant
	if g == nil || g.Interval.Duration <= 0 || a.Status.GrantedThrough == nil || len(a.Status.PagedDue) == 0 {
		return catchUpLimit{}
	}
	earliest := a.Status.PagedDue[0].At.Time
	for _, d := range a.Status.PagedDue[1:] {
		if d.At.Time.Before(earliest) {
			earliest = d.At.Time
		}
	}
	if !earliest.Before(now) {
		return catchUpLimit{}
	}
	next := nextGrantSlot(a, earliest)
	if next.After(now) {
		return catchUpLimit{} // no grant slot between: the order does not matter
	}
	return catchUpLimit{grantsUntil: earliest, chargeBefore: next}
}

// nextGrantSlot is the account's first grant slot after t that is not
// applied yet.
func nextGrantSlot(a *hcv1.CreditAccount, t time.Time) time.Time {
	last, iv := a.Status.GrantedThrough.Time, a.Spec.Grant.Interval.Duration
	if t.Before(last) {
		return last.Add(iv)
	}
	return Boundary(last, int64(t.Sub(last)/iv)+1, iv)
}

// grantDueBetween reports a grant slot of the wallet or of one of its
// pools after from and at or before to that is not applied yet: a charge
// at from must be made before it.
func grantDueBetween(wallet *hcv1.CreditAccount, pools map[string]*hcv1.CreditAccount, from, to time.Time) bool {
	due := func(a *hcv1.CreditAccount) bool {
		return a != nil && a.Status.OpenedAt != nil && a.Spec.Grant != nil && a.Spec.Grant.Interval.Duration > 0 &&
			a.Status.GrantedThrough != nil && !nextGrantSlot(a, from).After(to)
	}
	if due(wallet) {
		return true
	}
	for _, pool := range pools {
		if due(pool) {
			return true
		}
	}
	return false
}

// refreshUntil is Refresh with the grants of limit held back.
func refreshUntil(a *hcv1.CreditAccount, now time.Time, limit catchUpLimit) bool {
	if limit.grantsUntil.IsZero() {
		return Refresh(a, now)
	}
	opened := open(a, now)
	granted := applyGrants(a, limit.grantsUntil)
	toppedUp := applyTopUps(a, now)
	return opened || granted || toppedUp
}

// adoptUnreserved adds an entry for each unreserved pod the wallet does not
// hold yet; it is billed from when it starts.
func adoptUnreserved(wallet *hcv1.CreditAccount, adopt []Unreserved, now time.Time, res *Result) {
	for _, u := range adopt {
		id := AdoptedID(u.UID)
		if Holds(wallet, PodKeys(u.UID, u.Reservation)) {
			continue // never billed twice: the ledger holds it already
		}
		if u.Denial != nil {
			res.Unbillable = append(res.Unbillable, u)
			continue
		}
		wallet.Status.Servers = append(wallet.Status.Servers, hcv1.ServerCharge{
			ID: id, Pod: u.Pod, PodUID: u.UID, User: u.User, ServerName: u.ServerName, Wallet: wallet.Name,
			Policy: u.Price.Policy, BillingValue: u.Price.Value,
			BillingInterval: metav1.Duration{Duration: u.Price.Interval}, ReservedAt: metav1.NewTime(now),
			Project: wallet.Spec.Project,
		})
		res.WalletChanged = true
		if u.Reservation != "" {
			res.Notes = append(res.Notes, Note{Pod: u.Pod, PodUID: u.UID, Warning: true, Reason: EventReadopted,
				Message: ReadoptedMessage(u.Reservation, u.Price, wallet.Name)})
			continue
		}
		res.Notes = append(res.Notes, Note{Pod: u.Pod, PodUID: u.UID, Reason: EventAdopted,
			Message: fmt.Sprintf("This server had no reservation; it costs %s, billed to account %s from when it starts.", PriceText(u.Price), wallet.Name)})
	}
}

// settleServers settles each of the wallet's own servers and keeps the
// entries that are still needed. A pool's share of another wallet's server
// is left alone: that wallet settles it.
func settleServers(wallet *hcv1.CreditAccount, pools map[string]*hcv1.CreditAccount, pods func(hcv1.ServerCharge) PodObservation,
	now time.Time, o Options, res *Result) {
	wallet.Status.Servers = settleEntries(wallet, wallet.Status.Servers, pools, pods, now, o, res)
}

// settleEntries settles entries, server entries of wallet (its own
// status.servers, or one of its LedgerPages: SettlePage), moving credits on
// wallet and its pools, and returns the entries still needed. entries is
// not modified.
func settleEntries(wallet *hcv1.CreditAccount, entries []hcv1.ServerCharge, pools map[string]*hcv1.CreditAccount,
	pods func(hcv1.ServerCharge) PodObservation, now time.Time, o Options, res *Result) []hcv1.ServerCharge {
	kept := entries[:0:0]
	for _, entry := range entries {
		if entry.Wallet != wallet.Name {
			kept = append(kept, entry)
			continue
		}
		var pool *hcv1.CreditAccount
		if entry.Project != "" {
			pool = pools[entry.Project]
		}
		keep, changed := settleServer(wallet, pool, &entry, pods(entry), now, o, res)
		if changed {
			res.WalletChanged = true
			if pool != nil {
				res.ChangedProjects[pool.Name] = true
			}
		}
		if keep {
			kept = append(kept, entry)
		}
	}
	return kept
}

// maxCatchUpBoundaries bounds the boundaries one run interleaves with
// grants (a server billed every second, after a day's outage, has 86,400);
// the main pass charges whatever is left at once.
const maxCatchUpBoundaries = 100000

// catchUp charges the boundaries that passed since the last run in time
// order, with the grants that fell due in between, when grants are
// involved: after an outage a wallet at its cap must not lose the grants it
// would have received between the charges (applying all grants first, then
// all charges, would). Without grants the order does not matter and the main
// pass charges everything at once. Unaffordable boundaries are left to the
// main pass, which stops the server. Boundaries at or after chargeBefore
// (when set: pagedLimit) wait for a later pass.
func catchUp(wallet *hcv1.CreditAccount, pools map[string]*hcv1.CreditAccount, pods func(hcv1.ServerCharge) PodObservation, now, chargeBefore time.Time, res *Result) {
	if wallet.Status.OpenedAt == nil {
		return
	}
	granted := wallet.Spec.Grant != nil
	for _, pool := range pools {
		granted = granted || (pool != nil && pool.Spec.Grant != nil && pool.Status.OpenedAt != nil)
	}
	if !granted {
		return
	}
	type boundary struct {
		at     time.Time
		id     string
		period int64 // the period that begins at 'at'
		ended  bool  // the server's end is known
	}
	var due []boundary
	for _, entry := range wallet.Status.Servers {
		if entry.Wallet != wallet.Name || entry.StartedAt == nil || entry.StopRequestedAt != nil || entry.EndedAt != nil || entry.BillingValue == 0 {
			continue
		}
		pod := pods(entry)
		if !pod.Exists {
			continue
		}
		end, ended := now, false
		if pod.EndedAt != nil && pod.EndedAt.Before(now) {
			end, ended = *pod.EndedAt, true
		}
		n := PeriodsDue(entry.StartedAt.Time, end, entry.BillingInterval.Duration, ended)
		for k := entry.PeriodsPaid; k < n && len(due) < maxCatchUpBoundaries; k++ {
			due = append(due, boundary{at: Boundary(entry.StartedAt.Time, k, entry.BillingInterval.Duration), id: entry.ID, period: k, ended: pod.EndedAt != nil})
		}
	}
	if len(due) == 0 {
		return
	}
	if len(due) == 1 && !grantDueBetween(wallet, pools, due[0].at, now) {
		return // one charge, no grant after it: the main pass makes it
	}
	sort.SliceStable(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	blocked := map[string]bool{}
	for _, b := range due {
		if blocked[b.id] || !b.at.Before(now) || (!chargeBefore.IsZero() && !b.at.Before(chargeBefore)) {
			continue
		}
		entry := &wallet.Status.Servers[FindServer(wallet, b.id)]
		pool := pools[entry.Project] // nil without a pool
		var poolEntry *hcv1.ServerCharge
		if Refresh(wallet, b.at) {
			res.WalletChanged = true
		}
		if pool != nil {
			if Refresh(pool, b.at) {
				res.ChangedProjects[pool.Name] = true
			}
			if j := FindServer(pool, b.id); j >= 0 {
				poolEntry = &pool.Status.Servers[j]
			}
		}
		paidBefore := entry.PeriodsPaid
		if charge(wallet, pool, entry, poolEntry, b.period+1, b.at, b.ended) {
			res.WalletChanged = true
			if pool != nil {
				res.ChangedProjects[pool.Name] = true
			}
		}
		if entry.PeriodsPaid == paidBefore {
			blocked[b.id] = true // unaffordable: the main pass stops it
			continue
		}
		res.Lags = append(res.Lags, now.Sub(b.at))
	}
}

// inFlight returns what the pool has paid for periods that the wallet's
// entry has not confirmed yet: it happens when the operator stopped between
// writing the pool and writing the wallet.
func inFlight(entry, poolEntry *hcv1.ServerCharge) (periods, amount int64) {
	if poolEntry == nil || poolEntry.PeriodsPaid <= entry.PeriodsPaid {
		return 0, max(0, poolPaid(poolEntry)-entry.ProjectPaid)
	}
	return poolEntry.PeriodsPaid - entry.PeriodsPaid, max(0, poolEntry.Paid-entry.ProjectPaid)
}

// poolPaid is what the pool's record says it paid (0 without a record).
func poolPaid(poolEntry *hcv1.ServerCharge) int64 {
	if poolEntry == nil {
		return 0
	}
	return poolEntry.Paid
}

// serverSettlement is one run over one server: its entry on the wallet
// and, when a project pool co-funds it, the pool's record of it.
type serverSettlement struct {
	wallet *hcv1.CreditAccount
	// pool is the project pool that pays first (nil without one).
	pool  *hcv1.CreditAccount
	entry *hcv1.ServerCharge
	// poolEntry is the pool's record of entry, as found when the run began
	// (nil when the pool has none yet).
	poolEntry *hcv1.ServerCharge
	pod       PodObservation
	price     Price
	now       time.Time
	opts      Options
	res       *Result
	// changed reports a change of the entry or of either account.
	changed bool
	// deferred: boundaries due by now wait for a grant (opts.chargeBefore).
	deferred bool
}

// settleServer handles one server; it returns whether to keep its entry and
// whether anything changed. The steps run in order, each reading what the
// ones before it recorded.
func settleServer(wallet, pool *hcv1.CreditAccount, entry *hcv1.ServerCharge, pod PodObservation, now time.Time, o Options, res *Result) (keep, changed bool) {
	s := &serverSettlement{
		wallet: wallet, pool: pool, entry: entry, pod: pod, now: now, opts: o, res: res,
		price: Price{Value: entry.BillingValue, Interval: entry.BillingInterval.Duration, Policy: entry.Policy},
	}
	if pool != nil {
		if i := FindServer(pool, entry.ID); i >= 0 {
			s.poolEntry = &pool.Status.Servers[i]
		}
	}
	if s.poolEntry != nil && s.poolEntry.EndedAt != nil && entry.EndedAt == nil {
		// The run that marked the end lost its wallet write: the wallet's
		// entry, the commit record, says the server has not ended (its pod
		// was only out of sight). This run decides again, for both.
		s.poolEntry.EndedAt = nil
		res.ChangedProjects[pool.Name] = true
	}
	if entry.EndedAt != nil {
		if o.AwaitingRecord[entry.ID] {
			return true, false
		}
		s.dropEnded()
		return false, true
	}
	if s.poolReturnedItsShare() {
		s.refundNeverStarted()
		return false, true
	}
	if s.awaitingPod() {
		return true, false
	}
	s.recordPod()
	s.recordStart()
	ended := !pod.Exists || pod.EndedAt != nil
	if entry.StartedAt == nil {
		if !ended {
			return true, s.changed // pending: the reservation covers it
		}
		if s.refundWaits() {
			return true, s.changed
		}
		s.refundNeverStarted()
		return false, true
	}
	s.refundChargesAfterEnd()
	due := s.periodsDue()
	s.chargeDue(due)
	justStopped := false
	if entry.PeriodsPaid < due && !ended {
		s.requestStop()
		justStopped = true
	}
	s.recordPaidThrough()
	switch {
	case ended && s.deferred:
		res.requeueAt(now, now) // its last periods wait for a grant: ended once they are charged
	case ended:
		s.markEnded()
		return true, true
	case entry.StopRequestedAt != nil:
		s.repeatStop(justStopped)
	default:
		res.requeueAt(now, Boundary(entry.StartedAt.Time, entry.PeriodsPaid, entry.BillingInterval.Duration))
	}
	return true, s.changed
}

// dropEnded is the second pass of an ended server: its last period was
// charged and written; the pool's record goes first (the caller writes pools
// first), then the wallet's entry (by not keeping it).
func (s *serverSettlement) dropEnded() {
	if s.pool != nil {
		removeServer(s.pool, s.entry.ID)
	}
}

// poolReturnedItsShare reports a reservation that was returned on the pool
// but whose wallet write was lost: the wallet's entry of a server that
// never started says the pool paid a share, and the pool holds no record
// of it (the pool writes first; at admission too, so its record exists
// whenever the wallet's does, until a return or an end). The return is
// finished on the wallet (a pod that runs after all is adopted again, and
// billed from its start). The pool is written as well, unchanged, so that
// its resourceVersion proves the record really is gone, not just missing
// from a cache that lags.
func (s *serverSettlement) poolReturnedItsShare() bool {
	e := s.entry
	if s.pool == nil || s.poolEntry != nil || e.Project == "" || e.ProjectPaid <= 0 || e.StartedAt != nil {
		return false
	}
	s.res.ChangedProjects[s.pool.Name] = true
	return true
}

// awaitingPod reports a reservation whose pod may still be on its way (or
// not in the cache yet), and asks to look again when its grace ends.
func (s *serverSettlement) awaitingPod() bool {
	if s.pod.Exists || s.entry.PodUID != "" {
		return false
	}
	graceEnd := s.opts.graceStart(s.entry).Add(s.opts.OrphanGrace)
	if !s.now.Before(graceEnd) {
		return false
	}
	s.res.requeueAt(s.now, graceEnd)
	return true
}

// recordPod binds the entry to the pod first seen for it.
func (s *serverSettlement) recordPod() {
	if !s.pod.Exists || s.entry.PodUID != "" {
		return
	}
	s.entry.PodUID = s.pod.UID
	s.changed = true
	s.res.Notes = append(s.res.Notes, Note{Pod: s.entry.Pod, PodUID: s.pod.UID, Reason: EventCreditsReserved,
		Message: ReservedMessage(s.price, s.wallet, s.pool)})
}

// recordStart starts the server's clock when its pod is first seen running.
func (s *serverSettlement) recordStart() {
	e, pod := s.entry, s.pod
	if e.StartedAt != nil || pod.StartedAt == nil || (pod.EndedAt != nil && !pod.EndedAt.After(*pod.StartedAt)) {
		return
	}
	started := metav1.NewTime(*pod.StartedAt)
	if e.PeriodsPaid == 0 && started.Before(&e.ReservedAt) {
		// An adopted server that was already running (hubcredits was
		// installed on a live hub, or the webhook was bypassed): its
		// clock starts at adoption, never charging for time before it.
		started = e.ReservedAt
	}
	e.StartedAt = &started
	s.changed = true
	s.res.Notes = append(s.res.Notes, Note{Pod: e.Pod, PodUID: e.PodUID, Reason: EventServerStarted,
		Message: fmt.Sprintf("Server %s of %s started; it costs %s.", e.Pod, e.User, PriceText(s.price))})
}

// refundWaits reports the return of a reservation that never started that
// waits while the account's pages catch up (opts.chargeBefore): credits
// given back come after the grants that fell due, as in a pass without
// pages (Settle refreshes before it settles the servers), so the refund is
// made in the pass without a bound. (Periods charged after an end are
// returned at once: the server's entry holds the bound back until its end
// is marked.)
func (s *serverSettlement) refundWaits() bool {
	if s.opts.chargeBefore.IsZero() {
		return false
	}
	s.res.Waiting = true
	s.res.requeueAt(s.now, s.now)
	return true
}

// chargedAfterEnd reports periods charged after the server's end
// (refundChargesAfterEnd gives them back).
func (s *serverSettlement) chargedAfterEnd() bool {
	return s.pod.Exists && s.pod.EndedAt != nil &&
		PeriodsDue(s.entry.StartedAt.Time, *s.pod.EndedAt, s.entry.BillingInterval.Duration, false) < s.entry.PeriodsPaid
}

// refundNeverStarted gives the reservation of a server that never ran back,
// pool first. Release removes the pool's entry; the caller drops the
// wallet's (settleServer does not keep it).
func (s *serverSettlement) refundNeverStarted() {
	why := fmt.Sprintf("server %s never started; reservation returned", s.entry.Pod)
	refunded := refundEntry(s.wallet, s.entry, s.now, why)
	if s.pool != nil {
		refunded += Release(s.pool, s.entry.ID, s.now, why)
	}
	s.res.Notes = append(s.res.Notes, Note{Reason: EventRefunded, Orphaned: s.entry.PodUID == "",
		Message: fmt.Sprintf("Returned %d credits reserved for %s, which never started.", refunded, s.entry.Pod)})
}

// refundChargesAfterEnd gives back the periods charged while the server
// looked alive but had already ended (a cache that lagged, e.g. while
// kube-apiserver restarted): a server pays for the time it ran, never more.
// A period charged at a boundary that is the end itself is kept: it was
// charged while the server ran (the end has whole seconds).
func (s *serverSettlement) refundChargesAfterEnd() {
	if !s.chargedAfterEnd() {
		return
	}
	owed := PeriodsDue(s.entry.StartedAt.Time, *s.pod.EndedAt, s.entry.BillingInterval.Duration, false)
	refundAfterEnd(s.wallet, s.pool, s.entry, s.poolEntry, owed, s.now)
	s.changed = true
}

// periodsDue is how many periods the server owes by now (or by its end).
func (s *serverSettlement) periodsDue() int64 {
	switch {
	case !s.pod.Exists:
		// The pod went away while nobody watched: in the user's favour,
		// nothing is charged beyond what was paid when it was last seen.
		return s.entry.PeriodsPaid
	case s.entry.StopRequestedAt != nil:
		// A stop was asked for because the next period was unaffordable: no
		// further charges, whatever happens to the balance meanwhile.
		return s.entry.PeriodsPaid
	}
	until := s.now
	if s.pod.EndedAt != nil && s.pod.EndedAt.Before(s.now) {
		until = *s.pod.EndedAt
	}
	due := PeriodsDue(s.entry.StartedAt.Time, until, s.entry.BillingInterval.Duration, s.pod.EndedAt != nil)
	if before := s.opts.chargeBefore; !before.IsZero() {
		// Only the periods that begin before the next grant slot.
		if now := PeriodsDue(s.entry.StartedAt.Time, before, s.entry.BillingInterval.Duration, true); now < due {
			s.deferred = true
			s.res.Waiting = true
			s.res.requeueAt(s.now, s.now)
			return max(now, s.entry.PeriodsPaid)
		}
	}
	return due
}

// chargeDue charges the periods up to due that the accounts can pay, and
// records how late the last one was charged.
func (s *serverSettlement) chargeDue(due int64) {
	paidBefore := s.entry.PeriodsPaid
	if !charge(s.wallet, s.pool, s.entry, s.poolEntry, due, s.now, s.pod.EndedAt != nil) {
		return
	}
	s.changed = true
	if s.entry.PeriodsPaid > paidBefore {
		lastBoundary := Boundary(s.entry.StartedAt.Time, s.entry.PeriodsPaid-1, s.entry.BillingInterval.Duration)
		s.res.Lags = append(s.res.Lags, s.now.Sub(lastBoundary))
	}
}

// requestStop stops a running server whose next period cannot be paid; that
// period is not charged.
func (s *serverSettlement) requestStop() {
	requested := metav1.NewTime(s.now)
	s.entry.StopRequestedAt = &requested
	s.changed = true
	msg := StopMessage(s.price, s.wallet, s.pool)
	s.res.Stops = append(s.res.Stops, Stop{Server: *s.entry, Message: msg})
	appendLedger(s.wallet, s.now, hcv1.LedgerStop, 0, s.entry.Pod, msg)
	setCondition(s.wallet, s.now, hcv1.ConditionExhausted, metav1.ConditionTrue, hcv1.ReasonServerStopped, msg)
}

// recordPaidThrough moves the entry's paidThrough to the end of its last
// paid period.
func (s *serverSettlement) recordPaidThrough() {
	paidThrough := metav1.NewTime(Boundary(s.entry.StartedAt.Time, s.entry.PeriodsPaid, s.entry.BillingInterval.Duration))
	if s.entry.PaidThrough == nil || !s.entry.PaidThrough.Equal(&paidThrough) {
		s.entry.PaidThrough = &paidThrough
		s.changed = true
	}
}

// markEnded is the first pass of an ended server: the last charge is
// committed with the end marked on both entries; the entries go on the next
// pass, which is asked for at once.
func (s *serverSettlement) markEnded() {
	e := s.entry
	endedAt := metav1.NewTime(s.now)
	e.EndedAt = &endedAt
	if s.pool != nil {
		if i := FindServer(s.pool, e.ID); i >= 0 {
			s.pool.Status.Servers[i].EndedAt = &endedAt
		}
	}
	appendLedger(s.wallet, s.now, hcv1.LedgerSettle, 0, e.Pod,
		fmt.Sprintf("server %s ended after %d period(s), %d credits", e.Pod, e.PeriodsPaid, e.Paid+e.ProjectPaid))
	s.res.requeueAt(s.now, s.now)
}

// repeatStop repeats a stop that has not taken effect once StopRetry has
// passed, and asks to look again then.
func (s *serverSettlement) repeatStop(justStopped bool) {
	e := s.entry
	if !justStopped && !s.now.Before(e.StopRequestedAt.Add(s.opts.StopRetry)) {
		requested := metav1.NewTime(s.now)
		e.StopRequestedAt = &requested
		s.changed = true
		s.res.Stops = append(s.res.Stops, Stop{Server: *e, Message: StopMessage(s.price, s.wallet, s.pool), Repeat: true})
	}
	s.res.requeueAt(s.now, e.StopRequestedAt.Add(s.opts.StopRetry))
}

// charge pays periods entry.PeriodsPaid .. due-1 of a server, the project
// pool first, as many as the accounts can afford. It also completes or
// undoes a pool payment left in flight by an interrupted run. It reports a
// change. final says the server's end is known: nothing charged now is
// ever refunded (its end is marked in this run), so who paid is not
// recorded.
func charge(wallet, pool *hcv1.CreditAccount, entry, poolEntry *hcv1.ServerCharge, due int64, now time.Time, final bool) bool {
	_, flight := inFlight(entry, poolEntry)
	n := max(0, due-entry.PeriodsPaid)
	if n == 0 && flight == 0 && (poolEntry == nil || poolEntry.PeriodsPaid == entry.PeriodsPaid) {
		return false
	}
	value := entry.BillingValue
	poolBalance := int64(0)
	if pool != nil {
		poolBalance = pool.Status.Balance
	}
	var periods int64
	if value == 0 {
		periods = n
	} else {
		avail := addSat(addSat(poolBalance, flight), wallet.Status.Balance)
		periods = min(n, avail/value)
	}
	poolShare, walletShare := SplitCost(mulSat(periods, value), addSat(poolBalance, flight))
	// The pool's balance moves by what it pays now minus what was already in
	// flight (a negative move returns an in-flight payment that is not needed).
	if pool != nil {
		delta := poolShare - flight
		pool.Status.Balance -= delta
		if delta > 0 {
			pool.Status.TotalCharged = addSat(pool.Status.TotalCharged, delta)
			appendMerged(pool, now, hcv1.LedgerCharge, -delta, entry.Pod, periods, func(n, _ int64) string {
				return fmt.Sprintf("share of %d period(s) of %s for %s", n, entry.Pod, entry.Wallet)
			})
		} else if delta < 0 {
			pool.Status.TotalCharged -= min(-delta, pool.Status.TotalCharged)
			appendLedger(pool, now, hcv1.LedgerRefund, -delta, entry.Pod, fmt.Sprintf("unconfirmed share of %s returned", entry.Pod))
		}
	}
	wallet.Status.Balance -= walletShare
	if walletShare > 0 {
		wallet.Status.TotalCharged = addSat(wallet.Status.TotalCharged, walletShare)
		appendMerged(wallet, now, hcv1.LedgerCharge, -walletShare, entry.Pod, periods, func(n, _ int64) string {
			return fmt.Sprintf("%d period(s) of %s", n, entry.Pod)
		})
	}
	from := entry.PeriodsPaid
	entry.PeriodsPaid += periods
	entry.Paid = addSat(entry.Paid, walletShare)
	entry.ProjectPaid = addSat(entry.ProjectPaid, poolShare)
	if !final || len(entry.Shares) > 0 { // recorded runs stay the latest periods
		recordShares(entry, from, periods, poolShare)
	}
	if pool != nil {
		if poolEntry == nil && entry.ProjectPaid > 0 {
			pool.Status.Servers = append(pool.Status.Servers, newPoolEntry(entry))
			poolEntry = &pool.Status.Servers[len(pool.Status.Servers)-1]
		}
		if poolEntry != nil {
			poolEntry.PeriodsPaid = entry.PeriodsPaid
			poolEntry.Paid = entry.ProjectPaid
			poolEntry.StartedAt = entry.StartedAt
			poolEntry.PodUID = entry.PodUID
		}
	}
	return true
}

// completeRefunds finishes the refunds of periods charged after a server's
// end whose pool write committed while the wallet's was lost: the pool's
// entry then shows fewer periods than the wallet's (in every other case the
// pool, written first, is level with the wallet or ahead of it). Done before
// anything else, so no charge syncs the pool's entry back up.
func completeRefunds(wallet *hcv1.CreditAccount, pools map[string]*hcv1.CreditAccount, now time.Time, res *Result) {
	for i := range wallet.Status.Servers {
		entry := &wallet.Status.Servers[i]
		pool := pools[entry.Project]
		if entry.Wallet != wallet.Name || entry.Project == "" || pool == nil || entry.EndedAt != nil {
			continue
		}
		j := FindServer(pool, entry.ID)
		if j < 0 || pool.Status.Servers[j].PeriodsPaid >= entry.PeriodsPaid {
			continue
		}
		poolEntry := &pool.Status.Servers[j]
		refundAfterEnd(wallet, pool, entry, poolEntry, poolEntry.PeriodsPaid, now)
		res.WalletChanged = true
		res.ChangedProjects[pool.Name] = true
	}
}

// refundAfterEnd returns the periods from owed on, which were charged after
// the server had ended, each to whoever paid it (poolShareOfLast: the
// recorded runs, else pool first, so the wallet's share of the last periods
// goes back before the pool's). The pool's entry is written first; if the
// wallet's write is lost, the next run finds the pool's entry already at its
// target and moves nothing twice.
func refundAfterEnd(wallet, pool *hcv1.CreditAccount, entry, poolEntry *hcv1.ServerCharge, owed int64, now time.Time) {
	refunded := entry.PeriodsPaid - owed
	amount := mulSat(refunded, entry.BillingValue)
	poolBack := min(poolShareOfLast(entry, refunded), amount)
	walletBack := min(amount-poolBack, entry.Paid)
	poolTarget := entry.ProjectPaid - poolBack
	why := fmt.Sprintf("%d period(s) of %s charged after it ended", entry.PeriodsPaid-owed, entry.Pod)
	if pool != nil && poolEntry != nil {
		// The end time only ever moves earlier (a second deletion with a
		// shorter grace), so the pool never gets less back than before.
		if back := poolEntry.Paid - poolTarget; back > 0 {
			pool.Status.Balance += back
			pool.Status.TotalRefunded = addSat(pool.Status.TotalRefunded, back)
			appendLedger(pool, now, hcv1.LedgerRefund, back, entry.Pod, why)
		}
		poolEntry.Paid, poolEntry.PeriodsPaid = poolTarget, owed
	}
	if walletBack > 0 {
		wallet.Status.Balance += walletBack
		wallet.Status.TotalRefunded = addSat(wallet.Status.TotalRefunded, walletBack)
		appendLedger(wallet, now, hcv1.LedgerRefund, walletBack, entry.Pod, why)
	}
	dropLastShares(entry, refunded)
	entry.PeriodsPaid = owed
	entry.Paid -= walletBack
	entry.ProjectPaid = poolTarget
}

// newPoolEntry is the record a project pool keeps of a wallet's server.
func newPoolEntry(entry *hcv1.ServerCharge) hcv1.ServerCharge {
	poolEntry := *entry
	poolEntry.Project, poolEntry.ProjectPaid = "", 0
	poolEntry.Paid = 0
	poolEntry.Shares = nil
	poolEntry.PaidThrough = nil
	poolEntry.StopRequestedAt = nil
	return poolEntry
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
		if wait := o.graceStart(&e).Add(o.OrphanGrace).Sub(now); wait > 0 {
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
