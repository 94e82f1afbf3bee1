package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/ledgerpages"
	"github.com/hubcredits/hubcredits/internal/localcp"
	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// pagedLimits put all but two of a pool's servers on pages of three.
var pagedLimits = billing.PageLimits{Inline: 2, PerPage: 3, Pending: 4}

const (
	poolInitial = 1_000_000
	poolGrant   = 7 // every 3 s
	poolTopUp   = 1000
	pagedValue  = 5 // credits a period (the operator's default price)
)

// pagedOptions are the in-process operator's options: the binary's flags
// of the suite (--reservation-grace=3s --stop-retry=5s), a default price
// of 5 credits a period, pages on with pagedLimits.
func pagedOptions(ns string) operator.Options {
	return operator.Options{
		Namespace:  ns,
		Defaults:   billing.Defaults{Value: pagedValue, Interval: period},
		Billing:    billing.Options{OrphanGrace: 3 * time.Second, StopRetry: 5 * time.Second, LowPeriods: 2},
		Workers:    2,
		PageLimits: pagedLimits,
	}
}

// pagedPool is an isolated control plane with one pool ("course") that
// pays alone for its user's servers, a webhook and a controller run in
// process with pagedLimits.
type pagedPool struct {
	t          *testing.T
	e          *localcp.Env
	c          client.Client
	ns         string
	webhook    *inProc
	controller *inProc

	mu      sync.Mutex
	servers []*server
	failed  int // spawns the API server answered with an error: no pod
}

func newPagedPool(t *testing.T) *pagedPool {
	t.Helper()
	return newPool(t, pagedLimits)
}

// newPool is newPagedPool with limits.
func newPool(t *testing.T, limits billing.PageLimits) *pagedPool {
	t.Helper()
	e, c, _ := isolated(t, true, "")
	ns := "default"
	pool := testutil.MakeAccount(ns, "course", "u").Cap(10*poolInitial).InitialBalance(poolInitial).Grant(poolGrant, 3*time.Second).Obj()
	must(t, c.Create(context.Background(), pool))
	p := &pagedPool{t: t, e: e, c: c, ns: ns}
	o := pagedOptions(ns)
	o.PageLimits = limits
	p.controller = startInProc(t, e, o, false)
	p.webhook = startInProc(t, e, o, true)
	testutil.Eventually(t, 20*time.Second, func() error {
		a := testutil.GetAccount(t, c, ns, "course")
		if a.Status.OpenedAt == nil {
			return fmt.Errorf("the pool's ledger is not open")
		}
		return nil
	})
	return p
}

// spawn creates server name until the webhook admits it (a spawn that
// fails may have reserved: its pod never comes, the controller returns
// the reservation), then reports it running.
func (p *pagedPool) spawn(name string) {
	ctx := context.Background()
	for attempt := 0; ; attempt++ {
		pod := userPod(p.ns, "u", name)
		err := p.c.Create(ctx, pod)
		if apierrors.IsAlreadyExists(err) {
			// An earlier attempt was stored and its answer lost (the API
			// server restarted): that pod is the server.
			err = p.c.Get(ctx, client.ObjectKeyFromObject(pod), pod)
		}
		if err != nil {
			p.mu.Lock()
			p.failed++
			p.mu.Unlock()
			if attempt > 200 {
				p.t.Errorf("spawn %s: %v", name, err)
				return
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if got := pod.Annotations[hcv1.AnnotationBillingValue]; got != fmt.Sprint(pagedValue) {
			p.t.Errorf("pod %s priced %q, want %d", pod.Name, got, pagedValue)
		}
		start := time.Now().Truncate(time.Second)
		st := metav1.NewTime(start)
		pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, StartTime: &st, ContainerStatuses: []corev1.ContainerStatus{{
			Name: "notebook", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: st}}}}}
		if err := retryTransient(func() error { return p.c.Status().Update(ctx, pod) }); err != nil {
			p.t.Errorf("pod %s running: %v", pod.Name, err)
			return
		}
		p.mu.Lock()
		p.servers = append(p.servers, &server{pod: pod, account: "course", value: pagedValue, start: start})
		p.mu.Unlock()
		return
	}
}

