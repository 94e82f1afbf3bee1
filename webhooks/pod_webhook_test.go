package webhooks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
	"github.com/hubcredits/hubcredits/internal/testutil/fakeclient"
)

// reserved is the wallet entry of a server whose wallet paid its first period.
func reserved(pod, user, wallet string, value, paid int64) entry {
	return entry{ID: reqUID, Pod: pod, User: user, Wallet: wallet, Value: value, Paid: paid, PeriodsPaid: 1, Interval: 10 * time.Minute}
}

func (e entry) policy(p string, every time.Duration) entry { e.Policy, e.Interval = p, every; return e }
func (e entry) server(s string) entry                      { e.ServerName = s; return e }
func (e entry) project(p string, paid int64) entry         { e.Project, e.ProjectPaid = p, paid; return e }

func pins(account, value, interval, policy string) map[string]string {
	return map[string]string{
		hcv1.AnnotationAccount:         account,
		hcv1.AnnotationBillingValue:    value,
		hcv1.AnnotationBillingInterval: interval,
		hcv1.AnnotationPolicy:          policy,
		hcv1.AnnotationReservation:     reqUID,
	}
}

func with(m map[string]string, k, v string) map[string]string {
	out := map[string]string{}
	for a, b := range m {
		out[a] = b
	}
	if v == "" {
		delete(out, k)
	} else {
		out[k] = v
	}
	return out
}

func TestPodAdmitterAdmitsAndReserves(t *testing.T) {
	gpu := storedPolicy("gpu").Priority(10).Every(5*time.Minute).Selecting("hubcredits.io/policy", "gpu").
		ValueExpr("25 * quantity(pod.spec.containers[0].resources.requests['nvidia.com/gpu']).asInteger()").Obj()
	cases := map[string]struct {
		objs         []client.Object
		pod          *corev1.Pod
		wantPinned   map[string]string
		wantMessage  string
		wantHoldings map[string]holding
	}{
		"the wallet pays the default price": {
			objs:        []client.Object{openAccount("alice", "alice").Obj()},
			pod:         testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj(),
			wantPinned:  pins("alice", "10", "10m0s", ""),
			wantMessage: "This server costs 10 credits every 10m.",
			wantHoldings: map[string]holding{
				"alice": {Balance: 90, Servers: []entry{reserved("jupyter-alice", "alice", "alice", 10, 10)}},
			},
		},
		"a policy sets the price": {
			objs: []client.Object{
				openAccount("alice", "alice").Obj(),
				storedPolicy("large").Priority(10).Value(25).Every(5*time.Minute).Selecting("size", "large").Obj(),
				storedPolicy("default").Value(10).Obj(),
			},
			pod:         testutil.MakeKubeSpawnerPod(testNS, "alice", "").Label("size", "large").Obj(),
			wantPinned:  pins("alice", "25", "5m0s", "large"),
			wantMessage: "This server costs 25 credits every 5m.",
			wantHoldings: map[string]holding{
				"alice": {Balance: 75, Servers: []entry{reserved("jupyter-alice", "alice", "alice", 25, 25).policy("large", 5*time.Minute)}},
			},
		},
		"CEL prices two GPUs": {
			objs:       []client.Object{openAccount("alice", "alice").Obj(), gpu},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "alice", "").Label("hubcredits.io/policy", "gpu").GPUs("2").Obj(),
			wantPinned: pins("alice", "50", "5m0s", "gpu"),
			wantHoldings: map[string]holding{
				"alice": {Balance: 50, Servers: []entry{reserved("jupyter-alice", "alice", "alice", 50, 50).policy("gpu", 5*time.Minute)}},
			},
		},
		"a member of a course's group spends from the course pool": {
			objs: []client.Object{openAccount("physics-101").Groups("physics-101").Obj()},
			pod:  testutil.MakeKubeSpawnerPod(testNS, "bob", "").Annotation(hcv1.AnnotationGroups, `["staff","physics-101"]`).Obj(),
			wantPinned: func() map[string]string {
				m := pins("physics-101", "10", "10m0s", "")
				m[hcv1.AnnotationGroups] = `["staff","physics-101"]` // the hub's, kept
				return m
			}(),
			wantHoldings: map[string]holding{
				"physics-101": {Balance: 90, Servers: []entry{reserved("jupyter-bob", "bob", "physics-101", 10, 10)}},
			},
		},
		"a policy prices by the user's groups": {
			objs: []client.Object{
				openAccount("alice", "alice").Obj(),
				storedPolicy("staff").Priority(10).Match("'staff' in groups").Value(1).Obj(),
				storedPolicy("default").Value(10).Obj(),
			},
			pod: testutil.MakeKubeSpawnerPod(testNS, "alice", "").Annotation(hcv1.AnnotationGroups, `["staff"]`).Obj(),
			wantPinned: func() map[string]string {
				m := pins("alice", "1", "10m0s", "staff")
				m[hcv1.AnnotationGroups] = `["staff"]`
				return m
			}(),
			wantHoldings: map[string]holding{
				"alice": {Balance: 99, Servers: []entry{reserved("jupyter-alice", "alice", "alice", 1, 1).policy("staff", 10*time.Minute)}},
			},
		},
		"the profile's account label picks among the user's accounts": {
			objs: []client.Object{openAccount("alice", "alice").Obj(), openAccount("physics", "alice", "bob").Obj()},
			pod:  testutil.MakeKubeSpawnerPod(testNS, "alice", "").Label(hcv1.LabelAccount, "physics").Obj(),
			// The label and the pinned account share the key hubcredits.io/account.
			wantPinned: pins("physics", "10", "10m0s", ""),
			wantHoldings: map[string]holding{
				"alice":   {Balance: 100},
				"physics": {Balance: 90, Servers: []entry{reserved("jupyter-alice", "alice", "physics", 10, 10)}},
			},
		},
		"a named server": {
			objs:       []client.Object{openAccount("alice", "alice").Obj()},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "alice", "gpu").Obj(),
			wantPinned: pins("alice", "10", "10m0s", ""),
			wantHoldings: map[string]holding{
				"alice": {Balance: 90, Servers: []entry{reserved("jupyter-alice--gpu", "alice", "alice", 10, 10).server("gpu")}},
			},
		},
		"a free server at balance 0 is admitted without a reservation": {
			objs:       []client.Object{openAccount("alice", "alice").Balance(0).Obj(), storedPolicy("free").Value(0).Obj()},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj(),
			wantPinned: with(pins("alice", "0", "10m0s", "free"), hcv1.AnnotationReservation, ""),
			wantHoldings: map[string]holding{
				"alice": {Balance: 0},
			},
		},
		"the project pool pays first, the wallet the rest": {
			objs: []client.Object{
				openAccount("physics").Balance(4).Obj(),
				openAccount("alice", "alice").Project("physics").Obj(),
			},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj(),
			wantPinned: with(pins("alice", "10", "10m0s", ""), hcv1.AnnotationProject, "physics"),
			wantHoldings: map[string]holding{
				"physics": {Balance: 0, Servers: []entry{reserved("jupyter-alice", "alice", "alice", 10, 4)}},
				"alice":   {Balance: 94, Servers: []entry{reserved("jupyter-alice", "alice", "alice", 10, 6).project("physics", 4)}},
			},
		},
		"the project pool pays it all": {
			objs: []client.Object{
				openAccount("physics").Balance(50).Obj(),
				openAccount("alice", "alice").Project("physics").Obj(),
			},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj(),
			wantPinned: with(pins("alice", "10", "10m0s", ""), hcv1.AnnotationProject, "physics"),
			wantHoldings: map[string]holding{
				"physics": {Balance: 40, Servers: []entry{reserved("jupyter-alice", "alice", "alice", 10, 10)}},
				"alice":   {Balance: 100, Servers: []entry{reserved("jupyter-alice", "alice", "alice", 10, 0).project("physics", 10)}},
			},
		},
		"an empty project pool: the wallet pays it all and the pool keeps no entry": {
			objs: []client.Object{
				openAccount("physics").Balance(0).Obj(),
				openAccount("alice", "alice").Project("physics").Obj(),
			},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj(),
			wantPinned: with(pins("alice", "10", "10m0s", ""), hcv1.AnnotationProject, "physics"),
			wantHoldings: map[string]holding{
				"physics": {Balance: 0},
				"alice":   {Balance: 90, Servers: []entry{reserved("jupyter-alice", "alice", "alice", 10, 10).project("physics", 0)}},
			},
		},
		"a pool that also lists the user does not make the wallet ambiguous": {
			objs: []client.Object{
				openAccount("physics", "alice", "bob").Balance(4).Obj(),
				openAccount("alice", "alice").Project("physics").Obj(),
			},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj(),
			wantPinned: with(pins("alice", "10", "10m0s", ""), hcv1.AnnotationProject, "physics"),
			wantHoldings: map[string]holding{
				"physics": {Balance: 0, Servers: []entry{reserved("jupyter-alice", "alice", "alice", 10, 4)}},
				"alice":   {Balance: 94, Servers: []entry{reserved("jupyter-alice", "alice", "alice", 10, 6).project("physics", 4)}},
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			env := newWebhookEnv(tc.objs...)
			req := makeRequest(t, tc.pod).Obj()

			resp := env.h.Handle(context.Background(), req)

			if !resp.Allowed {
				t.Fatalf("denied: %s", message(resp))
			}
			assertNoToken(t, resp)
			if tc.wantMessage != "" && message(resp) != tc.wantMessage {
				t.Errorf("message %q, want %q", message(resp), tc.wantMessage)
			}
			got := applyPatch(t, req, resp)
			if d := testutil.Diff(tc.wantPinned, pinned(got)); d != "" {
				t.Errorf("pinned annotations (-want +got):\n%s", d)
			}
			// KubeSpawner's own annotations survive the patch.
			if got.Annotations[hcv1.AnnotationUsername] != tc.pod.Annotations[hcv1.AnnotationUsername] ||
				got.Annotations["hub.jupyter.org/kubespawner-version"] != "7.1.0" {
				t.Errorf("the patch lost KubeSpawner's annotations: %v", got.Annotations)
			}
			if d := testutil.Diff(tc.wantHoldings, holdings(t, env.api)); d != "" {
				t.Errorf("accounts (-want +got):\n%s", d)
			}
		})
	}
}

