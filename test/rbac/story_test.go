package rbac

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/kubespawner"
	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
	"github.com/hubcredits/hubcredits/webhooks"
)

// period is the story's billing interval.
const period = 2 * time.Second

// tokenConfig returns a rest.Config that authenticates as the
// ServiceAccount, with a token from the TokenRequest API (what the kubelet
// mounts into the operator's pod), and no client certificate.
func tokenConfig(t *testing.T, sa serviceAccount) *rest.Config {
	t.Helper()
	cs := kubernetes.NewForConfigOrDie(env.Config)
	tr, err := cs.CoreV1().ServiceAccounts(sa.ns).CreateToken(context.Background(), sa.name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s: %v", sa.user(), err)
	}
	return &rest.Config{
		Host:            env.Config.Host,
		BearerToken:     tr.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: env.Config.CAData},
		QPS:             env.Config.QPS, Burst: env.Config.Burst,
	}
}

// startOperator runs the whole operator as main.go wires it (leader
// election, certificate rotation, controllers, webhooks) with cfg, until
// the test ends.
func startOperator(t *testing.T, cfg *rest.Config, hub string, rot operator.CertRotation, o operator.Options, clientCA string) ctrl.Manager {
	t.Helper()
	w := env.WebhookInstallOptions
	webhookServer, err := operator.NewWebhookServer(webhook.Options{
		Host: w.LocalServingHost, Port: w.LocalServingPort, CertDir: w.LocalServingCertDir,
		TLSOpts: operator.WebhookTLS(false),
	}, clientCA)
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(cfg, operator.ManagerOptions(o, operator.Process{
		LeaderElection: true, LeaderElectionNamespace: hub,
		// The next test's operator takes over at once.
		ReleaseOnCancel: true,
		// Each test runs its own operator in this process.
		SeveralManagers: true,
		WebhookServer:   webhookServer,
	}))
	if err != nil {
		t.Fatal(err)
	}
	// The rotation writes its own files (the webhook server here serves
	// envtest's certificate, which the installed configurations trust).
	if _, err := operator.AddCertRotation(mgr, rot); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := operator.Setup(ctx, mgr, o); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("operator under its own token: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return mgr
}

// TestOperatorUnderItsOwnToken runs the operator with nothing but the
// default chart's RBAC (and --webhook-client-ca): a missing permission
// shows as a step of the story that never happens.
func TestOperatorUnderItsOwnToken(t *testing.T) {
	hub := newNamespace(t, "jhub")
	ctx := context.Background()
	objs := render(t, hub)
	apply(t, objs, rbacKinds...)
	apply(t, objs, "Secret")    // the empty certificate Secret
	apply(t, objs, "ConfigMap") // the empty tombstone ConfigMap
	ensureMutatingConfigs(t, objs, hub)
	// Z2JH's Secret "hub": the operator must never need it.
	hubSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: hub, Name: "hub"},
		StringData: map[string]string{"hub.services.hubcredits.apiToken": "secret-hub-token"}}
	if err := k8s.Create(ctx, hubSecret); err != nil {
		t.Fatal(err)
	}

	cfg := tokenConfig(t, serviceAccount{hub, "hubcredits"})
	mgr := startOperator(t, cfg, hub, operator.CertRotation{
		Namespace: hub, SecretName: "hubcredits-webhook-cert", ServiceName: "hubcredits-webhook",
		MutatingName: "hubcredits-" + hub + "-mutating", ValidatingName: "hubcredits-" + hub + "-validating",
		CertDir: t.TempDir(), ControllerName: "cert-rotator-" + hub,
	}, operator.Options{
		Namespace:          hub,
		Defaults:           billing.Defaults{Value: 10, Interval: period},
		Billing:            billing.Options{OrphanGrace: 3 * time.Second, StopRetry: 5 * time.Second, LowPeriods: 2},
		Workers:            2,
		Webhooks:           true,
		AutoCreate:         &webhooks.WalletTemplate{Cap: 20},
		TombstoneConfigMap: "hubcredits-tombstones",
	}, clientCAFile)

	// The operator's own client cannot read Z2JH's Secret "hub" (a direct
	// GET, refused; a cached read would wait for an informer that can
	// never list).
	getCtx, cancelGet := context.WithTimeout(ctx, 10*time.Second)
	err := mgr.GetClient().Get(getCtx, client.ObjectKeyFromObject(hubSecret), &corev1.Secret{})
	cancelGet()
	if !apierrors.IsForbidden(err) {
		t.Errorf("the operator reading Secret hub: %v, want Forbidden", err)
	}
	// Leader election: the lease is held.
	eventually(t, 30*time.Second, func() error {
		l := &coordinationv1.Lease{}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: hub, Name: "hubcredits.hubcredits.io"}, l); err != nil {
			return err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			return notYet("lease not held")
		}
		return nil
	})
	// Certificate rotation: the Secret is filled and the CA injected.
	eventually(t, 30*time.Second, func() error {
		s := &corev1.Secret{}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: hub, Name: "hubcredits-webhook-cert"}, s); err != nil {
			return err
		}
		if len(s.Data["ca.crt"]) == 0 {
			return notYet("certificate Secret not filled")
		}
		m := &admissionregistrationv1.MutatingWebhookConfiguration{}
		v := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		if err := k8s.Get(ctx, types.NamespacedName{Name: "hubcredits-" + hub + "-mutating"}, m); err != nil {
			return err
		}
		if err := k8s.Get(ctx, types.NamespacedName{Name: "hubcredits-" + hub + "-validating"}, v); err != nil {
			return err
		}
		if string(m.Webhooks[0].ClientConfig.CABundle) != string(s.Data["ca.crt"]) ||
			string(v.Webhooks[0].ClientConfig.CABundle) != string(s.Data["ca.crt"]) {
			return notYet("CA not injected")
		}
		return nil
	})

	// Billing: alice has 25 credits; her server is admitted (10 reserved),
	// charged each period, and stopped (deleted: no Hub API here) when the
	// balance cannot pay the next one.
	policy := &hcv1.BillingPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: hub, Name: "default"},
		Spec: hcv1.BillingPolicySpec{BillingValue: ptr.To[int64](10), BillingInterval: metav1.Duration{Duration: period}}}
	if err := k8s.Create(ctx, policy); err != nil { // through the validating webhook
		t.Fatal(err)
	}
	alice := &hcv1.CreditAccount{ObjectMeta: metav1.ObjectMeta{Namespace: hub, Name: "alice"},
		Spec: hcv1.CreditAccountSpec{Users: []string{"alice"}, Cap: 100, InitialBalance: ptr.To[int64](25)}}
	if err := k8s.Create(ctx, alice); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		p := &hcv1.BillingPolicy{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(policy), p); err != nil {
			return err
		}
		if len(p.Status.Conditions) == 0 {
			return notYet("policy status not written")
		}
		return balance(ctx, hub, "alice", 25)
	})
	pod := kubespawner.Pod(hub, "alice", "", "hubtoken")
	pod.Spec.NodeName = "node-1"
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatalf("alice's spawn: %v", err)
	}
	if pod.Annotations[hcv1.AnnotationReservation] == "" {
		t.Fatalf("alice's pod was admitted without a reservation: %v", pod.Annotations)
	}
	start := metav1.NewTime(time.Now().Truncate(time.Second))
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, StartTime: &start, ContainerStatuses: []corev1.ContainerStatus{{
		Name: "notebook", Ready: true, Image: pod.Spec.Containers[0].Image,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: start}},
	}}}
	if err := k8s.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*period+20*time.Second, func() error {
		got := &corev1.Pod{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(pod), got); client.IgnoreNotFound(err) != nil {
			return err
		} else if err == nil && got.DeletionTimestamp == nil {
			return notYet("alice's server not stopped yet (%s)", balanceOf(ctx, hub, "alice"))
		}
		return balance(ctx, hub, "alice", 5)
	})
	wantEvent(t, hub, "alice", "jupyter-alice")
	// Her ended server's UsageRecord is written under the chart's Role.
	eventually(t, 20*time.Second, func() error {
		rec := &hcv1.UsageRecord{}
		name := billing.UsageRecordName(pod.Annotations[hcv1.AnnotationReservation], pod.Name)
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: hub, Name: name}, rec); err != nil {
			return notYet("alice's usage record: %v", err)
		}
		if rec.User != "alice" || rec.Total != 20 {
			return fmt.Errorf("alice's usage record %+v, want 20 credits", rec)
		}
		return nil
	})

	// A new user: the webhook creates bob's wallet (auto-create) and reserves.
	bob := kubespawner.Pod(hub, "bob", "", "hubtoken")
	if err := k8s.Create(ctx, bob); err != nil {
		t.Fatalf("bob's spawn: %v", err)
	}
	eventually(t, 20*time.Second, func() error { return balance(ctx, hub, billing.WalletName("bob"), 10) })

	// The webhook verifies its caller (--webhook-client-ca): every spawn
	// above came through the API server's client certificate; a review sent
	// to the port without it is refused before it is read, and counted.
	refusedBefore := testutil.Counter(t, "hubcredits_webhook_unauthenticated_requests_total", nil)
	if code := newForger(t).status(hub, "bob"); code != http.StatusForbidden {
		t.Errorf("a review without the API server's client certificate: HTTP %d, want 403", code)
	}
	if got := testutil.Counter(t, "hubcredits_webhook_unauthenticated_requests_total", nil) - refusedBefore; got != 1 {
		t.Errorf("hubcredits_webhook_unauthenticated_requests_total grew by %v, want 1", got)
	}
	eventually(t, 5*time.Second, func() error { return balance(ctx, hub, billing.WalletName("bob"), 10) })

	// alice's account is deleted (by force: her stopped pod is left to a
	// kubelet that does not run here): her tombstone goes into the chart's
	// ConfigMap, the one the operator may get and update; created again,
	// she opens with its balance, and the operator removes it.
	gone := &hcv1.CreditAccount{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(alice), gone); err != nil {
		t.Fatal(err)
	}
	left := gone.Status.Balance
	if err := k8s.Delete(ctx, gone); err != nil {
		t.Fatal(err)
	}
	patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"`+hcv1.AnnotationForceDelete+`":"true"}}}`))
	if err := k8s.Patch(ctx, gone, patch); err != nil {
		t.Fatal(err)
	}
	tombstones := types.NamespacedName{Namespace: hub, Name: "hubcredits-tombstones"}
	eventually(t, 20*time.Second, func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(alice), &hcv1.CreditAccount{}); !apierrors.IsNotFound(err) {
			return notYet("alice's account not released (%v)", err)
		}
		cm := &corev1.ConfigMap{}
		if err := k8s.Get(ctx, tombstones, cm); err != nil {
			return err
		}
		if tomb, err := billing.DecodeTombstone(cm.Data["alice"]); err != nil || tomb.Balance != left {
			return notYet("alice's tombstone %+v (%v), want balance %d", tomb, err, left)
		}
		return nil
	})
	again := &hcv1.CreditAccount{ObjectMeta: metav1.ObjectMeta{Namespace: hub, Name: "alice"},
		Spec: hcv1.CreditAccountSpec{Users: []string{"alice"}, Cap: 100, InitialBalance: ptr.To[int64](25)}}
	if err := k8s.Create(ctx, again); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		if err := balance(ctx, hub, "alice", left); err != nil {
			return err
		}
		cm := &corev1.ConfigMap{}
		if err := k8s.Get(ctx, tombstones, cm); err != nil {
			return err
		}
		if _, ok := cm.Data["alice"]; ok {
			return notYet("alice's tombstone not removed once taken over")
		}
		return nil
	})
}

func balance(ctx context.Context, ns, name string, want int64) error {
	a := &hcv1.CreditAccount{}
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, a); err != nil {
		return err
	}
	if a.Status.OpenedAt == nil || a.Status.Balance != want {
		return notYet("account %s: balance %d (opened %v), want %d", name, a.Status.Balance, a.Status.OpenedAt != nil, want)
	}
	return nil
}

func balanceOf(ctx context.Context, ns, name string) string {
	a := &hcv1.CreditAccount{}
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, a); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("balance %d", a.Status.Balance)
}

// wantEvent waits for an Event the operator recorded about object.
func wantEvent(t *testing.T, ns string, objects ...string) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		var evs corev1.EventList
		if err := k8s.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			for _, o := range objects {
				if e.InvolvedObject.Name == o {
					return nil
				}
			}
		}
		return notYet("no event about %v", objects)
	})
}

// ensureMutatingConfigs installs the release's webhook configurations as
// rendered, but selecting no object (the Service they name does not run
// here): the certificate rotation injects its CA into them.
func ensureMutatingConfigs(t *testing.T, objs []*unstructured.Unstructured, hub string) {
	t.Helper()
	ctx := context.Background()
	mwc := find(t, objs, "MutatingWebhookConfiguration", "hubcredits-"+hub+"-mutating")
	vwc := find(t, objs, "ValidatingWebhookConfiguration", "hubcredits-"+hub+"-validating")
	for _, o := range []*unstructured.Unstructured{mwc, vwc} {
		hooks, _, _ := unstructured.NestedSlice(o.Object, "webhooks")
		for _, h := range hooks {
			h.(map[string]any)["objectSelector"] = map[string]any{"matchLabels": map[string]any{"hubcredits.io/never": "true"}}
		}
		if err := unstructured.SetNestedSlice(o.Object, hooks, "webhooks"); err != nil {
			t.Fatal(err)
		}
		if err := k8s.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}
