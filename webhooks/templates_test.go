package webhooks

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/testutil"
	"github.com/hubcredits/hubcredits/internal/testutil/fakeclient"
)

// physicsTemplate gives members of physics-101 a wallet of cap 50 that
// opens at 30, with 5 credits an hour.
func physicsTemplate() *testutil.TemplateWrapper {
	return testutil.MakeTemplate(testNS, "physics", "physics-101").Cap(50).InitialBalance(30).Grant(5, time.Hour)
}

// groupPod is bob's server, as the hub creates it for a member of groups
// (a JSON list).
func groupPod(user, groups string) *testutil.PodWrapper {
	return testutil.MakeKubeSpawnerPod(testNS, user, "").Annotation(hcv1.AnnotationGroups, groups)
}

func TestPodAdmitterCreatesWalletsFromGroupTemplates(t *testing.T) {
	cases := map[string]struct {
		objs       []client.Object
		autoCreate *WalletTemplate
		user       string
		groups     string
		// wantWallet is the account billed ("" when denied).
		wantWallet   string
		wantReason   string
		wantMsg      string
		wantSpec     *hcv1.CreditAccountSpec // of wallet-<user>, when created
		wantTemplate string                  // its hubcredits.io/template label
		wantHoldings map[string]holding
	}{
		"a member of a templated group gets the template's wallet": {
			objs:       []client.Object{physicsTemplate().Obj()},
			user:       "bob",
			groups:     `["staff","physics-101"]`,
			wantWallet: "wallet-bob",
			wantSpec: &hcv1.CreditAccountSpec{Users: []string{"bob"}, Cap: 50, InitialBalance: ptr.To[int64](30),
				Grant: &hcv1.Grant{Amount: 5, Interval: metav1.Duration{Duration: time.Hour}}},
			wantTemplate: "physics",
			wantHoldings: map[string]holding{
				"wallet-bob": {Balance: 20, Servers: []entry{reserved("jupyter-bob", "bob", "wallet-bob", 10, 10)}},
			},
		},
		"the template's project pays first for the created wallet": {
			objs:         []client.Object{physicsTemplate().Project("physics-pool").Obj(), openAccount("physics-pool").Obj()},
			user:         "bob",
			groups:       `["physics-101"]`,
			wantWallet:   "wallet-bob",
			wantTemplate: "physics",
			wantSpec: &hcv1.CreditAccountSpec{Users: []string{"bob"}, Cap: 50, InitialBalance: ptr.To[int64](30),
				Grant: &hcv1.Grant{Amount: 5, Interval: metav1.Duration{Duration: time.Hour}}, Project: "physics-pool"},
			wantHoldings: map[string]holding{
				"physics-pool": {Balance: 90, Servers: []entry{reserved("jupyter-bob", "bob", "wallet-bob", 10, 10)}},
				"wallet-bob":   {Balance: 30, Servers: []entry{reserved("jupyter-bob", "bob", "wallet-bob", 10, 0).project("physics-pool", 10)}},
			},
		},
		"a template whose project does not exist: the wallet is created, the spawn denied": {
			objs:         []client.Object{physicsTemplate().Project("physics-pool").Obj()},
			user:         "bob",
			groups:       `["physics-101"]`,
			wantReason:   "ProjectMissing",
			wantMsg:      `Credit account "wallet-bob" is funded by project "physics-pool", which does not exist — ask your hub admin.`,
			wantTemplate: "physics",
			wantSpec: &hcv1.CreditAccountSpec{Users: []string{"bob"}, Cap: 50, InitialBalance: ptr.To[int64](30),
				Grant: &hcv1.Grant{Amount: 5, Interval: metav1.Duration{Duration: time.Hour}}, Project: "physics-pool"},
			wantHoldings: map[string]holding{"wallet-bob": {}},
		},
		"not a member of a templated group, no global template: denied": {
			objs:         []client.Object{physicsTemplate().Obj()},
			user:         "bob",
			groups:       `["history"]`,
			wantReason:   "NoAccount",
			wantMsg:      `No credit account for user "bob" — ask your hub admin.`,
			wantHoldings: map[string]holding{},
		},
		"no groups at all: denied": {
			objs:         []client.Object{physicsTemplate().Obj()},
			user:         "bob",
			groups:       `[]`,
			wantReason:   "NoAccount",
			wantMsg:      `No credit account for user "bob" — ask your hub admin.`,
			wantHoldings: map[string]holding{},
		},
		"the global template is the fallback for a user matching no template": {
			objs:         []client.Object{physicsTemplate().Obj()},
			autoCreate:   &WalletTemplate{Cap: 20},
			user:         "bob",
			groups:       `["history"]`,
			wantWallet:   "wallet-bob",
			wantSpec:     &hcv1.CreditAccountSpec{Users: []string{"bob"}, Cap: 20},
			wantHoldings: map[string]holding{"wallet-bob": {Balance: 10, Servers: []entry{reserved("jupyter-bob", "bob", "wallet-bob", 10, 10)}}},
		},
		"a template before the global template": {
			objs:         []client.Object{physicsTemplate().Obj()},
			autoCreate:   &WalletTemplate{Cap: 20},
			user:         "bob",
			groups:       `["physics-101"]`,
			wantWallet:   "wallet-bob",
			wantTemplate: "physics",
			wantSpec: &hcv1.CreditAccountSpec{Users: []string{"bob"}, Cap: 50, InitialBalance: ptr.To[int64](30),
				Grant: &hcv1.Grant{Amount: 5, Interval: metav1.Duration{Duration: time.Hour}}},
			wantHoldings: map[string]holding{"wallet-bob": {Balance: 20, Servers: []entry{reserved("jupyter-bob", "bob", "wallet-bob", 10, 10)}}},
		},
		"a group pool before a template": {
			objs:         []client.Object{physicsTemplate().Obj(), openAccount("physics-101").Groups("physics-101").Obj()},
			user:         "bob",
			groups:       `["physics-101"]`,
			wantWallet:   "physics-101",
			wantHoldings: map[string]holding{"physics-101": {Balance: 90, Servers: []entry{reserved("jupyter-bob", "bob", "physics-101", 10, 10)}}},
		},
		"an account listing the user by name before a template": {
			objs:         []client.Object{physicsTemplate().Obj(), openAccount("bob", "bob").Obj()},
			user:         "bob",
			groups:       `["physics-101"]`,
			wantWallet:   "bob",
			wantHoldings: map[string]holding{"bob": {Balance: 90, Servers: []entry{reserved("jupyter-bob", "bob", "bob", 10, 10)}}},
		},
		"two templates list the user's groups: the name sorting first": {
			objs: []client.Object{
				physicsTemplate().Obj(),
				testutil.MakeTemplate(testNS, "a-staff", "staff").Cap(200).Obj(),
			},
			user:         "bob",
			groups:       `["physics-101","staff"]`,
			wantWallet:   "wallet-bob",
			wantTemplate: "a-staff",
			wantSpec:     &hcv1.CreditAccountSpec{Users: []string{"bob"}, Cap: 200},
			wantHoldings: map[string]holding{"wallet-bob": {Balance: 190, Servers: []entry{reserved("jupyter-bob", "bob", "wallet-bob", 10, 10)}}},
		},
		"a template of another namespace does not apply": {
			objs:         []client.Object{testutil.MakeTemplate("other", "physics", "physics-101").Obj()},
			user:         "bob",
			groups:       `["physics-101"]`,
			wantReason:   "NoAccount",
			wantMsg:      `No credit account for user "bob" — ask your hub admin.`,
			wantHoldings: map[string]holding{},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			env := newWebhookEnv(tc.objs...)
			env.h.AutoCreate = tc.autoCreate
			env.h.NewWallets = &WalletGuard{PerMinute: 10}
			req := makeRequest(t, groupPod(tc.user, tc.groups).Obj()).Obj()

			resp := env.h.Handle(context.Background(), req)

			if tc.wantWallet == "" {
				if resp.Allowed {
					t.Fatalf("admitted, want the denial %s", tc.wantReason)
				}
				if denialReason(resp) != tc.wantReason || message(resp) != tc.wantMsg {
					t.Errorf("denial %s %q, want %s %q", denialReason(resp), message(resp), tc.wantReason, tc.wantMsg)
				}
			} else {
				if !resp.Allowed {
					t.Fatalf("denied: %s", message(resp))
				}
				if got := pinned(applyPatch(t, req, resp))[hcv1.AnnotationAccount]; got != tc.wantWallet {
					t.Errorf("billed to %q, want %q", got, tc.wantWallet)
				}
			}
			created := &hcv1.CreditAccount{}
			err := env.api.Get(context.Background(), client.ObjectKey{Namespace: testNS, Name: billing.WalletName(tc.user)}, created)
			switch {
			case tc.wantSpec == nil && err == nil && tc.wantWallet != billing.WalletName(tc.user):
				t.Errorf("created %s (%+v)", created.Name, created.Spec)
			case tc.wantSpec != nil && err != nil:
				t.Fatalf("the wallet was not created: %v", err)
			case tc.wantSpec != nil:
				if d := testutil.Diff(*tc.wantSpec, created.Spec); d != "" {
					t.Errorf("spec (-want +got):\n%s", d)
				}
				wantLabels := map[string]string{hcv1.LabelAutoCreated: "true"}
				if tc.wantTemplate != "" {
					wantLabels[hcv1.LabelTemplate] = tc.wantTemplate
				}
				if d := testutil.Diff(wantLabels, created.Labels); d != "" {
					t.Errorf("labels (-want +got):\n%s", d)
				}
			}
			if d := testutil.Diff(tc.wantHoldings, withoutPools(holdings(t, env.api), tc.objs)); d != "" {
				t.Errorf("accounts (-want +got):\n%s", d)
			}
		})
	}
}