func TestPodAdmitterDenies(t *testing.T) {
	gpu := storedPolicy("gpu").Priority(10).Every(5*time.Minute).Selecting("hubcredits.io/policy", "gpu").
		ValueExpr("25 * quantity(pod.spec.containers[0].resources.requests['nvidia.com/gpu']).asInteger()").Obj()
	cases := map[string]struct {
		objs     []client.Object
		pod      *corev1.Pod
		by       string
		creators []string
		wantMsg  string
		// wantReason is the reason in the denial's Status details.
		wantReason string
		// wantEvent is "Kind/name Reason" of the Warning Event the admin
		// finds.
		wantEvent string
	}{
		"not enough credits": {
			objs:       []client.Object{openAccount("alice", "alice").Balance(4).Grant(5, 3*time.Minute).Obj()},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj(),
			wantEvent:  "CreditAccount/alice NotEnoughCredits",
			wantMsg:    `Not enough credits to start this server: it costs 10 credits every 10m, and account "alice" has 4 (next +5 in 3m).`,
			wantReason: "NotEnoughCredits",
		},
		"not enough credits in the pool and the wallet together": {
			objs: []client.Object{
				openAccount("physics").Balance(2).Obj(),
				openAccount("alice", "alice").Balance(3).Project("physics").Obj(),
			},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj(),
			wantEvent:  "CreditAccount/alice NotEnoughCredits",
			wantMsg:    `Not enough credits to start this server: it costs 10 credits every 10m, and project "physics" has 2 and account "alice" has 3.`,
			wantReason: "NotEnoughCredits",
		},
		"the user is not in the named account": {
			objs:       []client.Object{openAccount("physics", "alice").Obj(), openAccount("bob", "bob").Obj()},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "bob", "").Label(hcv1.LabelAccount, "physics").Obj(),
			wantEvent:  "CreditAccount/physics NotMember",
			wantMsg:    `User "bob" may not spend from credit account "physics" (it does not list them) — ask your hub admin.`,
			wantReason: "NotMember",
		},
		"the named account is missing": {
			objs:       []client.Object{openAccount("bob", "bob").Obj()},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "bob", "").Label(hcv1.LabelAccount, "chemistry").Obj(),
			wantEvent:  "CreditAccount/chemistry AccountMissing",
			wantMsg:    `Credit account "chemistry", chosen by this server's profile, does not exist — ask your hub admin.`,
			wantReason: "AccountMissing",
		},
		"no account": {
			objs:       []client.Object{openAccount("alice", "alice").Obj()},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "dave", "").Obj(),
			wantEvent:  "CreditAccount/wallet-dave NoAccount",
			wantMsg:    `No credit account for user "dave" — ask your hub admin.`,
			wantReason: "NoAccount",
		},
		"two candidate accounts": {
			objs:       []client.Object{openAccount("carol-b", "carol").Obj(), openAccount("carol-a", "carol").Obj()},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "carol", "").Obj(),
			wantEvent:  "Pod/jupyter-carol AmbiguousAccount",
			wantMsg:    `User "carol" is in several credit accounts (carol-a, carol-b) and this server's profile names none — ask your hub admin to set the label hubcredits.io/account.`,
			wantReason: "AmbiguousAccount",
		},
		"no username annotation": {
			objs:       []client.Object{openAccount("erin", "erin").Obj()},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "erin", "").NoUsername().Obj(),
			wantEvent:  "Pod/jupyter-erin MissingUsername",
			wantMsg:    `This server's pod has no hub.jupyter.org/username annotation, so hubcredits cannot tell who pays for it.`,
			wantReason: "MissingUsername",
		},
		"a policy cannot price the pod": {
			objs:       []client.Object{openAccount("alice", "alice").Obj(), gpu},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "alice", "").Label("hubcredits.io/policy", "gpu").Obj(),
			wantEvent:  "Pod/jupyter-alice PriceError",
			wantMsg:    `Cannot price this server: billing policy "gpu" failed on it — ask your hub admin.`,
			wantReason: "PriceError",
		},
		"the wallet's project pool is missing": {
			objs:       []client.Object{openAccount("alice", "alice").Project("ghost").Obj()},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj(),
			wantEvent:  "CreditAccount/alice ProjectMissing",
			wantMsg:    `Credit account "alice" is funded by project "ghost", which does not exist — ask your hub admin.`,
			wantReason: "ProjectMissing",
		},
		"the wallet's project pool names a project itself": {
			objs: []client.Object{
				openAccount("faculty").Obj(),
				openAccount("physics").Project("faculty").Obj(),
				openAccount("alice", "alice").Project("physics").Obj(),
			},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj(),
			wantEvent:  "CreditAccount/alice ProjectMissing",
			wantMsg:    `Credit account "alice" is funded by "physics", which is not a project pool (it names a project itself) — ask your hub admin.`,
			wantReason: "ProjectMissing",
		},
		"not in the course's group": {
			objs:       []client.Object{openAccount("physics-101").Groups("physics-101").Obj()},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "carol", "").Annotation(hcv1.AnnotationGroups, `["chem-201"]`).Obj(),
			wantEvent:  "CreditAccount/wallet-carol NoAccount",
			wantMsg:    `No credit account for user "carol" — ask your hub admin.`,
			wantReason: "NoAccount",
		},
		"the profile names the course, the user is not in its group": {
			objs: []client.Object{openAccount("physics-101").Groups("physics-101").Obj()},
			pod: testutil.MakeKubeSpawnerPod(testNS, "carol", "").Label(hcv1.LabelAccount, "physics-101").
				Annotation(hcv1.AnnotationGroups, `["chem-201"]`).Obj(),
			wantEvent:  "CreditAccount/physics-101 NotMember",
			wantMsg:    `User "carol" may not spend from credit account "physics-101" (it does not list them) — ask your hub admin.`,
			wantReason: "NotMember",
		},
		"the hub's groups annotation cannot be read": {
			objs:       []client.Object{openAccount("physics-101").Groups("physics-101").Obj()},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "bob", "").Annotation(hcv1.AnnotationGroups, `physics-101`).Obj(),
			wantEvent:  "Pod/jupyter-bob InvalidGroups",
			wantMsg:    `This server's pod carries a hubcredits.io/groups annotation that is not a list of JupyterHub group names, so hubcredits cannot tell who pays for it — ask your hub admin.`,
			wantReason: "InvalidGroups",
		},
		"a username longer than a usage record holds, through a group": {
			objs:       []client.Object{openAccount("physics-101").Groups("physics-101").Obj()},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "bob", "").User(strings.Repeat("b", 256)).Annotation(hcv1.AnnotationGroups, `["physics-101"]`).Obj(),
			wantEvent:  "Pod/jupyter-bob NameTooLong",
			wantMsg:    `This server's JupyterHub username is 256 characters long; hubcredits can record at most 255, so it cannot bill this server — ask your hub admin.`,
			wantReason: "NameTooLong",
		},
		"someone other than the hub creates a user pod": {
			objs:       []client.Object{openAccount("alice", "alice").Obj()},
			pod:        testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj(),
			by:         "mallory",
			creators:   []string{hubSA},
			wantEvent:  "Pod/jupyter-alice Forbidden",
			wantMsg:    `Only JupyterHub may start user servers in this namespace; mallory may not.`,
			wantReason: "Forbidden",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			env := newWebhookEnv(tc.objs...)
			env.h.Creators = tc.creators
			rec := &eventSink{}
			env.h.Denials = &DenialReporter{Recorder: rec}
			rb := makeRequest(t, tc.pod)
			if tc.by != "" {
				rb.By(tc.by)
			}
			before := versions(t, env.api)

			reason := strings.Fields(tc.wantEvent)[1]
			counted := promtestutil.ToFloat64(denials.WithLabelValues(reason))
			resp := env.h.Handle(context.Background(), rb.Obj())

			if resp.Allowed {
				t.Fatalf("admitted, want a denial %q", tc.wantMsg)
			}
			if resp.Result == nil || resp.Result.Code != http.StatusForbidden || resp.Result.Reason != metav1.StatusReasonForbidden {
				t.Errorf("result %+v, want a 403 Forbidden", resp.Result)
			}
			if got := message(resp); got != tc.wantMsg {
				t.Errorf("denial:\n got: %s\nwant: %s", got, tc.wantMsg)
			}
			if got := denialReason(resp); got != tc.wantReason {
				t.Errorf("denial reason in the Status details %q, want %q", got, tc.wantReason)
			}
			if len(resp.Patches) != 0 {
				t.Errorf("a denial carries patches: %v", resp.Patches)
			}
			assertNoToken(t, resp)
			if d := testutil.Diff(before, versions(t, env.api)); d != "" {
				t.Errorf("a denial wrote to the accounts (-before +after):\n%s", d)
			}
			if got := promtestutil.ToFloat64(denials.WithLabelValues(reason)) - counted; got != 1 {
				t.Errorf("hubcredits_admission_denials_total{reason=%q} went up by %v, want 1", reason, got)
			}
			if got := rec.summary(); !slices.Equal(got, []string{tc.wantEvent}) ||
				!strings.HasPrefix(rec.events[0].message, "Spawn of "+tc.pod.Name) || !strings.Contains(rec.events[0].message, tc.wantMsg) {
				t.Fatalf("events %+v, want one %s with the denial's sentence", rec.events, tc.wantEvent)
			}
			if strings.Contains(rec.events[0].message, plantedToken) {
				t.Errorf("the event carries the Hub token: %s", rec.events[0].message)
			}
		})
	}
}

