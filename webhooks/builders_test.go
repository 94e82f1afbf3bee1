package webhooks

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/scheme"
	"github.com/hubcredits/hubcredits/internal/testutil"
	"github.com/hubcredits/hubcredits/internal/testutil/fakeclient"
)

// Shared fixtures for the webhook unit tests; the builders are the wrappers
// of internal/testutil. Every time is fixed: t0 is a Monday morning, and the
// fake clock starts there.

var t0 = testutil.T0

const (
	testNS = "hub"
	// plantedToken is the Hub API token in every test pod; no response may
	// ever carry it.
	plantedToken = testutil.HubToken
	// hubSA is the user KubeSpawner creates pods as.
	hubSA = "system:serviceaccount:hub:hub"
	// reqUID is the admission request UID, i.e. the reservation id.
	reqUID = "0d5a2c6e-req-1"
)

// openAccount is an account whose ledger is open (opened at t0, balance
// 100, cap 100), so nothing but reservations moves its balance.
func openAccount(name string, users ...string) *testutil.AccountWrapper {
	return testutil.MakeAccount(testNS, name, users...).CreatedAt(0).OpenedAt(0).Balance(100)
}

// storedPolicy is a policy as the API server stores it (a uid, generation
// 1, the 10m interval default), pricing nothing yet.
func storedPolicy(name string) *testutil.PolicyWrapper {
	return testutil.MakePolicy(testNS, name).UID(types.UID("uid-" + name)).Generation(1)
}

// ---- admission requests ----

type requestBuilder struct{ r admission.Request }

// makeRequest is the CREATE request the API server sends for pod, made by
// the hub's service account.
func makeRequest(t *testing.T, pod *corev1.Pod) *requestBuilder {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return &requestBuilder{r: admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       reqUID,
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: testNS,
		Name:      pod.Name,
		Operation: admissionv1.Create,
		UserInfo:  authenticationv1.UserInfo{Username: hubSA},
		Object:    runtime.RawExtension{Raw: raw},
		DryRun:    ptr.To(false),
	}}}
}

func (b *requestBuilder) UID(u string) *requestBuilder { b.r.UID = types.UID(u); return b }
func (b *requestBuilder) Op(o admissionv1.Operation) *requestBuilder {
	b.r.Operation = o
	return b
}
func (b *requestBuilder) By(user string) *requestBuilder {
	b.r.UserInfo.Username = user
	return b
}
func (b *requestBuilder) DryRun() *requestBuilder      { b.r.DryRun = ptr.To(true); return b }
func (b *requestBuilder) Raw(r []byte) *requestBuilder { b.r.Object.Raw = r; return b }
func (b *requestBuilder) Kind(k string) *requestBuilder {
	b.r.Kind.Kind = k
	return b
}
func (b *requestBuilder) Obj() admission.Request { return b.r }

// ---- the webhook under test ----

type webhookEnv struct {
	api   client.WithWatch
	clock *clocktesting.FakeClock
	h     *PodAdmitter
}

// newWebhookEnv wires a PodAdmitter the way operator.Setup does, with the
// fake API server as both its cache and its API.
func newWebhookEnv(objs ...client.Object) *webhookEnv {
	api := fakeclient.New(nil, objs...)
	return newWebhookEnvWith(api, api, api)
}

// newWebhookEnvWith lets a test split the cache (what the webhook decides
// from), the Reserver's client and its live reader.
func newWebhookEnvWith(cache client.Reader, reserverClient client.Client, apiReader client.Reader) *webhookEnv {
	clk := clocktesting.NewFakeClock(t0)
	api, _ := reserverClient.(client.WithWatch)
	return &webhookEnv{
		api:   api,
		clock: clk,
		h: &PodAdmitter{
			Reader:   cache,
			Reserver: &Reserver{Client: reserverClient, APIReader: apiReader, Clock: clk},
			Decoder:  admission.NewDecoder(scheme.New()),
			Clock:    clk,
			Policies: &billing.PolicyCache{},
			Defaults: billing.DefaultPrice,
		},
	}
}

// ---- reading results ----

// entry is the part of a server entry the webhook decides.
type entry struct {
	ID, Pod, User, ServerName, Wallet, Project, Policy string
	Value, Paid, ProjectPaid, PeriodsPaid              int64
	Interval                                           time.Duration
}

// holding is what an account holds after admission.
type holding struct {
	Balance int64
	Servers []entry
}

// holdings reads every account in the namespace from r.
func holdings(t *testing.T, r client.Reader) map[string]holding {
	t.Helper()
	var list hcv1.CreditAccountList
	if err := r.List(context.Background(), &list, client.InNamespace(testNS)); err != nil {
		t.Fatal(err)
	}
	out := map[string]holding{}
	for _, a := range list.Items {
		out[a.Name] = holding{Balance: a.Status.Balance, Servers: entriesOf(&a)}
	}
	return out
}

func entriesOf(a *hcv1.CreditAccount) []entry {
	var out []entry
	for _, e := range a.Status.Servers {
		out = append(out, entry{
			ID: e.ID, Pod: e.Pod, User: e.User, ServerName: e.ServerName, Wallet: e.Wallet,
			Project: e.Project, Policy: e.Policy, Value: e.BillingValue, Paid: e.Paid,
			ProjectPaid: e.ProjectPaid, PeriodsPaid: e.PeriodsPaid, Interval: e.BillingInterval.Duration,
		})
	}
	return out
}

// versions is every account's resourceVersion: unchanged versions (and no
// new account) mean the webhook wrote nothing.
func versions(t *testing.T, r client.Reader) map[string]string {
	t.Helper()
	var list hcv1.CreditAccountList
	if err := r.List(context.Background(), &list, client.InNamespace(testNS)); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, a := range list.Items {
		out[a.Name] = a.ResourceVersion
	}
	return out
}

// applyPatch applies the response's JSONPatch to the request's pod the way
// the API server does, and checks that it only touches annotations.
func applyPatch(t *testing.T, req admission.Request, resp admission.Response) *corev1.Pod {
	t.Helper()
	for _, op := range resp.Patches {
		if !strings.HasPrefix(op.Path, "/metadata/annotations") {
			t.Errorf("patch operation %s %s: the webhook may only change annotations", op.Operation, op.Path)
		}
	}
	ops, err := json.Marshal(resp.Patches)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(ops)
	if err != nil {
		t.Fatalf("decoding the patch %s: %v", ops, err)
	}
	out, err := p.Apply(req.Object.Raw)
	if err != nil {
		t.Fatalf("applying the patch %s: %v", ops, err)
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(out, pod); err != nil {
		t.Fatal(err)
	}
	return pod
}

// pinned is the hubcredits.io annotations of a pod.
func pinned(p *corev1.Pod) map[string]string {
	out := map[string]string{}
	for k, v := range p.Annotations {
		if strings.HasPrefix(k, "hubcredits.io/") {
			out[k] = v
		}
	}
	return out
}

// assertNoToken fails when the response (allowed or not) carries the Hub
// token anywhere.
func assertNoToken(t *testing.T, resp admission.Response) {
	t.Helper()
	b, err := json.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), plantedToken) {
		t.Errorf("the response carries the Hub token: %s", b)
	}
}

func message(resp admission.Response) string {
	if resp.Result == nil {
		return ""
	}
	return resp.Result.Message
}