// retryTransient retries f while the API server is away (restarted).
func retryTransient(f func() error) error {
	var err error
	for range 300 {
		if err = f(); err == nil || !transient(err) && !strings.Contains(err.Error(), "connection refused") {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// stateAtRest reads the pool and its pages with nothing writing them
// (both processes stopped) and checks billing.CheckPaged and the
// conservation of credits: initial + grants + top-ups == balance + held
// (inline and on pages, pending transfers applied) + spent (the usage
// records of the servers whose entries are gone).
func (p *pagedPool) stateAtRest(stage string) {
	t := p.t
	t.Helper()
	ctx := context.Background()
	a := testutil.GetAccount(t, p.c, p.ns, "course")
	pages, err := (&ledgerpages.Store{Client: p.c, APIReader: p.c}).Pages(ctx, a, true)
	must(t, err)
	if err := billing.CheckPaged(a, pages); err != nil {
		t.Errorf("%s: %v", stage, err)
	}
	held, err := billing.Held(a, pages)
	must(t, err)
	entries, err := billing.PageEntries(a, pages)
	must(t, err)
	heldIDs := map[string]int{}
	for _, e := range append(entries, a.Status.Servers...) {
		heldIDs[e.ID]++
		if heldIDs[e.ID] > 1 {
			t.Errorf("%s: reservation %s is held twice", stage, e.ID)
		}
	}
	var recs hcv1.UsageRecordList
	must(t, p.c.List(ctx, &recs, client.InNamespace(p.ns)))
	var spent int64
	for _, r := range recs.Items {
		if heldIDs[r.Reservation] == 0 {
			spent += r.Total
		}
	}
	in := int64(poolInitial) + a.Status.TotalGranted + a.Status.TotalToppedUp
	if out := a.Status.Balance + held + spent; in != out {
		t.Errorf("%s: initial %d + granted %d + topped up %d = %d, but balance %d + held %d + spent %d = %d",
			stage, poolInitial, a.Status.TotalGranted, a.Status.TotalToppedUp, in, a.Status.Balance, held, spent, out)
	}
	if a.Status.TotalCharged-a.Status.TotalRefunded != held+spent {
		t.Errorf("%s: charged %d - refunded %d != held %d + spent %d", stage, a.Status.TotalCharged, a.Status.TotalRefunded, held, spent)
	}
	if g := a.Spec.Grant; g != nil && a.Status.GrantedThrough != nil {
		// The grant schedule is anchored at the account's creation; the
		// cap is far: every slot granted its amount.
		slots := int64(a.Status.GrantedThrough.Sub(a.CreationTimestamp.Time) / g.Interval.Duration)
		if a.Status.TotalGranted != slots*g.Amount {
			t.Errorf("%s: granted %d through %d slots of %d", stage, a.Status.TotalGranted, slots, g.Amount)
		}
	}
	checkLedgerLines(t, stage, a)
	t.Logf("%s: balance %d, held %d (%d inline, %d on %d pages, %d pending), spent %d, granted %d", stage, a.Status.Balance, held,
		len(a.Status.Servers), a.Status.PagedServers, a.Status.Pages, len(a.Status.Pending), spent, a.Status.TotalGranted)
}

// checkLedgerLines: each line moves the balance by its amount (from the
// line before), the last one ends at the balance, and every line that
// moves credits names what it is for: a server or one of the account's
// pages (whose servers and periods the page entries and usage records
// carry), or the account's own grant and top-up.
func checkLedgerLines(t *testing.T, stage string, a *hcv1.CreditAccount) {
	t.Helper()
	l := a.Status.Ledger
	for i, e := range l {
		if i > 0 && l[i-1].Balance+e.Amount != e.Balance {
			t.Errorf("%s: ledger line %d (%s %+d -> %d) does not follow %d", stage, i, e.Kind, e.Amount, e.Balance, l[i-1].Balance)
		}
		if e.Amount == 0 {
			continue
		}
		switch e.Kind {
		case hcv1.LedgerCharge, hcv1.LedgerReserve, hcv1.LedgerRefund:
			if e.Subject == "" {
				t.Errorf("%s: ledger line %d (%s %+d) names no server or page", stage, i, e.Kind, e.Amount)
			} else if rest, ok := strings.CutPrefix(e.Subject, a.Name+"-"); ok && !strings.HasPrefix(e.Subject, "jupyter-") {
				var n int32
				if _, err := fmt.Sscan(rest, &n); err != nil || n < 1 || n > a.Status.Pages {
					t.Errorf("%s: ledger line %d names %q, no page of the account", stage, i, e.Subject)
				}
			}
		}
	}
	if n := len(l); n > 0 && l[n-1].Balance != a.Status.Balance {
		t.Errorf("%s: the last ledger line ends at %d, the balance is %d", stage, l[n-1].Balance, a.Status.Balance)
	}
}

// restAndCheck stops both processes, checks the pool at rest and starts
// them again.
func (p *pagedPool) restAndCheck(stage string) {
	p.webhook.stop()
	p.controller.stop()
	p.stateAtRest(stage)
	p.controller.start()
	p.webhook.start()
}

// final stops every server and waits until the pool is settled (nothing
// held, nothing pending) and its balance is the pods' lives' due; then
// checks it at rest, and one usage record per server with its due.
func (p *pagedPool) final() {
	t := p.t
	t.Helper()
	p.mu.Lock()
	servers := append([]*server(nil), p.servers...)
	p.mu.Unlock()
	var owed int64
	for _, s := range servers {
		owed += s.value * billing.PeriodsDue(s.start, s.end, period, true)
	}
	var a *hcv1.CreditAccount
	deadline := time.Now().Add(90 * time.Second)
	for {
		a = testutil.GetAccount(t, p.c, p.ns, "course")
		want := poolInitial + a.Status.TotalGranted + a.Status.TotalToppedUp - owed
		settled := len(a.Status.Servers) == 0 && a.Status.PagedServers == 0 && len(a.Status.Pending) == 0
		if settled && a.Status.Balance == want {
			break
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			fmt.Fprintf(&b, "the pool is not settled to the pods' due: balance %d, want %d (off by %d); %d inline, %d paged, %d pending",
				a.Status.Balance, want, a.Status.Balance-want, len(a.Status.Servers), a.Status.PagedServers, len(a.Status.Pending))
			writeLedger(&b, "course", a.Status.Ledger)
			var evs corev1.EventList
			_ = p.c.List(context.Background(), &evs, client.InNamespace(p.ns))
			for _, e := range evs.Items {
				if e.Type == corev1.EventTypeWarning {
					fmt.Fprintf(&b, "event %s %s x%d: %s\n", e.InvolvedObject.Name, e.Reason, e.Count, e.Message)
				}
			}
			t.Error(b.String())
			checkUsageRecordsOf(t, p.c, p.ns, servers, true)
			t.FailNow()
		}
		time.Sleep(200 * time.Millisecond)
	}
	p.webhook.stop()
	p.controller.stop()
	p.stateAtRest("settled")
	checkUsageRecordsOf(t, p.c, p.ns, servers, true)
}

// TestCrashAnywhereOnPages: TestCrashAnywhere for servers on LedgerPages.
// A pool pays alone for ~20 servers, all but two of them on pages of
// three; spawns keep arriving through the webhook and servers end while
// the webhook and the billing controller are killed again and again — in
// particular between the account's commit and the page writes (before a
// page write, or after the commit was applied and its answer lost),
// sometimes staying down across boundaries. Every server is charged
// exactly once per boundary it ran, reservations of spawns that failed
// (their pods never came) are returned, the account agrees with its pages
// (billing.CheckPaged) and credits are conserved, mid-run and at the end.
func TestCrashAnywhereOnPages(t *testing.T) {
	servers, kills := 20, 24
	if full() {
		servers, kills = 40, 60
	}
	p := newPagedPool(t)
	rng := rand.New(rand.NewPCG(3, uint64(time.Now().UnixNano())))
	spawned := make(chan struct{})
	go func() {
		defer close(spawned)
		for i := range servers {
			p.spawn(fmt.Sprintf("s%d", i))
			// Spawns arrive over most of the kills.
			time.Sleep(time.Duration(500+rng.IntN(1000)) * time.Millisecond)
		}
	}()
	points := []crashPoint{
		{kind: writePage}, {kind: writePage, after: true}, {kind: writeCommit}, {kind: writeCommit, after: true},
		{kind: writeAccount}, {kind: writeAccount, after: true}, {kind: writeAny}, {kind: writeAny, after: true}, {kind: writeNow},
	}
	tally := crashTally{}
	halfN, halfDone := -1, make(chan struct{})
	for i := range kills {
		time.Sleep(time.Duration(100+rng.IntN(900)) * time.Millisecond)
		proc := p.controller
		if rng.IntN(5) < 2 {
			proc = p.webhook
		}
		down := time.Duration(rng.IntN(300)) * time.Millisecond
		if i%6 == 5 {
			down = period + time.Duration(rng.IntN(1000))*time.Millisecond // catch-up on start
		}
		point := points[rng.IntN(len(points))]
		if proc == p.webhook && i%2 == 0 {
			point = points[rng.IntN(4)] // a webhook round between its commit and its page write
		}
		tally.add(proc, proc.crash(point, 3*time.Second, down))
		switch i {
		case kills / 3:
			// Half the servers spawned so far end while the kills go on.
			p.mu.Lock()
			halfN = len(p.servers) / 2
			half := append([]*server(nil), p.servers[:halfN]...)
			p.mu.Unlock()
			go func() { defer close(halfDone); stopAllWith(t, p.c, half) }()
		case kills / 2:
			// The admin's edit races the operator's status writes (each
			// changes the resourceVersion): read again on a conflict.
			must(t, retryTransient(func() error {
				return retry.RetryOnConflict(retry.DefaultRetry, func() error {
					a := &hcv1.CreditAccount{}
					if err := p.c.Get(context.Background(), client.ObjectKey{Namespace: p.ns, Name: "course"}, a); err != nil {
						return err
					}
					if slices.ContainsFunc(a.Spec.TopUps, func(u hcv1.TopUp) bool { return u.ID == "mid-run" }) {
						return nil // an earlier attempt was stored
					}
					a.Spec.TopUps = append(a.Spec.TopUps, hcv1.TopUp{ID: "mid-run", Amount: poolTopUp})
					return p.c.Update(context.Background(), a)
				})
			}))
		case 2 * kills / 3:
			p.restAndCheck("mid-run, at rest")
		}
	}
	<-spawned
	if halfN < 0 {
		t.Fatal("no server ended during the kills")
	}
	<-halfDone
	time.Sleep(2 * period)
	p.mu.Lock()
	rest := append([]*server(nil), p.servers[halfN:]...)
	p.mu.Unlock()
	stopAllWith(t, p.c, rest)
	p.final()
	a := testutil.GetAccount(t, p.c, p.ns, "course")
	if a.Status.Pages < 2 {
		t.Errorf("the pool used %d page(s): the test did not bill servers on pages", a.Status.Pages)
	}
	var between int
	for _, who := range []string{"controller", "webhook"} {
		// Before a page write, or after a commit was applied.
		between += tally[who+" "+points[0].String()] + tally[who+" "+points[3].String()]
	}
	if between == 0 {
		t.Errorf("no kill fell between an account's commit and its page write: %v", tally)
	}
	t.Logf("%d servers on %d pages, %d failed spawns (pods that never came), kills: %v", len(p.servers), a.Status.Pages, p.failed, tally)
}

// TestAPIServerRestartOnPages: kube-apiserver is killed and restarted with
// a page write or a commit of page transfers in flight (before the write
// reached etcd, or after it was applied: the writer gets an error either
// way), and writes of both kinds time out after they were applied (the
// answer lost), in the webhook's rounds and the controller's passes, while
// spawns arrive and servers end. Neither process is killed: each goes on
// from its error against the API server as it finds it. Every server is
// charged exactly once per boundary it ran, reservations of failed spawns
// returned, the account agrees with its pages, credits are conserved.
func TestAPIServerRestartOnPages(t *testing.T) {
	servers, faults := 16, 16
	if full() {
		servers, faults = 40, 40
	}
	p := newPagedPool(t)
	rng := rand.New(rand.NewPCG(4, uint64(time.Now().UnixNano())))
	spawned := make(chan struct{})
	go func() {
		defer close(spawned)
		for i := range servers {
			p.spawn(fmt.Sprintf("s%d", i))
			time.Sleep(time.Duration(500+rng.IntN(1000)) * time.Millisecond)
		}
	}()
	points := []crashPoint{
		{kind: writePage, fault: faultRestartAPI}, {kind: writePage, after: true, fault: faultRestartAPI},
		{kind: writeCommit, fault: faultRestartAPI}, {kind: writeCommit, after: true, fault: faultRestartAPI},
		{kind: writePage, after: true, fault: faultLose}, {kind: writeCommit, after: true, fault: faultLose},
	}
	tally := crashTally{}
	halfN, halfDone := -1, make(chan struct{})
	for i := range faults {
		time.Sleep(time.Duration(100+rng.IntN(900)) * time.Millisecond)
		proc := p.controller
		if i%2 == 1 {
			proc = p.webhook
		}
		point := points[rng.IntN(len(points))]
		if proc.strike(point, 4*time.Second) {
			tally.add(proc, point)
		}
		if i == faults/3 {
			p.mu.Lock()
			halfN = len(p.servers) / 2
			half := append([]*server(nil), p.servers[:halfN]...)
			p.mu.Unlock()
			go func() { defer close(halfDone); stopAllWith(t, p.c, half) }()
		}
	}
	<-spawned
	<-halfDone
	time.Sleep(2 * period)
	p.mu.Lock()
	rest := append([]*server(nil), p.servers[halfN:]...)
	p.mu.Unlock()
	stopAllWith(t, p.c, rest)
	p.final()
	var restarts, lost int
	for k, n := range tally {
		if strings.HasPrefix(strings.TrimPrefix(strings.TrimPrefix(k, "controller "), "webhook "), string(faultRestartAPI)) {
			restarts += n
		} else {
			lost += n
		}
	}
	if restarts == 0 || lost == 0 {
		t.Errorf("the faults did not strike: %v", tally)
	}
	t.Logf("%d servers, %d failed spawns, faults: %v", len(p.servers), p.failed, tally)
}

// TestTwoWebhookReplicasRaceOnPages: TestTwoWebhookReplicasRace on a pool
// with LedgerPages (4 inline, 4 a page), the billing controller running
// on the same pool meanwhile (completing, confirming, migrating: a third
// writer of the account and its pages). 200 concurrent spawns through the
// API server, credits for 50: never more reserved than the balance
// covers, every admitted pod held exactly once (inline or on a page), the
// account agrees with its pages, balance + held is the initial balance.
// (test/integration's TestReserverPagesStorm drives the Reserver
// directly; this one goes through admission and a balancer.)
func TestTwoWebhookReplicasRaceOnPages(t *testing.T) {
	e, c, _ := isolated(t, true, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := "default"
	o := operator.Options{
		Namespace:  ns,
		Defaults:   billing.Defaults{Value: 10, Interval: 10 * time.Minute},
		Billing:    billing.Options{OrphanGrace: time.Hour, StopRetry: 5 * time.Second, LowPeriods: 2},
		Workers:    2,
		PageLimits: billing.PageLimits{Inline: 4, PerPage: 4, Pending: 8},
	}
	must(t, c.Create(ctx, testutil.MakeAccount(ns, "pool", "u").Cap(500).InitialBalance(500).Obj()))
	controller := startInProc(t, e, o, false)
	testutil.Eventually(t, 20*time.Second, func() error {
		if a := testutil.GetAccount(t, c, ns, "pool"); a.Status.OpenedAt == nil {
			return fmt.Errorf("the pool's ledger is not open")
		}
		return nil
	})
	startReplicas(t, ctx, e, 2, o)

	var wg sync.WaitGroup
	var mu sync.Mutex
	outcomes := map[string]int{}
	var admitted []*corev1.Pod
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pod := userPod(ns, "u", fmt.Sprint(i))
			err := c.Create(ctx, pod)
			out := testutil.SpawnOutcome(err)
			mu.Lock()
			defer mu.Unlock()
			outcomes[out]++
			if out == testutil.Admitted {
				admitted = append(admitted, pod)
			} else if out != testutil.Denied && out != testutil.TimedOut && outcomes[out] == 1 {
				t.Logf("unexpected: %v", err)
			}
		}()
	}
	wg.Wait()
	controller.stop() // the account and its pages at rest
	a := testutil.GetAccount(t, c, ns, "pool")
	pages, err := (&ledgerpages.Store{Client: c, APIReader: c}).Pages(ctx, a, true)
	must(t, err)
	if err := billing.CheckPaged(a, pages); err != nil {
		t.Error(err)
	}
	held, err := billing.Held(a, pages)
	must(t, err)
	entries, err := billing.PageEntries(a, pages)
	must(t, err)
	count := map[string]int{}
	for _, e := range append(entries, a.Status.Servers...) {
		count[e.ID]++
	}
	for _, pod := range admitted {
		if id := pod.Annotations[hcv1.AnnotationReservation]; count[id] != 1 {
			t.Errorf("admitted %s (reservation %s) is held %d times", pod.Name, id, count[id])
		}
	}
	n := len(count)
	timedOut := outcomes[testutil.TimedOut]
	exhausted := timedOut == 0 || outcomes[testutil.Denied] > 0
	if outcomes[testutil.Admitted] > 50 || n > 50 || a.Status.Balance < 0 || a.Status.Balance+held != 500 ||
		(exhausted && (a.Status.Balance != 0 || n != 50)) ||
		(timedOut == 0 && (outcomes[testutil.Admitted] != 50 || outcomes[testutil.Denied] != 150)) {
		t.Fatalf("outcomes %v; balance %d, held %d by %d reservations (%d inline, %d on %d pages); want 50 admitted, 150 denied, 0 + 500 by 50",
			outcomes, a.Status.Balance, held, n, len(a.Status.Servers), a.Status.PagedServers, a.Status.Pages)
	}
	if a.Status.Pages < 2 {
		t.Errorf("%d page(s): the race did not reach the pages", a.Status.Pages)
	}
	t.Logf("outcomes %v; %d inline, %d on %d pages", outcomes, len(a.Status.Servers), a.Status.PagedServers, a.Status.Pages)
}
