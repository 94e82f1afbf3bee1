// Package integration tests hubcredits against a real kube-apiserver and
// etcd (built from source into bin/k8s): real CRD validation, the real
// admission chain with our webhook, real optimistic concurrency. Pods never
// run here (no kubelet): tests set pod status through the status
// subresource, as a kubelet would.
package integration

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/localcp"
	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

var (
	env       *localcp.Env
	k8s       client.Client
	clientset *kubernetes.Clientset
	nsCounter atomic.Int64
)

// testOrphanGrace is the reservation grace used in tests (30s in production).
const testOrphanGrace = 3 * time.Second

func TestMain(m *testing.M) {
	testutil.Main(m, "integration", run)
}

func run(m *testing.M) int {
	var err error
	env, err = localcp.Start(localcp.Options{Webhooks: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	k8s, err = client.New(env.Config, client.Options{Scheme: operator.Scheme()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	clientset = kubernetes.NewForConfigOrDie(env.Config)

	// One webhook-only process serves admission for every test; each test
	// runs its own billing controllers (restricted to its namespace), so it
	// can stop and restart them.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := env.WebhookInstallOptions
	mgr, err := ctrl.NewManager(env.Config, operator.ManagerOptions(operator.Options{}, operator.Process{
		WebhookServer: webhook.NewServer(webhook.Options{
			Host: w.LocalServingHost, Port: w.LocalServingPort, CertDir: w.LocalServingCertDir,
			TLSOpts: operator.WebhookTLS(false),
		}),
	}))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := operator.Setup(ctx, mgr, operator.Options{Webhooks: true, DisableControllers: true, Defaults: billing.DefaultPrice}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go func() {
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "webhook manager:", err)
		}
	}()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		fmt.Fprintln(os.Stderr, "webhook cache did not sync")
		return 1
	}
	return m.Run()
}

// newNamespace creates a namespace for one test.
func newNamespace(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("hub-%d-%s", nsCounter.Add(1), strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")))
	if len(name) > 60 {
		name = strings.TrimRight(name[:60], "-")
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return name
}

// billingManager runs the billing controllers for one namespace until the
// returned stop function is called (or the test ends).
type billingManager struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (b *billingManager) Stop() {
	if b.cancel != nil {
		b.cancel()
		<-b.done
		b.cancel = nil
	}
}

func startBilling(t *testing.T, ns string, tweak func(*operator.Options)) *billingManager {
	t.Helper()
	o := operator.Options{
		Namespace: ns,
		Defaults:  billing.DefaultPrice,
		Billing:   billing.Options{OrphanGrace: testOrphanGrace, StopRetry: 5 * time.Second, LowPeriods: 2},
		Workers:   2,
	}
	if tweak != nil {
		tweak(&o)
	}
	mgr, err := ctrl.NewManager(rest.CopyConfig(env.Config), operator.ManagerOptions(o, operator.Process{SeveralManagers: true}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := operator.Setup(ctx, mgr, o); err != nil {
		cancel()
		t.Fatal(err)
	}
	b := &billingManager{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("billing manager: %v", err)
		}
	}()
	t.Cleanup(b.Stop)
	return b
}

func balanceIs(t *testing.T, ns, name string, want int64) func() error {
	return func() error {
		a := testutil.GetAccount(t, k8s, ns, name)
		if a.Status.OpenedAt == nil || a.Status.Balance != want {
			return fmt.Errorf("account %s: balance %d (opened %v), want %d", name, a.Status.Balance, a.Status.OpenedAt != nil, want)
		}
		return nil
	}
}
