package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/creditscli"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

func getAccount(t *testing.T, ns, name string) *hcv1.CreditAccount {
	t.Helper()
	a := &hcv1.CreditAccount{}
	if err := admin.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, a); err != nil {
		t.Fatal(err)
	}
	return a
}

func create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := admin.Create(context.Background(), o); err != nil {
			t.Fatalf("creating %s: %v", o.GetName(), err)
		}
	}
}

// opened waits until the operator opened the account.
func opened(t *testing.T, ns string, names ...string) {
	t.Helper()
	for _, name := range names {
		testutil.Eventually(t, 20*time.Second, func() error {
			if getAccount(t, ns, name).Status.OpenedAt == nil {
				return fmt.Errorf("account %s not opened", name)
			}
			return nil
		})
	}
}

// spawn creates user's server pod as the hub does, and starts it.
func spawn(t *testing.T, ns, user string, labels ...string) {
	t.Helper()
	p := testutil.MakeKubeSpawnerPod(ns, user, "").Obj()
	p.Spec.NodeName = "node-1"
	for i := 0; i+1 < len(labels); i += 2 {
		p.Labels[labels[i]] = labels[i+1]
	}
	if err := hub.Create(context.Background(), p); err != nil {
		t.Fatalf("spawn of %s refused: %v", p.Name, err)
	}
	setRunning(t, p, time.Now().Truncate(time.Second))
}