func TestPodAdmitterPassesWhatItDoesNotPrice(t *testing.T) {
	cases := map[string]struct {
		req func(t *testing.T) admission.Request
	}{
		"a placeholder pod": {
			req: func(t *testing.T) admission.Request {
				return makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "nobody", "").Label(hcv1.ComponentLabel, "user-placeholder").Obj()).Obj()
			},
		},
		"a pod without the component label": {
			req: func(t *testing.T) admission.Request {
				p := testutil.MakeKubeSpawnerPod(testNS, "nobody", "").Obj()
				delete(p.Labels, hcv1.ComponentLabel)
				return makeRequest(t, p).Obj()
			},
		},
		"an update of a user pod": {
			req: func(t *testing.T) admission.Request {
				return makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj()).Op(admissionv1.Update).Obj()
			},
		},
		"a delete of a user pod": {
			req: func(t *testing.T) admission.Request {
				return makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj()).Op(admissionv1.Delete).Raw(nil).Obj()
			},
		},
		"a connect (exec) to a user pod": {
			req: func(t *testing.T) admission.Request {
				return makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj()).Op(admissionv1.Connect).Raw([]byte(`{"kind":"PodExecOptions"}`)).Obj()
			},
		},
		"a create of another kind": {
			req: func(t *testing.T) admission.Request {
				return makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj()).Kind("Binding").Obj()
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			// alice could not pay: a priced request would be denied.
			env := newWebhookEnv(openAccount("alice", "alice").Balance(0).Obj())
			before := versions(t, env.api)

			resp := env.h.Handle(context.Background(), tc.req(t))

			if !resp.Allowed {
				t.Fatalf("denied: %s", message(resp))
			}
			if len(resp.Patches) != 0 {
				t.Errorf("patched %v, want the pod untouched", resp.Patches)
			}
			assertNoToken(t, resp)
			if d := testutil.Diff(before, versions(t, env.api)); d != "" {
				t.Errorf("wrote to the accounts (-before +after):\n%s", d)
			}
		})
	}
}

