package webhooks_test

// Benchmarks of the pod admission decision, in process (no TLS, no API
// server): PodAdmitter behind controller-runtime's admission.Webhook, as the
// webhook server runs it, against controller-runtime's allow-all validator
// on the same AdmissionRequest. `make bench` (test/bench) runs them and
// reports the ratio; by hand:
//
//	go test -run '^$' -bench BenchmarkPodAdmission -benchmem ./webhooks/
//
// This file is an external test package so that it shares no names with
// the package's unit-test helpers.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/indexer"
	"github.com/hubcredits/hubcredits/internal/kubespawner"
	"github.com/hubcredits/hubcredits/webhooks"
)

const benchNS = "jhub"

// benchAccounts is how many wallets the namespace holds (the users index is
// looked up among them).
const benchAccounts = 1000

func benchScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = hcv1.AddToScheme(s)
	return s
}

func benchPod(user string) *corev1.Pod {
	p := kubespawner.Pod(benchNS, user, "", "hubtoken-bench")
	p.Labels["hubcredits.io/tier"] = "free"
	return p
}

// benchObjects are the namespace's policies (the two samples plus a free
// tier that wins for the benchmarked pod) and wallets.
func benchObjects() []client.Object {
	objs := []client.Object{
		&hcv1.BillingPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: "default", UID: "uid-default", Generation: 1},
			Spec: hcv1.BillingPolicySpec{
				BillingValue: ptr.To[int64](10), BillingInterval: metav1.Duration{Duration: 10 * time.Minute},
			},
		},
		&hcv1.BillingPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: "gpu", UID: "uid-gpu", Generation: 1},
			Spec: hcv1.BillingPolicySpec{
				PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"hubcredits.io/policy": "gpu"}},
				BillingValueExpression: `'nvidia.com/gpu' in pod.spec.containers[0].resources.limits` +
					` ? 25 * quantity(pod.spec.containers[0].resources.limits['nvidia.com/gpu']).asInteger() : 25`,
				BillingInterval: metav1.Duration{Duration: 10 * time.Minute},
				Priority:        10,
			},
		},
		&hcv1.BillingPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: "free", UID: "uid-free", Generation: 1},
			Spec: hcv1.BillingPolicySpec{
				PodSelector:     &metav1.LabelSelector{MatchLabels: map[string]string{"hubcredits.io/tier": "free"}},
				BillingValue:    ptr.To[int64](0),
				BillingInterval: metav1.Duration{Duration: 10 * time.Minute},
				Priority:        100,
			},
		},
	}
	opened := metav1.NewTime(time.Now().Add(-time.Hour))
	for i := range benchAccounts {
		user := fmt.Sprintf("user%04d", i)
		objs = append(objs, &hcv1.CreditAccount{
			ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: user, UID: types.UID("uid-" + user), ResourceVersion: "1"},
			Spec:       hcv1.CreditAccountSpec{Users: []string{user}, Cap: 100},
			Status:     hcv1.CreditAccountStatus{OpenedAt: &opened, Balance: 100, GrantedThrough: &opened},
		})
	}
	return objs
}

// cacheReader stands in for controller-runtime's informer cache: objects
// held in memory, Get and List deep-copy (List skips the copy when asked,
// as the cache does with UnsafeDisableDeepCopy), and field indexes are map
// lookups.
type cacheReader struct {
	policies []*hcv1.BillingPolicy
	accounts map[types.NamespacedName]*hcv1.CreditAccount
	byUser   map[string][]*hcv1.CreditAccount
}

func newCacheReader(objs []client.Object) *cacheReader {
	r := &cacheReader{accounts: map[types.NamespacedName]*hcv1.CreditAccount{}, byUser: map[string][]*hcv1.CreditAccount{}}
	for _, o := range objs {
		switch o := o.(type) {
		case *hcv1.BillingPolicy:
			r.policies = append(r.policies, o)
		case *hcv1.CreditAccount:
			r.accounts[client.ObjectKeyFromObject(o)] = o
			for _, u := range indexer.AccountUsers(o) {
				r.byUser[benchNS+"/"+u] = append(r.byUser[benchNS+"/"+u], o)
			}
		}
	}
	return r
}

func (r *cacheReader) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	a, ok := obj.(*hcv1.CreditAccount)
	if !ok {
		return fmt.Errorf("cacheReader: unexpected Get of %T", obj)
	}
	src := r.accounts[key]
	if src == nil {
		return newNotFound(key.Name)
	}
	src.DeepCopyInto(a)
	return nil
}