// withoutPools leaves out of got the accounts of objs that admission did
// not touch (they hold what they held), so a case lists only what changed.
func withoutPools(got map[string]holding, objs []client.Object) map[string]holding {
	for _, o := range objs {
		if a, ok := o.(*hcv1.CreditAccount); ok {
			if h, ok := got[a.Name]; ok && h.Balance == a.Status.Balance && len(h.Servers) == 0 {
				delete(got, a.Name)
			}
		}
	}
	return got
}

// A dry run prices as if the template's wallet existed and creates nothing.
func TestPodAdmitterDryRunDoesNotCreateTemplateWallets(t *testing.T) {
	cases := map[string]struct {
		template    *hcv1.CreditAccountTemplate
		wantAllowed bool
		wantReason  string
	}{
		"the template's wallet could pay": {
			template:    physicsTemplate().Obj(),
			wantAllowed: true,
		},
		"the template's wallet could not pay": {
			template:   physicsTemplate().InitialBalance(5).Obj(),
			wantReason: "NotEnoughCredits",
		},
		"the template's project does not exist": {
			template:   physicsTemplate().Project("physics-pool").Obj(),
			wantReason: "ProjectMissing",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			env := newWebhookEnv(tc.template)
			env.h.NewWallets = &WalletGuard{PerMinute: 1}
			req := makeRequest(t, groupPod("bob", `["physics-101"]`).Obj()).DryRun().Obj()

			resp := env.h.Handle(context.Background(), req)

			if resp.Allowed != tc.wantAllowed {
				t.Fatalf("allowed %v (%s), want %v", resp.Allowed, message(resp), tc.wantAllowed)
			}
			if tc.wantAllowed {
				if got := pinned(applyPatch(t, req, resp))[hcv1.AnnotationAccount]; got != "wallet-bob" {
					t.Errorf("priced for %q, want wallet-bob", got)
				}
			} else if denialReason(resp) != tc.wantReason {
				t.Errorf("denial %s (%s), want %s", denialReason(resp), message(resp), tc.wantReason)
			}
			if got := versions(t, env.api); len(got) != 0 {
				t.Fatalf("a dry run created accounts %v", got)
			}
			// Nor did it spend the creation budget: a real spawn still may.
			if _, err := env.h.NewWallets.allow(context.Background(), "bob"); err != nil {
				t.Errorf("the dry run spent the wallet budget: %v", err)
			}
		})
	}
}