func TestPodAdmitterRejectsMalformedRequests(t *testing.T) {
	cases := map[string]struct {
		raw []byte
	}{
		"no object":        {raw: nil},
		"not JSON":         {raw: []byte("JUPYTERHUB_API_TOKEN=" + plantedToken)},
		"truncated JSON":   {raw: []byte(`{"metadata":{"labels":{"component":"singleuser-server"`)},
		"labels of a list": {raw: []byte(`{"metadata":{"labels":["component"]}}`)},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			env := newWebhookEnv(openAccount("alice", "alice").Obj())
			req := makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj()).Raw(tc.raw).Obj()

			resp := env.h.Handle(context.Background(), req)

			if resp.Allowed {
				t.Fatal("a malformed pod was admitted")
			}
			if resp.Result == nil || resp.Result.Code != http.StatusBadRequest {
				t.Fatalf("result %+v, want 400", resp.Result)
			}
			if got, want := message(resp), "hubcredits could not decode the pod"; got != want {
				t.Errorf("message %q, want %q", got, want)
			}
			assertNoToken(t, resp)
		})
	}
}

func TestPodAdmitterDryRunWritesNothing(t *testing.T) {
	cases := map[string]struct {
		balance     int64
		wantAllowed bool
		wantMsg     string
	}{
		"affordable: admitted and priced": {balance: 30, wantAllowed: true},
		"unaffordable: denied like a real create": {
			balance: 3,
			wantMsg: `Not enough credits to start this server: it costs 10 credits every 10m, and account "alice" has 3.`,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			env := newWebhookEnv(openAccount("alice", "alice").Balance(tc.balance).Obj())
			before := versions(t, env.api)
			req := makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj()).DryRun().Obj()

			resp := env.h.Handle(context.Background(), req)

			if resp.Allowed != tc.wantAllowed {
				t.Fatalf("allowed %v (%s), want %v", resp.Allowed, message(resp), tc.wantAllowed)
			}
			if tc.wantAllowed {
				if got := pinned(applyPatch(t, req, resp)); got[hcv1.AnnotationAccount] != "alice" || got[hcv1.AnnotationBillingValue] != "10" {
					t.Errorf("a dry run is priced like the real thing; got %v", got)
				}
			} else if message(resp) != tc.wantMsg {
				t.Errorf("denial %q, want %q", message(resp), tc.wantMsg)
			}
			assertNoToken(t, resp)
			if d := testutil.Diff(before, versions(t, env.api)); d != "" {
				t.Errorf("a dry run wrote to the accounts (-before +after):\n%s", d)
			}
		})
	}
}

