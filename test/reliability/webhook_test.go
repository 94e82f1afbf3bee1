package reliability

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/localcp"
	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// isolated starts a control plane of its own, so a test can take the
// webhook down or put two replicas behind it.
func isolated(t *testing.T, webhooks bool, fp admissionregistrationv1.FailurePolicyType) (*localcp.Env, client.Client, string) {
	t.Helper()
	e, err := localcp.Start(localcp.Options{Webhooks: webhooks, FailurePolicy: fp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop() })
	c, err := client.New(e.Config, client.Options{Scheme: operator.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	kc, err := e.AdminKubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return e, c, path
}

func userPod(ns, user, server string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "jupyter-" + user + "--" + server,
			Labels:      map[string]string{"component": "singleuser-server"},
			Annotations: map[string]string{hcv1.AnnotationUsername: user, hcv1.AnnotationServerName: server}},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "notebook", Image: "jupyter",
			Env: []corev1.EnvVar{{Name: "JUPYTERHUB_API_TOKEN", Value: "reliability-PLANTED-token"}}}}},
	}
}

// TestWebhookDownFailClosed: with failurePolicy Fail (the default) and no
// webhook answering, a spawn fails at once with the API server's error, and
// nothing is charged.
func TestWebhookDownFailClosed(t *testing.T) {
	_, c, _ := isolated(t, true, admissionregistrationv1.Fail)
	ctx := context.Background()
	must(t, c.Create(ctx, &hcv1.CreditAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "alice"},
		Spec: hcv1.CreditAccountSpec{Users: []string{"alice"}, Cap: 100}}))
	err := c.Create(ctx, userPod("default", "alice", "a"))
	if err == nil || !strings.Contains(err.Error(), `failed calling webhook "pods.hubcredits.io"`) {
		t.Fatalf("got %v, want the API server's webhook error", err)
	}
	a := &hcv1.CreditAccount{}
	must(t, c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "alice"}, a))
	if len(a.Status.Servers) != 0 || a.Status.TotalCharged != 0 {
		t.Fatalf("a failed spawn was charged: %+v", a.Status)
	}
}

// TestWebhookDownFailOpen: with failurePolicy Ignore the pod is admitted
// without a reservation; the controller adopts it and still bills it.
func TestWebhookDownFailOpen(t *testing.T) {
	_, c, kc := isolated(t, true, admissionregistrationv1.Ignore)
	ctx := context.Background()
	must(t, c.Create(ctx, &hcv1.CreditAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "alice"},
		Spec: hcv1.CreditAccountSpec{Users: []string{"alice"}, Cap: 100}}))
	p := userPod("default", "alice", "a")
	must(t, c.Create(ctx, p))
	if _, ok := p.Annotations[hcv1.AnnotationReservation]; ok {
		t.Fatal("the pod was reserved although no webhook answered")
	}
	start := metav1.NewTime(time.Now().Truncate(time.Second))
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, StartTime: &start, ContainerStatuses: []corev1.ContainerStatus{{
		Name: "notebook", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: start}}}}}
	must(t, c.Status().Update(ctx, p))
	op := startOperatorWith(t, kc, "default")
	defer op.kill()
	deadline := time.Now().Add(20 * time.Second)
	for {
		a := &hcv1.CreditAccount{}
		must(t, c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "alice"}, a))
		if a.Status.Balance == 90 && len(a.Status.Servers) == 1 && a.Status.Servers[0].ID == "pod-"+string(p.UID) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the unreserved pod was not adopted and billed: %+v", a.Status)
		}
		time.Sleep(200 * time.Millisecond)
	}
	assertNoToken(t, op)
}

