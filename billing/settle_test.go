package billing

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// Condition values as conds reports them.
const (
	lowFalse       = "False/" + hcv1.ReasonBalanceSufficient
	lowTrue        = "True/" + hcv1.ReasonBalanceLow
	exhaustedFalse = "False/" + hcv1.ReasonCreditsAvailable
	exhaustedTrue  = "True/" + hcv1.ReasonServerStopped
)

func condsOf(low, exhausted string) map[string]string {
	return map[string]string{hcv1.ConditionLow: low, hcv1.ConditionExhausted: exhausted}
}

var healthy = condsOf(lowFalse, exhaustedFalse)

// accountView is what Settle tests compare of an account.
type accountView struct {
	Balance       int64
	TotalCharged  int64
	TotalRefunded int64
	TotalGranted  int64
	TotalAdjusted int64
	Running       int32
	Servers       []hcv1.ServerCharge
	Conditions    map[string]string
}

func viewOf(a *hcv1.CreditAccount) accountView {
	return accountView{
		Balance: a.Status.Balance, TotalCharged: a.Status.TotalCharged, TotalRefunded: a.Status.TotalRefunded,
		TotalGranted: a.Status.TotalGranted, TotalAdjusted: a.Status.TotalAdjusted, Running: a.Status.RunningServers, Servers: a.Status.Servers,
		Conditions: conds(a),
	}
}

type stopView struct {
	ID      string
	Repeat  bool
	Message string
}

type noteView struct {
	Reason  string
	Pod     string
	Warning bool
}

type resultView struct {
	WalletChanged   bool
	ChangedProjects map[string]bool
	Stops           []stopView
	Notes           []noteView
	RequeueAfter    time.Duration
}

func resultViewOf(r Result) resultView {
	v := resultView{WalletChanged: r.WalletChanged, ChangedProjects: r.ChangedProjects, RequeueAfter: r.RequeueAfter}
	for _, s := range r.Stops {
		v.Stops = append(v.Stops, stopView{ID: s.Server.ID, Repeat: s.Repeat, Message: s.Message})
	}
	for _, n := range r.Notes {
		v.Notes = append(v.Notes, noteView{Reason: n.Reason, Pod: n.Pod, Warning: n.Warning})
	}
	return v
}

var changedLab = map[string]bool{"lab": true}

// Fixtures: wallet "alice"; with a pool, wallet "alice" funded by pool "lab".
func wallet(balance int64) *testutil.AccountWrapper {
	return openAccount("alice").Users("alice").Balance(balance)
}

func pooledWallet(balance int64) *testutil.AccountWrapper {
	return wallet(balance).Project("lab")
}

func pool(balance int64) *testutil.AccountWrapper {
	return openAccount("lab").Users("alice", "bob").Balance(balance)
}

// runningServer is r1, started at t0 with period 0 paid by the wallet.
func runningServer() *testutil.ServerChargeWrapper {
	return testutil.MakeServerCharge("r1").UID("u1").Started(0).PaidThrough(interval)
}

// pooledServer is r1 whose period 0 the pool paid in full.
func pooledServer() *testutil.ServerChargeWrapper {
	return runningServer().Project("lab").Paid(1, 0).ProjectPaid(10)
}

// poolShare is the pool's entry for r1 as the webhook's Take left it.
func poolShare() *testutil.ServerChargeWrapper { return testutil.MakeServerCharge("r1").Paid(1, 10) }

// poolShareSeen is the pool's entry once a charge has synced it.
func poolShareSeen() *testutil.ServerChargeWrapper {
	return testutil.MakeServerCharge("r1").UID("u1").Started(0)
}

func bobPod() Unreserved {
	return Unreserved{Pod: "jupyter-bob", UID: "u9", User: "bob", Price: Price{Value: 10, Interval: interval, Policy: "gpu"}}
}

// adoptedServer is bob's entry as adoption records it at t0+d.
func adoptedServer(d time.Duration) *testutil.ServerChargeWrapper {
	return testutil.MakeServerCharge("pod-u9").Pod("jupyter-bob").User("bob").UID("u9").Policy("gpu").ReservedAt(d).Paid(0, 0)
}

type settleCase struct {
	wallet *hcv1.CreditAccount
	pool   *hcv1.CreditAccount // "lab", or nil
	pods   map[string]PodObservation
	adopt  []Unreserved
	now    time.Time

	wantWallet accountView
	wantPool   *accountView
	wantResult resultView
	// wantNext is what a second run at the same time leaves, for the cases
	// whose first run marks a server's end (endedAt): the run that drops
	// the entries.
	wantNext *passWant
}

// passWant is what a run of Settle leaves.
type passWant struct {
	wallet accountView
	pool   *accountView
	result resultView
}