// A template created a moment ago, not yet in the informer cache, is read
// live; the cache is asked first.
func TestPodAdmitterTemplateNotYetCached(t *testing.T) {
	api := fakeclient.New(nil, physicsTemplate().Obj())
	var cacheLists int
	staleCache := fakeclient.New(&interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if _, ok := list.(*hcv1.CreditAccountTemplateList); ok {
				cacheLists++
			}
			return c.List(ctx, list, opts...)
		},
	})
	env := newWebhookEnvWith(staleCache, api, api)

	resp := env.h.Handle(context.Background(), makeRequest(t, groupPod("bob", `["physics-101"]`).Obj()).Obj())

	if !resp.Allowed {
		t.Fatalf("denied: %s", message(resp))
	}
	if cacheLists != 1 {
		t.Errorf("the cache was asked for templates %d times, want 1", cacheLists)
	}
	if a := testutil.GetAccount(t, api, testNS, "wallet-bob"); a.Labels[hcv1.LabelTemplate] != "physics" {
		t.Errorf("wallet-bob's labels %v", a.Labels)
	}
}

// Without the CreditAccountTemplate API (its CRD not applied), templates
// are ignored, and the operator's template still applies.
func TestPodAdmitterNoTemplates(t *testing.T) {
	env := newWebhookEnv(physicsTemplate().Obj())
	env.h.NoTemplates = true
	env.h.AutoCreate = &WalletTemplate{Cap: 20}

	resp := env.h.Handle(context.Background(), makeRequest(t, groupPod("bob", `["physics-101"]`).Obj()).Obj())

	if !resp.Allowed {
		t.Fatalf("denied: %s", message(resp))
	}
	if a := testutil.GetAccount(t, env.api, testNS, "wallet-bob"); a.Spec.Cap != 20 || a.Labels[hcv1.LabelTemplate] != "" {
		t.Errorf("wallet-bob: cap %d, labels %v; want the operator's template", a.Spec.Cap, a.Labels)
	}
}