func TestStatus(t *testing.T) {
	ns := newNamespace(t)
	create(t,
		testutil.MakeAccount(ns, "physics").Cap(2000).Obj(),
		testutil.MakeAccount(ns, "alice", "alice").Cap(100).Project("physics").Grant(5, time.Hour).Obj(),
		testutil.MakeAccount(ns, "bob", "bob").Cap(100).Obj(),
		testutil.MakePolicy(ns, "standard").Value(10).Every(time.Hour).Obj(),
	)
	opened(t, ns, "physics", "alice", "bob")
	spawn(t, ns, "alice")
	testutil.Eventually(t, 20*time.Second, func() error {
		for _, s := range getAccount(t, ns, "alice").Status.Servers {
			if s.PaidThrough != nil {
				return nil
			}
		}
		return fmt.Errorf("alice's server is not billed yet")
	})

	t.Run("one account in full", func(t *testing.T) {
		r := kubectlCredits(t, "status", "alice", "-n", ns)
		if r.code != 0 {
			t.Fatalf("exit status %d: %s", r.code, r.err)
		}
		for _, want := range []string{
			"Account:     alice", "Users:       alice", "Project:     physics (pays first)", "Balance:     100",
			"Grant:       +5 every 1h (next in ", "jupyter-alice", "standard", "10 credits every 1h", "Running (",
			"0 (+10 by physics)", "Ready", "LedgerOpen", "Opened",
		} {
			if !strings.Contains(r.out, want) {
				t.Errorf("status does not show %q", want)
			}
		}
		if paid := regexp.MustCompile(`Running \(\d+s\) +in (1h|59m\d+s) \(\d\d:\d\d:\d\dZ\)`); !paid.MatchString(r.out) {
			t.Errorf("status does not show the server paid through the next hour")
		}
	})
	t.Run("every account of the namespace", func(t *testing.T) {
		r := kubectlCredits(t, "status", "-n", ns)
		if r.code != 0 {
			t.Fatalf("exit status %d: %s", r.code, r.err)
		}
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`(?m)^NAME +USERS +BALANCE +CAP +GRANT +PROJECT +RUNNING +CONDITIONS$`),
			regexp.MustCompile(`(?m)^alice +alice +100 +100 +\+5 every 1h +physics +1 +Ready$`),
			regexp.MustCompile(`(?m)^physics +<none> +1990 +2000 +<none> +<none> +0 +Ready$`),
			regexp.MustCompile(`(?m)^bob +bob +100 +100 +<none> +<none> +0 +Ready$`),
		} {
			if !want.MatchString(r.out) {
				t.Errorf("the table has no line matching %s", want)
			}
		}
	})
	t.Run("by user, as JSON", func(t *testing.T) {
		r := kubectlCredits(t, "status", "--user", "alice", "-n", ns, "-o", "json")
		var got struct{ Items []creditscli.AccountStatus }
		if err := json.Unmarshal([]byte(r.out), &got); err != nil || r.code != 0 {
			t.Fatalf("exit %d, output not JSON: %v", r.code, err)
		}
		if len(got.Items) != 1 || got.Items[0].Name != "alice" || got.Items[0].Balance != 100 ||
			len(got.Items[0].Servers) != 1 || got.Items[0].Servers[0].ProjectPaid != 10 || got.Items[0].Servers[0].PaidThrough == nil {
			t.Errorf("status --user alice -o json: %+v", got.Items)
		}
	})
	t.Run("as YAML", func(t *testing.T) {
		r := kubectlCredits(t, "status", "bob", "-n", ns, "-o", "yaml")
		if r.code != 0 || !strings.Contains(r.out, "name: bob") || !strings.Contains(r.out, "balance: 100") {
			t.Errorf("status bob -o yaml: exit %d\n%s", r.code, r.out)
		}
	})
	t.Run("recent denials", func(t *testing.T) {
		p := testutil.MakeKubeSpawnerPod(ns, "bob", "").Label("hubcredits.io/account", "physics").Obj()
		if err := hub.Create(context.Background(), p); err == nil {
			t.Fatal("bob's spawn from physics was admitted")
		}
		testutil.Eventually(t, 20*time.Second, func() error {
			r := kubectlCredits(t, "status", "physics", "-n", ns)
			if !regexp.MustCompile(`Warning +NotMember +\S+ +1 +Spawn of jupyter-bob for bob denied: User "bob" may not spend from credit account "physics"`).MatchString(r.out) {
				return fmt.Errorf("no NotMember denial among the Events of physics")
			}
			return nil
		})
	})
	t.Run("a user without an account, by their groups", func(t *testing.T) {
		create(t,
			testutil.MakeAccount(ns, "chem-pool").Groups("chem-201").Cap(500).Obj(),
			testutil.MakeTemplate(ns, "physics", "physics-101").Cap(50).InitialBalance(30).Grant(5, time.Hour).Project("physics").Obj(),
			testutil.MakeTemplate(ns, "zz-staff", "staff").Obj(),
		)
		oneSentence(t, kubectlCredits(t, "status", "--user", "zoe", "--groups", "staff,physics-101", "-n", ns),
			`no credit account in namespace `+ns+` lists user "zoe" or one of the groups staff,physics-101; the first spawn creates the wallet wallet-zoe from the CreditAccountTemplate physics (cap 50, initial balance 30, +5 every 1h, project physics pays first).`)
		oneSentence(t, kubectlCredits(t, "status", "--user", "zoe", "--groups", "history", "-n", ns),
			`no credit account in namespace `+ns+` lists user "zoe" or one of the groups history, and no CreditAccountTemplate lists one of the groups: a spawn is denied, unless the operator runs with --auto-create-wallets.`)
		// A pool of one of the groups pays before any template.
		r := kubectlCredits(t, "status", "--user", "zoe", "--groups", "chem-201,physics-101", "-n", ns)
		if r.code != 0 || !strings.Contains(r.out, "Account:     chem-pool") {
			t.Errorf("status --user zoe --groups chem-201,physics-101: exit %d, %s\n%s", r.code, r.err, r.out)
		}
		// Listed by name: the groups do not matter.
		r = kubectlCredits(t, "status", "--user", "bob", "--groups", "chem-201", "-n", ns)
		if r.code != 0 || !strings.Contains(r.out, "Account:     bob") || strings.Contains(r.out, "chem-pool") {
			t.Errorf("status --user bob --groups chem-201: exit %d, %s\n%s", r.code, r.err, r.out)
		}
	})
	t.Run("errors are one sentence", func(t *testing.T) {
		oneSentence(t, kubectlCredits(t, "status", "--groups", "staff", "-n", ns), `--groups needs --user.`)
		oneSentence(t, kubectlCredits(t, "status", "nobody", "-n", ns), `creditaccounts.hubcredits.io "nobody" not found.`)
		oneSentence(t, kubectlCredits(t, "status", "--user", "zoe", "-n", ns), `no credit account in namespace `+ns+` lists user "zoe".`)
		oneSentence(t, kubectlCredits(t, "status", "-o", "wide", "-n", ns), `unknown output format "wide"`)
	})
}