// The webhook is registered with sideEffects=NoneOnDryRun, yet a dry-run
// spawn of a user without a wallet creates one.
func TestPodAdmitterDryRunDoesNotCreateWallets(t *testing.T) {
	env := newWebhookEnv()
	env.h.AutoCreate = &WalletTemplate{Cap: 50}

	resp := env.h.Handle(context.Background(), makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "newbie", "").Obj()).DryRun().Obj())

	if !resp.Allowed {
		t.Fatalf("denied: %s", message(resp))
	}
	if got := versions(t, env.api); len(got) != 0 {
		t.Fatalf("a dry run created accounts %v", got)
	}
}

func TestPodAdmitterCreators(t *testing.T) {
	cases := map[string]struct {
		creators    []string
		dryRunIDs   []string
		by          string
		dryRun      bool
		placeholder bool
		wantAllowed bool
	}{
		"no restriction: anyone":                   {by: "mallory", wantAllowed: true},
		"the hub is one of the creators":           {creators: []string{"admin", hubSA}, by: hubSA, wantAllowed: true},
		"someone else is refused":                  {creators: []string{hubSA}, by: "mallory"},
		"names match exactly":                      {creators: []string{hubSA}, by: hubSA + "x"},
		"others may create unpriced pods":          {creators: []string{hubSA}, by: "mallory", placeholder: true, wantAllowed: true},
		"a dry-run identity's dry run is answered": {creators: []string{hubSA}, dryRunIDs: []string{"ta"}, by: "ta", dryRun: true, wantAllowed: true},
		"a dry-run identity's real pod is refused": {creators: []string{hubSA}, dryRunIDs: []string{"ta"}, by: "ta"},
		"someone else's dry run is refused":        {creators: []string{hubSA}, dryRunIDs: []string{"ta"}, by: "mallory", dryRun: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			env := newWebhookEnv(openAccount("alice", "alice").Obj())
			env.h.Creators, env.h.DryRunIdentities = tc.creators, tc.dryRunIDs
			pb := testutil.MakeKubeSpawnerPod(testNS, "alice", "")
			if tc.placeholder {
				pb.Label(hcv1.ComponentLabel, "user-placeholder")
			}
			req := makeRequest(t, pb.Obj()).By(tc.by)
			if tc.dryRun {
				req.DryRun()
			}
			before := testutil.GetAccount(t, env.api, testNS, "alice")

			resp := env.h.Handle(context.Background(), req.Obj())

			if resp.Allowed != tc.wantAllowed {
				t.Fatalf("allowed %v (%s), want %v", resp.Allowed, message(resp), tc.wantAllowed)
			}
			if after := testutil.GetAccount(t, env.api, testNS, "alice"); tc.dryRun && after.ResourceVersion != before.ResourceVersion {
				t.Errorf("a dry run wrote the account (resourceVersion %s -> %s)", before.ResourceVersion, after.ResourceVersion)
			}
		})
	}
}

// walletHash is the suffix WalletName gives a name it had to change.
func walletHash(user string) string {
	sum := sha256.Sum256([]byte(user))
	return hex.EncodeToString(sum[:8])
}

func TestPodAdmitterAutoCreatesWallets(t *testing.T) {
	long := strings.Repeat("Abcdefghij", 10)
	tmpl := &WalletTemplate{Cap: 50, InitialBalance: ptr.To[int64](30), Grant: &hcv1.Grant{Amount: 5, Interval: metav1.Duration{Duration: time.Hour}}}
	cases := map[string]struct {
		user     string
		wantName string
	}{
		"a plain username": {user: "newbie", wantName: "wallet-newbie"},
		"an email address": {user: "alice@example.com", wantName: "wallet-alice-example-com-" + walletHash("alice@example.com")},
		"upper case":       {user: "Alice", wantName: "wallet-alice-" + walletHash("Alice")},
		"a 100-char name":  {user: long, wantName: "wallet-" + strings.ToLower(long[:32]) + "-" + walletHash(long)},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			env := newWebhookEnv(openAccount("someone-else", "bob").Obj())
			env.h.AutoCreate = tmpl
			pod := testutil.MakeKubeSpawnerPod(testNS, "x", "").Annotation(hcv1.AnnotationUsername, tc.user).Obj()
			req := makeRequest(t, pod).Obj()

			resp := env.h.Handle(context.Background(), req)

			if !resp.Allowed {
				t.Fatalf("denied: %s", message(resp))
			}
			if got := pinned(applyPatch(t, req, resp))[hcv1.AnnotationAccount]; got != tc.wantName {
				t.Errorf("billed to %q, want %q", got, tc.wantName)
			}
			a := &hcv1.CreditAccount{}
			if err := env.api.Get(context.Background(), client.ObjectKey{Namespace: testNS, Name: tc.wantName}, a); err != nil {
				t.Fatalf("the wallet was not created: %v", err)
			}
			wantSpec := hcv1.CreditAccountSpec{Users: []string{tc.user}, Cap: 50, InitialBalance: ptr.To[int64](30), Grant: tmpl.Grant}
			if d := testutil.Diff(wantSpec, a.Spec); d != "" {
				t.Errorf("spec (-want +got):\n%s", d)
			}
			if a.Labels["hubcredits.io/auto-created"] != "true" || a.Annotations[hcv1.AnnotationUsername] != tc.user {
				t.Errorf("labels %v, annotations %v", a.Labels, a.Annotations)
			}
			// The new ledger opens at the initial balance and pays the first period.
			want := holding{Balance: 20, Servers: []entry{reserved("jupyter-x", tc.user, tc.wantName, 10, 10)}}
			if d := testutil.Diff(want, holdings(t, env.api)[tc.wantName]); d != "" {
				t.Errorf("wallet (-want +got):\n%s", d)
			}
		})
	}
}

