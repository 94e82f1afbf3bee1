package reliability

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/controllers"
	"github.com/hubcredits/hubcredits/internal/localcp"
	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// misuse is the state of TestMisuse: what the test put in and what each
// server ran, from which the expected ledgers are computed.
type misuse struct {
	t *testing.T
	// deleted: the account deleted by the admin and not applied again yet
	// (its deletion is held while its servers run).
	deleted string
	ns      string
	rng     *rand.Rand
	admin   client.Client // another cluster admin: the pod guard applies to it
	sup     *supervisor
	servers []*server
	// in is every credit put into an account: its opening balance and each
	// top-up id once.
	in map[string]int64
	// toppedUp is what the account's own status must say it was topped up.
	toppedUp map[string]int64
	// topUps are the ids given to each account, in order.
	topUps map[string][]hcv1.TopUp
	// opening is the balance each account opened with (the tombstone's for
	// the re-created account).
	opening map[string]int64
	// failed are the servers marked Failed by "PodGC": they paid at least
	// for the periods begun before the mark and at most for those begun
	// before the ledger was seen to end them.
	failedHi map[*server]time.Time
	counts   map[string]int
}

const (
	misusePool    = "lab"
	misuseRefused = "is bound to its billing since admission"
)

// TestMisuse: the real operator binary bills 40+ servers on wallets and a
// project pool while a seeded random schedule does what admins, PodGC and
// crashes do: edits of a billed pod's hubcredits.io/account (annotation and
// label) by another admin (the pod guard must refuse them) and by the
// operator's own identity (the guard lets those through: the ledger's own
// binding must hold), unrelated label edits, pods marked Failed while
// their containers still run (as PodGC does), ordinary ends, top-ups with
// unique ids, a top-up id removed and added again, pool refills, a wallet
// deleted while its server runs and re-applied with kubectl, kill -9 of the
// operator and kube-apiserver restarts. At the end every account is checked
// for conservation against its own status, its top-ups applied once each,
// and its balance (or its pool group's) against what its servers ran.
//
// HUBCREDITS_MISUSE_SEED replays a schedule (the seed is logged).
func TestMisuse(t *testing.T) {
	nServers, wallets, steps, apiRestarts := 40, 6, 30, 2
	if full() {
		nServers, wallets, steps, apiRestarts = 100, 12, 120, 6
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("HUBCREDITS_MISUSE_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		must(t, err)
		seed = v
	}
	t.Logf("seed %d (HUBCREDITS_MISUSE_SEED=%d replays the schedule; timing still varies)", seed, seed)
	ctx := context.Background()
	m := &misuse{t: t, ns: "misuse", rng: rand.New(rand.NewPCG(13, seed)),
		in: map[string]int64{}, toppedUp: map[string]int64{}, topUps: map[string][]hcv1.TopUp{},
		opening: map[string]int64{}, failedHi: map[*server]time.Time{}, counts: map[string]int{}}
	ns := m.ns

	// The suite's client is the in-process webhook's own identity, which
	// the pod guard exempts (it stands for the operator); a second admin
	// is not exempt.
	u, err := env.AddUser(envtest.User{Name: "misuse-admin", Groups: []string{"system:masters"}}, nil)
	must(t, err)
	m.admin, err = client.New(u.Config(), client.Options{Scheme: operator.Scheme()})
	must(t, err)

	must(t, k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	// A project pool that starts almost empty and is refilled by top-ups;
	// the first half of the wallets draw on it. The last wallet is applied
	// (and later deleted and re-applied) with kubectl.
	pooled := wallets / 2
	reborn := fmt.Sprintf("acct-%d", wallets-1)
	must(t, k8s.Create(ctx, testutil.MakeAccount(ns, misusePool).Cap(1_000_000).InitialBalance(30).Obj()))
	m.in[misusePool], m.opening[misusePool] = 30, 30
	for i := range wallets - 1 {
		w := testutil.MakeAccount(ns, fmt.Sprintf("acct-%d", i), fmt.Sprintf("user-%d", i)).Cap(1_000_000)
		if i < pooled {
			w = w.Project(misusePool)
		}
		must(t, k8s.Create(ctx, w.Obj()))
		m.in[fmt.Sprintf("acct-%d", i)], m.opening[fmt.Sprintf("acct-%d", i)] = 1_000_000, 1_000_000
	}
	m.kubectl(rebornManifest(ns, reborn, wallets-1), "apply", "-f", "-")
	m.in[reborn], m.opening[reborn], m.toppedUp[reborn] = 100_500, 100_000, 500
	createPolicies(t, ns)
	// The webhook must see the kubectl-applied wallet before its user spawns.
	testutil.Eventually(t, 30*time.Second, func() error {
		return webhookCache.Get(ctx, types.NamespacedName{Namespace: ns, Name: reborn}, &hcv1.CreditAccount{})
	})
	for i := range nServers {
		w := i % wallets
		m.servers = append(m.servers, spawnServer(t, ns, fmt.Sprintf("user-%d", w), fmt.Sprintf("acct-%d", w), fmt.Sprintf("s%d", i), int64(i%3+1)))
	}
	m.sup = supervise(t, ns, leaderElection(ns)...)

	type op struct {
		name   string
		weight int
		do     func(step int)
	}
	ops := []op{
		{"guarded-annotation-edit", 3, func(int) { m.guardedEdit(false) }},
		{"guarded-label-edit", 1, func(int) { m.guardedEdit(true) }},
		{"operator-identity-account-edit", 2, func(int) { m.bypassEdit(wallets) }},
		{"unrelated-label-edit", 2, m.unrelatedEdit},
		{"podgc-failed", 2, func(int) { m.podGC() }},
		{"end", 2, func(int) { m.end() }},
		{"wallet-top-up", 2, func(step int) { m.topUp(fmt.Sprintf("acct-%d", m.rng.IntN(wallets-1)), fmt.Sprintf("t%d", step)) }},
		{"pool-refill", 2, func(step int) { m.topUp(misusePool, fmt.Sprintf("refill-%d", step)) }},
		{"repeated-top-up-id", 1, func(int) { m.repeatTopUp() }},
		{"kill-9", 3, func(step int) {
			down := time.Duration(0)
			if step%3 == 2 { // now and then down across a boundary
				down = period + time.Duration(m.rng.IntN(1000))*time.Millisecond
			}
			m.sup.killAndRestart(down)
		}},
		{"apiserver-restart", 1, func(int) {
			if m.counts["apiserver-restart"] >= apiRestarts {
				m.sup.killAndRestart(0)
				m.counts["kill-9"]++
				m.counts["apiserver-restart"]--
				return
			}
			down := time.Duration(m.rng.IntN(2500)) * time.Millisecond
			if m.counts["apiserver-restart"]%2 == 1 { // longer than the renew deadline
				down = 4*time.Second + time.Duration(m.rng.IntN(1000))*time.Millisecond
			}
			must(t, env.RestartAPIServer(ctx, down))
		}},
	}
	opIndex := func(ops []op, name string) (pick int) {
		for _, o := range ops {
			if o.name == name {
				return pick
			}
			pick += o.weight
		}
		panic(name)
	}
	total := 0
	for _, o := range ops {
		total += o.weight
	}
	begin := time.Now()
	var schedule []string
	for step := range steps {
		time.Sleep(time.Duration(150+m.rng.IntN(750)) * time.Millisecond)
		switch step {
		case steps / 4:
			m.deleteAccount(reborn)
			schedule = append(schedule, "delete-account")
			continue
		case steps / 2:
			m.endAll(reborn)
			schedule = append(schedule, "end-deleted-account's-servers")
			continue
		case 3 * steps / 4:
			m.reapply(reborn, wallets-1)
			schedule = append(schedule, "re-apply-account")
			continue
		}
		pick := m.rng.IntN(total)
		switch step { // at least one of each crash in every schedule
		case steps / 8:
			pick = opIndex(ops, "kill-9")
		case 5 * steps / 8:
			pick = opIndex(ops, "apiserver-restart")
		}
		for _, o := range ops {
			if pick < o.weight {
				o.do(step)
				m.counts[o.name]++
				schedule = append(schedule, o.name)
				break
			}
			pick -= o.weight
		}
	}
	t.Logf("schedule (%v): %s", time.Since(begin).Round(time.Second), strings.Join(schedule, " "))

	var running []*server
	for _, s := range m.servers {
		if s.end.IsZero() {
			running = append(running, s)
		}
	}
	stopAll(t, running)
	m.check(wallets, pooled, reborn)
	exits := m.sup.shutdown(t)
	t.Logf("%d servers on %d wallets and a pool; %v; the operator also exited on its own %d times (supervisor restarted it); ledgers as expected",
		len(m.servers), wallets, m.counts, exits)
}

// rebornManifest is the YAML an admin keeps in Git for the wallet that is
// deleted and applied again.
func rebornManifest(ns, name string, user int) string {
	return fmt.Sprintf(`apiVersion: hubcredits.io/v1alpha1
kind: CreditAccount
metadata:
  name: %s
  namespace: %s
spec:
  users: [user-%d]
  cap: 1000000
  initialBalance: 100000
  topUps:
  - id: welcome
    amount: 500
`, name, ns, user)
}

func (m *misuse) kubectl(stdin string, args ...string) {
	m.t.Helper()
	root, err := localcp.Root()
	must(m.t, err)
	testutil.Eventually(m.t, 30*time.Second, func() error { // the API server may be restarting
		cmd := exec.Command(filepath.Join(root, "bin", "k8s", "kubectl"), append([]string{"--kubeconfig", kubeconfig, "-n", m.ns}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return nil
	})
}

// running picks a running server at random (nil if none).
func (m *misuse) running() *server {
	var r []*server
	for _, s := range m.servers {
		if s.end.IsZero() {
			r = append(r, s)
		}
	}
	if len(r) == 0 {
		return nil
	}
	return r[m.rng.IntN(len(r))]
}

// transient reports errors of an API server that is restarting (or whose
// webhook connection is), which are retried.
func transient(err error) bool {
	return err != nil && !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) && !apierrors.IsConflict(err) &&
		!strings.Contains(err.Error(), misuseRefused)
}

func patchMeta(c client.Client, s *server, patch string) error {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: s.pod.Namespace, Name: s.pod.Name}}
	return c.Patch(context.Background(), p, client.RawPatch(types.MergePatchType, []byte(patch)))
}

// retry runs f until it returns an error that is not transient (or nil).
func (m *misuse) retry(f func() error) error {
	m.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		err := f()
		if !transient(err) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// guardedEdit: another admin points a billed pod at another account (its
// annotation, or the label); the pod guard refuses.
func (m *misuse) guardedEdit(label bool) {
	s := m.running()
	if s == nil {
		return
	}
	where := "annotations"
	if label {
		where = "labels"
	}
	patch := fmt.Sprintf(`{"metadata":{%q:{%q:"acct-x-%d"}}}`, where, hcv1.AnnotationAccount, m.rng.IntN(100))
	err := m.retry(func() error { return patchMeta(m.admin, s, patch) })
	if err == nil || !strings.Contains(err.Error(), misuseRefused) {
		m.t.Errorf("another admin's edit of %s's hubcredits.io/account %s: got %v, want the pod guard's refusal", s.pod.Name, where, err)
	}
}

// bypassEdit: the operator's own identity (which the guard lets through,
// standing for a window without the guard) points a billed pod at another
// wallet. The admitting wallet must keep paying, the named one never.
func (m *misuse) bypassEdit(wallets int) {
	s := m.running()
	if s == nil {
		return
	}
	// Always into another group (a pooled wallet's pod to a wallet outside
	// the pool, any other's to any other wallet), so the checks of the
	// groups' balances see a charge to the wrong account.
	pooled := wallets / 2
	mine, _ := strconv.Atoi(strings.TrimPrefix(s.account, "acct-"))
	other := mine
	for other == mine || (mine < pooled && other < pooled) {
		other = m.rng.IntN(wallets)
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"acct-%d"}}}`, hcv1.AnnotationAccount, other)
	if err := m.retry(func() error { return patchMeta(k8s, s, patch) }); err != nil {
		m.t.Fatalf("the operator identity's edit of %s was refused (is the suite's client still the webhook's identity?): %v", s.pod.Name, err)
	}
}

// unrelatedEdit: another admin labels a billed pod with a key that is not
// billing's; the guard lets it through.
func (m *misuse) unrelatedEdit(step int) {
	s := m.running()
	if s == nil {
		return
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{"misuse.example.com/touched":"step-%d"}}}`, step)
	if err := m.retry(func() error { return patchMeta(m.admin, s, patch) }); err != nil {
		m.t.Errorf("an unrelated label edit on %s was refused: %v", s.pod.Name, err)
	}
}