func TestWhy(t *testing.T) {
	ns := newNamespace(t)
	create(t,
		testutil.MakeAccount(ns, "physics").Cap(2000).Obj(),
		testutil.MakeAccount(ns, "alice", "alice").Cap(100).Obj(),
		testutil.MakeAccount(ns, "carol", "carol").Cap(100).Project("physics").Obj(),
		testutil.MakeAccount(ns, "bob", "bob").Cap(100).InitialBalance(4).Grant(5, time.Hour).Obj(),
		testutil.MakePolicy(ns, "gpu").Priority(10).Every(5*time.Minute).Selecting("gpu", "a100").Value(25).Obj(),
	)
	opened(t, ns, "physics", "alice", "carol", "bob")
	before := getAccount(t, ns, "alice")
	asHub := []string{"-n", ns, "--as", hubSA}

	t.Run("the admin is not the hub", func(t *testing.T) {
		oneSentence(t, kubectlCredits(t, "why", "--user", "alice", "-n", ns),
			"refused admin; have your admin list you in the chart's billing.dryRunIdentities, or (an admin) ask as the hub with --as system:serviceaccount:"+ns+":hub")
	})
	t.Run("admitted at the default price", func(t *testing.T) {
		r := kubectlCredits(t, append([]string{"why", "--user", "alice"}, asHub...)...)
		if r.code != 0 {
			t.Fatalf("exit status %d, want 0: %s", r.code, r.err)
		}
		for _, want := range []string{"Asked as:   " + hubSA, "Verdict:    admitted", "10 credits every 10m (the operator's default price",
			"Paid by:    account alice (100 left)", "Runway:     10 periods (1h40m)"} {
			if !strings.Contains(r.out, want) {
				t.Errorf("why does not say %q", want)
			}
		}
	})
	t.Run("a profile's labels choose the policy", func(t *testing.T) {
		r := kubectlCredits(t, append([]string{"why", "--user", "carol", "--profile-labels", "gpu=a100", "--server-name", "big"}, asHub...)...)
		for _, want := range []string{"server big of user carol", "25 credits every 5m (policy gpu)",
			"project physics (2000 left) first, then account carol (100 left)", "84 periods (7h)"} {
			if !strings.Contains(r.out, want) {
				t.Errorf("why does not say %q", want)
			}
		}
	})
	t.Run("denied: not enough credits", func(t *testing.T) {
		r := kubectlCredits(t, append([]string{"why", "--user", "bob"}, asHub...)...)
		if r.code != 1 {
			t.Errorf("exit status %d, want 1", r.code)
		}
		for _, want := range []string{"Verdict:    DENIED (NotEnoughCredits)",
			`Why:        Not enough credits to start this server: it costs 10 credits every 10m, and account "bob" has 4 (next +5 in `} {
			if !strings.Contains(r.out, want) {
				t.Errorf("why does not say %q", want)
			}
		}
	})
	t.Run("denied: no account, as JSON", func(t *testing.T) {
		r := kubectlCredits(t, append([]string{"why", "--user", "dave", "-o", "json"}, asHub...)...)
		var got creditscli.WhyResult
		if err := json.Unmarshal([]byte(r.out), &got); err != nil {
			t.Fatalf("not JSON: %v", err)
		}
		if r.code != 1 || got.Admitted || got.Reason != "NoAccount" || got.Message != `No credit account for user "dave" — ask your hub admin.` {
			t.Errorf("exit %d, %+v", r.code, got)
		}
	})
	t.Run("the profile names an account that does not list the user", func(t *testing.T) {
		r := kubectlCredits(t, append([]string{"why", "--user", "bob", "--profile-labels", "hubcredits.io/account=alice"}, asHub...)...)
		if !strings.Contains(r.out, "DENIED (NotMember)") {
			t.Errorf("want a NotMember denial")
		}
	})
	t.Run("a course pool by JupyterHub group", func(t *testing.T) {
		create(t, testutil.MakeAccount(ns, "physics-101").Cap(500).Groups("physics-101").Obj())
		opened(t, ns, "physics-101")
		r := kubectlCredits(t, append([]string{"why", "--user", "zoe", "--groups", "physics-101,staff"}, asHub...)...)
		if r.code != 0 || !strings.Contains(r.out, "Paid by:    account physics-101 (500 left)") {
			t.Errorf("a member of group physics-101: exit %d\n%s", r.code, r.out)
		}
		r = kubectlCredits(t, append([]string{"why", "--user", "zoe", "--groups", "chemistry"}, asHub...)...)
		if r.code != 1 || !strings.Contains(r.out, "DENIED (NoAccount)") {
			t.Errorf("not a member: exit %d\n%s", r.code, r.out)
		}
		r = kubectlCredits(t, "status", "physics-101", "-n", ns)
		if !strings.Contains(r.out, "Groups:      physics-101") {
			t.Errorf("status does not show the pool's groups")
		}
	})
	t.Run("nothing was written", func(t *testing.T) {
		after := getAccount(t, ns, "alice")
		if after.ResourceVersion != before.ResourceVersion || len(after.Status.Servers) != 0 {
			t.Errorf("a dry run changed account alice: resourceVersion %s -> %s, %d servers", before.ResourceVersion, after.ResourceVersion, len(after.Status.Servers))
		}
		var pods corev1.PodList
		if err := admin.List(context.Background(), &pods, client.InNamespace(ns)); err != nil || len(pods.Items) != 0 {
			t.Errorf("a dry run left %d pods (%v)", len(pods.Items), err)
		}
	})
	t.Run("someone who may not impersonate the hub", func(t *testing.T) {
		oneSentence(t, kubectlCreditsWith(t, userKubeconfig(t, "ta"), append([]string{"why", "--user", "alice"}, asHub...)...),
			`User "ta" cannot impersonate`)
	})
	t.Run("a TA with the documented Role", func(t *testing.T) {
		// docs/operations.md: the TA is one of the operator's
		// --dry-run-identities (startOperator), and a Role in the hub's
		// namespace lets them create pods (dry runs: the chart's
		// ValidatingAdmissionPolicy refuses their real pods, see
		// TestWhyRoleForATAGrantsDryRunsOnly) and read the accounts. No
		// impersonation.
		create(t,
			&rbacv1.Role{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hubcredits-why"},
				Rules: []rbacv1.PolicyRule{
					{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"create"}},
					{APIGroups: []string{"hubcredits.io"}, Resources: []string{"creditaccounts"}, Verbs: []string{"get", "list", "watch"}},
				},
			},
			&rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hubcredits-why-ta2"},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "hubcredits-why"},
				Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: taWhy}},
			},
		)
		cfg := userKubeconfig(t, taWhy)
		testutil.Eventually(t, 10*time.Second, func() error {
			r := kubectlCreditsWith(t, cfg, "why", "--user", "alice", "-n", ns)
			if r.code != 0 || !strings.Contains(r.out, "Paid by:    account alice (100 left)") || !strings.Contains(r.out, "Asked as:   "+taWhy) {
				return fmt.Errorf("exit %d: %s", r.code, r.err)
			}
			return nil
		})
	})
	t.Run("bad input", func(t *testing.T) {
		oneSentence(t, kubectlCredits(t, "why", "-n", ns), "--user is required")
		oneSentence(t, kubectlCredits(t, "why", "--user", "alice", "--profile-labels", "gpu", "-n", ns), `--profile-labels: "gpu" is not key=value.`)
	})
}