func TestPodAdmitterAutoCreateMeetsAnExistingAccount(t *testing.T) {
	cases := map[string]struct {
		existing     *hcv1.CreditAccount
		wantAllowed  bool
		wantMsg      string
		wantHoldings map[string]holding
	}{
		"another user's account has the name": {
			existing:     openAccount("wallet-newbie", "mallory").Obj(),
			wantMsg:      `No credit account for user "newbie" — ask your hub admin.`,
			wantHoldings: map[string]holding{"wallet-newbie": {Balance: 100}},
		},
		"a concurrent spawn created it (the cache has not seen it yet)": {
			existing:    openAccount("wallet-newbie", "newbie").Obj(),
			wantAllowed: true,
			wantHoldings: map[string]holding{
				"wallet-newbie": {Balance: 90, Servers: []entry{reserved("jupyter-newbie", "newbie", "wallet-newbie", 10, 10)}},
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			api := fakeclient.New(nil, tc.existing)
			staleCache := fakeclient.New(nil)
			env := newWebhookEnvWith(staleCache, api, api)
			env.h.AutoCreate = &WalletTemplate{Cap: 50}

			resp := env.h.Handle(context.Background(), makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "newbie", "").Obj()).Obj())

			if resp.Allowed != tc.wantAllowed {
				t.Fatalf("allowed %v (%s), want %v", resp.Allowed, message(resp), tc.wantAllowed)
			}
			if !tc.wantAllowed && message(resp) != tc.wantMsg {
				t.Errorf("denial %q, want %q", message(resp), tc.wantMsg)
			}
			if d := testutil.Diff(tc.wantHoldings, holdings(t, api)); d != "" {
				t.Errorf("accounts (-want +got):\n%s", d)
			}
		})
	}
}

// A wallet the webhook has just created is not in the informer cache yet;
// the Reserver reads its account from that cache and gives up on NotFound
// without a live read, so a new user's first spawn is denied.
func TestPodAdmitterAutoCreatedWalletNotYetCached(t *testing.T) {
	api := fakeclient.New(nil)
	// The manager's client: writes reach the API, reads come from a cache
	// that has not yet seen the wallet this process created.
	mgrClient := fakeclient.New(&interceptor.Funcs{
		Create: func(ctx context.Context, _ client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			return api.Create(ctx, obj, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, _ client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			return api.SubResource(sub).Update(ctx, obj, opts...)
		},
	})
	env := newWebhookEnvWith(mgrClient, mgrClient, api)
	env.h.AutoCreate = &WalletTemplate{Cap: 50}

	resp := env.h.Handle(context.Background(), makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "newbie", "").Obj()).Obj())

	if !resp.Allowed {
		t.Fatalf("a new user's first spawn was denied: %s", message(resp))
	}
	if got := holdings(t, api)["wallet-newbie"].Balance; got != 40 {
		t.Errorf("wallet balance %d, want 40", got)
	}
}

func TestPodAdmitterShadowMode(t *testing.T) {
	cases := map[string]struct {
		balance      int64
		wantPinned   map[string]string
		wantHoldings map[string]holding
	}{
		"an unaffordable spawn is admitted unreserved": {
			balance:      3,
			wantPinned:   with(pins("alice", "10", "10m0s", ""), hcv1.AnnotationReservation, ""),
			wantHoldings: map[string]holding{"alice": {Balance: 3}},
		},
		"an affordable spawn is reserved as usual": {
			balance:      30,
			wantPinned:   pins("alice", "10", "10m0s", ""),
			wantHoldings: map[string]holding{"alice": {Balance: 20, Servers: []entry{reserved("jupyter-alice", "alice", "alice", 10, 10)}}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			env := newWebhookEnv(openAccount("alice", "alice").Balance(tc.balance).Obj())
			env.h.Shadow = true
			req := makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj()).Obj()

			resp := env.h.Handle(context.Background(), req)

			if !resp.Allowed {
				t.Fatalf("shadow mode denied: %s", message(resp))
			}
			assertNoToken(t, resp)
			if d := testutil.Diff(tc.wantPinned, pinned(applyPatch(t, req, resp))); d != "" {
				t.Errorf("pinned annotations (-want +got):\n%s", d)
			}
			if d := testutil.Diff(tc.wantHoldings, holdings(t, env.api)); d != "" {
				t.Errorf("accounts (-want +got):\n%s", d)
			}
		})
	}
}

// In shadow mode a real create of an unaffordable server is admitted, but
// its dry run is denied: the dry-run branch calls fail without the
// shadow check.
func TestPodAdmitterShadowDryRunMatchesTheRealCreate(t *testing.T) {
	env := newWebhookEnv(openAccount("alice", "alice").Balance(3).Obj())
	env.h.Shadow = true

	resp := env.h.Handle(context.Background(), makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj()).DryRun().Obj())

	if !resp.Allowed {
		t.Fatalf("shadow mode denied a dry run: %s", message(resp))
	}
}

// The cache says the wallet can pay its part, but it cannot: the pool's
// share, already written, is given back.
func TestPodAdmitterReturnsThePoolsShareWhenTheWalletCannotPay(t *testing.T) {
	api := fakeclient.New(nil,
		openAccount("physics").Balance(4).Obj(),
		openAccount("alice", "alice").Balance(3).Project("physics").Obj(),
	)
	staleCache := fakeclient.New(nil,
		openAccount("physics").Balance(4).Obj(),
		openAccount("alice", "alice").Balance(10).Project("physics").Obj(),
	)
	env := newWebhookEnvWith(staleCache, api, api)

	resp := env.h.Handle(context.Background(), makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj()).Obj())

	if resp.Allowed {
		t.Fatal("admitted a server the wallet cannot pay its part of")
	}
	if got, want := message(resp), "Not enough credits to start this server: it costs 10 credits every 10m, and project \"physics\" has "; !strings.HasPrefix(got, want) {
		t.Errorf("denial %q, want it to start with %q", got, want)
	}
	want := map[string]holding{"physics": {Balance: 4}, "alice": {Balance: 3}}
	if d := testutil.Diff(want, holdings(t, api)); d != "" {
		t.Errorf("accounts (-want +got):\n%s", d)
	}
	// The pool's ledger shows the share taken and returned.
	p := &hcv1.CreditAccount{}
	if err := api.Get(context.Background(), client.ObjectKey{Namespace: testNS, Name: "physics"}, p); err != nil {
		t.Fatal(err)
	}
	var moves []int64
	for _, l := range p.Status.Ledger {
		moves = append(moves, l.Amount)
	}
	if d := testutil.Diff([]int64{-4, 4}, moves); d != "" {
		t.Errorf("pool ledger amounts (-want +got):\n%s", d)
	}
	if p.Status.TotalCharged != 4 || p.Status.TotalRefunded != 4 {
		t.Errorf("pool charged %d and refunded %d, want 4 and 4", p.Status.TotalCharged, p.Status.TotalRefunded)
	}
}

