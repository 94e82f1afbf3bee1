package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/hubcredits/hubcredits/internal/localcp"
	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// TestCertRotation starts the operator binary's run() with no certificate
// at all: it must create a CA and serving certificate, inject the CA into
// both webhook configurations, and serve the webhook with that certificate.
// The test plays the kubelet's part of mounting the Secret.
func TestCertRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the local control plane")
	}
	env, c, ns := certRotationEnv(t)
	defer func() { _ = env.Stop() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kc, err := env.AdminKubeconfig()
	must(t, err)
	kcPath := filepath.Join(t.TempDir(), "kubeconfig")
	must(t, os.WriteFile(kcPath, kc, 0o600))
	t.Setenv("KUBECONFIG", kcPath)
	certDir := t.TempDir()
	port := freePort(t)
	f, _, err := parseFlags([]string{
		"--cert-rotation", "--operator-namespace", ns, "--webhook-cert-dir", certDir,
		"--webhook-port", strconv.Itoa(port), "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
		"--namespace", "jhub",
	})
	must(t, err)
	o, err := f.options()
	must(t, err)
	done := make(chan error, 1)
	go func() { done <- run(ctx, f, o) }()

	// The kubelet's part: mount the Secret's keys as files.
	secret := mountSecret(t, c, ns, certDir)
	// The CA is injected into both configurations.
	testutil.Eventually(t, 30*time.Second, func() error {
		var m admissionregistrationv1.MutatingWebhookConfiguration
		var v admissionregistrationv1.ValidatingWebhookConfiguration
		if err := c.Get(ctx, types.NamespacedName{Name: "hubcredits-mutating"}, &m); err != nil {
			return err
		}
		if err := c.Get(ctx, types.NamespacedName{Name: "hubcredits-validating"}, &v); err != nil {
			return err
		}
		if string(m.Webhooks[0].ClientConfig.CABundle) != string(secret.Data["ca.crt"]) ||
			string(v.Webhooks[0].ClientConfig.CABundle) != string(secret.Data["ca.crt"]) {
			return fmt.Errorf("caBundle not injected yet")
		}
		return nil
	})
	// The webhook serves with the rotated certificate, for the Service's name.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(secret.Data["ca.crt"])
	testutil.Eventually(t, 30*time.Second, func() error {
		conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), &tls.Config{
			RootCAs: pool, ServerName: "hubcredits-webhook." + ns + ".svc", MinVersion: tls.VersionTLS12,
			NextProtos: []string{"h2", "http/1.1"},
		})
		if err != nil {
			return err
		}
		defer func() { _ = conn.Close() }()
		if p := conn.ConnectionState().NegotiatedProtocol; p == "h2" {
			return fmt.Errorf("HTTP/2 is on by default")
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("operator: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the operator did not stop")
	}
}

// certRotationEnv starts a local control plane with what the chart creates
// before the operator runs: its namespace, the empty certificate Secret and
// the two webhook configurations pointing at its Service (failurePolicy
// Ignore: nothing answers through a Service here).
func certRotationEnv(t *testing.T) (*localcp.Env, client.Client, string) {
	t.Helper()
	env, err := localcp.Start(localcp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := client.New(env.Config, client.Options{Scheme: operator.Scheme()})
	if err != nil {
		_ = env.Stop()
		t.Fatal(err)
	}
	const ns = "hubcredits-system"
	must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	must(t, c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hubcredits-webhook-cert"}}))
	root, err := localcp.Root()
	must(t, err)
	muts, vals, err := localcp.WebhookConfigs(root, "", []string{ns})
	must(t, err)
	for _, m := range muts {
		for i := range m.Webhooks {
			m.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{
				Namespace: ns, Name: "hubcredits-webhook", Path: m.Webhooks[i].ClientConfig.Service.Path}}
			m.Webhooks[i].FailurePolicy = ptr.To(admissionregistrationv1.Ignore)
		}
		must(t, c.Create(ctx, m))
	}
	for _, v := range vals {
		for i := range v.Webhooks {
			v.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{
				Namespace: ns, Name: "hubcredits-webhook", Path: v.Webhooks[i].ClientConfig.Service.Path}}
			v.Webhooks[i].FailurePolicy = ptr.To(admissionregistrationv1.Ignore)
		}
		must(t, c.Create(ctx, v))
	}
	return env, c, ns
}