var topUpLine = regexp.MustCompile(`(?m)^Top-up (kc-\d{8}-\d{6}-[0-9a-f]{6}): \+50 to account alice in namespace \S+\.$`)

func TestTopUp(t *testing.T) {
	ns := newNamespace(t)
	create(t, testutil.MakeAccount(ns, "alice", "alice").Cap(100).Obj())
	opened(t, ns, "alice")

	r := kubectlCredits(t, "top-up", "alice", "50", "--reason", "thesis deadline", "-n", ns)
	m := topUpLine.FindStringSubmatch(r.out)
	if r.code != 0 || m == nil || !strings.Contains(r.out, "Applied: account alice now has 150 credits.") {
		t.Fatalf("top-up: exit %d\n%s%s", r.code, r.out, r.err)
	}
	id := m[1]

	t.Run("the same id again adds nothing", func(t *testing.T) {
		r := kubectlCredits(t, "top-up", "alice", "50", "--reason", "thesis deadline", "--id", id, "-n", ns)
		if r.code != 0 || !strings.Contains(r.out, "Already recorded (the same id and amount): nothing added.") ||
			!strings.Contains(r.out, "now has 150 credits") {
			t.Errorf("repeated top-up: exit %d\n%s", r.code, r.out)
		}
		a := getAccount(t, ns, "alice")
		if len(a.Spec.TopUps) != 1 || a.Status.TotalToppedUp != 50 {
			t.Errorf("after a repeated top-up: %d entries, %d topped up", len(a.Spec.TopUps), a.Status.TotalToppedUp)
		}
	})
	t.Run("the same id for another amount is refused", func(t *testing.T) {
		oneSentence(t, kubectlCredits(t, "top-up", "alice", "60", "--reason", "x", "--id", id, "-n", ns),
			"id "+id+" is already used on account alice for +50 credits; choose another id.")
	})
	t.Run("concurrent top-ups each apply once", func(t *testing.T) {
		const n = 6
		var wg sync.WaitGroup
		codes := make([]int, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes[i] = kubectlCredits(t, "top-up", "alice", fmt.Sprint(i+1), "--reason", "race", "--wait", "0", "-n", ns).code
			}()
		}
		wg.Wait()
		for i, c := range codes {
			if c != 0 {
				t.Errorf("top-up %d: exit status %d", i, c)
			}
		}
		testutil.Eventually(t, 20*time.Second, func() error {
			a := getAccount(t, ns, "alice")
			if len(a.Spec.TopUps) != n+1 || a.Status.Balance != 150+21 || a.Status.TotalToppedUp != 50+21 {
				return fmt.Errorf("%d top-ups, balance %d, topped up %d; want %d, 171, 71", len(a.Spec.TopUps), a.Status.Balance, a.Status.TotalToppedUp, n+1)
			}
			return nil
		})
	})
	t.Run("as JSON", func(t *testing.T) {
		r := kubectlCredits(t, "top-up", "alice", "1", "--reason", "json", "-n", ns, "-o", "json")
		var got creditscli.Movement
		if err := json.Unmarshal([]byte(r.out), &got); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, r.out)
		}
		if r.code != 0 || !got.Recorded || !got.Applied || got.Balance != 172 || got.Amount != 1 {
			t.Errorf("exit %d, %+v", r.code, got)
		}
	})
	t.Run("errors are one sentence", func(t *testing.T) {
		oneSentence(t, kubectlCredits(t, "top-up", "alice", "-5", "--reason", "x", "-n", ns), "use adjust")
		oneSentence(t, kubectlCredits(t, "top-up", "alice", "5", "-n", ns), "--reason is required")
		oneSentence(t, kubectlCredits(t, "top-up", "nobody", "5", "--reason", "x", "-n", ns), `credit account "nobody" not found in namespace `+ns+".")
		oneSentence(t, kubectlCredits(t, "top-up", "alice", "5", "--reason", "x", "--id", "-bad", "-n", ns), `--id "-bad" is not a valid id`)
	})
}