// The denial above quotes the pool's balance as it was between taking and
// returning its share.
func TestPodAdmitterPoolShareDenialQuotesTheReturnedBalance(t *testing.T) {
	api := fakeclient.New(nil,
		openAccount("physics").Balance(4).Obj(),
		openAccount("alice", "alice").Balance(3).Project("physics").Obj(),
	)
	staleCache := fakeclient.New(nil,
		openAccount("physics").Balance(4).Obj(),
		openAccount("alice", "alice").Balance(10).Project("physics").Obj(),
	)
	env := newWebhookEnvWith(staleCache, api, api)

	resp := env.h.Handle(context.Background(), makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj()).Obj())

	want := `Not enough credits to start this server: it costs 10 credits every 10m, and project "physics" has 4 and account "alice" has 3.`
	if got := message(resp); got != want {
		t.Errorf("denial:\n got: %s\nwant: %s", got, want)
	}
}

// A reservation that cannot be written in time is an error the hub retries,
// not a denial.
func TestPodAdmitterTimesOut(t *testing.T) {
	api := fakeclient.New(nil, openAccount("alice", "alice").Obj())
	gate := make(chan struct{})
	slow := fakeclient.New(&interceptor.Funcs{
		Get: func(ctx context.Context, _ client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			<-gate
			return api.Get(ctx, key, obj, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, _ client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			return api.Status().Update(ctx, obj, opts...)
		},
	})
	env := newWebhookEnvWith(api, slow, api)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	resp := env.h.Handle(ctx, makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj()).Obj())
	close(gate)
	waitDrained(t, env.h.Reserver)

	if resp.Allowed {
		t.Fatal("admitted without a reservation")
	}
	if resp.Result == nil || resp.Result.Code != http.StatusServiceUnavailable {
		t.Fatalf("result %+v, want 503", resp.Result)
	}
	if got, want := message(resp), "hubcredits could not reserve credits in time; please try again"; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
}

// Admins write CEL over the whole pod; an expression that fails on the
// token's value must not echo it to the user's spawn page.
func TestPodAdmitterPriceErrorsDoNotEchoTheToken(t *testing.T) {
	cases := map[string]struct {
		policy *hcv1.BillingPolicy
	}{
		"int() of the token": {
			policy: storedPolicy("bad").ValueExpr("int(pod.spec.containers[0].env[0].value)").Obj(),
		},
		"a bool match on the token": {
			policy: storedPolicy("bad").Value(1).Match("pod.spec.containers[0].env[0].value + 1 > 0").Obj(),
		},
		"a map key from the token": {
			policy: storedPolicy("bad").ValueExpr("pod.metadata.labels[pod.spec.containers[0].env[0].value] == 'x' ? 1 : 2").Obj(),
		},
		"a duration from the token": {
			policy: storedPolicy("bad").ValueExpr("duration(pod.spec.containers[0].env[0].value).getSeconds()").Obj(),
		},
		"a quantity from the token": {
			policy: storedPolicy("bad").ValueExpr("quantity(pod.spec.containers[0].env[0].value).asInteger()").Obj(),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			env := newWebhookEnv(openAccount("alice", "alice").Obj(), tc.policy)

			resp := env.h.Handle(context.Background(), makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj()).Obj())

			if resp.Allowed {
				t.Fatalf("admitted a pod the policy cannot price (%v)", resp.Patches)
			}
			if !strings.HasPrefix(message(resp), `Cannot price this server: billing policy "bad"`) {
				t.Errorf("denial %q", message(resp))
			}
			assertNoToken(t, resp)
		})
	}
}

// waitDrained waits until the Reserver has no batch in flight (its drain
// goroutines exit when their queue is empty).
func waitDrained(t *testing.T, r *Reserver) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		n := len(r.queues)
		r.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the Reserver did not drain")
		}
		runtime.Gosched()
	}
}

// The pinned annotations are the webhook's to set. A pod that arrives with
// some already (a copied manifest, a profile's extra_annotations) keeps the
// ones the webhook does not set this time: a free or shadow-admitted pod
// keeps a foreign reservation id, which the controller then maps to another
// server's entry (and, seeing a different pod UID, settles that server as
// gone); a pod whose wallet has no pool keeps a foreign project.
func TestPodAdmitterOverridesPresetAnnotations(t *testing.T) {
	env := newWebhookEnv(openAccount("alice", "alice").Obj(), storedPolicy("free").Value(0).Obj())
	pod := testutil.MakeKubeSpawnerPod(testNS, "alice", "").
		Annotation(hcv1.AnnotationReservation, "someone-elses-reservation").
		Annotation(hcv1.AnnotationProject, "physics").Obj()
	req := makeRequest(t, pod).Obj()

	resp := env.h.Handle(context.Background(), req)

	if !resp.Allowed {
		t.Fatalf("denied: %s", message(resp))
	}
	want := map[string]string{
		hcv1.AnnotationAccount:         "alice",
		hcv1.AnnotationBillingValue:    "0",
		hcv1.AnnotationBillingInterval: "10m0s",
		hcv1.AnnotationPolicy:          "free",
	}
	if d := testutil.Diff(want, pinned(applyPatch(t, req, resp))); d != "" {
		t.Errorf("pinned annotations (-want +got):\n%s", d)
	}
}