func (r *cacheReader) List(_ context.Context, list client.ObjectList, opts ...client.ListOption) error {
	lo := &client.ListOptions{}
	lo.ApplyOptions(opts)
	noCopy := lo.UnsafeDisableDeepCopy != nil && *lo.UnsafeDisableDeepCopy
	switch l := list.(type) {
	case *hcv1.BillingPolicyList:
		l.Items = make([]hcv1.BillingPolicy, 0, len(r.policies))
		for _, p := range r.policies {
			if noCopy {
				l.Items = append(l.Items, *p)
			} else {
				l.Items = append(l.Items, *p.DeepCopy())
			}
		}
	case *hcv1.CreditAccountList:
		user, ok := "", false
		if lo.FieldSelector != nil {
			user, ok = lo.FieldSelector.RequiresExactMatch(indexer.AccountUsersKey)
		}
		if !ok {
			return fmt.Errorf("cacheReader: accounts are listed by user only")
		}
		for _, a := range r.byUser[lo.Namespace+"/"+user] {
			l.Items = append(l.Items, *a.DeepCopy())
		}
	default:
		return fmt.Errorf("cacheReader: unexpected List of %T", list)
	}
	return nil
}

func newNotFound(name string) error {
	return apierrors.NewNotFound(hcv1.GroupVersion.WithResource("creditaccounts").GroupResource(), name)
}

// allowAll is controller-runtime's cheapest pod webhook: decode, allow.
type allowAll struct{}

func (allowAll) ValidateCreate(context.Context, *corev1.Pod) (admission.Warnings, error) {
	return nil, nil
}
func (allowAll) ValidateUpdate(context.Context, *corev1.Pod, *corev1.Pod) (admission.Warnings, error) {
	return nil, nil
}
func (allowAll) ValidateDelete(context.Context, *corev1.Pod) (admission.Warnings, error) {
	return nil, nil
}

func benchRequest(b *testing.B, pod *corev1.Pod) admission.Request {
	raw, err := json.Marshal(pod)
	if err != nil {
		b.Fatal(err)
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "7c1e4a52-bench",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: benchNS, Name: pod.Name,
		Operation: admissionv1.Create,
		UserInfo:  authenticationv1.UserInfo{Username: "system:serviceaccount:jhub:hub"},
		Object:    runtime.RawExtension{Raw: raw},
		Options:   runtime.RawExtension{Raw: []byte(`{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}`)},
	}}
}

// podWebhook wraps the admitter as webhooks.SetupPodWebhook does.
func podWebhook(s *runtime.Scheme, reader client.Reader, api client.Client) *admission.Webhook {
	h := &webhooks.PodAdmitter{
		Reader:   reader,
		Reserver: &webhooks.Reserver{Client: api, APIReader: api, Clock: clock.RealClock{}},
		Decoder:  admission.NewDecoder(s),
		Clock:    clock.RealClock{},
		Policies: &billing.PolicyCache{},
		Defaults: billing.DefaultPrice,
	}
	return &admission.Webhook{Handler: h, RecoverPanic: ptr.To(true)}
}

func runHandle(b *testing.B, wh *admission.Webhook, req admission.Request, wantPatch bool) {
	ctx := context.Background()
	// One call outside the timer: compiles the policies into the cache.
	resp := wh.Handle(ctx, req)
	if !resp.Allowed {
		b.Fatalf("not allowed: %+v", resp.Result)
	}
	if wantPatch && (len(resp.Patch) == 0 || !strings.Contains(string(resp.Patch), `"value":"0"`)) {
		b.Fatalf("the free price was not pinned: %s", resp.Patch)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp = wh.Handle(ctx, req)
	}
	if !resp.Allowed {
		b.Fatal("not allowed")
	}
}

// BenchmarkPodAdmission: the three sub-benchmarks handle the same
// AdmissionRequest (a KubeSpawner pod that a free BillingPolicy prices at 0,
// so no reservation is written).
//
//   - allow-all-validator: admission.WithValidator with a validator that
//     returns nil (decode + allow), the floor of a controller-runtime pod
//     webhook.
//   - free-price/cache: PodAdmitter reading from an in-memory cache stand-in
//     (what production reads: the informer cache).
//   - free-price/fake-client: the same reading from controller-runtime's
//     fake client (every read round-trips through the scheme).
func BenchmarkPodAdmission(b *testing.B) {
	// A real (zap) logger, writing nowhere: admission.Webhook builds a
	// request logger for every call, as in production.
	logf.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	s := benchScheme()
	objs := benchObjects()
	req := benchRequest(b, benchPod("user0042"))
	api := indexer.WithIndexes(fake.NewClientBuilder().WithScheme(s).
		WithStatusSubresource(&hcv1.CreditAccount{})).
		WithObjects(objs...).Build()

	b.Run("allow-all-validator", func(b *testing.B) {
		runHandle(b, admission.WithValidator[*corev1.Pod](s, allowAll{}), req, false)
	})
	b.Run("free-price/cache", func(b *testing.B) {
		runHandle(b, podWebhook(s, newCacheReader(objs), api), req, true)
	})
	b.Run("free-price/fake-client", func(b *testing.B) {
		runHandle(b, podWebhook(s, api, api), req, true)
	})
}