// mountSecret plays the kubelet: once the operator has written the
// certificates into its Secret, their keys are written as files into dir.
func mountSecret(t *testing.T, c client.Client, ns, dir string) *corev1.Secret {
	t.Helper()
	var secret corev1.Secret
	testutil.Eventually(t, 30*time.Second, func() error {
		if err := c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "hubcredits-webhook-cert"}, &secret); err != nil {
			return err
		}
		if len(secret.Data["tls.crt"]) == 0 || len(secret.Data["ca.crt"]) == 0 {
			return fmt.Errorf("the operator has not written the certificates yet")
		}
		for _, k := range []string{"tls.crt", "tls.key", "ca.crt"} {
			if err := os.WriteFile(filepath.Join(dir, k), secret.Data[k], 0o600); err != nil {
				return err
			}
		}
		return nil
	})
	return &secret
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestNoDevControlPlaneInOperator: the operator binary must not link the
// local control plane. envtest's init creates /tmp/kubebuilder-envtest and
// panics under a read-only root filesystem (the chart's securityContext).
func TestNoDevControlPlaneInOperator(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps .: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "sigs.k8s.io/controller-runtime/pkg/envtest") ||
			pkg == "github.com/hubcredits/hubcredits/internal/localcp" ||
			strings.HasPrefix(pkg, "github.com/hubcredits/hubcredits/test/") ||
			strings.HasPrefix(pkg, "github.com/hubcredits/hubcredits/internal/testutil") {
			t.Errorf("the operator binary depends on %s (development or test code)", pkg)
		}
	}
}

// TestStartsOnReadOnlyRoot runs the built operator binary the way the chart
// runs it: root filesystem read-only, TMPDIR unset, only the certificate
// directory writable (an emptyDir in the chart), certificates rotated
// in-process. It must become ready, not panic.
func TestStartsOnReadOnlyRoot(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the local control plane")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount the root filesystem read-only in a private mount namespace (unshare -m)")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare(1) (util-linux)")
	}
	bin := filepath.Join(t.TempDir(), "manager")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	env, c, ns := certRotationEnv(t)
	defer func() { _ = env.Stop() }()
	kc, err := env.AdminKubeconfig()
	must(t, err)
	kcPath := filepath.Join(t.TempDir(), "kubeconfig")
	must(t, os.WriteFile(kcPath, kc, 0o600))
	certDir := t.TempDir()
	probe := freePort(t)
	args := []string{"-m", "--propagation", "private", "sh", "-c",
		`mount --bind "$1" "$1" && mount -o remount,bind,ro / && shift && exec "$@"`, "sh", certDir,
		bin, "--kubeconfig=" + kcPath, "--cert-rotation", "--operator-namespace=" + ns,
		"--webhook-cert-dir=" + certDir, "--webhook-port=" + strconv.Itoa(freePort(t)),
		"--metrics-bind-address=0", "--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(probe),
		"--namespace=jhub", "--leader-elect", "--leader-election-namespace=" + ns}
	cmd := exec.Command("unshare", args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TMPDIR=") && !strings.HasPrefix(kv, "KUBECONFIG=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	must(t, cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	// The kubelet's part: the Secret's keys appear as files in the mount.
	mountSecret(t, c, ns, certDir)
	testutil.Eventually(t, 60*time.Second, func() error {
		select {
		case <-exited:
			t.Fatalf("the operator exited on a read-only root filesystem:\n%s", log.String())
		default:
		}
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(probe) + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	})
	if strings.Contains(log.String(), "read-only file system") {
		t.Errorf("the operator tried to write outside its certificate directory:\n%s", log.String())
	}
}