// Over the creation limit, a spawn whose wallet a concurrent spawn has
// just created pays from it instead of being denied.
func TestPodAdmitterLimitedSpawnFindsTheWalletOfAConcurrentSpawn(t *testing.T) {
	api := fakeclient.New(nil, physicsTemplate().Obj(), testutil.MakeAccount(testNS, "wallet-bob", "bob").Obj())
	// The concurrent spawn's create lands after this spawn looked for
	// bob's accounts (in the cache and live) and found none.
	late := interceptor.NewClient(api, interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if _, ok := list.(*hcv1.CreditAccountList); ok {
				return nil
			}
			return c.List(ctx, list, opts...)
		},
	})
	env := newWebhookEnvWith(late, api, late)
	env.h.NewWallets = &WalletGuard{PerMinute: 1}
	if _, err := env.h.NewWallets.allow(context.Background(), "someone"); err != nil {
		t.Fatal(err) // spends the budget
	}

	resp := env.h.Handle(context.Background(), makeRequest(t, groupPod("bob", `["physics-101"]`).Obj()).Obj())

	if !resp.Allowed {
		t.Fatalf("denied: %s", message(resp))
	}
	if got := testutil.GetAccount(t, api, testNS, "wallet-bob").Status.Balance; got != 90 {
		t.Errorf("wallet-bob balance %d, want 90", got)
	}
}