func settleCases() map[string]settleCase {
	maxPrice := runningServer().Price(maxCredits, time.Second).Paid(1, maxCredits).PaidThrough(time.Second)
	return map[string]settleCase{
		// A server's life.
		"a pending pod gets its uid and the price note": {
			wallet:     wallet(90).Servers(testutil.MakeServerCharge("r1").Obj()).Obj(),
			pods:       map[string]PodObservation{"r1": pending("u1")},
			now:        at(5 * time.Second),
			wantWallet: accountView{Balance: 90, Servers: []hcv1.ServerCharge{testutil.MakeServerCharge("r1").UID("u1").Obj()}, Conditions: healthy},
			wantResult: resultView{WalletChanged: true, Notes: []noteView{{Reason: EventCreditsReserved, Pod: "jupyter-alice"}}},
		},
		"the clock starts when the pod runs; the reservation pays period 0": {
			wallet: wallet(90).Servers(testutil.MakeServerCharge("r1").UID("u1").Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 30*time.Second)},
			now:    at(31 * time.Second),
			wantWallet: accountView{Balance: 90, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{testutil.MakeServerCharge("r1").UID("u1").Started(30 * time.Second).PaidThrough(10*time.Minute + 30*time.Second).Obj()}},
			wantResult: resultView{WalletChanged: true, Notes: []noteView{{Reason: EventServerStarted, Pod: "jupyter-alice"}},
				RequeueAfter: 9*time.Minute + 59*time.Second},
		},
		"one second before the boundary nothing is due": {
			wallet:     wallet(90).Servers(runningServer().Obj()).Obj(),
			pods:       map[string]PodObservation{"r1": running("u1", 0)},
			now:        at(interval - time.Second),
			wantWallet: accountView{Balance: 90, Running: 1, Conditions: healthy, Servers: []hcv1.ServerCharge{runningServer().Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: time.Second},
		},
		"period 1 is charged at its boundary": {
			wallet: wallet(90).Servers(runningServer().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(interval),
			wantWallet: accountView{Balance: 80, TotalCharged: 10, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{runningServer().Paid(2, 20).PaidThrough(20 * time.Minute).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: interval},
		},
		"missed boundaries are all charged": {
			wallet: wallet(90).Servers(runningServer().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(35 * time.Minute),
			wantWallet: accountView{Balance: 60, TotalCharged: 30, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{runningServer().Paid(4, 40).PaidThrough(40 * time.Minute).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: 5 * time.Minute},
		},
		"a free server runs for ever": {
			wallet: wallet(0).Servers(runningServer().Price(0, interval).Paid(1, 0).Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(1000 * time.Hour),
			wantWallet: accountView{Balance: 0, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{runningServer().Price(0, interval).Paid(6001, 0).PaidThrough(1000*time.Hour + interval).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: interval},
		},
		"a grant due at the boundary is applied before the charge": {
			wallet: wallet(5).Grant(5, interval).Servers(runningServer().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(interval),
			wantWallet: accountView{Balance: 0, TotalCharged: 10, TotalGranted: 5, Running: 1, Conditions: condsOf(lowTrue, exhaustedFalse),
				Servers: []hcv1.ServerCharge{runningServer().Paid(2, 20).PaidThrough(20 * time.Minute).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: interval,
				Notes: []noteView{{Reason: EventLow, Warning: true}}},
		},

		// Funding order.
		"the pool pays first, as much as it holds; the wallet the rest": {
			wallet: pooledWallet(90).Servers(pooledServer().Obj()).Obj(),
			pool:   pool(4).Servers(poolShare().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(interval),
			wantWallet: accountView{Balance: 84, TotalCharged: 6, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{pooledServer().Paid(2, 6).ProjectPaid(14).PaidThrough(20 * time.Minute).Obj()}},
			wantPool: &accountView{Balance: 0, TotalCharged: 4, Running: 1, Conditions: condsOf(lowTrue, exhaustedFalse),
				Servers: []hcv1.ServerCharge{poolShareSeen().Paid(2, 14).Obj()}},
			wantResult: resultView{WalletChanged: true, ChangedProjects: changedLab, RequeueAfter: interval},
		},
		"a rich pool pays the whole period": {
			wallet: pooledWallet(90).Servers(pooledServer().Obj()).Obj(),
			pool:   pool(50).Servers(poolShare().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(interval),
			wantWallet: accountView{Balance: 90, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{pooledServer().Paid(2, 0).ProjectPaid(20).PaidThrough(20 * time.Minute).Obj()}},
			wantPool: &accountView{Balance: 40, TotalCharged: 10, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{poolShareSeen().Paid(2, 20).Obj()}},
			wantResult: resultView{WalletChanged: true, ChangedProjects: changedLab, RequeueAfter: interval},
		},
		"an empty pool: the wallet pays and the pool's entry follows": {
			wallet: pooledWallet(90).Servers(pooledServer().Obj()).Obj(),
			pool:   pool(0).Servers(poolShare().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(interval),
			wantWallet: accountView{Balance: 80, TotalCharged: 10, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{pooledServer().Paid(2, 10).ProjectPaid(10).PaidThrough(20 * time.Minute).Obj()}},
			wantPool: &accountView{Balance: 0, Running: 1, Conditions: condsOf(lowTrue, exhaustedFalse),
				Servers: []hcv1.ServerCharge{poolShareSeen().Paid(2, 10).Obj()}},
			wantResult: resultView{WalletChanged: true, ChangedProjects: changedLab, RequeueAfter: interval},
		},
		"pool and wallet together just pay": {
			wallet: pooledWallet(6).Servers(pooledServer().Obj()).Obj(),
			pool:   pool(4).Servers(poolShare().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(interval),
			wantWallet: accountView{Balance: 0, TotalCharged: 6, Running: 1, Conditions: condsOf(lowTrue, exhaustedFalse),
				Servers: []hcv1.ServerCharge{pooledServer().Paid(2, 6).ProjectPaid(14).PaidThrough(20 * time.Minute).Obj()}},
			wantPool: &accountView{Balance: 0, TotalCharged: 4, Running: 1, Conditions: condsOf(lowTrue, exhaustedFalse),
				Servers: []hcv1.ServerCharge{poolShareSeen().Paid(2, 14).Obj()}},
			wantResult: resultView{WalletChanged: true, ChangedProjects: changedLab, RequeueAfter: interval,
				Notes: []noteView{{Reason: EventLow, Warning: true}}},
		},
		"a missing pool is treated as empty": {
			wallet: pooledWallet(90).Servers(pooledServer().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(interval),
			wantWallet: accountView{Balance: 80, TotalCharged: 10, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{pooledServer().Paid(2, 10).PaidThrough(20 * time.Minute).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: interval},
		},

		// Running out.
		"the wallet cannot pay the next period: stop, nothing charged": {
			wallet: wallet(9).Servers(runningServer().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(interval),
			wantWallet: accountView{Balance: 9, Conditions: condsOf(lowFalse, exhaustedTrue),
				Servers: []hcv1.ServerCharge{runningServer().StopRequested(interval).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: 30 * time.Second,
				Stops: []stopView{{ID: "r1", Message: "Stopped: account alice has 9 credits, the next 10m costs 10."}}},
		},
		"a negative adjustment takes the balance: the paid period runs, the next boundary stops": {
			wallet: wallet(95).Adjust("fix", -200, "double grant").Servers(runningServer().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(interval - time.Second),
			wantWallet: accountView{Balance: 0, TotalAdjusted: -95, Running: 1, Conditions: condsOf(lowTrue, exhaustedFalse),
				Servers: []hcv1.ServerCharge{runningServer().Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: time.Second,
				Notes: []noteView{{Reason: EventLow, Warning: true}}},
		},
		"after a negative adjustment the next boundary cannot be paid: stop, nothing charged": {
			wallet: wallet(95).Adjust("fix", -90, "double grant").Servers(runningServer().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(interval),
			wantWallet: accountView{Balance: 5, TotalAdjusted: -90, Conditions: condsOf(lowFalse, exhaustedTrue),
				Servers: []hcv1.ServerCharge{runningServer().StopRequested(interval).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: 30 * time.Second,
				Stops: []stopView{{ID: "r1", Message: "Stopped: account alice has 5 credits, the next 10m costs 10."}}},
		},
		"a positive adjustment clears Exhausted": {
			wallet:     wallet(0).Adjust("sorry", 40, "outage").Condition(hcv1.ConditionExhausted, metav1.ConditionTrue, hcv1.ReasonServerStopped).Obj(),
			now:        at(interval),
			wantWallet: accountView{Balance: 40, TotalAdjusted: 40, Conditions: healthy},
			wantResult: resultView{WalletChanged: true},
		},
		"missed periods are paid while affordable, then the server stops": {
			wallet: wallet(25).Servers(runningServer().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(35 * time.Minute),
			wantWallet: accountView{Balance: 5, TotalCharged: 20, Conditions: condsOf(lowFalse, exhaustedTrue),
				Servers: []hcv1.ServerCharge{runningServer().Paid(3, 30).PaidThrough(30 * time.Minute).StopRequested(35 * time.Minute).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: 30 * time.Second,
				Stops: []stopView{{ID: "r1", Message: "Stopped: account alice has 5 credits, the next 10m costs 10."}}},
		},
		"pool and wallet one credit short: stop, neither charged": {
			wallet: pooledWallet(5).Servers(pooledServer().Obj()).Obj(),
			pool:   pool(4).Servers(poolShare().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(interval),
			wantWallet: accountView{Balance: 5, Conditions: condsOf(lowFalse, exhaustedTrue),
				Servers: []hcv1.ServerCharge{pooledServer().StopRequested(interval).Obj()}},
			// The pool's entry carries no stop, so the pool still counts the
			// server as running.
			wantPool: &accountView{Balance: 4, Running: 1, Conditions: condsOf(lowTrue, exhaustedFalse),
				Servers: []hcv1.ServerCharge{poolShareSeen().Paid(1, 10).Obj()}},
			wantResult: resultView{WalletChanged: true, ChangedProjects: changedLab, RequeueAfter: 30 * time.Second,
				Stops: []stopView{{ID: "r1", Message: "Stopped: project lab has 4 and account alice has 5 credits, the next 10m costs 10."}}},
		},
		"a stopped server is not charged at later boundaries, even after a top-up": {
			wallet: wallet(1000).Condition(hcv1.ConditionExhausted, metav1.ConditionTrue, hcv1.ReasonServerStopped).
				Servers(runningServer().StopRequested(19*time.Minute + 50*time.Second).Obj()).Obj(),
			pods: map[string]PodObservation{"r1": running("u1", 0)},
			now:  at(20*time.Minute + 5*time.Second),
			wantWallet: accountView{Balance: 1000, Conditions: condsOf(lowFalse, exhaustedTrue),
				Servers: []hcv1.ServerCharge{runningServer().StopRequested(19*time.Minute + 50*time.Second).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: 15 * time.Second},
		},
		"the stop is repeated after StopRetry while the pod exists": {
			wallet: wallet(9).Condition(hcv1.ConditionExhausted, metav1.ConditionTrue, hcv1.ReasonServerStopped).
				Servers(runningServer().StopRequested(interval).Obj()).Obj(),
			pods: map[string]PodObservation{"r1": running("u1", 0)},
			now:  at(interval + 30*time.Second),
			wantWallet: accountView{Balance: 9, Conditions: condsOf(lowFalse, exhaustedTrue),
				Servers: []hcv1.ServerCharge{runningServer().StopRequested(interval + 30*time.Second).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: 30 * time.Second,
				Stops: []stopView{{ID: "r1", Repeat: true, Message: "Stopped: account alice has 9 credits, the next 10m costs 10."}}},
		},
		"Exhausted stays after the stopped server ended, until credits are added": {
			wallet: wallet(5).Condition(hcv1.ConditionExhausted, metav1.ConditionTrue, hcv1.ReasonServerStopped).
				Servers(runningServer().StopRequested(interval).Obj()).Obj(),
			pods: map[string]PodObservation{"r1": ended("u1", 0, interval+20*time.Second)},
			now:  at(interval + 25*time.Second),
			wantWallet: accountView{Balance: 5, Conditions: condsOf(lowFalse, exhaustedTrue),
				Servers: []hcv1.ServerCharge{runningServer().StopRequested(interval).Ended(interval + 25*time.Second).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: time.Second},
			wantNext: &passWant{
				wallet: accountView{Balance: 5, Conditions: condsOf(lowFalse, exhaustedTrue)},
				result: resultView{WalletChanged: true},
			},
		},
		"Exhausted clears with a top-up once the stopped server has ended: an ended entry is not a pending stop": {
			wallet: wallet(5).TopUp("more", 50).Condition(hcv1.ConditionExhausted, metav1.ConditionTrue, hcv1.ReasonServerStopped).
				Servers(runningServer().StopRequested(interval).Obj()).Obj(),
			pods: map[string]PodObservation{"r1": ended("u1", 0, interval+20*time.Second)},
			now:  at(interval + 25*time.Second),
			wantWallet: accountView{Balance: 55, Conditions: healthy,
				Servers: []hcv1.ServerCharge{runningServer().StopRequested(interval).Ended(interval + 25*time.Second).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: time.Second},
			wantNext: &passWant{
				wallet: accountView{Balance: 55, Conditions: healthy},
				result: resultView{WalletChanged: true},
			},
		},
		"Exhausted clears when a top-up adds credits": {
			wallet:     wallet(5).TopUp("more", 50).Condition(hcv1.ConditionExhausted, metav1.ConditionTrue, hcv1.ReasonServerStopped).Obj(),
			now:        at(time.Hour),
			wantWallet: accountView{Balance: 55, Conditions: healthy},
			wantResult: resultView{WalletChanged: true},
		},
		"Exhausted clears when a grant adds credits": {
			wallet:     wallet(5).Grant(5, interval).Condition(hcv1.ConditionExhausted, metav1.ConditionTrue, hcv1.ReasonServerStopped).Obj(),
			now:        at(interval),
			wantWallet: accountView{Balance: 10, TotalGranted: 5, Conditions: healthy},
			// Below the cap: look again at the next grant.
			wantResult: resultView{WalletChanged: true, RequeueAfter: interval},
		},
		"Exhausted does not clear while a stop is pending, even after a top-up": {
			wallet: wallet(5).TopUp("more", 50).Condition(hcv1.ConditionExhausted, metav1.ConditionTrue, hcv1.ReasonServerStopped).
				Servers(runningServer().StopRequested(interval).Obj()).Obj(),
			pods: map[string]PodObservation{"r1": running("u1", 0)},
			now:  at(interval + 10*time.Second),
			wantWallet: accountView{Balance: 55, Conditions: condsOf(lowFalse, exhaustedTrue),
				Servers: []hcv1.ServerCharge{runningServer().StopRequested(interval).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: 20 * time.Second},
		},
		"below the cap with a grant: look again at the next grant": {
			wallet:     wallet(50).Grant(5, time.Hour).Obj(),
			now:        at(20 * time.Minute),
			wantWallet: accountView{Balance: 50, Conditions: healthy},
			wantResult: resultView{WalletChanged: true, RequeueAfter: 40 * time.Minute},
		},
		"at the cap: no wake-up for grants": {
			wallet:     wallet(100).Grant(5, time.Hour).Obj(),
			now:        at(20 * time.Minute),
			wantWallet: accountView{Balance: 100, Conditions: healthy},
			wantResult: resultView{WalletChanged: true},
		},
		"Exhausted stays while nothing is left": {
			wallet:     wallet(0).Condition(hcv1.ConditionExhausted, metav1.ConditionTrue, hcv1.ReasonServerStopped).Obj(),
			now:        at(time.Hour),
			wantWallet: accountView{Balance: 0, Conditions: condsOf(lowFalse, exhaustedTrue)},
			wantResult: resultView{WalletChanged: true},
		},

		// The end of a server, in two passes: the first charges what is owed
		// up to the end and marks both entries with endedAt (the server no
		// longer counts as running); the next drops them, pool first,
		// charging nothing.
		"ended exactly on a boundary: that period is not owed": {
			wallet: wallet(90).Servers(runningServer().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": ended("u1", 0, interval)},
			now:    at(12 * time.Minute),
			wantWallet: accountView{Balance: 90, Conditions: healthy,
				Servers: []hcv1.ServerCharge{runningServer().Ended(12 * time.Minute).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: time.Second},
			wantNext: &passWant{
				wallet: accountView{Balance: 90, Conditions: healthy},
				result: resultView{WalletChanged: true},
			},
		},
		"ended just after a boundary: the period that began is owed": {
			wallet: wallet(90).Servers(runningServer().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": ended("u1", 0, interval+time.Second)},
			now:    at(12 * time.Minute),
			wantWallet: accountView{Balance: 80, TotalCharged: 10, Conditions: healthy,
				Servers: []hcv1.ServerCharge{runningServer().Paid(2, 20).PaidThrough(20 * time.Minute).Ended(12 * time.Minute).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: time.Second},
			wantNext: &passWant{
				wallet: accountView{Balance: 80, TotalCharged: 10, Conditions: healthy},
				result: resultView{WalletChanged: true},
			},
		},
		"ended and seen late: charged up to the end, not up to now": {
			wallet: wallet(90).Servers(runningServer().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": ended("u1", 0, 15*time.Minute)},
			now:    at(2 * time.Hour),
			wantWallet: accountView{Balance: 80, TotalCharged: 10, Conditions: healthy,
				Servers: []hcv1.ServerCharge{runningServer().Paid(2, 20).PaidThrough(20 * time.Minute).Ended(2 * time.Hour).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: time.Second},
			wantNext: &passWant{
				wallet: accountView{Balance: 80, TotalCharged: 10, Conditions: healthy},
				result: resultView{WalletChanged: true},
			},
		},
		// A cache that lagged (kube-apiserver restarted, the watch was
		// broken) showed the pod running after it had ended, and boundaries
		// after its end were charged: they come back when the end is seen.
		"ended before periods that were charged (seen late): they come back": {
			wallet: wallet(70).Servers(runningServer().Paid(3, 30).PaidThrough(30 * time.Minute).Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": ended("u1", 0, 15*time.Minute)},
			now:    at(31 * time.Minute),
			wantWallet: accountView{Balance: 80, TotalRefunded: 10, Conditions: healthy,
				Servers: []hcv1.ServerCharge{runningServer().Paid(2, 20).PaidThrough(20 * time.Minute).Ended(31 * time.Minute).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: time.Second},
			wantNext: &passWant{
				wallet: accountView{Balance: 80, TotalRefunded: 10, Conditions: healthy},
				result: resultView{WalletChanged: true},
			},
		},
		"ended before periods the wallet and the pool paid: the last periods come back first, the wallet's share first": {
			wallet: pooledWallet(80).Servers(pooledServer().Paid(3, 10).ProjectPaid(20).PaidThrough(30 * time.Minute).Obj()).Obj(),
			pool:   pool(30).Servers(poolShareSeen().Paid(3, 20).Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": ended("u1", 0, 5*time.Minute)},
			now:    at(31 * time.Minute),
			wantWallet: accountView{Balance: 90, TotalRefunded: 10, Conditions: healthy,
				Servers: []hcv1.ServerCharge{pooledServer().Paid(1, 0).ProjectPaid(10).PaidThrough(10 * time.Minute).Ended(31 * time.Minute).Obj()}},
			wantPool: &accountView{Balance: 40, TotalRefunded: 10, Conditions: healthy,
				Servers: []hcv1.ServerCharge{poolShareSeen().Paid(1, 10).Ended(31 * time.Minute).Obj()}},
			wantResult: resultView{WalletChanged: true, ChangedProjects: changedLab, RequeueAfter: time.Second},
			wantNext: &passWant{
				wallet: accountView{Balance: 90, TotalRefunded: 10, Conditions: healthy},
				pool:   &accountView{Balance: 40, TotalRefunded: 10, Conditions: healthy},
				result: resultView{WalletChanged: true, ChangedProjects: changedLab},
			},
		},
		"a stopped server that ended before its last paid period: that period comes back": {
			wallet: wallet(5).Condition(hcv1.ConditionExhausted, metav1.ConditionTrue, hcv1.ReasonServerStopped).
				Servers(runningServer().Paid(2, 20).PaidThrough(20 * time.Minute).StopRequested(20 * time.Minute).Obj()).Obj(),
			pods: map[string]PodObservation{"r1": ended("u1", 0, 9*time.Minute)},
			now:  at(20*time.Minute + 5*time.Second),
			// Exhausted stays: it reports the stop; a correction is not new credits.
			wantWallet: accountView{Balance: 15, TotalRefunded: 10, Conditions: condsOf(lowFalse, exhaustedTrue),
				Servers: []hcv1.ServerCharge{runningServer().StopRequested(20 * time.Minute).Ended(20*time.Minute + 5*time.Second).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: time.Second},
			wantNext: &passWant{
				wallet: accountView{Balance: 15, TotalRefunded: 10, Conditions: condsOf(lowFalse, exhaustedTrue)},
				result: resultView{WalletChanged: true},
			},
		},
		"ended with a pool: both entries are marked, then both go": {
			wallet: pooledWallet(90).Servers(pooledServer().Obj()).Obj(),
			pool:   pool(50).Servers(poolShare().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": ended("u1", 0, 15*time.Minute)},
			now:    at(16 * time.Minute),
			wantWallet: accountView{Balance: 90, Conditions: healthy,
				Servers: []hcv1.ServerCharge{pooledServer().Paid(2, 0).ProjectPaid(20).PaidThrough(20 * time.Minute).Ended(16 * time.Minute).Obj()}},
			wantPool: &accountView{Balance: 40, TotalCharged: 10, Conditions: healthy,
				Servers: []hcv1.ServerCharge{poolShareSeen().Paid(2, 20).Ended(16 * time.Minute).Obj()}},
			wantResult: resultView{WalletChanged: true, ChangedProjects: changedLab, RequeueAfter: time.Second},
			wantNext: &passWant{
				wallet: accountView{Balance: 90, Conditions: healthy},
				pool:   &accountView{Balance: 40, TotalCharged: 10, Conditions: healthy},
				result: resultView{WalletChanged: true, ChangedProjects: changedLab},
			},
		},
		"ended in the run in which the pool opens its entry: that entry is marked too": {
			wallet: pooledWallet(50).Servers(runningServer().Project("lab").Obj()).Obj(),
			pool:   pool(50).Obj(),
			pods:   map[string]PodObservation{"r1": ended("u1", 0, 15*time.Minute)},
			now:    at(16 * time.Minute),
			wantWallet: accountView{Balance: 50, Conditions: healthy,
				Servers: []hcv1.ServerCharge{runningServer().Project("lab").Paid(2, 10).ProjectPaid(10).PaidThrough(20 * time.Minute).Ended(16 * time.Minute).Obj()}},
			wantPool: &accountView{Balance: 40, TotalCharged: 10, Conditions: healthy,
				Servers: []hcv1.ServerCharge{poolShareSeen().Paid(2, 10).Ended(16 * time.Minute).Obj()}},
			wantResult: resultView{WalletChanged: true, ChangedProjects: changedLab, RequeueAfter: time.Second},
			wantNext: &passWant{
				wallet: accountView{Balance: 50, Conditions: healthy},
				pool:   &accountView{Balance: 40, TotalCharged: 10, Conditions: healthy},
				result: resultView{WalletChanged: true, ChangedProjects: changedLab},
			},
		},
		"ended while unaffordable: no stop, nothing more charged": {
			wallet: wallet(5).Servers(runningServer().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": ended("u1", 0, 15*time.Minute)},
			now:    at(16 * time.Minute),
			// Low stays false: an ended server does not count as running.
			wantWallet: accountView{Balance: 5, Conditions: healthy,
				Servers: []hcv1.ServerCharge{runningServer().Ended(16 * time.Minute).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: time.Second},
			wantNext: &passWant{
				wallet: accountView{Balance: 5, Conditions: healthy},
				result: resultView{WalletChanged: true},
			},
		},
		"vanished unobserved after running: nothing more charged": {
			wallet: wallet(90).Servers(runningServer().Obj()).Obj(),
			now:    at(45 * time.Minute),
			wantWallet: accountView{Balance: 90, Conditions: healthy,
				Servers: []hcv1.ServerCharge{runningServer().Ended(45 * time.Minute).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: time.Second},
			wantNext: &passWant{
				wallet: accountView{Balance: 90, Conditions: healthy},
				result: resultView{WalletChanged: true},
			},
		},
		"vanished with a pool: both entries are marked, then both go, nothing charged": {
			wallet: pooledWallet(90).Servers(pooledServer().Obj()).Obj(),
			pool:   pool(50).Servers(poolShareSeen().Paid(1, 10).Obj()).Obj(),
			now:    at(45 * time.Minute),
			wantWallet: accountView{Balance: 90, Conditions: healthy,
				Servers: []hcv1.ServerCharge{pooledServer().Ended(45 * time.Minute).Obj()}},
			wantPool: &accountView{Balance: 50, Conditions: healthy,
				Servers: []hcv1.ServerCharge{poolShareSeen().Paid(1, 10).Ended(45 * time.Minute).Obj()}},
			wantResult: resultView{WalletChanged: true, ChangedProjects: changedLab, RequeueAfter: time.Second},
			wantNext: &passWant{
				wallet: accountView{Balance: 90, Conditions: healthy},
				pool:   &accountView{Balance: 50, Conditions: healthy},
				result: resultView{WalletChanged: true, ChangedProjects: changedLab},
			},
		},
		"a marked end is dropped later, pool first, charging nothing": {
			wallet: pooledWallet(90).Servers(pooledServer().Paid(2, 0).ProjectPaid(20).PaidThrough(20 * time.Minute).Ended(16 * time.Minute).Obj()).Obj(),
			pool:   pool(40).Servers(poolShareSeen().Paid(2, 20).Ended(16 * time.Minute).Obj()).Obj(),
			// Whatever the pod does meanwhile.
			pods:       map[string]PodObservation{"r1": ended("u1", 0, 15*time.Minute)},
			now:        at(2 * time.Hour),
			wantWallet: accountView{Balance: 90, Conditions: healthy},
			wantPool:   &accountView{Balance: 40, Conditions: healthy},
			wantResult: resultView{WalletChanged: true, ChangedProjects: changedLab},
		},
		"a marked end whose pool is gone: the wallet's entry is dropped": {
			wallet:     pooledWallet(90).Servers(pooledServer().Paid(2, 0).ProjectPaid(20).PaidThrough(20 * time.Minute).Ended(16 * time.Minute).Obj()).Obj(),
			now:        at(17 * time.Minute),
			wantWallet: accountView{Balance: 90, Conditions: healthy},
			wantResult: resultView{WalletChanged: true},
		},

		// Reservations that never ran.
		"a reservation waits for its pod during the orphan grace": {
			wallet:     wallet(90).Servers(testutil.MakeServerCharge("r1").Obj()).Obj(),
			now:        at(10 * time.Second),
			wantWallet: accountView{Balance: 90, Conditions: healthy, Servers: []hcv1.ServerCharge{testutil.MakeServerCharge("r1").Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: 20 * time.Second},
		},
		"an orphan reservation is refunded after the grace, pool part too": {
			wallet:     pooledWallet(90).Servers(testutil.MakeServerCharge("r1").Project("lab").Paid(1, 6).ProjectPaid(4).Obj()).Obj(),
			pool:       pool(0).Servers(testutil.MakeServerCharge("r1").Paid(1, 4).Obj()).Obj(),
			now:        at(30 * time.Second),
			wantWallet: accountView{Balance: 96, TotalRefunded: 6, Conditions: healthy},
			wantPool:   &accountView{Balance: 4, TotalRefunded: 4, Conditions: healthy},
			wantResult: resultView{WalletChanged: true, ChangedProjects: changedLab,
				Notes: []noteView{{Reason: EventRefunded}}},
		},
		"a pod that ended without running gets its reservation back": {
			wallet:     wallet(90).Servers(testutil.MakeServerCharge("r1").UID("u1").Obj()).Obj(),
			pods:       map[string]PodObservation{"r1": endedPending("u1", 2*time.Minute)},
			now:        at(3 * time.Minute),
			wantWallet: accountView{Balance: 100, TotalRefunded: 10, Conditions: healthy},
			wantResult: resultView{WalletChanged: true, Notes: []noteView{{Reason: EventRefunded}}},
		},
		"a pod deleted before it ran gets its reservation back": {
			wallet:     wallet(90).Servers(testutil.MakeServerCharge("r1").UID("u1").Obj()).Obj(),
			now:        at(3 * time.Minute),
			wantWallet: accountView{Balance: 100, TotalRefunded: 10, Conditions: healthy},
			wantResult: resultView{WalletChanged: true, Notes: []noteView{{Reason: EventRefunded}}},
		},
		"started and ended at the same instant counts as never started": {
			wallet:     wallet(90).Servers(testutil.MakeServerCharge("r1").UID("u1").Obj()).Obj(),
			pods:       map[string]PodObservation{"r1": ended("u1", time.Minute, time.Minute)},
			now:        at(3 * time.Minute),
			wantWallet: accountView{Balance: 100, TotalRefunded: 10, Conditions: healthy},
			wantResult: resultView{WalletChanged: true, Notes: []noteView{{Reason: EventRefunded}}},
		},
		"first seen already ended without running: noted, then refunded": {
			wallet:     wallet(90).Servers(testutil.MakeServerCharge("r1").Obj()).Obj(),
			pods:       map[string]PodObservation{"r1": endedPending("u1", time.Minute)},
			now:        at(2 * time.Minute),
			wantWallet: accountView{Balance: 100, TotalRefunded: 10, Conditions: healthy},
			wantResult: resultView{WalletChanged: true,
				Notes: []noteView{{Reason: EventCreditsReserved, Pod: "jupyter-alice"}, {Reason: EventRefunded}}},
		},

		// Adoption of pods admitted without a reservation.
		"an unreserved pod is adopted; nothing is charged while it is pending": {
			wallet:     wallet(50).Obj(),
			adopt:      []Unreserved{bobPod()},
			pods:       map[string]PodObservation{"pod-u9": pending("u9")},
			now:        at(0),
			wantWallet: accountView{Balance: 50, Conditions: healthy, Servers: []hcv1.ServerCharge{adoptedServer(0).Obj()}},
			wantResult: resultView{WalletChanged: true, Notes: []noteView{{Reason: EventAdopted, Pod: "jupyter-bob"}}},
		},
		// A pod already running when adopted (hubcredits installed on a live
		// hub, or the webhook bypassed) starts its clock at adoption: no
		// charge for time before it.
		"an adopted pod that runs pays its first period from its adoption": {
			wallet: wallet(50).Obj(),
			adopt:  []Unreserved{bobPod()},
			pods:   map[string]PodObservation{"pod-u9": running("u9", time.Minute)},
			now:    at(5 * time.Minute),
			wantWallet: accountView{Balance: 40, TotalCharged: 10, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{adoptedServer(5*time.Minute).Started(5*time.Minute).Paid(1, 10).PaidThrough(15 * time.Minute).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: 10 * time.Minute,
				Notes: []noteView{{Reason: EventAdopted, Pod: "jupyter-bob"}, {Reason: EventServerStarted, Pod: "jupyter-bob"}}},
		},
		"an adopted pod is adopted once": {
			wallet: wallet(40).Servers(adoptedServer(0).Started(time.Minute).Paid(1, 10).PaidThrough(11 * time.Minute).Obj()).Obj(),
			adopt:  []Unreserved{bobPod()},
			pods:   map[string]PodObservation{"pod-u9": running("u9", time.Minute)},
			now:    at(5 * time.Minute),
			wantWallet: accountView{Balance: 40, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{adoptedServer(0).Started(time.Minute).Paid(1, 10).PaidThrough(11 * time.Minute).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: 6 * time.Minute},
		},
		"an adopted pod with a pool: the pool pays first and opens its entry": {
			wallet: pooledWallet(50).Obj(),
			pool:   pool(50).Obj(),
			adopt:  []Unreserved{bobPod()},
			pods:   map[string]PodObservation{"pod-u9": running("u9", time.Minute)},
			now:    at(5 * time.Minute),
			wantWallet: accountView{Balance: 50, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{adoptedServer(5*time.Minute).Project("lab").Started(5*time.Minute).Paid(1, 0).ProjectPaid(10).PaidThrough(15 * time.Minute).Obj()}},
			wantPool: &accountView{Balance: 40, TotalCharged: 10, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{adoptedServer(5*time.Minute).Started(5*time.Minute).Paid(1, 10).Obj()}},
			wantResult: resultView{WalletChanged: true, ChangedProjects: changedLab, RequeueAfter: 10 * time.Minute,
				Notes: []noteView{{Reason: EventAdopted, Pod: "jupyter-bob"}, {Reason: EventServerStarted, Pod: "jupyter-bob"}}},
		},
		"an adopted pod that cannot pay its first period is stopped": {
			wallet: wallet(3).Obj(),
			adopt:  []Unreserved{bobPod()},
			pods:   map[string]PodObservation{"pod-u9": running("u9", time.Minute)},
			now:    at(5 * time.Minute),
			wantWallet: accountView{Balance: 3, Conditions: condsOf(lowFalse, exhaustedTrue),
				Servers: []hcv1.ServerCharge{adoptedServer(5 * time.Minute).Started(5 * time.Minute).PaidThrough(5 * time.Minute).StopRequested(5 * time.Minute).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: 30 * time.Second,
				Notes: []noteView{{Reason: EventAdopted, Pod: "jupyter-bob"}, {Reason: EventServerStarted, Pod: "jupyter-bob"}},
				Stops: []stopView{{ID: "pod-u9", Message: "Stopped: account alice has 3 credits, the next 10m costs 10."}}},
		},

		// The Low condition.
		"Low turns true with a warning note": {
			wallet: wallet(25).Servers(runningServer().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(interval),
			wantWallet: accountView{Balance: 15, TotalCharged: 10, Running: 1, Conditions: condsOf(lowTrue, exhaustedFalse),
				Servers: []hcv1.ServerCharge{runningServer().Paid(2, 20).PaidThrough(20 * time.Minute).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: interval, Notes: []noteView{{Reason: EventLow, Warning: true}}},
		},
		"Low already true: no second note": {
			wallet: wallet(25).Condition(hcv1.ConditionLow, metav1.ConditionTrue, hcv1.ReasonBalanceLow).
				Servers(runningServer().Obj()).Obj(),
			pods: map[string]PodObservation{"r1": running("u1", 0)},
			now:  at(interval),
			wantWallet: accountView{Balance: 15, TotalCharged: 10, Running: 1, Conditions: condsOf(lowTrue, exhaustedFalse),
				Servers: []hcv1.ServerCharge{runningServer().Paid(2, 20).PaidThrough(20 * time.Minute).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: interval},
		},
		"Low counts the pool's balance": {
			wallet: pooledWallet(15).Servers(pooledServer().Obj()).Obj(),
			pool:   pool(10).Servers(poolShareSeen().Paid(1, 10).Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(5 * time.Minute),
			wantWallet: accountView{Balance: 15, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{pooledServer().Obj()}},
			wantPool: &accountView{Balance: 10, Running: 1, Conditions: condsOf(lowTrue, exhaustedFalse),
				Servers: []hcv1.ServerCharge{poolShareSeen().Paid(1, 10).Obj()}},
			wantResult: resultView{WalletChanged: true, ChangedProjects: changedLab, RequeueAfter: 5 * time.Minute},
		},
		"Low adds up the running servers and ignores pending ones": {
			wallet: wallet(35).Servers(
				runningServer().Obj(),
				runningServer().Pod("jupyter-alice-2").Obj(),
				testutil.MakeServerCharge("r3").UID("u3").Obj(),
			).Obj(),
			pods: map[string]PodObservation{"r1": running("u1", 0), "r3": pending("u3")},
			now:  at(5 * time.Minute),
			wantWallet: accountView{Balance: 35, Running: 2, Conditions: condsOf(lowTrue, exhaustedFalse),
				Servers: []hcv1.ServerCharge{runningServer().Obj(), runningServer().Pod("jupyter-alice-2").Obj(), testutil.MakeServerCharge("r3").UID("u3").Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: 5 * time.Minute, Notes: []noteView{{Reason: EventLow, Warning: true}}},
		},

		// A pool settling itself.
		"a pool leaves its share of another wallet's server to that wallet": {
			wallet: pool(50).Servers(poolShareSeen().Paid(1, 10).Obj()).Obj(),
			now:    at(2 * time.Hour),
			wantWallet: accountView{Balance: 50, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{poolShareSeen().Paid(1, 10).Obj()}},
			wantResult: resultView{WalletChanged: true},
		},
		"a pool keeps its marked share of another wallet's server, not counted as running": {
			wallet: pool(50).Servers(poolShareSeen().Paid(2, 20).Ended(16 * time.Minute).Obj()).Obj(),
			now:    at(2 * time.Hour),
			wantWallet: accountView{Balance: 50, Conditions: healthy,
				Servers: []hcv1.ServerCharge{poolShareSeen().Paid(2, 20).Ended(16 * time.Minute).Obj()}},
			wantResult: resultView{WalletChanged: true},
		},

		// Saturation.
		"MaxCredits per second for a year: one period paid, no wrap": {
			wallet: wallet(maxCredits).Cap(maxCredits).Servers(maxPrice.Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(8760 * time.Hour),
			wantWallet: accountView{Balance: 0, TotalCharged: maxCredits, Conditions: condsOf(lowFalse, exhaustedTrue),
				Servers: []hcv1.ServerCharge{runningServer().Price(maxCredits, time.Second).Paid(2, maxCredits).PaidThrough(2 * time.Second).StopRequested(8760 * time.Hour).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: 30 * time.Second,
				Stops: []stopView{{ID: "r1", Message: fmt.Sprintf("Stopped: account alice has 0 credits, the next 1s costs %d.", maxCredits)}}},
		},
		"one credit per second for a year": {
			wallet: wallet(maxCredits).Cap(maxCredits).Servers(runningServer().Price(1, time.Second).Paid(1, 1).PaidThrough(time.Second).Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(8760 * time.Hour),
			wantWallet: accountView{Balance: maxCredits - 8760*3600, TotalCharged: 8760 * 3600, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{runningServer().Price(1, time.Second).Paid(8760*3600+1, 8760*3600+1).PaidThrough(8760*time.Hour + time.Second).Obj()}},
			wantResult: resultView{WalletChanged: true, RequeueAfter: time.Second},
		},
	}
}

func settleOnce(tc settleCase) (*hcv1.CreditAccount, *hcv1.CreditAccount, Result) {
	w := tc.wallet.DeepCopy()
	p := tc.pool.DeepCopy()
	return w, p, settleAgain(tc, w, p)
}

// settleAgain runs Settle once more on w and p (nil: no pool), as the
// controller does on its requeue, at the case's time.
func settleAgain(tc settleCase, w, p *hcv1.CreditAccount) Result {
	projects := map[string]*hcv1.CreditAccount{}
	if p != nil {
		projects[p.Name] = p
	}
	return Settle(w, projects, podsByID(tc.pods), tc.adopt, tc.now, testOptions)
}

// markedEnded lists the ids of a's entries of wallet's servers that carry
// endedAt (a: the wallet or its pool; a pool's shares of other wallets'
// servers are those wallets' business).
func markedEnded(a *hcv1.CreditAccount, wallet string) []string {
	var ids []string
	if a == nil {
		return nil
	}
	for _, e := range a.Status.Servers {
		if e.EndedAt != nil && e.Wallet == wallet {
			ids = append(ids, e.ID)
		}
	}
	return ids
}

// changedSomething reports whether a run says it changed an account.
func changedSomething(r Result) bool { return r.WalletChanged || len(r.ChangedProjects) > 0 }

func checkPass(t *testing.T, pass string, want passWant, w, p *hcv1.CreditAccount, res Result, hasPool bool) {
	t.Helper()
	if d := cmp.Diff(want.wallet, viewOf(w), cmpopts.EquateEmpty()); d != "" {
		t.Errorf("%s: wallet mismatch (-want +got):\n%s", pass, d)
	}
	if hasPool || want.pool != nil {
		var got *accountView
		if p != nil {
			v := viewOf(p)
			got = &v
		}
		if d := cmp.Diff(want.pool, got, cmpopts.EquateEmpty()); d != "" {
			t.Errorf("%s: pool mismatch (-want +got):\n%s", pass, d)
		}
	}
	if d := cmp.Diff(want.result, resultViewOf(res), cmpopts.EquateEmpty()); d != "" {
		t.Errorf("%s: result mismatch (-want +got):\n%s", pass, d)
	}
}

func TestSettle(t *testing.T) {
	for name, tc := range settleCases() {
		t.Run(name, func(t *testing.T) {
			w, p, res := settleOnce(tc)
			checkPass(t, "first run", passWant{wallet: tc.wantWallet, pool: tc.wantPool, result: tc.wantResult}, w, p, res, tc.pool != nil)
			marked := len(markedEnded(w, w.Name)) + len(markedEnded(p, w.Name))
			switch {
			case tc.wantNext != nil:
				res := settleAgain(tc, w, p)
				checkPass(t, "second run", *tc.wantNext, w, p, res, tc.pool != nil)
			case marked > 0 && len(markedEnded(tc.wallet, w.Name))+len(markedEnded(tc.pool, w.Name)) == 0:
				t.Errorf("the run marked a server's end; the case must say what the next run does (wantNext)")
			}
			// Whatever happened, the books balance and nothing went negative.
			for _, pair := range [][2]*hcv1.CreditAccount{{tc.wallet, w}, {tc.pool, p}} {
				if pair[1] == nil {
					continue
				}
				if err := conserved(pair[0], pair[1]); err != nil && pair[1].Status.TotalCharged < maxCredits {
					t.Error(err)
				}
				if pair[1].Status.Balance < 0 {
					t.Errorf("account %s has a negative balance %d", pair[1].Name, pair[1].Status.Balance)
				}
			}
		})
	}
}

// TestSettleIsIdempotent settles every case until it is quiescent, at the
// same moment. A run that follows a run that marked a server's end
// (endedAt) drops exactly the marked entries, pool and wallet, and nothing
// else: no credits move, no ledger entry, no condition changes, no stop, no
// note. The run after that (or after a run that marked nothing) must change
// nothing and say nothing.
func TestSettleIsIdempotent(t *testing.T) {
	for name, tc := range settleCases() {
		t.Run(name, func(t *testing.T) {
			w, p, _ := settleOnce(tc)
			if len(markedEnded(w, w.Name))+len(markedEnded(p, w.Name)) > 0 {
				w1, p1 := w.DeepCopy(), p.DeepCopy()
				res := settleAgain(tc, w, p)
				if !res.WalletChanged {
					t.Errorf("the run that drops the ended entries does not report a wallet change")
				}
				if p != nil && len(markedEnded(p1, w.Name)) > 0 && !res.ChangedProjects[p.Name] {
					t.Errorf("the run that drops the pool's ended entry does not report a pool change")
				}
				if len(res.Stops)+len(res.Notes)+len(res.Lags) > 0 {
					t.Errorf("the run that drops the ended entries says something: stops %v, notes %v, lags %v", res.Stops, res.Notes, res.Lags)
				}
				for _, pair := range [][2]*hcv1.CreditAccount{{w1, w}, {p1, p}} {
					before, after := pair[0], pair[1]
					if before == nil {
						continue
					}
					// Only the marked entries of the wallet's servers go.
					want := before.DeepCopy()
					kept := want.Status.Servers[:0:0]
					for _, e := range want.Status.Servers {
						if e.EndedAt == nil || e.Wallet != w.Name {
							kept = append(kept, e)
						}
					}
					want.Status.Servers = kept
					if d := cmp.Diff(want, after, cmpopts.EquateEmpty()); d != "" {
						t.Errorf("the run that drops the ended entries changed %s otherwise (-want +got):\n%s", after.Name, d)
					}
				}
			}
			w2, p2 := w.DeepCopy(), p.DeepCopy()
			res := settleAgain(tc, w2, p2)
			got := resultViewOf(res)
			got.RequeueAfter = 0
			if d := cmp.Diff(resultView{}, got, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("quiescent Settle result (-want +got):\n%s", d)
			}
			if d := cmp.Diff(w, w2, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("quiescent Settle changed the wallet (-want +got):\n%s", d)
			}
			if d := cmp.Diff(p, p2, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("quiescent Settle changed the pool (-want +got):\n%s", d)
			}
		})
	}
}

func TestSettleNoteMessages(t *testing.T) {
	w := pooledWallet(90).Servers(testutil.MakeServerCharge("r1").Project("lab").Paid(1, 6).ProjectPaid(4).Obj(), testutil.MakeServerCharge("r2").Pod("jupyter-alice-2").UID("u2").Obj()).Obj()
	p := pool(0).Servers(testutil.MakeServerCharge("r1").Paid(1, 4).Obj()).Obj()
	pods := map[string]PodObservation{"r1": running("u1", 30*time.Second), "r2": endedPending("u2", time.Minute), "pod-u9": pending("u9")}
	res := Settle(w, map[string]*hcv1.CreditAccount{"lab": p}, podsByID(pods), []Unreserved{bobPod()}, at(2*time.Minute), testOptions)
	want := []Note{
		{Pod: "jupyter-bob", PodUID: "u9", Reason: EventAdopted,
			Message: "This server had no reservation; it costs 10 credits every 10m, billed to account alice from when it starts."},
		{Pod: "jupyter-alice", PodUID: "u1", Reason: EventCreditsReserved,
			Message: "This server costs 10 credits every 10m, paid from project lab (0 left), then account alice (90 left)."},
		{Pod: "jupyter-alice", PodUID: "u1", Reason: EventServerStarted,
			Message: "Server jupyter-alice of alice started; it costs 10 credits every 10m."},
		{Reason: EventRefunded, Message: "Returned 10 credits reserved for jupyter-alice-2, which never started."},
	}
	if d := cmp.Diff(want, res.Notes, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("notes mismatch (-want +got):\n%s", d)
	}
}

func TestSettleLowNoteMessage(t *testing.T) {
	w := wallet(25).Servers(runningServer().Obj()).Obj()
	res := Settle(w, nil, podsByID(map[string]PodObservation{"r1": running("u1", 0)}), nil, at(interval), testOptions)
	want := []Note{{Warning: true, Reason: EventLow,
		Message: "Balance 15 covers fewer than 2 more periods of the running servers (10 credits per period)."}}
	if d := cmp.Diff(want, res.Notes, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("notes mismatch (-want +got):\n%s", d)
	}
}

func TestSettleLedger(t *testing.T) {
	w := pooledWallet(90).Servers(pooledServer().Obj()).Obj()
	p := pool(4).Servers(poolShare().Obj()).Obj()
	pods := map[string]PodObservation{"r1": running("u1", 0)}
	Settle(w, map[string]*hcv1.CreditAccount{"lab": p}, podsByID(pods), nil, at(interval), testOptions)
	pods["r1"] = ended("u1", 0, 25*time.Minute)
	Settle(w, map[string]*hcv1.CreditAccount{"lab": p}, podsByID(pods), nil, at(26*time.Minute), testOptions)

	entry := func(d time.Duration, kind hcv1.LedgerEntryKind, amount, balance int64, msg string) hcv1.LedgerEntry {
		return hcv1.LedgerEntry{Time: metav1.NewTime(at(d)), Kind: kind, Amount: amount, Balance: balance, Subject: "jupyter-alice", Message: msg}
	}
	// The two charges of the same server, one after the other, are one line.
	merged := entry(26*time.Minute, hcv1.LedgerCharge, -16, 74, "2 period(s) of jupyter-alice")
	merged.Count = 2
	wantWallet := []hcv1.LedgerEntry{
		merged,
		entry(26*time.Minute, hcv1.LedgerSettle, 0, 74, "server jupyter-alice ended after 3 period(s), 30 credits"),
	}
	if d := cmp.Diff(wantWallet, w.Status.Ledger, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("wallet ledger mismatch (-want +got):\n%s", d)
	}
	wantPool := []hcv1.LedgerEntry{entry(interval, hcv1.LedgerCharge, -4, 0, "share of 1 period(s) of jupyter-alice for alice")}
	if d := cmp.Diff(wantPool, p.Status.Ledger, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("pool ledger mismatch (-want +got):\n%s", d)
	}
	// The run that drops the ended entries writes nothing to either ledger.
	Settle(w, map[string]*hcv1.CreditAccount{"lab": p}, podsByID(pods), nil, at(26*time.Minute+time.Second), testOptions)
	if len(w.Status.Servers)+len(p.Status.Servers) != 0 {
		t.Errorf("entries left after the second run: wallet %d, pool %d", len(w.Status.Servers), len(p.Status.Servers))
	}
	if d := cmp.Diff(wantWallet, w.Status.Ledger, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("wallet ledger after the second run (-want +got):\n%s", d)
	}
	if d := cmp.Diff(wantPool, p.Status.Ledger, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("pool ledger after the second run (-want +got):\n%s", d)
	}

	// A stop is written to the ledger with its message.
	w = wallet(9).Servers(runningServer().Obj()).Obj()
	Settle(w, nil, podsByID(map[string]PodObservation{"r1": running("u1", 0)}), nil, at(interval), testOptions)
	wantStop := []hcv1.LedgerEntry{entry(interval, hcv1.LedgerStop, 0, 9, "Stopped: account alice has 9 credits, the next 10m costs 10.")}
	if d := cmp.Diff(wantStop, w.Status.Ledger, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("stop ledger mismatch (-want +got):\n%s", d)
	}
}

// TestSettleLifecycle follows one pooled server from admission to its end
// with the clock moving, and checks the money at each step.
func TestSettleLifecycle(t *testing.T) {
	w := pooledWallet(50).Obj()
	p := pool(15).Obj()
	r := withProject(reservation("r1"), "lab")
	fromPool, _ := Take(p, r, 0, 10, 0, t0)
	if _, err := Take(w, r, 10-fromPool, 10-fromPool, fromPool, t0); err != nil {
		t.Fatal(err)
	}
	start := map[string]*hcv1.CreditAccount{"alice": pooledWallet(50).Obj(), "lab": pool(15).Obj()}
	type money struct {
		Wallet, Pool, PeriodsPaid int64
		Stopped, Ended            bool
		// Gone: neither account holds the server any more.
		Gone bool
	}
	endedPod := ended("u1", time.Minute, 71*time.Minute+30*time.Second)
	steps := []struct {
		now  time.Duration
		pod  PodObservation
		want money
	}{
		{now: 5 * time.Second, pod: pending("u1"), want: money{Wallet: 50, Pool: 5, PeriodsPaid: 1}},
		{now: time.Minute, pod: running("u1", time.Minute), want: money{Wallet: 50, Pool: 5, PeriodsPaid: 1}},
		{now: 11 * time.Minute, pod: running("u1", time.Minute), want: money{Wallet: 45, Pool: 0, PeriodsPaid: 2}},
		{now: 20 * time.Minute, pod: running("u1", time.Minute), want: money{Wallet: 45, Pool: 0, PeriodsPaid: 2}},
		{now: 50 * time.Minute, pod: running("u1", time.Minute), want: money{Wallet: 15, Pool: 0, PeriodsPaid: 5}},
		{now: 51 * time.Minute, pod: running("u1", time.Minute), want: money{Wallet: 5, Pool: 0, PeriodsPaid: 6}},
		{now: 61 * time.Minute, pod: running("u1", time.Minute), want: money{Wallet: 5, Pool: 0, PeriodsPaid: 6, Stopped: true}},
		{now: 71 * time.Minute, pod: running("u1", time.Minute), want: money{Wallet: 5, Pool: 0, PeriodsPaid: 6, Stopped: true}},
		// The end: first marked, then, on the requeue a second later, gone.
		{now: 72 * time.Minute, pod: endedPod, want: money{Wallet: 5, Pool: 0, PeriodsPaid: 6, Stopped: true, Ended: true}},
		{now: 72*time.Minute + time.Second, pod: endedPod, want: money{Wallet: 5, Pool: 0, Gone: true}},
	}
	for _, s := range steps {
		Settle(w, map[string]*hcv1.CreditAccount{"lab": p}, podsByID(map[string]PodObservation{"r1": s.pod}), nil, at(s.now), testOptions)
		got := money{Wallet: w.Status.Balance, Pool: p.Status.Balance}
		i, j := FindServer(w, "r1"), FindServer(p, "r1")
		if i >= 0 {
			e := w.Status.Servers[i]
			got.PeriodsPaid = e.PeriodsPaid
			got.Stopped = e.StopRequestedAt != nil
			got.Ended = e.EndedAt != nil
			if j >= 0 && (p.Status.Servers[j].EndedAt != nil) != got.Ended {
				t.Errorf("at t0+%s: the pool's entry and the wallet's disagree on the end", s.now)
			}
		}
		got.Gone = i < 0 && j < 0
		if d := cmp.Diff(s.want, got); d != "" {
			t.Errorf("at t0+%s (-want +got):\n%s", s.now, d)
		}
		for _, a := range []*hcv1.CreditAccount{w, p} {
			if err := conserved(start[a.Name], a); err != nil {
				t.Errorf("at t0+%s: %v", s.now, err)
			}
		}
	}
	// 6 periods of 10 credits: 15 from the pool, 45 from the wallet.
	if got := (50 - w.Status.Balance) + (15 - p.Status.Balance); got != 60 {
		t.Errorf("total paid = %d, want 60", got)
	}
}

// interruptedCase describes a Settle whose pool write succeeded and whose
// wallet write was lost, followed by successful runs until nothing changes.
type interruptedCase struct {
	wallet, pool *hcv1.CreditAccount
	// pods during the interrupted run, and during the rerun (nil: the same).
	pods, rerunPods map[string]PodObservation
	crashAt         time.Time
	// crashes is how many runs in a row lose their wallet write (1 if 0).
	crashes int
	// between changes the stored wallet between the runs (another
	// committed writer, e.g. the webhook).
	between func(w *hcv1.CreditAccount)
	rerunAt time.Time

	wantWallet accountView
	wantPool   accountView
	wantStops  []stopView
	bug        string
}

func TestSettleInterruptedBetweenWrites(t *testing.T) {
	running10 := map[string]PodObservation{"r1": running("u1", 0)}
	paidOnce := accountView{Balance: 84, TotalCharged: 6, Running: 1, Conditions: healthy,
		Servers: []hcv1.ServerCharge{pooledServer().Paid(2, 6).ProjectPaid(14).PaidThrough(20 * time.Minute).Obj()}}
	poolPaidOnce := accountView{Balance: 0, TotalCharged: 4, Running: 1, Conditions: condsOf(lowTrue, exhaustedFalse),
		Servers: []hcv1.ServerCharge{poolShareSeen().Paid(2, 14).Obj()}}
	cases := map[string]interruptedCase{
		"(a) rerun at the same moment: nothing is charged twice": {
			wallet:     pooledWallet(90).Servers(pooledServer().Obj()).Obj(),
			pool:       pool(4).Servers(poolShare().Obj()).Obj(),
			pods:       running10,
			crashAt:    at(interval),
			rerunAt:    at(interval),
			wantWallet: paidOnce,
			wantPool:   poolPaidOnce,
		},
		"(a) three interrupted runs in a row: still charged once": {
			wallet:     pooledWallet(90).Servers(pooledServer().Obj()).Obj(),
			pool:       pool(4).Servers(poolShare().Obj()).Obj(),
			pods:       running10,
			crashAt:    at(interval),
			crashes:    3,
			rerunAt:    at(interval + time.Second),
			wantWallet: paidOnce,
			wantPool:   poolPaidOnce,
		},
		"(a) a rich pool paid the whole period in flight: confirmed, not repeated": {
			wallet:  pooledWallet(90).Servers(pooledServer().Obj()).Obj(),
			pool:    pool(50).Servers(poolShare().Obj()).Obj(),
			pods:    running10,
			crashAt: at(interval),
			rerunAt: at(interval + 20*time.Second),
			wantWallet: accountView{Balance: 90, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{pooledServer().Paid(2, 0).ProjectPaid(20).PaidThrough(20 * time.Minute).Obj()}},
			wantPool: accountView{Balance: 40, TotalCharged: 10, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{poolShareSeen().Paid(2, 20).Obj()}},
		},
		"(a) rerun after the next boundary: the in-flight share counts toward it": {
			wallet:  pooledWallet(90).Servers(pooledServer().Obj()).Obj(),
			pool:    pool(4).Servers(poolShare().Obj()).Obj(),
			pods:    running10,
			crashAt: at(interval),
			rerunAt: at(20 * time.Minute),
			wantWallet: accountView{Balance: 74, TotalCharged: 16, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{pooledServer().Paid(3, 16).ProjectPaid(14).PaidThrough(30 * time.Minute).Obj()}},
			wantPool: accountView{Balance: 0, TotalCharged: 4, Running: 1, Conditions: condsOf(lowTrue, exhaustedFalse),
				Servers: []hcv1.ServerCharge{poolShareSeen().Paid(3, 14).Obj()}},
		},
		"(b) the wallet can no longer pay its part: the pool's share comes back": {
			wallet:  pooledWallet(12).Servers(pooledServer().Obj()).Obj(),
			pool:    pool(4).Servers(poolShare().Obj()).Obj(),
			pods:    map[string]PodObservation{"r1": running("u1", 0), "r2": pending("u2")},
			crashAt: at(interval),
			between: func(w *hcv1.CreditAccount) {
				// The webhook admits another server from the stored wallet.
				if _, err := Take(w, reservation("r2"), 10, 10, 0, at(interval)); err != nil {
					panic(err)
				}
			},
			rerunAt: at(interval),
			wantWallet: accountView{Balance: 2, TotalCharged: 10, Conditions: condsOf(lowFalse, exhaustedTrue),
				Servers: []hcv1.ServerCharge{
					pooledServer().StopRequested(interval).Obj(),
					testutil.MakeServerCharge("r2").UID("u2").ReservedAt(interval).Obj(),
				}},
			wantPool: accountView{Balance: 4, Running: 1, Conditions: condsOf(lowTrue, exhaustedFalse),
				Servers: []hcv1.ServerCharge{poolShareSeen().Paid(1, 10).Obj()}},
			wantStops: []stopView{{ID: "r1", Message: "Stopped: project lab has 4 and account alice has 2 credits, the next 10m costs 10."}},
		},
		"(b) the pod went away meanwhile: the pool's in-flight share comes back": {
			wallet:     pooledWallet(90).Servers(pooledServer().Obj()).Obj(),
			pool:       pool(4).Servers(poolShare().Obj()).Obj(),
			pods:       running10,
			rerunPods:  map[string]PodObservation{},
			crashAt:    at(interval),
			rerunAt:    at(12 * time.Minute),
			wantWallet: accountView{Balance: 90, Conditions: healthy},
			wantPool:   accountView{Balance: 4, Conditions: healthy},
		},
		"a reservation refunded in the interrupted run is not refunded twice": {
			wallet:     pooledWallet(90).Servers(testutil.MakeServerCharge("r1").Project("lab").Paid(1, 6).ProjectPaid(4).Obj()).Obj(),
			pool:       pool(0).Servers(testutil.MakeServerCharge("r1").Paid(1, 4).Obj()).Obj(),
			crashAt:    at(time.Minute),
			rerunAt:    at(time.Minute),
			wantWallet: accountView{Balance: 96, TotalRefunded: 6, Conditions: healthy},
			wantPool:   accountView{Balance: 4, TotalRefunded: 4, Conditions: healthy},
		},
		"an adopted server's pool entry opened in the interrupted run is reused": {
			wallet:  pooledWallet(50).Servers(adoptedServer(0).Project("lab").Obj()).Obj(),
			pool:    pool(50).Obj(),
			pods:    map[string]PodObservation{"pod-u9": running("u9", time.Minute)},
			crashAt: at(5 * time.Minute),
			rerunAt: at(5 * time.Minute),
			wantWallet: accountView{Balance: 50, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{adoptedServer(0).Project("lab").Started(time.Minute).Paid(1, 0).ProjectPaid(10).PaidThrough(11 * time.Minute).Obj()}},
			wantPool: accountView{Balance: 40, TotalCharged: 10, Running: 1, Conditions: healthy,
				Servers: []hcv1.ServerCharge{adoptedServer(0).Started(time.Minute).Paid(1, 10).Obj()}},
		},
		"(a) the server ended in the interrupted run: the pool is not charged twice": {
			wallet:     pooledWallet(90).Servers(pooledServer().Obj()).Obj(),
			pool:       pool(50).Servers(poolShare().Obj()).Obj(),
			pods:       map[string]PodObservation{"r1": ended("u1", 0, 15*time.Minute)},
			crashAt:    at(16 * time.Minute),
			rerunAt:    at(16 * time.Minute),
			wantWallet: accountView{Balance: 90, Conditions: healthy},
			wantPool:   accountView{Balance: 40, TotalCharged: 10, Conditions: healthy},
		},
		"(a) the server ended and two runs in a row lose their wallet write: the pool pays once": {
			wallet:     pooledWallet(90).Servers(pooledServer().Obj()).Obj(),
			pool:       pool(50).Servers(poolShare().Obj()).Obj(),
			pods:       map[string]PodObservation{"r1": ended("u1", 0, 15*time.Minute)},
			crashAt:    at(16 * time.Minute),
			crashes:    2,
			rerunAt:    at(16*time.Minute + time.Second),
			wantWallet: accountView{Balance: 90, Conditions: healthy},
			wantPool:   accountView{Balance: 40, TotalCharged: 10, Conditions: healthy},
		},
		"(a) the server ended in the interrupted run, with a small pool: the wallet's part is charged once": {
			wallet:     pooledWallet(90).Servers(pooledServer().Obj()).Obj(),
			pool:       pool(4).Servers(poolShare().Obj()).Obj(),
			pods:       map[string]PodObservation{"r1": ended("u1", 0, 15*time.Minute)},
			crashAt:    at(16 * time.Minute),
			crashes:    2,
			rerunAt:    at(16 * time.Minute),
			wantWallet: accountView{Balance: 84, TotalCharged: 6, Conditions: healthy},
			wantPool:   accountView{Balance: 0, TotalCharged: 4, Conditions: healthy},
		},
		"(b) the server ended in the interrupted run and its pod is gone at the rerun: the pool's unconfirmed share comes back": {
			// As in "(b) the pod went away meanwhile": a pod gone unobserved
			// is charged no further than the wallet confirmed.
			wallet:     pooledWallet(90).Servers(pooledServer().Obj()).Obj(),
			pool:       pool(50).Servers(poolShare().Obj()).Obj(),
			pods:       map[string]PodObservation{"r1": ended("u1", 0, 15*time.Minute)},
			rerunPods:  map[string]PodObservation{},
			crashAt:    at(16 * time.Minute),
			rerunAt:    at(17 * time.Minute),
			wantWallet: accountView{Balance: 90, Conditions: healthy},
			wantPool:   accountView{Balance: 50, Conditions: healthy},
		},
		"the run that drops an ended server loses its wallet write: nothing is charged or refunded": {
			wallet: pooledWallet(90).Servers(pooledServer().Paid(2, 0).ProjectPaid(20).PaidThrough(20 * time.Minute).Ended(16 * time.Minute).Obj()).Obj(),
			pool:   pool(40).Servers(poolShareSeen().Paid(2, 20).Ended(16 * time.Minute).Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": ended("u1", 0, 15*time.Minute)},
			// The pod is deleted before the rerun.
			rerunPods:  map[string]PodObservation{},
			crashAt:    at(16*time.Minute + time.Second),
			rerunAt:    at(16*time.Minute + 2*time.Second),
			wantWallet: accountView{Balance: 90, Conditions: healthy},
			wantPool:   accountView{Balance: 40, Conditions: healthy},
		},
		"(c) the pod is gone when the rerun comes: the refund the pool holds is completed, not undone": {
			wallet:     pooledWallet(80).Servers(pooledServer().Paid(3, 10).ProjectPaid(20).PaidThrough(30 * time.Minute).Obj()).Obj(),
			pool:       pool(30).Servers(poolShareSeen().Paid(3, 20).Obj()).Obj(),
			pods:       map[string]PodObservation{"r1": ended("u1", 0, 5*time.Minute)},
			rerunPods:  map[string]PodObservation{},
			crashAt:    at(31 * time.Minute),
			rerunAt:    at(31*time.Minute + time.Second),
			wantWallet: accountView{Balance: 90, TotalRefunded: 10, Conditions: healthy},
			wantPool:   accountView{Balance: 40, TotalRefunded: 10, Conditions: healthy},
		},
		"(c) periods charged after the end come back once, though the wallet's write was lost": {
			wallet:     pooledWallet(80).Servers(pooledServer().Paid(3, 10).ProjectPaid(20).PaidThrough(30 * time.Minute).Obj()).Obj(),
			pool:       pool(30).Servers(poolShareSeen().Paid(3, 20).Obj()).Obj(),
			pods:       map[string]PodObservation{"r1": ended("u1", 0, 5*time.Minute)},
			crashAt:    at(31 * time.Minute),
			crashes:    2,
			rerunAt:    at(31*time.Minute + time.Second),
			wantWallet: accountView{Balance: 90, TotalRefunded: 10, Conditions: healthy},
			wantPool:   accountView{Balance: 40, TotalRefunded: 10, Conditions: healthy},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if tc.bug != "" {
				skipBug(t, tc.bug)
			}
			runInterrupted(t, tc)
		})
	}
}

func runInterrupted(t *testing.T, tc interruptedCase) {
	t.Helper()
	storedWallet, storedPool := tc.wallet.DeepCopy(), tc.pool.DeepCopy()
	crashes := max(tc.crashes, 1)
	for i := range crashes {
		w, p := storedWallet.DeepCopy(), storedPool.DeepCopy()
		Settle(w, map[string]*hcv1.CreditAccount{p.Name: p}, podsByID(tc.pods), nil, tc.crashAt, testOptions)
		storedPool = p // the pool write succeeded; w is lost
		if err := conserved(tc.pool, storedPool); err != nil {
			t.Errorf("interrupted run %d: %v", i+1, err)
		}
	}
	if tc.between != nil {
		tc.between(storedWallet)
	}
	pods := tc.pods
	if tc.rerunPods != nil {
		pods = tc.rerunPods
	}
	// The rerun goes on until the accounts are quiescent, as the
	// controller's requeues do: a server that ended takes two runs.
	var stops []stopView
	for run := 1; ; run++ {
		if run > 3 {
			t.Fatalf("the rerun still changes the accounts after %d runs", run-1)
		}
		res := Settle(storedWallet, map[string]*hcv1.CreditAccount{storedPool.Name: storedPool}, podsByID(pods), nil, tc.rerunAt, testOptions)
		for _, s := range res.Stops {
			stops = append(stops, stopView{ID: s.Server.ID, Repeat: s.Repeat, Message: s.Message})
		}
		if !changedSomething(res) {
			break
		}
	}
	if d := cmp.Diff(tc.wantWallet, viewOf(storedWallet), cmpopts.EquateEmpty()); d != "" {
		t.Errorf("wallet after the rerun (-want +got):\n%s", d)
	}
	if d := cmp.Diff(tc.wantPool, viewOf(storedPool), cmpopts.EquateEmpty()); d != "" {
		t.Errorf("pool after the rerun (-want +got):\n%s", d)
	}
	if d := cmp.Diff(tc.wantStops, stops, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("stops after the rerun (-want +got):\n%s", d)
	}
	if err := conserved(tc.pool, storedPool); err != nil {
		t.Error(err)
	}
	if storedPool.Status.Balance < 0 || storedWallet.Status.Balance < 0 {
		t.Errorf("negative balance: wallet %d, pool %d", storedWallet.Status.Balance, storedPool.Status.Balance)
	}
}

// TestSettleEndedServerLeavesNoPoolShare settles a pooled server that ends
// in the same run in which the pool first pays for it (an adopted server, or
// a reservation whose pool had nothing at admission and kept no entry): the
// entry the pool opens is marked ended with the wallet's, the next run drops
// both, and SettleOrphans finds nothing to return.
func TestSettleEndedServerLeavesNoPoolShare(t *testing.T) {
	cases := map[string]struct {
		wallet, pool *hcv1.CreditAccount
		pods         map[string]PodObservation
		wantPool     accountView // after the second run
	}{
		"an adopted server that ran 14 minutes": {
			wallet:   pooledWallet(50).Servers(adoptedServer(0).Project("lab").Obj()).Obj(),
			pool:     pool(50).Obj(),
			pods:     map[string]PodObservation{"pod-u9": ended("u9", time.Minute, 15*time.Minute)},
			wantPool: accountView{Balance: 30, TotalCharged: 20, Conditions: healthy},
		},
		"a reservation the pool had no share of at admission": {
			wallet:   pooledWallet(50).Servers(runningServer().Project("lab").Obj()).Obj(),
			pool:     pool(50).Obj(),
			pods:     map[string]PodObservation{"r1": ended("u1", 0, 15*time.Minute)},
			wantPool: accountView{Balance: 40, TotalCharged: 10, Conditions: healthy},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w, p := tc.wallet.DeepCopy(), tc.pool.DeepCopy()
			projects := map[string]*hcv1.CreditAccount{"lab": p}
			Settle(w, projects, podsByID(tc.pods), nil, at(16*time.Minute), testOptions)
			// First run: the money is final, the pool's new entry is marked.
			first := viewOf(p)
			first.Servers = nil
			want := tc.wantPool
			if d := cmp.Diff(want, first, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("pool money after the first run (-want +got):\n%s", d)
			}
			if len(p.Status.Servers) != 1 || p.Status.Servers[0].EndedAt == nil {
				t.Errorf("after the first run the pool should hold one entry marked ended, it holds %+v", p.Status.Servers)
			}
			Settle(w, projects, podsByID(tc.pods), nil, at(16*time.Minute+time.Second), testOptions)
			if d := cmp.Diff(tc.wantPool, viewOf(p), cmpopts.EquateEmpty()); d != "" {
				t.Errorf("pool after the server ended (-want +got):\n%s", d)
			}
			if len(w.Status.Servers) != 0 {
				t.Errorf("the wallet still holds %d entries", len(w.Status.Servers))
			}
			walletHas := func(wallet, id string) bool { return wallet == w.Name && FindServer(w, id) >= 0 }
			SettleOrphans(p, walletHas, at(2*time.Hour), testOptions)
			if d := cmp.Diff(tc.wantPool, viewOf(p), cmpopts.EquateEmpty()); d != "" {
				t.Errorf("pool after SettleOrphans (-want +got):\n%s", d)
			}
		})
	}
}

func TestSettleOrphans(t *testing.T) {
	aliceHas := func(ids ...string) func(wallet, id string) bool {
		return func(wallet, id string) bool {
			if wallet != "alice" {
				return false
			}
			for _, x := range ids {
				if x == id {
					return true
				}
			}
			return false
		}
	}
	share := func(id, wallet string, paid int64, reserved time.Duration) hcv1.ServerCharge {
		return testutil.MakeServerCharge(id).Wallet(wallet).Paid(1, paid).ReservedAt(reserved).Obj()
	}
	cases := map[string]struct {
		pool        *hcv1.CreditAccount
		walletHas   func(wallet, id string) bool
		now         time.Time
		wantChanged bool
		wantNext    time.Duration
		wantPool    reserveView
	}{
		"shares the wallet confirms are kept": {
			pool:      pool(0).Servers(share("r1", "alice", 4, 0)).Obj(),
			walletHas: aliceHas("r1"),
			now:       at(time.Hour),
			wantPool:  reserveView{Servers: []hcv1.ServerCharge{share("r1", "alice", 4, 0)}},
		},
		"the pool's own servers are not orphans": {
			pool:      pool(0).Servers(share("r1", "lab", 10, 0)).Obj(),
			walletHas: aliceHas(),
			now:       at(time.Hour),
			wantPool:  reserveView{Servers: []hcv1.ServerCharge{share("r1", "lab", 10, 0)}},
		},
		"an unconfirmed share waits for the grace": {
			pool:      pool(0).Servers(share("r2", "bob", 3, 50*time.Second)).Obj(),
			walletHas: aliceHas(),
			now:       at(time.Minute),
			wantNext:  20 * time.Second,
			wantPool:  reserveView{Servers: []hcv1.ServerCharge{share("r2", "bob", 3, 50*time.Second)}},
		},
		"an unconfirmed share is returned after the grace": {
			pool:        pool(0).Servers(share("r3", "bob", 5, 0)).Obj(),
			walletHas:   aliceHas(),
			now:         at(30 * time.Second),
			wantChanged: true,
			wantPool:    reserveView{Balance: 5, TotalRefunded: 5, Ledger: []string{"Refund +5"}},
		},
		"a mix: the soonest wait is reported": {
			pool: pool(1).Servers(
				share("r1", "alice", 4, 0),
				share("r2", "bob", 3, 50*time.Second),
				share("r3", "bob", 5, 0),
				share("r4", "carol", 2, 40*time.Second),
				share("r5", "lab", 10, 0),
			).Obj(),
			walletHas:   aliceHas("r1"),
			now:         at(time.Minute),
			wantChanged: true,
			wantNext:    10 * time.Second,
			wantPool: reserveView{Balance: 6, TotalRefunded: 5, Ledger: []string{"Refund +5"},
				Servers: []hcv1.ServerCharge{share("r1", "alice", 4, 0), share("r2", "bob", 3, 50*time.Second), share("r4", "carol", 2, 40*time.Second), share("r5", "lab", 10, 0)}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := tc.pool.DeepCopy()
			changed, next := SettleOrphans(p, tc.walletHas, tc.now, testOptions)
			if changed != tc.wantChanged || next != tc.wantNext {
				t.Errorf("SettleOrphans = (%v, %s), want (%v, %s)", changed, next, tc.wantChanged, tc.wantNext)
			}
			if d := cmp.Diff(tc.wantPool, reserveViewOf(p), cmpopts.EquateEmpty()); d != "" {
				t.Errorf("pool mismatch (-want +got):\n%s", d)
			}
		})
	}
}

// TestSettleConditionTimes checks that conditions carry the time Settle was
// given, so a fake clock controls the whole status: a condition that
// changes status takes Settle's now, one that keeps its status keeps its
// time.
func TestSettleConditionTimes(t *testing.T) {
	type times map[string]time.Time
	cases := map[string]struct {
		wallet *hcv1.CreditAccount
		pods   map[string]PodObservation
		now    time.Time
		want   times
	}{
		"new conditions take Settle's now": {
			wallet: wallet(9).Servers(runningServer().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(interval),
			want:   times{hcv1.ConditionLow: at(interval), hcv1.ConditionExhausted: at(interval)},
		},
		"a transition takes Settle's now, an unchanged status keeps its time": {
			wallet: func() *hcv1.CreditAccount {
				w := wallet(25).Servers(runningServer().Obj()).Obj()
				Settle(w, nil, podsByID(map[string]PodObservation{"r1": running("u1", 0)}), nil, at(5*time.Minute), testOptions)
				return w // Low and Exhausted false since t0+5m
			}(),
			pods: map[string]PodObservation{"r1": running("u1", 0)},
			now:  at(interval),
			// Period 1 is charged: 15 left covers fewer than 2 periods.
			want: times{hcv1.ConditionLow: at(interval), hcv1.ConditionExhausted: at(5 * time.Minute)},
		},
		"unchanged conditions keep their time": {
			wallet: func() *hcv1.CreditAccount {
				w := wallet(90).Servers(runningServer().Obj()).Obj()
				Settle(w, nil, podsByID(map[string]PodObservation{"r1": running("u1", 0)}), nil, at(time.Minute), testOptions)
				return w
			}(),
			pods: map[string]PodObservation{"r1": running("u1", 0)},
			now:  at(interval),
			want: times{hcv1.ConditionLow: at(time.Minute), hcv1.ConditionExhausted: at(time.Minute)},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := tc.wallet.DeepCopy()
			Settle(w, nil, podsByID(tc.pods), nil, tc.now, testOptions)
			got := times{}
			for _, c := range w.Status.Conditions {
				got[c.Type] = c.LastTransitionTime.Time
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("lastTransitionTime by condition (-want +got):\n%s", d)
			}
		})
	}
}

// TestSetCondition checks the controllers' SetCondition: the transition
// time is the one given, and only a change of status moves it.
func TestSetCondition(t *testing.T) {
	a := wallet(10).Obj()
	a.Generation = 3
	if !SetCondition(a, at(time.Minute), hcv1.ConditionReady, metav1.ConditionFalse, "Broken", "broken") {
		t.Fatal("a new condition is a change")
	}
	if SetCondition(a, at(2*time.Minute), hcv1.ConditionReady, metav1.ConditionFalse, "Broken", "broken") {
		t.Error("setting the same condition again is no change")
	}
	SetCondition(a, at(3*time.Minute), hcv1.ConditionReady, metav1.ConditionFalse, "StillBroken", "still broken")
	c := a.Status.Conditions[0]
	want := metav1.Condition{Type: hcv1.ConditionReady, Status: metav1.ConditionFalse, Reason: "StillBroken", Message: "still broken",
		ObservedGeneration: 3, LastTransitionTime: metav1.NewTime(at(time.Minute))}
	if d := cmp.Diff(want, c); d != "" {
		t.Errorf("after a new reason with the same status (-want +got):\n%s", d)
	}
	SetCondition(a, at(4*time.Minute), hcv1.ConditionReady, metav1.ConditionTrue, "Fine", "fine")
	if got := a.Status.Conditions[0].LastTransitionTime.Time; !got.Equal(at(4 * time.Minute)) {
		t.Errorf("after a change of status lastTransitionTime = %s, want t0+4m", got)
	}
}

// TestSettleLags checks the lateness reported for the charges of a run: for
// each server charged, how long after its latest paid boundary.
func TestSettleLags(t *testing.T) {
	cases := map[string]struct {
		wallet   *hcv1.CreditAccount
		pods     map[string]PodObservation
		now      time.Time
		wantLags []time.Duration
	}{
		"charged on the boundary": {
			wallet:   wallet(90).Servers(runningServer().Obj()).Obj(),
			pods:     map[string]PodObservation{"r1": running("u1", 0)},
			now:      at(interval),
			wantLags: []time.Duration{0},
		},
		"charged late for several periods: the lag of the latest": {
			wallet:   wallet(90).Servers(runningServer().Obj()).Obj(),
			pods:     map[string]PodObservation{"r1": running("u1", 0)},
			now:      at(35 * time.Minute),
			wantLags: []time.Duration{5 * time.Minute},
		},
		"nothing charged: no lag": {
			wallet: wallet(90).Servers(runningServer().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(5 * time.Minute),
		},
		"unaffordable: no lag": {
			wallet: wallet(5).Servers(runningServer().Obj()).Obj(),
			pods:   map[string]PodObservation{"r1": running("u1", 0)},
			now:    at(interval + time.Second),
		},
		"two servers": {
			wallet: wallet(90).Servers(runningServer().Obj(),
				testutil.MakeServerCharge("r2").Pod("jupyter-alice-2").UID("u2").Started(3*time.Minute).PaidThrough(13*time.Minute).Obj()).Obj(),
			pods:     map[string]PodObservation{"r1": running("u1", 0), "r2": running("u2", 3*time.Minute)},
			now:      at(14 * time.Minute),
			wantLags: []time.Duration{4 * time.Minute, time.Minute},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := tc.wallet.DeepCopy()
			res := Settle(w, nil, podsByID(tc.pods), nil, tc.now, testOptions)
			if d := cmp.Diff(tc.wantLags, res.Lags, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("lags mismatch (-want +got):\n%s", d)
			}
		})
	}
}