// A paid admission overwrites every annotation it pins.
func TestPodAdmitterOverwritesPinnedAnnotations(t *testing.T) {
	env := newWebhookEnv(openAccount("alice", "alice").Obj())
	pod := testutil.MakeKubeSpawnerPod(testNS, "alice", "").
		Annotation(hcv1.AnnotationReservation, "forged").
		Annotation(hcv1.AnnotationBillingValue, "0").
		Annotation(hcv1.AnnotationBillingInterval, "8760h").
		Annotation(hcv1.AnnotationPolicy, "free").Obj()
	req := makeRequest(t, pod).Obj()

	resp := env.h.Handle(context.Background(), req)

	if !resp.Allowed {
		t.Fatalf("denied: %s", message(resp))
	}
	if d := testutil.Diff(pins("alice", "10", "10m0s", ""), pinned(applyPatch(t, req, resp))); d != "" {
		t.Errorf("pinned annotations (-want +got):\n%s", d)
	}
}

// After an API server restart the informer cache can lag: a namespace whose
// policies the cache does not show yet is listed live, and a live "none" is
// trusted for livePolicyTTL.
func TestPodAdmitterListsPoliciesLiveWhenTheCacheShowsNone(t *testing.T) {
	var liveLists atomic.Int32
	countLists := &interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
		if _, ok := list.(*hcv1.BillingPolicyList); ok {
			liveLists.Add(1)
		}
		return c.List(ctx, list, opts...)
	}}

	t.Run("the cache lags: the live policy prices the pod", func(t *testing.T) {
		api := fakeclient.New(countLists, openAccount("alice", "alice").Obj(), storedPolicy("gpu").Value(25).Obj())
		staleCache := fakeclient.New(nil, openAccount("alice", "alice").Obj())
		env := newWebhookEnvWith(staleCache, api, api)
		req := makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj()).Obj()

		resp := env.h.Handle(context.Background(), req)

		if !resp.Allowed {
			t.Fatalf("denied: %s", message(resp))
		}
		if got := pinned(applyPatch(t, req, resp))[hcv1.AnnotationBillingValue]; got != "25" {
			t.Errorf("pinned price %q, want 25 (the policy the cache had not seen)", got)
		}
	})

	t.Run("no policies at all: the default price, and one live list per TTL", func(t *testing.T) {
		liveLists.Store(0)
		api := fakeclient.New(countLists, openAccount("alice", "alice").Obj())
		env := newWebhookEnvWith(api, api, api)
		spawn := func(server string) string {
			req := makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "alice", server).Obj()).Obj()
			resp := env.h.Handle(context.Background(), req)
			if !resp.Allowed {
				t.Fatalf("denied: %s", message(resp))
			}
			return pinned(applyPatch(t, req, resp))[hcv1.AnnotationBillingValue]
		}
		lists := liveLists.Load // the cache and the API are one fake here: both count

		if got := spawn("a"); got != "10" {
			t.Errorf("pinned price %q, want the default 10", got)
		}
		afterFirst := lists()
		spawn("b")
		env.clock.Step(livePolicyTTL - time.Second)
		spawn("c")
		if got := lists() - afterFirst; got != 2 {
			t.Errorf("%d policy lists for two more spawns within the TTL, want 2 (the cache only)", got)
		}
		env.clock.Step(2 * time.Second)
		before := lists()
		spawn("d")
		if got := lists() - before; got != 2 {
			t.Errorf("%d policy lists after the TTL, want 2 (the cache, then live again)", got)
		}
	})
}

// TestPodAdmitterFreeServerWithoutAccount: a free server needs no payer
// (issue 13), so it is admitted without one unless the admin requires an
// account (--free-servers-need-account); a priced server still needs one.
func TestPodAdmitterFreeServerWithoutAccount(t *testing.T) {
	cases := map[string]struct {
		policy      *hcv1.BillingPolicy
		needAccount bool
		wantAllowed bool
		wantPinned  map[string]string
	}{
		"free, no account": {policy: storedPolicy("free").Value(0).Obj(), wantAllowed: true,
			wantPinned: map[string]string{hcv1.AnnotationBillingValue: "0", hcv1.AnnotationBillingInterval: "10m0s", hcv1.AnnotationPolicy: "free"}},
		"free, an account required": {policy: storedPolicy("free").Value(0).Obj(), needAccount: true},
		"priced, no account":        {policy: storedPolicy("paid").Value(10).Obj()},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			env := newWebhookEnv(openAccount("alice", "alice").Obj(), tc.policy)
			env.h.FreeNeedsAccount = tc.needAccount
			resp := env.h.Handle(context.Background(), makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "dave", "").Obj()).Obj())
			if resp.Allowed != tc.wantAllowed {
				t.Fatalf("allowed %v (%s), want %v", resp.Allowed, message(resp), tc.wantAllowed)
			}
			if !tc.wantAllowed {
				if got, want := message(resp), `No credit account for user "dave" — ask your hub admin.`; got != want {
					t.Errorf("denial %q, want %q", got, want)
				}
				return
			}
			got := map[string]string{}
			for _, op := range resp.Patches {
				if v, ok := op.Value.(string); ok {
					got[unescapePointer(strings.TrimPrefix(op.Path, "/metadata/annotations/"))] = v
				}
			}
			if d := testutil.Diff(tc.wantPinned, got); d != "" {
				t.Errorf("pinned annotations (-want +got):\n%s", d)
			}
			if a := testutil.GetAccount(t, env.api, testNS, "alice"); a.Status.Balance != 100 || len(a.Status.Servers) != 0 {
				t.Errorf("another account moved: balance %d, %d servers", a.Status.Balance, len(a.Status.Servers))
			}
		})
	}
}

func unescapePointer(s string) string { return strings.NewReplacer("~1", "/", "~0", "~").Replace(s) }

// denialReason is the reason a denial carries in its Status details.
func denialReason(resp admission.Response) string {
	if resp.Result == nil || resp.Result.Details == nil {
		return ""
	}
	for _, c := range resp.Result.Details.Causes {
		if c.Type == hcv1.DenialReasonCause {
			return c.Message
		}
	}
	return ""
}