// podGC marks a running server's pod Failed with its container still
// running, as PodGC does on a lost node, and waits until the paying wallet's
// ledger ends it: it owes the periods begun before the mark at least and
// those begun before the ledger ended it at most.
func (m *misuse) podGC() {
	s := m.running()
	if s == nil {
		return
	}
	// Early in the server's period (0.2-0.7 s in), so a ledger that ends it
	// within a second or so ends it in the same period: then what it owes
	// is exact.
	for in := time.Since(s.start) % period; in < 200*time.Millisecond || in > 700*time.Millisecond; in = time.Since(s.start) % period {
		time.Sleep(50 * time.Millisecond)
	}
	failed := time.Now()
	err := m.retry(func() error {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: s.pod.Namespace, Name: s.pod.Name}}
		return k8s.Status().Patch(context.Background(), p, client.RawPatch(types.MergePatchType, []byte(`{"status":{"phase":"Failed"}}`)))
	})
	must(m.t, err)
	s.end = failed
	testutil.Eventually(m.t, 60*time.Second, func() error {
		a := &hcv1.CreditAccount{}
		err := k8s.Get(context.Background(), types.NamespacedName{Namespace: m.ns, Name: s.account}, a)
		if apierrors.IsNotFound(err) && s.account == m.deleted {
			// The deleted account was released: the ledger ended its last
			// server (the deletion is held until then); its tombstone keeps
			// the balance, which the re-applied account's checks compare.
			return nil
		}
		if err != nil {
			return err
		}
		// The ledger ended it by now, or by the second its entry says (the
		// run that marked the end, no earlier than the run that saw it lost).
		seen := time.Now()
		for _, e := range a.Status.Servers {
			if e.PodUID != s.pod.UID {
				continue
			}
			if e.EndedAt == nil {
				return fmt.Errorf("%s's ledger has not ended %s yet", s.account, s.pod.Name)
			}
			if e.EndedAt.Time.Before(failed.Truncate(time.Second)) {
				m.t.Errorf("%s's ledger ended %s at %v, before it was marked Failed (%v)", s.account, s.pod.Name, e.EndedAt.Time, failed)
			}
			if t := e.EndedAt.Add(time.Second); t.Before(seen) { // the API keeps whole seconds
				seen = t
			}
		}
		m.failedHi[s] = seen
		return nil
	})
}

