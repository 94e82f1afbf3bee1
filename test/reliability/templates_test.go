package reliability

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/localcp"
	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
	"github.com/hubcredits/hubcredits/webhooks"
)

// startReplicas starts n webhook-only replicas behind the control plane's
// webhook address (a round-robin balancer when n > 1), with o's wallet
// options.
func startReplicas(t *testing.T, ctx context.Context, e *localcp.Env, n int, o operator.Options) {
	t.Helper()
	w := e.WebhookInstallOptions
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		must(t, err)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		_ = l.Close()
	}
	if n == 1 {
		ports[0] = w.LocalServingPort
	}
	for i, port := range ports {
		mgr, err := ctrl.NewManager(e.Config, operator.ManagerOptions(operator.Options{}, operator.Process{
			SeveralManagers: true,
			WebhookServer: webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port,
				CertDir: w.LocalServingCertDir, TLSOpts: operator.WebhookTLS(false)}),
		}))
		must(t, err)
		o.Webhooks, o.DisableControllers = true, true
		must(t, operator.Setup(ctx, mgr, o))
		go func() { _ = mgr.Start(ctx) }()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			t.Fatalf("replica %d did not sync", i)
		}
	}
	if n > 1 {
		startBalancer(t, ctx, fmt.Sprintf("127.0.0.1:%d", w.LocalServingPort), ports)
	}
}

// memberPod is a server of user, a member of groups (the hub's
// annotation).
func memberPod(user, server, groups string) *corev1.Pod {
	p := userPod("default", user, server)
	p.Annotations[hcv1.AnnotationGroups] = groups
	return p
}

// TestTemplateWalletRaceAcrossTwoReplicas: a new member of a templated
// group spawns 16 servers at once, through two webhook replicas behind one
// address. One wallet is created, from the template; the servers admitted
// are exactly those its initial balance covers, each paid once.
func TestTemplateWalletRaceAcrossTwoReplicas(t *testing.T) {
	e, c, _ := isolated(t, true, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	startReplicas(t, ctx, e, 2, operator.Options{})
	must(t, c.Create(ctx, &hcv1.CreditAccountTemplate{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "course"},
		Spec: hcv1.CreditAccountTemplateSpec{Groups: []string{"course"}, Cap: 100, InitialBalance: ptrInt(55)}}))

	const n = 16
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = c.Create(ctx, memberPod("newbie", fmt.Sprint(i), `["course"]`))
		}()
	}
	close(start)
	wg.Wait()
	admitted, denied, timedOut := 0, 0, 0
	for i, err := range errs {
		switch testutil.SpawnOutcome(err) {
		case testutil.Admitted:
			admitted++
		case testutil.Denied:
			denied++
		case testutil.TimedOut:
			timedOut++
		default:
			t.Fatalf("spawn %d: %v", i, err)
		}
	}
	var list hcv1.CreditAccountList
	must(t, c.List(ctx, &list, client.InNamespace("default")))
	if len(list.Items) != 1 || list.Items[0].Name != "wallet-newbie" || list.Items[0].Labels[hcv1.LabelTemplate] != "course" {
		t.Fatalf("%d accounts (%+v), want only wallet-newbie from the template course", len(list.Items), list.Items)
	}
	w := list.Items[0]
	if len(w.Status.Servers) > 5 || admitted > 5 || w.Status.Balance != 55-10*int64(len(w.Status.Servers)) {
		t.Fatalf("admitted %d; the wallet holds %d with %d reservations; want at most 5, and 55 - 10 each", admitted, w.Status.Balance, len(w.Status.Servers))
	}
	if timedOut == 0 && (admitted != 5 || denied != n-5 || len(w.Status.Servers) != 5) {
		t.Fatalf("admitted %d, denied %d, %d reservations; want 5, %d, 5", admitted, denied, len(w.Status.Servers), n-5)
	}
	t.Logf("admitted %d, denied %d, timed out %d", admitted, denied, timedOut)
}

// TestWebhookWithoutTheTemplateCRD: an operator upgraded without applying
// the new CRD (Helm never upgrades CRDs) still starts and serves every
// spawn; a new user gets the operator's own template.
func TestWebhookWithoutTheTemplateCRD(t *testing.T) {
	e, c, _ := isolated(t, true, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	crd := &unstructured.Unstructured{}
	crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
	crd.SetName("creditaccounttemplates.hubcredits.io")
	must(t, c.Delete(ctx, crd))
	deadline := time.Now().Add(30 * time.Second)
	for !apierrors.IsNotFound(c.Get(ctx, types.NamespacedName{Name: crd.GetName()}, crd)) {
		if time.Now().After(deadline) {
			t.Fatal("the CRD was not deleted")
		}
		time.Sleep(100 * time.Millisecond)
	}

	startReplicas(t, ctx, e, 1, operator.Options{AutoCreate: &webhooks.WalletTemplate{Cap: 30}})

	must(t, c.Create(ctx, &hcv1.CreditAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "alice"},
		Spec: hcv1.CreditAccountSpec{Users: []string{"alice"}, Cap: 100}}))
	must(t, c.Create(ctx, userPod("default", "alice", "a")))
	must(t, c.Create(ctx, memberPod("bob", "a", `["course"]`)))
	w := &hcv1.CreditAccount{}
	must(t, c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "wallet-bob"}, w))
	if w.Spec.Cap != 30 || w.Status.Balance != 20 {
		t.Fatalf("wallet-bob: cap %d, balance %d; want the operator's template (30), 20 after the first period", w.Spec.Cap, w.Status.Balance)
	}
}
