// Package reliability attacks the operator binary the way production will:
// kill -9 at random moments, two replicas with the leader killed, and
// checks every account to the credit against the pods' run times and
// prices. Sizes are bounded for CI; HUBCREDITS_RELIABILITY_FULL=1 (make
// test-reliability) runs the documented full size.
package reliability

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/localcp"
	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

var (
	env *localcp.Env
	// webhookCache is the in-process webhook's informer cache.
	webhookCache client.Reader
	k8s          client.Client
	kubeconfig   string
	managerBin   string
)

const period = 2 * time.Second

func TestMain(m *testing.M) {
	flag.Parse()
	// The in-process webhook server logs nothing here (the operator
	// binary's logs are what the suite checks).
	ctrl.SetLogger(logr.Discard())
	if testing.Short() {
		os.Exit(0)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := localcp.Root()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "hubcredits-reliability")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// The operator under attack is the real binary, built from this tree.
	managerBin = filepath.Join(dir, "manager")
	build := exec.Command("go", "build", "-o", managerBin, ".")
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the operator:", err)
		return 1
	}
	env, err = localcp.Start(localcp.Options{Root: root, Webhooks: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	kc, err := env.AdminKubeconfig()
	if err == nil {
		kubeconfig = filepath.Join(dir, "kubeconfig")
		err = os.WriteFile(kubeconfig, kc, 0o600)
	}
	if err == nil {
		k8s, err = client.New(env.Config, client.Options{Scheme: operator.Scheme()})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Admission is served in-process for the whole run; billing is the
	// binary under attack.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := env.WebhookInstallOptions
	mgr, err := ctrl.NewManager(env.Config, operator.ManagerOptions(operator.Options{}, operator.Process{
		WebhookServer: webhook.NewServer(webhook.Options{Host: w.LocalServingHost, Port: w.LocalServingPort,
			CertDir: w.LocalServingCertDir, TLSOpts: operator.WebhookTLS(false)}),
	}))
	if err == nil {
		err = operator.Setup(ctx, mgr, operator.Options{Webhooks: true, DisableControllers: true})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go func() { _ = mgr.Start(ctx) }()
	mgr.GetCache().WaitForCacheSync(ctx)
	webhookCache = mgr.GetCache()
	return m.Run()
}

func full() bool { return os.Getenv("HUBCREDITS_RELIABILITY_FULL") != "" }

// operatorProc is one operator process.
type operatorProc struct {
	cmd    *exec.Cmd
	log    *os.File
	exited chan struct{} // closed when the process has exited
	done   bool
}

func startOperator(t *testing.T, ns string, extra ...string) *operatorProc {
	t.Helper()
	dir := os.Getenv("HUBCREDITS_KEEP_LOGS") // keep the operators' logs there
	if dir == "" {
		dir = t.TempDir()
	}
	logf, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("operator-%s-%d.log", ns, time.Now().UnixNano())), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{
		"--kubeconfig", kubeconfig, "--namespace", ns, "--enable-webhooks=false",
		"--metrics-bind-address=0", "--health-probe-bind-address=0",
		"--reservation-grace=3s", "--stop-retry=5s",
	}, extra...)
	cmd := exec.Command(managerBin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &operatorProc{cmd: cmd, log: logf, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(p.kill) // a failing test leaves no operator running
	return p
}

func (p *operatorProc) kill() {
	if p.done {
		return
	}
	p.done = true
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	_ = p.log.Close()
}

// server is one running user server and what it owes.
type server struct {
	pod     *corev1.Pod
	account string
	value   int64
	start   time.Time
	end     time.Time
}

// setup creates accounts (ample balances, so no server is stopped) and
// n servers spread over them, each running with a clock start spread over
// one period.
func setup(t *testing.T, ns string, accounts, n int) []*server {
	t.Helper()
	ctx := context.Background()
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	for i := range accounts {
		a := testutil.MakeAccount(ns, fmt.Sprintf("acct-%d", i), fmt.Sprintf("user-%d", i)).Cap(1_000_000).Obj()
		if err := k8s.Create(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	createPolicies(t, ns)
	servers := make([]*server, 0, n)
	for i := range n {
		user := fmt.Sprintf("user-%d", i%accounts)
		servers = append(servers, spawnServer(t, ns, user, fmt.Sprintf("acct-%d", i%accounts), fmt.Sprintf("s%d", i), int64(i%3+1)))
	}
	return servers
}

// createPolicies creates the three prices (tier=1..3: 5, 10 and 15 credits
// a period) and waits until the in-process webhook's cache shows them.
func createPolicies(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	for v := int64(1); v <= 3; v++ {
		pol := testutil.MakePolicy(ns, fmt.Sprintf("price-%d", v)).Value(v*5).Every(period).Selecting("tier", fmt.Sprint(v)).Obj()
		if err := k8s.Create(ctx, pol); err != nil {
			t.Fatal(err)
		}
	}
	// The webhook prices from its informer cache, which can lag (after an
	// API server restart, by as long as client-go's watch backoff): wait
	// until it shows the policies, so every server gets its tier's price.
	waitFrom := time.Now()
	deadline := waitFrom.Add(90 * time.Second)
	for {
		var pols hcv1.BillingPolicyList
		if err := webhookCache.List(ctx, &pols, client.InNamespace(ns)); err == nil && len(pols.Items) == 3 {
			if d := time.Since(waitFrom); d > time.Second {
				t.Logf("the webhook's cache showed the new policies after %v", d.Round(100*time.Millisecond))
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the webhook's cache does not show the BillingPolicies after 90s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// spawnServer creates user's server pod (admitted and priced by the
// webhook: tier × 5 credits a period) as KubeSpawner would, and reports it
// running from now (whole seconds, as the kubelet reports).
func spawnServer(t *testing.T, ns, user, account, name string, tier int64) *server {
	t.Helper()
	ctx := context.Background()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("jupyter-%s--%s", user, name),
			Labels:      map[string]string{"component": "singleuser-server", "tier": fmt.Sprint(tier)},
			Annotations: map[string]string{hcv1.AnnotationUsername: user, hcv1.AnnotationServerName: name}},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "notebook", Image: "jupyter",
			Env: []corev1.EnvVar{{Name: "JUPYTERHUB_API_TOKEN", Value: "reliability-PLANTED-token"}}}}},
	}
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	if got, want := p.Annotations[hcv1.AnnotationBillingValue], fmt.Sprint(tier*5); got != want {
		t.Fatalf("pod %s was priced %q by the webhook, want %s (its tier's policy)", p.Name, got, want)
	}
	start := time.Now().Truncate(time.Second)
	st := metav1.NewTime(start)
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, StartTime: &st, ContainerStatuses: []corev1.ContainerStatus{{
		Name: "notebook", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: st}}}}}
	if err := k8s.Status().Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	return &server{pod: p, account: account, value: tier * 5, start: start}
}

// stopAll deletes every pod (grace 1s, as KubeSpawner does) 1.2-1.8 s into
// a 2 s period: the API server keeps whole seconds, so the recorded request
// time then falls inside the same period as the real one and the owed count
// is not ambiguous. It records when each deletion was requested.
func stopAll(t *testing.T, servers []*server) { t.Helper(); stopAllWith(t, k8s, servers) }

// stopAllWith is stopAll through c (a control plane of the test's own).
func stopAllWith(t *testing.T, c client.Client, servers []*server) {
	t.Helper()
	ctx := context.Background()
	pending := append([]*server(nil), servers...)
	for len(pending) > 0 {
		var later []*server
		for _, s := range pending {
			in := time.Since(s.start) % period
			if in < 1200*time.Millisecond || in > 1800*time.Millisecond {
				later = append(later, s)
				continue
			}
			if err := c.Delete(ctx, s.pod, client.GracePeriodSeconds(1)); err != nil {
				// The API server away (restarted by a test): try again
				// in the next window.
				if transient(err) && !apierrors.IsNotFound(err) {
					later = append(later, s)
					continue
				}
				t.Error(err)
				return
			}
			got := &corev1.Pod{}
			if err := retryTransient(func() error { return c.Get(ctx, client.ObjectKeyFromObject(s.pod), got) }); err != nil {
				t.Error(err)
				return
			}
			s.end = got.DeletionTimestamp.Add(-time.Second)
		}
		pending = later
		if len(pending) > 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// checkLedgers waits until every account is settled and compares each
// balance with the value computed from the pods' run times and prices.
func checkLedgers(t *testing.T, ns string, servers []*server, accounts int) {
	t.Helper()
	want := map[string]int64{}
	for i := range accounts {
		want[fmt.Sprintf("acct-%d", i)] = 1_000_000
	}
	for _, s := range servers {
		want[s.account] -= s.value * billing.PeriodsDue(s.start, s.end, period, true)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := map[string]int64{}
		ledgers := map[string][]hcv1.LedgerEntry{}
		settled := true
		for name := range want {
			a := &hcv1.CreditAccount{}
			if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, a); err != nil {
				t.Fatal(err)
			}
			got[name] = a.Status.Balance
			ledgers[name] = a.Status.Ledger
			if len(a.Status.Servers) != 0 {
				settled = false
			}
		}
		match := settled
		for name := range want {
			if got[name] != want[name] {
				match = false
			}
		}
		if match {
			return
		}
		if time.Now().After(deadline) {
			names := make([]string, 0, len(want))
			for n := range want {
				names = append(names, n)
			}
			sort.Strings(names)
			var b strings.Builder
			fmt.Fprintf(&b, "ledgers differ (settled=%v):\n%-10s %12s %12s\n", settled, "account", "expected", "actual")
			for _, n := range names {
				mark := ""
				if got[n] != want[n] {
					mark = "  <-- off by " + fmt.Sprint(got[n]-want[n])
				}
				fmt.Fprintf(&b, "%-10s %12d %12d%s\n", n, want[n], got[n], mark)
			}
			for _, n := range names {
				if got[n] == want[n] {
					continue
				}
				writeLedger(&b, n, ledgers[n])
			}
			if dir := os.Getenv("HUBCREDITS_KEEP_LOGS"); dir != "" {
				fmt.Fprintf(&b, "\noperator logs kept in %s\n", dir)
			}
			t.Fatal(b.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// writeLedger writes an account's ledger (its last entries) for a failure
// message.
func writeLedger(b *strings.Builder, name string, ledger []hcv1.LedgerEntry) {
	fmt.Fprintf(b, "\nledger of %s (newest last):\n", name)
	for _, e := range ledger {
		fmt.Fprintf(b, "  %s %-8s %+8d -> %8d  %s\n", e.Time.Format("15:04:05"), e.Kind, e.Amount, e.Balance, e.Message)
	}
}

// TestCrashAnywhere: the operator binary is killed with SIGKILL at random
// moments (between reads and writes, during catch-up) and restarted; every
// account ends exact to the credit.
func TestCrashAnywhere(t *testing.T) {
	servers, accounts, kills := 40, 8, 20
	if full() {
		servers, accounts, kills = 100, 20, 40
	}
	ns := "crash"
	srv := setup(t, ns, accounts, servers)
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	op := startOperator(t, ns)
	all := []*operatorProc{op}
	defer func() {
		for _, p := range all {
			assertNoToken(t, p)
		}
	}()
	for i := range kills {
		time.Sleep(time.Duration(200+rng.IntN(1800)) * time.Millisecond)
		op.kill()
		if i%4 == 3 {
			// Stay down across a boundary now and then: catch-up on start.
			time.Sleep(period + time.Duration(rng.IntN(1000))*time.Millisecond)
		}
		op = startOperator(t, ns)
		all = append(all, op)
	}
	stopAll(t, srv)
	checkLedgers(t, ns, srv, accounts)
	checkUsageRecords(t, ns, srv)
	op.kill()
	t.Logf("%d servers on %d accounts, %d kill -9s survived, ledgers exact", servers, accounts, kills)
}

// checkUsageRecords checks the UsageRecords of a settled namespace: exactly
// one per server (by its reservation), each with the credits the server
// owed from its run time and price, paid by its account.
func checkUsageRecords(t *testing.T, ns string, servers []*server) {
	t.Helper()
	checkUsageRecordsOf(t, k8s, ns, servers, false)
}

// checkUsageRecordsOf is checkUsageRecords through c; with neverCame, a
// record of a reservation that is no server of the test (a spawn that
// failed after it reserved: its pod never came) is allowed when it paid
// nothing (the reservation returned).
func checkUsageRecordsOf(t *testing.T, c client.Client, ns string, servers []*server, neverCame bool) {
	t.Helper()
	var list hcv1.UsageRecordList
	if err := c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	byReservation := map[string][]hcv1.UsageRecord{}
	for _, r := range list.Items {
		byReservation[r.Reservation] = append(byReservation[r.Reservation], r)
	}
	for _, s := range servers {
		id := s.pod.Annotations[hcv1.AnnotationReservation]
		recs := byReservation[id]
		if len(recs) != 1 {
			t.Errorf("server %s (reservation %s) has %d usage records, want 1", s.pod.Name, id, len(recs))
			continue
		}
		owed := s.value * billing.PeriodsDue(s.start, s.end, period, true)
		r := recs[0]
		if r.Server != s.pod.Name || r.Account != s.account || r.Total != owed || len(r.Payers) != 1 || r.Payers[0].Credits != owed {
			t.Errorf("usage record of %s: server %s, account %s, total %d, payers %+v; want %s, %d",
				s.pod.Name, r.Server, r.Account, r.Total, r.Payers, s.account, owed)
		}
		delete(byReservation, id)
	}
	for id, recs := range byReservation {
		if neverCame && len(recs) == 1 && recs[0].Total == 0 {
			continue
		}
		t.Errorf("usage record(s) of reservation %s, which is no server of this test: %+v", id, recs)
	}
}

// TestUsageRecordsAcrossKills: servers end in batches while the operator
// is killed with SIGKILL around each batch (between the write that marks
// an end and the one that drops it, or while it writes the record) and
// restarted, sometimes after staying down. Every ended server gets exactly
// one UsageRecord, with the credits the ledger charged for it.
func TestUsageRecordsAcrossKills(t *testing.T) {
	servers, accounts, batches := 24, 6, 6
	if full() {
		servers, accounts, batches = 60, 12, 12
	}
	ns := "usage"
	srv := setup(t, ns, accounts, servers)
	rng := rand.New(rand.NewPCG(2, uint64(time.Now().UnixNano())))
	op := startOperator(t, ns)
	all := []*operatorProc{op}
	defer func() {
		for _, p := range all {
			assertNoToken(t, p)
		}
	}()
	time.Sleep(period) // a boundary charged before the first ends
	per := (servers + batches - 1) / batches
	kills := 0
	for b := 0; b < servers; b += per {
		stopAll(t, srv[b:min(b+per, servers)])
		time.Sleep(time.Duration(rng.IntN(700)) * time.Millisecond)
		op.kill()
		kills++
		if rng.IntN(3) == 0 {
			time.Sleep(period) // down across a boundary: the ends are seen late
		}
		op = startOperator(t, ns)
		all = append(all, op)
	}
	checkLedgers(t, ns, srv, accounts)
	checkUsageRecords(t, ns, srv)
	op.kill()
	t.Logf("%d servers ended in %d batches, %d kill -9s: one usage record each, totals equal to the ledgers", servers, batches, kills)
}

// TestLeaderKilledRepeatedly: two replicas with leader election; the one
// holding the lease is killed again and again. No double charge, and the
// failover shows as a late charge, never a missed one.
func TestLeaderKilledRepeatedly(t *testing.T) {
	servers, accounts, rounds := 20, 4, 6
	if full() {
		servers, accounts, rounds = 60, 10, 15
	}
	ns := "leader"
	srv := setup(t, ns, accounts, servers)
	le := leaderElection(ns)
	procs := []*operatorProc{startOperator(t, ns, le...), startOperator(t, ns, le...)}
	killed := 0
	for range rounds {
		leader := waitLeader(t, procs)
		time.Sleep(time.Duration(500+rand.IntN(1500)) * time.Millisecond)
		procs[leader].kill()
		killed++
		procs[leader] = startOperator(t, ns, le...)
	}
	waitLeader(t, procs)
	stopAll(t, srv)
	checkLedgers(t, ns, srv, accounts)
	checkUsageRecords(t, ns, srv)
	for _, p := range procs {
		p.kill()
	}
	t.Logf("%d servers, %d leaders killed, ledgers exact", servers, killed)
}

// leaderElection are the operator's flags for leader election with a short
// lease (4 s), so failovers fit in a test.
func leaderElection(ns string) []string {
	return []string{"--leader-elect", "--leader-election-namespace", ns,
		"--leader-elect-lease-duration=4s", "--leader-elect-renew-deadline=3s", "--leader-elect-retry-period=500ms"}
}

// waitLeader returns the index of the process that holds the lease, from
// its log (controller-runtime logs the acquisition).
func waitLeader(t *testing.T, procs []*operatorProc) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for i, p := range procs {
			b, err := os.ReadFile(p.log.Name())
			if err == nil && strings.Contains(strings.ToLower(string(b)), "successfully acquired lease") {
				return i
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("no replica acquired the lease")
	return -1
}