// TestTwoWebhookReplicasRace: two webhook replicas behind one address (a
// round-robin TCP balancer, as a Service spreads connections): 200
// concurrent spawns on one account with credits for 50 admit exactly 50,
// and both replicas answered.
func TestTwoWebhookReplicasRace(t *testing.T) {
	e, c, _ := isolated(t, true, "")
	w := e.WebhookInstallOptions
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ports []int
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		must(t, err)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		_ = l.Close()
	}
	for i, port := range ports {
		mgr, err := ctrl.NewManager(e.Config, operator.ManagerOptions(operator.Options{}, operator.Process{
			SeveralManagers: true,
			WebhookServer: webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port,
				CertDir: w.LocalServingCertDir, TLSOpts: operator.WebhookTLS(false)}),
		}))
		must(t, err)
		must(t, operator.Setup(ctx, mgr, operator.Options{Webhooks: true, DisableControllers: true}))
		go func() { _ = mgr.Start(ctx) }()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			t.Fatalf("replica %d did not sync", i)
		}
	}
	served := startBalancer(t, ctx, fmt.Sprintf("127.0.0.1:%d", w.LocalServingPort), ports)

	must(t, c.Create(ctx, &hcv1.CreditAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "pool"},
		Spec: hcv1.CreditAccountSpec{Users: []string{"u"}, Cap: 500, InitialBalance: ptrInt(500)}}))
	var wg sync.WaitGroup
	var admitted, denied, timedOut, other atomic.Int64
	lat := make([]time.Duration, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			err := c.Create(ctx, userPod("default", "u", fmt.Sprint(i)))
			lat[i] = time.Since(t0)
			switch testutil.SpawnOutcome(err) {
			case testutil.Admitted:
				admitted.Add(1)
			case testutil.Denied:
				denied.Add(1)
			case testutil.TimedOut:
				timedOut.Add(1)
			default:
				if other.Add(1) == 1 {
					t.Logf("unexpected: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	t.Logf("create latency p50 %s p99 %s max %s", lat[100], lat[197], lat[199])
	a := &hcv1.CreditAccount{}
	must(t, c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "pool"}, a))
	// Never more reserved than the balance covers, every admitted pod
	// reserved, and — when every request got its answer in time — exactly
	// the affordable number admitted.
	// With requests timed out, a request may have been dropped before it
	// reserved (the machine is loaded): then the balance is 0 only if a
	// denial proved it ran out. Always: the reservations took exactly what
	// the balance lost, never more than it had.
	var paid int64
	for _, e := range a.Status.Servers {
		paid += e.Paid
	}
	exhausted := timedOut.Load() == 0 || denied.Load() > 0
	if other.Load() != 0 || admitted.Load() > 50 || int64(len(a.Status.Servers)) < admitted.Load() || len(a.Status.Servers) > 50 ||
		a.Status.Balance < 0 || 500-a.Status.Balance != paid ||
		(exhausted && (a.Status.Balance != 0 || len(a.Status.Servers) != 50)) ||
		(timedOut.Load() == 0 && (admitted.Load() != 50 || denied.Load() != 150)) {
		t.Fatalf("admitted %d, denied %d, timed out %d, other %d; balance %d with %d reservations paying %d; want 50 admitted, 150 denied; 0 with 50",
			admitted.Load(), denied.Load(), timedOut.Load(), other.Load(), a.Status.Balance, len(a.Status.Servers), paid)
	}
	t.Logf("admitted %d, denied %d, timed out %d (reserved, refunded by the controller)", admitted.Load(), denied.Load(), timedOut.Load())
	for i, n := range served {
		if n.Load() == 0 {
			t.Fatalf("replica %d answered no request", i)
		}
	}
	t.Logf("connections per replica: %d / %d", served[0].Load(), served[1].Load())
}

// startBalancer forwards TCP connections on addr to the backends in turn.
func startBalancer(t *testing.T, ctx context.Context, addr string, ports []int) []*atomic.Int64 {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	must(t, err)
	go func() { <-ctx.Done(); _ = l.Close() }()
	counts := make([]*atomic.Int64, len(ports))
	for i := range counts {
		counts[i] = &atomic.Int64{}
	}
	go func() {
		for n := 0; ; n++ {
			in, err := l.Accept()
			if err != nil {
				return
			}
			i := n % len(ports)
			counts[i].Add(1)
			go func() {
				out, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[i]))
				if err != nil {
					_ = in.Close()
					return
				}
				go func() { _, _ = io.Copy(out, in); _ = out.Close() }()
				_, _ = io.Copy(in, out)
				_ = in.Close()
			}()
		}
	}()
	return counts
}

func startOperatorWith(t *testing.T, kc, ns string) *operatorProc {
	saved := kubeconfig
	kubeconfig = kc
	defer func() { kubeconfig = saved }()
	return startOperator(t, ns)
}

// assertNoToken fails if the operator's log holds the Hub token planted in
// the pods' env.
func assertNoToken(t *testing.T, p *operatorProc) {
	t.Helper()
	b, err := os.ReadFile(p.log.Name())
	must(t, err)
	if strings.Contains(string(b), "PLANTED") || strings.Contains(string(b), "JUPYTERHUB_API_TOKEN") {
		t.Fatal("the operator's log holds a pod's Hub token")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ptrInt(v int64) *int64 { return &v }