func TestAdjust(t *testing.T) {
	ns := newNamespace(t)
	create(t, testutil.MakeAccount(ns, "alice", "alice").Cap(100).TopUp("welcome", 20).Obj())
	opened(t, ns, "alice")
	testutil.Eventually(t, 20*time.Second, func() error {
		if b := getAccount(t, ns, "alice").Status.Balance; b != 120 {
			return fmt.Errorf("balance %d, want 120", b)
		}
		return nil
	})

	r := kubectlCredits(t, "adjust", "alice", "-30", "--reason", "double grant on 2026-11-02", "-n", ns)
	if r.code != 0 || !regexp.MustCompile(`(?m)^Adjustment kc-\d{8}-\d{6}-[0-9a-f]{6}: -30 to account alice in namespace `).MatchString(r.out) ||
		!strings.Contains(r.out, "Applied: account alice now has 90 credits.") {
		t.Fatalf("adjust -30: exit %d\n%s%s", r.code, r.out, r.err)
	}
	r = kubectlCredits(t, "adjust", "-n", ns, "alice", "-500", "--reason", "course ended", "--id", "course-end")
	if r.code != 0 || !strings.Contains(r.out, "Applied -90 of -500 (the balance never goes below 0): account alice now has 0 credits.") {
		t.Errorf("adjust -500: exit %d\n%s%s", r.code, r.out, r.err)
	}
	r = kubectlCredits(t, "adjust", "alice", "+10", "--reason", "refund for the outage", "-n", ns, "-o", "yaml")
	if r.code != 0 || !strings.Contains(r.out, "kind: Adjust") || !strings.Contains(r.out, "balance: 10") || !strings.Contains(r.out, "appliedAmount: 10") {
		t.Errorf("adjust +10 -o yaml: exit %d\n%s%s", r.code, r.out, r.err)
	}
	t.Run("the same id again adds nothing", func(t *testing.T) {
		r := kubectlCredits(t, "adjust", "alice", "-500", "--reason", "course ended", "--id", "course-end", "-n", ns)
		if r.code != 0 || !strings.Contains(r.out, "Already recorded") {
			t.Errorf("exit %d\n%s", r.code, r.out)
		}
		a := getAccount(t, ns, "alice")
		if a.Status.Balance != 10 || a.Status.TotalAdjusted != -110 || len(a.Spec.Adjustments) != 3 {
			t.Errorf("balance %d, adjusted %d, %d adjustments; want 10, -110, 3", a.Status.Balance, a.Status.TotalAdjusted, len(a.Spec.Adjustments))
		}
	})
	t.Run("the ledger shows them", func(t *testing.T) {
		r := kubectlCredits(t, "status", "alice", "-n", ns)
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`Totals: +charged 0, refunded 0, granted 0, topped up 20, adjusted -110`),
			regexp.MustCompile(`(?m)^ +\S+ +Adjust +-90 +0 +course-end +adjustment course-end of -500 clamped to -90 \(the balance never goes below 0\): course ended$`),
		} {
			if !want.MatchString(r.out) {
				t.Errorf("status shows no line matching %s", want)
			}
		}
	})
	t.Run("ids are shared with top-ups", func(t *testing.T) {
		oneSentence(t, kubectlCredits(t, "adjust", "alice", "5", "--reason", "x", "--id", "welcome", "-n", ns),
			"id welcome already names a top-up of account alice; choose another id.")
		oneSentence(t, kubectlCredits(t, "top-up", "alice", "5", "--reason", "x", "--id", "course-end", "-n", ns),
			"id course-end already names an adjustment of account alice; choose another id.")
	})
	t.Run("bad input", func(t *testing.T) {
		oneSentence(t, kubectlCredits(t, "adjust", "alice", "0", "--reason", "x", "-n", ns), "must not be 0")
		oneSentence(t, kubectlCredits(t, "adjust", "alice", "-1x", "--reason", "x", "-n", ns), "unknown shorthand flag")
		oneSentence(t, kubectlCredits(t, "adjust", "alice", "ten", "--reason", "x", "-n", ns), `AMOUNT "ten" is not a whole number of credits.`)
	})
}

