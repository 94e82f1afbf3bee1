package creditscli

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

var now = time.Date(2026, 11, 27, 6, 0, 0, 0, time.UTC)

func TestParseAmount(t *testing.T) {
	cases := map[string]struct {
		in      string
		adjust  bool
		want    int64
		wantErr string
	}{
		"a top-up":                    {in: "50", want: 50},
		"a top-up takes nothing away": {in: "-5", wantErr: "use adjust"},
		"a top-up of 0":               {in: "0", wantErr: "at least 1"},
		"an adjustment down":          {in: "-30", adjust: true, want: -30},
		"an adjustment up with +":     {in: "+10", adjust: true, want: 10},
		"an adjustment of 0":          {in: "0", adjust: true, wantErr: "must not be 0"},
		"not a number":                {in: "ten", wantErr: "not a whole number"},
		"beyond the API":              {in: "-1000000000000001", adjust: true, wantErr: "beyond what the API allows"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := parseAmount(tc.in, tc.adjust)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestNegativeLast(t *testing.T) {
	cases := map[string]struct{ in, want []string }{
		"a negative amount moves behind --": {
			in:   []string{"adjust", "alice", "-30", "--reason", "x"},
			want: []string{"adjust", "alice", "--reason", "x", "--", "-30"},
		},
		"a flag's value stays": {
			in:   []string{"adjust", "alice", "5", "--reason", "-30"},
			want: []string{"adjust", "alice", "5", "--reason", "-30"},
		},
		"after a flag=value": {
			in:   []string{"adjust", "--reason=x", "alice", "-30"},
			want: []string{"adjust", "--reason=x", "alice", "--", "-30"},
		},
		"after --": {
			in:   []string{"adjust", "alice", "--", "-30"},
			want: []string{"adjust", "alice", "--", "-30"},
		},
		"not a number": {
			in:   []string{"status", "-n", "jhub"},
			want: []string{"status", "-n", "jhub"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, negativeLast(tc.in)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestIDs(t *testing.T) {
	id, err := newID(now)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(id, "kc-20261127-060000-") || len(id) != len("kc-20261127-060000-")+6 || checkID(id) != nil {
		t.Errorf("new id %q", id)
	}
	if other, _ := newID(now); other == id {
		t.Errorf("two ids in the same second are equal: %s", id)
	}
	for _, bad := range []string{"-x", "x-", "a b", strings.Repeat("a", 64)} {
		if checkID(bad) == nil {
			t.Errorf("id %q accepted", bad)
		}
	}
}

func TestAddMovement(t *testing.T) {
	account := func() *hcv1.CreditAccount {
		a := testutil.MakeAccount("jhub", "alice", "alice").TopUp("welcome", 20).Applied("welcome").Retired("old").Obj()
		a.Spec.Adjustments = []hcv1.Adjustment{{ID: "fix", Amount: -5, Reason: "x"}}
		return a
	}
	cases := map[string]struct {
		topUp       *hcv1.TopUp
		adjustment  *hcv1.Adjustment
		wantChanged bool
		wantErr     string
		wantTopUps  int
		wantAdjusts int
	}{
		"a new top-up":                      {topUp: &hcv1.TopUp{ID: "new", Amount: 5}, wantChanged: true, wantTopUps: 2, wantAdjusts: 1},
		"the same top-up again":             {topUp: &hcv1.TopUp{ID: "welcome", Amount: 20}, wantTopUps: 1, wantAdjusts: 1},
		"a top-up id for another amount":    {topUp: &hcv1.TopUp{ID: "welcome", Amount: 30}, wantErr: "id welcome is already used on account alice for +20 credits"},
		"a top-up under an adjustment's id": {topUp: &hcv1.TopUp{ID: "fix", Amount: 5}, wantErr: "id fix already names an adjustment"},
		"a retired id":                      {topUp: &hcv1.TopUp{ID: "old", Amount: 5}, wantErr: "id old was applied to account alice before"},
		"a new adjustment":                  {adjustment: &hcv1.Adjustment{ID: "more", Amount: -3}, wantChanged: true, wantTopUps: 1, wantAdjusts: 2},
		"the same adjustment again":         {adjustment: &hcv1.Adjustment{ID: "fix", Amount: -5}, wantTopUps: 1, wantAdjusts: 1},
		"an adjustment for another amount":  {adjustment: &hcv1.Adjustment{ID: "fix", Amount: 5}, wantErr: "for -5 credits"},
		"an adjustment under a top-up's id": {adjustment: &hcv1.Adjustment{ID: "welcome", Amount: 5}, wantErr: "id welcome already names a top-up"},
		"an adjustment under a retired id":  {adjustment: &hcv1.Adjustment{ID: "old", Amount: 5}, wantErr: "never applied again"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := account()
			var changed bool
			var err error
			if tc.topUp != nil {
				changed, err = addTopUp(a, *tc.topUp)
			} else {
				changed, err = addAdjustment(a, *tc.adjustment)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || changed != tc.wantChanged || len(a.Spec.TopUps) != tc.wantTopUps || len(a.Spec.Adjustments) != tc.wantAdjusts {
				t.Errorf("changed %v (%v), %d top-ups, %d adjustments; want %v, %d, %d", changed, err,
					len(a.Spec.TopUps), len(a.Spec.Adjustments), tc.wantChanged, tc.wantTopUps, tc.wantAdjusts)
			}
		})
	}
	full := account()
	for i := len(full.Spec.TopUps); i < maxTopUps; i++ {
		full.Spec.TopUps = append(full.Spec.TopUps, hcv1.TopUp{ID: "t" + strings.Repeat("x", i%50) + string(rune('a'+i%26)), Amount: 1})
	}
	if _, err := addTopUp(full, hcv1.TopUp{ID: "one-more", Amount: 1}); err == nil || !strings.Contains(err.Error(), "the most it can hold") {
		t.Errorf("a 257th top-up: %v", err)
	}
}

func TestParseLabels(t *testing.T) {
	got, err := parseLabels("hubcredits.io/account=physics, gpu=a100")
	if d := cmp.Diff(map[string]string{"hubcredits.io/account": "physics", "gpu": "a100"}, got); d != "" || err != nil {
		t.Errorf("(-want +got):\n%s%v", d, err)
	}
	for _, bad := range []string{"gpu", "=x", "bad key=x", "gpu=not valid"} {
		if _, err := parseLabels(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSpawnPod(t *testing.T) {
	p := spawnPod("jhub", "Alice@example.org", "big", map[string]string{"gpu": "a100"})
	if p.Name != "" || p.GenerateName != "jupyter-alice-example-org--big-dry-run-" {
		t.Errorf("name %q, generateName %q", p.Name, p.GenerateName)
	}
	want := map[string]string{
		"component": "singleuser-server", "gpu": "a100", "hub.jupyter.org/username": "dry-run", "hub.jupyter.org/servername": "big",
	}
	for k, v := range want {
		if p.Labels[k] != v {
			t.Errorf("label %s=%q, want %q", k, p.Labels[k], v)
		}
	}
	if p.Annotations[hcv1.AnnotationUsername] != "Alice@example.org" || p.Annotations[hcv1.AnnotationServerName] != "big" {
		t.Errorf("annotations %v", p.Annotations)
	}
	for _, e := range p.Spec.Containers[0].Env {
		if strings.HasSuffix(e.Name, "_TOKEN") && e.Value != "dry-run" {
			t.Errorf("%s=%q", e.Name, e.Value)
		}
	}
}

func TestDenial(t *testing.T) {
	denied := &apierrors.StatusError{ErrStatus: metav1.Status{
		Code: 403, Reason: metav1.StatusReasonForbidden,
		Message: `admission webhook "pods.hubcredits.io" denied the request: No credit account for user "dave" — ask your hub admin.`,
		Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: hcv1.DenialReasonCause, Message: "NoAccount"}}},
	}}
	reason, msg, ok := denial(denied)
	if !ok || reason != "NoAccount" || msg != `No credit account for user "dave" — ask your hub admin.` {
		t.Errorf("denial: %q %q %v", reason, msg, ok)
	}
	for name, err := range map[string]error{
		"RBAC":             apierrors.NewForbidden(corev1.Resource("pods"), "", errors.New("no")),
		"not an API error": errors.New("dial tcp: refused"),
		"none":             nil,
	} {
		if _, _, ok := denial(err); ok {
			t.Errorf("%s: taken for a denial", name)
		}
	}
}

func TestPeriodsPaid(t *testing.T) {
	cases := map[string]struct {
		value           int64
		wallet, project *Payer
		want            *int64
	}{
		"the wallet alone":            {value: 10, wallet: &Payer{Balance: ptr.To[int64](95)}, want: ptr.To[int64](9)},
		"the pool first":              {value: 25, wallet: &Payer{Balance: ptr.To[int64](100)}, project: &Payer{Balance: ptr.To[int64](2000)}, want: ptr.To[int64](84)},
		"a wallet not created yet":    {value: 10, wallet: &Payer{Name: "wallet-x"}},
		"a free server":               {value: 0, wallet: &Payer{Balance: ptr.To[int64](5)}},
		"a project without a balance": {value: 10, wallet: &Payer{Balance: ptr.To[int64](10)}, project: &Payer{}, want: ptr.To[int64](1)},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, periodsPaid(tc.value, tc.wallet, tc.project)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestStatusText(t *testing.T) {
	g := &GrantStatus{Amount: 5, Interval: "1h", NextAt: now.Add(12 * time.Minute), NextAmount: 5}
	if got := grantText(g, now, true); got != "+5 every 1h (next +5 in 12m, at 2026-11-27T06:12:00Z)" {
		t.Errorf("grant: %s", got)
	}
	g.NextAmount = 0
	if got := grantText(g, now, true); got != "+5 every 1h (next in 12m adds nothing: the balance is at the cap)" {
		t.Errorf("grant at the cap: %s", got)
	}
	if got := paidThrough(&metav1.Time{Time: now.Add(7 * time.Minute)}, now); got != "in 7m (06:07:00Z)" {
		t.Errorf("paid through: %s", got)
	}
	if got := paidThrough(&metav1.Time{Time: now.Add(-90 * time.Second)}, now); got != "1m30s ago (05:58:30Z)" {
		t.Errorf("paid through, past: %s", got)
	}
	pool := hcv1.ServerCharge{Wallet: "alice", Paid: 10}
	if got := paidText(pool, "physics"); got != "10 (for wallet alice)" {
		t.Errorf("pool's entry: %s", got)
	}
	if got := serverState(pool, "physics", now); got != "see wallet alice" {
		t.Errorf("pool's entry state: %s", got)
	}
	if got := ledgerKind(hcv1.LedgerEntry{Kind: hcv1.LedgerCharge, Count: 6}); got != "Charge x6" {
		t.Errorf("ledger kind: %s", got)
	}
}

func TestPrintAccountTable(t *testing.T) {
	views := []AccountStatus{
		{Name: "wallet-alice", Users: []string{"alice"}, Balance: 95, Cap: 100, Project: "physics", RunningServers: 1,
			Grant:      &GrantStatus{Amount: 5, Interval: "1h"},
			Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue}, {Type: "Low", Status: metav1.ConditionTrue}, {Type: "Exhausted", Status: metav1.ConditionFalse}}},
		{Name: "physics", Balance: 1990, Cap: 2000},
	}
	var out bytes.Buffer
	if err := printAccountTable(&out, views, now); err != nil {
		t.Fatal(err)
	}
	want := "NAME           USERS    BALANCE   CAP    GRANT         PROJECT   RUNNING   CONDITIONS\n" +
		"wallet-alice   alice    95        100    +5 every 1h   physics   1         Ready,Low\n" +
		"physics        <none>   1990      2000   <none>        <none>    0         <none>\n"
	if d := cmp.Diff(want, out.String()); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestRecentEvents(t *testing.T) {
	ev := func(reason string, at time.Duration) corev1.Event {
		return corev1.Event{Reason: reason, LastTimestamp: metav1.NewTime(now.Add(at))}
	}
	newAPI := corev1.Event{Reason: "Series", EventTime: metav1.NewMicroTime(now.Add(-time.Minute))}
	got := recentEvents([]corev1.Event{ev("c", -time.Second), ev("a", -time.Hour), newAPI, ev("b", -2*time.Minute)}, 3)
	var reasons []string
	for _, e := range got {
		reasons = append(reasons, e.Reason)
	}
	if d := cmp.Diff([]string{"b", "Series", "c"}, reasons); d != "" {
		t.Errorf("the 3 most recent, oldest first (-want +got):\n%s", d)
	}
}

func TestSentence(t *testing.T) {
	cases := map[string]struct {
		err  error
		want string
	}{
		"an API error is its message": {err: apierrors.NewNotFound(hcv1.GroupVersion.WithResource("creditaccounts").GroupResource(), "bob"),
			want: `creditaccounts.hubcredits.io "bob" not found.`},
		"a full stop is not doubled": {err: &apierrors.StatusError{ErrStatus: metav1.Status{Message: "done."}}, want: "done."},
		"lines are joined":           {err: errors.New("a\nb"), want: "a b."},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := sentence(tc.err); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestAccountStatusShowsPagedServers: a pool's servers beyond the 64 of
// status.servers are on its LedgerPages; status shows them too (as the
// pages are once the account's pending transfers are applied), not only
// the inline ones.
func TestAccountStatusShowsPagedServers(t *testing.T) {
	entry := func(id, user string, ended bool) hcv1.ServerCharge {
		e := hcv1.ServerCharge{ID: id, Pod: "jupyter-" + user, User: user, Wallet: "lab", PeriodsPaid: 1, Paid: 10}
		if ended {
			e.EndedAt = &metav1.Time{Time: now}
		}
		return e
	}
	a := &hcv1.CreditAccount{ObjectMeta: metav1.ObjectMeta{Name: "lab", Namespace: "jhub"}}
	a.Status.Servers = []hcv1.ServerCharge{entry("r0", "u0", false)}
	a.Status.Pages = 2
	added := entry("r3", "u3", false)
	a.Status.Pending = []hcv1.PageTransfer{{Page: 2, Seq: 1, Kind: hcv1.TransferReserve, Entries: []hcv1.PageDelta{{ID: "r3", Add: &added}}}}
	page := &hcv1.LedgerPage{ObjectMeta: metav1.ObjectMeta{Name: "lab-1", Namespace: "jhub"}, Spec: hcv1.LedgerPageSpec{Account: "lab"},
		Status: hcv1.LedgerPageStatus{Seq: 4, Servers: []hcv1.ServerCharge{entry("r1", "u1", false), entry("r2", "u2", true)}}}
	v, err := accountStatus(a, []hcv1.LedgerPage{*page}, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	var users []string
	for _, s := range v.Servers {
		users = append(users, s.User)
	}
	if d := cmp.Diff([]string{"u0", "u1", "u3"}, users); d != "" {
		t.Errorf("servers shown (-want +got):\n%s", d)
	}
	// A page of another account of the namespace is not this one's.
	other := page.DeepCopy()
	other.Name, other.Spec.Account = "lab2-1", "lab2"
	if v, err = accountStatus(a, []hcv1.LedgerPage{*other}, nil, now); err != nil || len(v.Servers) != 2 {
		t.Errorf("with another account's page: %d servers (%v), want 2", len(v.Servers), err)
	}
}
