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
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/indexer"
	"github.com/hubcredits/hubcredits/internal/kubespawner"
	"github.com/hubcredits/hubcredits/internal/scheme"
)

// Shared fixtures for the webhook unit tests. Every time is fixed: t0 is a
// Monday morning, and the fake clock starts there.

var t0 = time.Date(2026, time.January, 5, 9, 0, 0, 0, time.UTC)

const (
	testNS = "hub"
	// plantedToken is the Hub API token in every test pod; no response may
	// ever carry it.
	plantedToken = "hubtoken-PLANTED-7f3a9c"
	// hubSA is the user KubeSpawner creates pods as.
	hubSA = "system:serviceaccount:hub:hub"
	// reqUID is the admission request UID, i.e. the reservation id.
	reqUID = "0d5a2c6e-req-1"
)

// newAPI is a fake API server holding objs, with the status subresource and
// every index (as the manager registers them). funcs may be nil.
func newAPI(funcs *interceptor.Funcs, objs ...client.Object) client.WithWatch {
	b := fake.NewClientBuilder().
		WithScheme(scheme.New()).
		WithStatusSubresource(&hcv1.CreditAccount{}, &hcv1.BillingPolicy{})
	b = indexer.WithIndexes(b).WithObjects(objs...)
	if funcs != nil {
		b = b.WithInterceptorFuncs(*funcs)
	}
	return b.Build()
}

// ---- accounts ----

type accountBuilder struct{ a *hcv1.CreditAccount }

// makeAccount builds an account whose ledger is open (opened at t0, balance
// 100, cap 100), so nothing but reservations moves its balance.
func makeAccount(name string, users ...string) *accountBuilder {
	opened := metav1.NewTime(t0)
	return &accountBuilder{a: &hcv1.CreditAccount{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name, CreationTimestamp: opened},
		Spec:       hcv1.CreditAccountSpec{Users: users, Cap: 100},
		Status: hcv1.CreditAccountStatus{
			OpenedAt: &opened, GrantedThrough: &opened, Balance: 100,
		},
	}}
}

func (b *accountBuilder) balance(v int64) *accountBuilder  { b.a.Status.Balance = v; return b }
func (b *accountBuilder) project(p string) *accountBuilder { b.a.Spec.Project = p; return b }
func (b *accountBuilder) grant(amount int64, every time.Duration) *accountBuilder {
	b.a.Spec.Grant = &hcv1.Grant{Amount: amount, Interval: metav1.Duration{Duration: every}}
	return b
}
func (b *accountBuilder) obj() *hcv1.CreditAccount { return b.a.DeepCopy() }

// ---- policies ----

type policyBuilder struct{ p *hcv1.BillingPolicy }

func makePolicy(name string) *policyBuilder {
	return &policyBuilder{p: &hcv1.BillingPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name, UID: types.UID("uid-" + name), Generation: 1},
		Spec:       hcv1.BillingPolicySpec{BillingInterval: metav1.Duration{Duration: 10 * time.Minute}},
	}}
}

func (b *policyBuilder) value(v int64) *policyBuilder { b.p.Spec.BillingValue = ptr.To(v); return b }
func (b *policyBuilder) every(d time.Duration) *policyBuilder {
	b.p.Spec.BillingInterval = metav1.Duration{Duration: d}
	return b
}
func (b *policyBuilder) priority(p int32) *policyBuilder { b.p.Spec.Priority = p; return b }
func (b *policyBuilder) selecting(k, v string) *policyBuilder {
	b.p.Spec.PodSelector = &metav1.LabelSelector{MatchLabels: map[string]string{k: v}}
	return b
}
func (b *policyBuilder) valueExpr(e string) *policyBuilder {
	b.p.Spec.BillingValueExpression = e
	return b
}
func (b *policyBuilder) matchExpr(e string) *policyBuilder {
	b.p.Spec.MatchExpression = e
	return b
}
func (b *policyBuilder) obj() *hcv1.BillingPolicy { return b.p.DeepCopy() }

// ---- pods ----

type podBuilder struct{ p *corev1.Pod }

// makePod builds a pod shaped like the one KubeSpawner 7 creates under
// Z2JH 4 for user's default server, the Hub token in its environment.
func makePod(user string) *podBuilder {
	return &podBuilder{p: kubespawner.Pod(testNS, user, "", plantedToken)}
}

func (b *podBuilder) server(name string) *podBuilder {
	b.p.Name += "--" + name
	b.p.Labels["hub.jupyter.org/servername"] = name
	b.p.Annotations[hcv1.AnnotationServerName] = name
	return b
}
func (b *podBuilder) label(k, v string) *podBuilder      { b.p.Labels[k] = v; return b }
func (b *podBuilder) annotation(k, v string) *podBuilder { b.p.Annotations[k] = v; return b }
func (b *podBuilder) noUsername() *podBuilder {
	delete(b.p.Annotations, hcv1.AnnotationUsername)
	return b
}
func (b *podBuilder) gpus(n string) *podBuilder {
	q := resource.MustParse(n)
	c := &b.p.Spec.Containers[0]
	c.Resources.Limits = corev1.ResourceList{"nvidia.com/gpu": q}
	c.Resources.Requests["nvidia.com/gpu"] = q
	return b
}
func (b *podBuilder) obj() *corev1.Pod { return b.p.DeepCopy() }

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

func (b *requestBuilder) uid(u string) *requestBuilder { b.r.UID = types.UID(u); return b }
func (b *requestBuilder) op(o admissionv1.Operation) *requestBuilder {
	b.r.Operation = o
	return b
}
func (b *requestBuilder) by(user string) *requestBuilder {
	b.r.UserInfo.Username = user
	return b
}
func (b *requestBuilder) dryRun() *requestBuilder            { b.r.DryRun = ptr.To(true); return b }
func (b *requestBuilder) raw(r []byte) *requestBuilder       { b.r.Object.Raw = r; return b }
func (b *requestBuilder) kind(k string) *requestBuilder      { b.r.Kind.Kind = k; return b }
func (b *requestBuilder) obj() admission.Request             { return b.r }
func (b *requestBuilder) namespace(n string) *requestBuilder { b.r.Namespace = n; return b }

// ---- the webhook under test ----

type webhookEnv struct {
	api   client.WithWatch
	clock *clocktesting.FakeClock
	h     *PodAdmitter
}

// newWebhookEnv wires a PodAdmitter the way operator.Setup does, with the
// fake API server as both its cache and its API.
func newWebhookEnv(objs ...client.Object) *webhookEnv {
	api := newAPI(nil, objs...)
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