// end stops one running server (its pod deleted, as KubeSpawner does).
func (m *misuse) end() {
	if s := m.running(); s != nil {
		stopAll(m.t, []*server{s})
	}
}

// endAll stops the account's running servers.
func (m *misuse) endAll(account string) {
	var r []*server
	for _, s := range m.servers {
		if s.account == account && s.end.IsZero() {
			r = append(r, s)
		}
	}
	stopAll(m.t, r)
}

// topUp adds a top-up with a new id to the account's spec.
func (m *misuse) topUp(account, id string) {
	amount := int64(1 + m.rng.IntN(100))
	if account == misusePool {
		amount = int64(20 + m.rng.IntN(60))
	}
	m.setTopUps(account, append(slices.Clone(m.topUps[account]), hcv1.TopUp{ID: id, Amount: amount}))
	m.in[account] += amount
	m.toppedUp[account] += amount
}

// repeatTopUp removes an applied top-up from an account's spec and adds it
// again, same id and amount: it must not apply twice.
func (m *misuse) repeatTopUp() {
	var candidates []string
	for a, ups := range m.topUps {
		if len(ups) > 0 {
			candidates = append(candidates, a)
		}
	}
	if len(candidates) == 0 { // nothing to repeat yet: refill the pool first
		m.topUp(misusePool, "refill-first")
		candidates = []string{misusePool}
	}
	sort.Strings(candidates)
	account := candidates[m.rng.IntN(len(candidates))]
	ups := m.topUps[account]
	i := m.rng.IntN(len(ups))
	id := ups[i].ID
	testutil.Eventually(m.t, 60*time.Second, func() error {
		a := &hcv1.CreditAccount{}
		if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: m.ns, Name: account}, a); err != nil {
			return err
		}
		if !slices.Contains(a.Status.AppliedTopUps, id) {
			return fmt.Errorf("top-up %s of %s not applied yet", id, account)
		}
		return nil
	})
	m.setTopUps(account, slices.Delete(slices.Clone(ups), i, i+1))
	time.Sleep(time.Duration(m.rng.IntN(1500)) * time.Millisecond)
	m.setTopUps(account, ups)
}

