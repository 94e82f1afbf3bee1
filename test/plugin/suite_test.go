// Package plugin tests the admin's tools: `kubectl credits`
// (internal/creditscli) the way an admin runs it, from a kubeconfig file,
// and the chart's Grafana dashboard against the metrics the operator
// serves. Both against a real kube-apiserver and etcd with the real
// operator (controllers and webhooks in one manager, started in-process)
// and the real admission chain. The operator lets
// only the hub's ServiceAccount create billed pods (--allowed-creators),
// as the chart does, so the tests spawn as the hub by impersonation.
package plugin

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/creditscli"
	"github.com/hubcredits/hubcredits/internal/localcp"
	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// hubSA is the hub's ServiceAccount, the one allowed creator.
const hubSA = "system:serviceaccount:hub-system:hub"

// taWhy is a TA whose dry runs the webhook answers (--dry-run-identities).
const taWhy = "ta-why"

var (
	env *localcp.Env
	// admin is a cluster-admin client, hub the hub's (impersonated).
	admin, hub client.Client
	// kubeconfig is the admin's kubeconfig file, as kubectl would use it.
	kubeconfig string
	// metricsURL is the operator's /metrics.
	metricsURL string
	nsCounter  atomic.Int64
)

func TestMain(m *testing.M) {
	testutil.Main(m, "plugin", run)
}

func run(m *testing.M) int {
	var err error
	if env, err = localcp.Start(localcp.Options{Webhooks: true}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	if err := setup(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := startOperator(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// setup writes the admin's kubeconfig and lets the hub's ServiceAccount
// manage pods, as Z2JH's RBAC does.
func setup() error {
	var err error
	if admin, err = client.New(env.Config, client.Options{Scheme: operator.Scheme()}); err != nil {
		return err
	}
	hubCfg := rest.CopyConfig(env.Config)
	hubCfg.Impersonate = rest.ImpersonationConfig{UserName: hubSA}
	if hub, err = client.New(hubCfg, client.Options{Scheme: operator.Scheme()}); err != nil {
		return err
	}
	data, err := env.AdminKubeconfig()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "kubectl-credits-")
	if err != nil {
		return err
	}
	kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, data, 0o600); err != nil {
		return err
	}
	ctx := context.Background()
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "hub"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""}, Resources: []string{"pods"},
			Verbs: []string{"get", "list", "watch", "create", "delete"},
		}},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "hub"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "hub"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "hub-system", Name: "hub"}},
	}
	if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "hub-system"}}); err != nil {
		return err
	}
	if err := admin.Create(ctx, role); err != nil {
		return err
	}
	return admin.Create(ctx, binding)
}

// startOperator runs the operator, controllers and webhooks, in-process.
func startOperator(ctx context.Context) error {
	o := operator.Options{
		Webhooks:         true,
		Creators:         []string{hubSA},
		DryRunIdentities: []string{taWhy},
		Defaults:         billing.DefaultPrice,
		Billing:          billing.Options{OrphanGrace: 3 * time.Second, StopRetry: 5 * time.Second, LowPeriods: 2},
		Workers:          2,
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := l.Addr().String()
	_ = l.Close()
	metricsURL = "http://" + addr + "/metrics"
	w := env.WebhookInstallOptions
	mgr, err := ctrl.NewManager(env.Config, operator.ManagerOptions(o, operator.Process{
		MetricsAddr: addr,
		WebhookServer: webhook.NewServer(webhook.Options{
			Host: w.LocalServingHost, Port: w.LocalServingPort, CertDir: w.LocalServingCertDir,
			TLSOpts: operator.WebhookTLS(false),
		}),
	}))
	if err != nil {
		return err
	}
	if err := operator.Setup(ctx, mgr, o); err != nil {
		return err
	}
	go func() {
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "operator:", err)
		}
	}()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return fmt.Errorf("the operator's cache did not sync")
	}
	return nil
}

// newNamespace creates a namespace for one test.
func newNamespace(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("jhub-%d-%s", nsCounter.Add(1), strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")))
	if len(name) > 60 {
		name = strings.TrimRight(name[:60], "-")
	}
	if err := admin.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	return name
}

// result is one run of the plugin.
type result struct {
	out, err string
	code     int
}

// kubectlCredits runs `kubectl credits args...` with the admin's
// kubeconfig (cfg overrides it) and logs what it printed.
func kubectlCredits(t *testing.T, args ...string) result {
	t.Helper()
	return kubectlCreditsWith(t, kubeconfig, args...)
}

func kubectlCreditsWith(t *testing.T, cfg string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := creditscli.Run(append([]string{"--kubeconfig", cfg}, args...), genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	t.Logf("$ kubectl credits %s\n%s%s(exit %d)", strings.Join(args, " "), out.String(), errOut.String(), code)
	return result{out: out.String(), err: errOut.String(), code: code}
}

// oneSentence fails the test unless r failed with one line "error: ...".
func oneSentence(t *testing.T, r result, want string) {
	t.Helper()
	if r.code != 1 {
		t.Errorf("exit status %d, want 1", r.code)
	}
	lines := strings.Split(strings.TrimSuffix(r.err, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "error: ") || !strings.HasSuffix(lines[0], ".") {
		t.Errorf("stderr is not one sentence: %q", r.err)
	}
	if !strings.Contains(r.err, want) {
		t.Errorf("stderr %q does not say %q", r.err, want)
	}
}

// setRunning marks the pod Running with its container started at start,
// as a kubelet would.
func setRunning(t *testing.T, p *corev1.Pod, start time.Time) {
	t.Helper()
	p.Status.Phase = corev1.PodRunning
	st := metav1.NewTime(start)
	p.Status.StartTime = &st
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: "notebook", Ready: true, Image: p.Spec.Containers[0].Image,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: st}},
	}}
	if err := admin.Status().Update(context.Background(), p); err != nil {
		t.Fatalf("setting pod %s running: %v", p.Name, err)
	}
}