// userKubeconfig is a kubeconfig file of a new user with no permissions
// beyond those of every authenticated user.
func userKubeconfig(t *testing.T, name string) string {
	t.Helper()
	u, err := env.AddUser(envtest.User{Name: name}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := u.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(cfg, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// endServer ends a server the way KubeSpawner does (a graceful delete),
// waits until its accounts dropped it, and removes the pod for good (no
// kubelet here to finish it).
func endServer(t *testing.T, ns, pod string, accounts ...string) {
	t.Helper()
	ctx := context.Background()
	p := &corev1.Pod{}
	if err := admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: pod}, p); err != nil {
		t.Fatal(err)
	}
	if err := hub.Delete(ctx, p, client.GracePeriodSeconds(1)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		for _, a := range accounts {
			if n := len(getAccount(t, ns, a).Status.Servers); n != 0 {
				return fmt.Errorf("account %s still bills %d servers", a, n)
			}
		}
		return nil
	})
	if err := admin.Delete(ctx, p, client.GracePeriodSeconds(0)); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
}

func TestUsage(t *testing.T) {
	ns := newNamespace(t)
	create(t,
		testutil.MakeAccount(ns, "physics").Cap(1000).Obj(),
		testutil.MakeAccount(ns, "alice", "alice").Cap(100).Obj(),
		testutil.MakeAccount(ns, "carol", "carol").Cap(100).Project("physics").Obj(),
		testutil.MakePolicy(ns, "standard").Value(2).Every(2*time.Second).Obj(),
		testutil.MakePolicy(ns, "gpu").Priority(10).Every(2*time.Second).Selecting("gpu", "a100").Value(5).Obj(),
	)
	opened(t, ns, "physics", "alice", "carol")
	spawn(t, ns, "alice")
	spawn(t, ns, "carol", "gpu", "a100")
	testutil.Eventually(t, 20*time.Second, func() error {
		if c := getAccount(t, ns, "physics").Status.TotalCharged; c < 10 {
			return fmt.Errorf("physics charged %d, want two periods of carol's server", c)
		}
		return nil
	})
	endServer(t, ns, "jupyter-alice", "alice")
	endServer(t, ns, "jupyter-carol", "carol", "physics")
	var records hcv1.UsageRecordList
	if err := admin.List(context.Background(), &records, client.InNamespace(ns)); err != nil || len(records.Items) != 2 {
		t.Fatalf("%d usage records (%v), want 2", len(records.Items), err)
	}
	// What the ledgers say each account paid, and the servers' total.
	paid := map[string]int64{}
	var total int64
	for _, name := range []string{"physics", "alice", "carol"} {
		a := getAccount(t, ns, name)
		paid[name] = a.Status.TotalCharged - a.Status.TotalRefunded
		total += paid[name]
	}

	t.Run("by user, account and policy", func(t *testing.T) {
		r := kubectlCredits(t, "usage", "-n", ns, "-o", "json")
		var u creditscli.Usage
		if err := json.Unmarshal([]byte(r.out), &u); err != nil || r.code != 0 {
			t.Fatalf("exit %d, not JSON: %v", r.code, err)
		}
		rows := map[string]creditscli.UsageRow{}
		for _, row := range u.Rows {
			rows[row.Keys["user"]+"/"+row.Keys["account"]+"/"+row.Keys["policy"]] = row
		}
		alice, carol := rows["alice/alice/standard"], rows["carol/carol/gpu"]
		if len(rows) != 2 || alice.Servers != 1 || carol.Servers != 1 || alice.Credits != paid["alice"] ||
			carol.Credits != paid["carol"]+paid["physics"] || u.Total.Credits != total || alice.Periods != paid["alice"]/2 {
			t.Errorf("rows %+v, total %+v; the ledgers paid %v (total %d)", u.Rows, u.Total, paid, total)
		}
		r = kubectlCredits(t, "usage", "-n", ns)
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`(?m)^USER +ACCOUNT +POLICY +SERVERS +PERIODS +RUN TIME +CREDITS$`),
			regexp.MustCompile(fmt.Sprintf(`(?m)^carol +carol +gpu +1 +\d+ +\d+s +%d$`, paid["carol"]+paid["physics"])),
			regexp.MustCompile(fmt.Sprintf(`(?m)^TOTAL +2 +\d+ +\d+s +%d$`, total)),
		} {
			if !want.MatchString(r.out) {
				t.Errorf("the table has no line matching %s", want)
			}
		}
	})
	t.Run("what a pool paid, by payer", func(t *testing.T) {
		r := kubectlCredits(t, "usage", "-n", ns, "--account", "physics", "--by", "payer,user", "-o", "csv")
		want := fmt.Sprintf("payer,user,servers,periods,seconds,credits\nphysics,carol,1,%d,", paid["physics"]/5)
		if r.code != 0 || !strings.HasPrefix(r.out, want) || !strings.HasSuffix(r.out, fmt.Sprintf(",%d\n", paid["physics"])) ||
			strings.Count(r.out, "\n") != 2 {
			t.Errorf("exit %d, want %q... ending in ,%d", r.code, want, paid["physics"])
		}
	})
	t.Run("one user's, by policy", func(t *testing.T) {
		r := kubectlCredits(t, "usage", "-n", ns, "--user", "alice", "--by", "policy", "-o", "yaml")
		if r.code != 0 || !strings.Contains(r.out, "policy: standard") || strings.Contains(r.out, "gpu") ||
			!strings.Contains(r.out, fmt.Sprintf("credits: %d", paid["alice"])) {
			t.Errorf("exit %d\n%s", r.code, r.out)
		}
	})
	t.Run("a window with nothing in it", func(t *testing.T) {
		r := kubectlCredits(t, "usage", "-n", ns, "--user", "nobody")
		if r.code != 0 || !strings.HasPrefix(r.out, "No server ended since ") {
			t.Errorf("exit %d\n%s", r.code, r.out)
		}
	})
	t.Run("bad input", func(t *testing.T) {
		oneSentence(t, kubectlCredits(t, "usage", "-n", ns, "--since", "a month"), `--since "a month" is not a duration`)
		oneSentence(t, kubectlCredits(t, "usage", "-n", ns, "--by", "user,colour"), `"colour" is not one of namespace, user, account, policy, project, payer.`)
		oneSentence(t, kubectlCredits(t, "usage", "-n", ns, "-o", "xml"), `unknown output format "xml"`)
	})
}