func (m *misuse) setTopUps(account string, ups []hcv1.TopUp) {
	m.t.Helper()
	testutil.Eventually(m.t, 45*time.Second, func() error {
		a := &hcv1.CreditAccount{}
		if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: m.ns, Name: account}, a); err != nil {
			return err
		}
		a.Spec.TopUps = ups
		return k8s.Update(context.Background(), a)
	})
	m.topUps[account] = ups
}

// deleteAccount deletes the wallet the way an admin would while its
// servers run; the deletion is held until they end.
func (m *misuse) deleteAccount(name string) {
	m.kubectl("", "delete", "creditaccount", name, "--wait=false")
	m.deleted = name
}

// reapply waits for the deleted wallet to be gone (its servers ended), then
// applies its manifest again and spawns two servers on it. The re-applied
// wallet opens with the tombstone's balance.
func (m *misuse) reapply(name string, user int) {
	defer func() { m.deleted = "" }()
	ctx := context.Background()
	testutil.Eventually(m.t, 60*time.Second, func() error {
		err := k8s.Get(ctx, types.NamespacedName{Namespace: m.ns, Name: name}, &hcv1.CreditAccount{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return errors.Join(err, fmt.Errorf("the deleted account %s is still there", name))
	})
	var tomb int64
	testutil.Eventually(m.t, 30*time.Second, func() error {
		cm := &corev1.ConfigMap{}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: m.ns, Name: controllers.DefaultTombstoneConfigMap}, cm); err != nil {
			return err
		}
		v, ok := cm.Data[name]
		if !ok {
			return fmt.Errorf("no tombstone of %s yet", name)
		}
		t, err := billing.DecodeTombstone(v)
		tomb = t.Balance
		return err
	})
	lo, hi := m.expected(func(a string) bool { return a == name })
	if tomb < lo || tomb > hi {
		m.t.Errorf("the tombstone of %s holds %d, want %d..%d (what went in less what its servers ran)", name, tomb, lo, hi)
	}
	m.t.Logf("%s deleted with balance %d (expected %d..%d); applied again", name, tomb, lo, hi)
	m.opening[name], m.toppedUp[name] = tomb, 0
	m.kubectl(rebornManifest(m.ns, name, user), "apply", "-f", "-")
	testutil.Eventually(m.t, 60*time.Second, func() error {
		a := &hcv1.CreditAccount{}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: m.ns, Name: name}, a); err != nil {
			return err
		}
		if a.Status.ReopenedFrom == "" {
			return fmt.Errorf("%s not reopened from its tombstone yet", name)
		}
		return nil
	})
	testutil.Eventually(m.t, 30*time.Second, func() error {
		return webhookCache.Get(ctx, types.NamespacedName{Namespace: m.ns, Name: name}, &hcv1.CreditAccount{})
	})
	for i := range 2 {
		m.servers = append(m.servers, spawnServer(m.t, m.ns, fmt.Sprintf("user-%d", user), name, fmt.Sprintf("again%d", i), int64(i+1)))
	}
}

// owed returns the least and the most server s can owe: exact for a
// server that ran and was deleted; for a pod marked Failed, the periods
// begun before the mark and those begun before its ledger ended it.
func (m *misuse) owed(s *server) (lo, hi int64) {
	lo = s.value * billing.PeriodsDue(s.start, s.end, period, true)
	hi = lo
	if seen, ok := m.failedHi[s]; ok {
		hi = s.value * billing.PeriodsDue(s.start, seen, period, true)
	}
	return lo, hi
}

// expected returns the least and the most the accounts selected by in may
// hold together: what went into them less what their servers owe.
func (m *misuse) expected(in func(string) bool) (lo, hi int64) {
	for a, v := range m.in {
		if in(a) {
			lo += v
			hi += v
		}
	}
	for _, s := range m.servers {
		if in(s.account) && !s.end.IsZero() {
			l, h := m.owed(s)
			lo -= h
			hi -= l
		}
	}
	return lo, hi
}

// check waits until no account holds a server and compares, for each
// group (the pool with its wallets; every other wallet alone), the balance
// with what went in less what its servers ran; then it checks every
// account's conservation from its own status and its top-ups.
func (m *misuse) check(wallets, pooled int, reborn string) {
	t := m.t
	t.Helper()
	group := func(a string) string {
		if a == misusePool {
			return misusePool
		}
		if i, _ := strconv.Atoi(strings.TrimPrefix(a, "acct-")); i < pooled {
			return misusePool
		}
		return a
	}
	groups := map[string]bool{}
	for a := range m.in {
		groups[group(a)] = true
	}
	names := make([]string, 0, len(m.in))
	for a := range m.in {
		names = append(names, a)
	}
	sort.Strings(names)
	deadline := time.Now().Add(90 * time.Second)
	for {
		accts := map[string]*hcv1.CreditAccount{}
		settled := true
		for _, n := range names {
			a := &hcv1.CreditAccount{}
			if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: m.ns, Name: n}, a); err != nil {
				if transient(err) && time.Now().Before(deadline) {
					settled = false
					break
				}
				t.Fatal(err)
			}
			accts[n] = a
			if len(a.Status.Servers) != 0 {
				settled = false
			}
		}
		var b strings.Builder
		if settled {
			for g := range groups {
				lo, hi := m.expected(func(a string) bool { return group(a) == g })
				var got int64
				for _, n := range names {
					if group(n) == g {
						got += accts[n].Status.Balance
					}
				}
				if got < lo || got > hi {
					fmt.Fprintf(&b, "group %s holds %d, want %d..%d\n", g, got, lo, hi)
				}
			}
		}
		if settled && b.Len() == 0 {
			m.checkAccounts(accts, names, reborn)
			inexact := 0
			for g := range groups {
				if lo, hi := m.expected(func(a string) bool { return group(a) == g }); lo != hi {
					inexact++
				}
			}
			t.Logf("%d groups (the pool with its %d wallets, and %d wallets alone), %d exact to the credit, %d within the window of a PodGC mark (%d pods marked Failed)",
				len(groups), pooled, wallets-pooled, len(groups)-inexact, inexact, len(m.failedHi))
			return
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(&b, "settled=%v\n", settled)
			for _, n := range names {
				if a := accts[n]; a != nil {
					fmt.Fprintf(&b, "%s: balance %d, %d servers, in %d\n", n, a.Status.Balance, len(a.Status.Servers), m.in[n])
					writeLedger(&b, n, a.Status.Ledger)
				}
			}
			t.Fatal(b.String())
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// checkAccounts checks each account from its own status: conservation
// (balance = opening + granted + toppedUp + adjusted − charged +
// refunded), each
// top-up id applied once, no balance below zero.
func (m *misuse) checkAccounts(accts map[string]*hcv1.CreditAccount, names []string, reborn string) {
	t := m.t
	for _, n := range names {
		st := accts[n].Status
		if want := m.opening[n] + st.TotalGranted + st.TotalToppedUp + st.TotalAdjusted - st.TotalCharged + st.TotalRefunded; st.Balance != want {
			t.Errorf("%s is not conserved: balance %d, but opening %d + granted %d + toppedUp %d + adjusted %d - charged %d + refunded %d = %d",
				n, st.Balance, m.opening[n], st.TotalGranted, st.TotalToppedUp, st.TotalAdjusted, st.TotalCharged, st.TotalRefunded, want)
		}
		if st.TotalToppedUp != m.toppedUp[n] {
			t.Errorf("%s was topped up %d, want %d (each id once)", n, st.TotalToppedUp, m.toppedUp[n])
		}
		if st.Balance < 0 {
			t.Errorf("%s has a negative balance %d", n, st.Balance)
		}
		for _, up := range m.topUps[n] {
			if !slices.Contains(st.AppliedTopUps, up.ID) {
				t.Errorf("%s: top-up %s not applied", n, up.ID)
			}
		}
	}
	if accts[reborn].Status.ReopenedFrom == "" {
		t.Errorf("%s was not reopened from its tombstone", reborn)
	}
}
