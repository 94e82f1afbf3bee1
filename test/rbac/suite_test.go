// Package rbac checks what the chart's RBAC lets the operator do, on a real
// kube-apiserver with RBAC authorization (envtest's default; the test
// itself is system:masters): the rendered Roles and bindings are applied,
// SubjectAccessReviews (what `kubectl auth can-i --as` asks) assert what
// the operator must and must not be allowed, and then the operator runs
// with its ServiceAccount's token (TokenRequest) through a short billing
// story, so a missing permission fails here rather than in a user's
// cluster.
//
// The chart is rendered with bin/helm (make bin/helm; HELM overrides it).
package rbac

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/hubcredits/hubcredits/internal/localcp"
	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

var (
	env       *localcp.Env
	k8s       client.Client
	root      string
	nsCounter atomic.Int64
	// clientCAFile is the CA of the API server's webhook client
	// certificate (for --webhook-client-ca).
	clientCAFile string
)

func TestMain(m *testing.M) {
	testutil.Main(m, "rbac", run)
}

func run(m *testing.M) int {
	var err error
	if root, err = localcp.Root(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The API server presents a client certificate to every webhook (its
	// admission configuration's kubeConfigFile), as clusters that verify
	// their webhook callers configure it (--webhook-client-ca).
	dir, err := os.MkdirTemp("", "hubcredits-rbac-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	admissionConfig, err := webhookClientCredentials(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The webhook configurations installed here point at the operator the
	// story runs in-process (envtest's serving certificate for 127.0.0.1).
	env, err = localcp.Start(localcp.Options{Root: root, Webhooks: true,
		APIServerArgs: map[string]string{"admission-control-config-file": admissionConfig}})
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
	return m.Run()
}

// helm returns the helm binary: $HELM, else bin/helm.
func helm(t *testing.T) string {
	t.Helper()
	h := os.Getenv("HELM")
	if h == "" {
		h = filepath.Join(root, "bin", "helm")
	}
	if _, err := os.Stat(h); err != nil {
		t.Fatalf("no helm at %s: run `make bin/helm` (built from source) or set HELM", h)
	}
	return h
}

// render runs helm template on the chart and returns its objects.
func render(t *testing.T, namespace string, args ...string) []*unstructured.Unstructured {
	t.Helper()
	cmd := exec.Command(helm(t), append([]string{"template", "hubcredits", filepath.Join(root, "charts", "hubcredits"), "-n", namespace}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, stderr.String())
	}
	var objs []*unstructured.Unstructured
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(out), -1) {
		m := map[string]any{}
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("rendered YAML: %v", err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	return objs
}

// apply creates the rendered objects of the given kinds (their namespaces
// first), leaving existing ones alone.
func apply(t *testing.T, objs []*unstructured.Unstructured, kinds ...string) {
	t.Helper()
	ctx := context.Background()
	want := map[string]bool{}
	for _, k := range kinds {
		want[k] = true
	}
	for _, o := range objs {
		if !want[o.GetKind()] {
			continue
		}
		if ns := o.GetNamespace(); ns != "" {
			ensureNamespace(t, ns)
		}
		if err := k8s.Create(ctx, o.DeepCopy()); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
}

// newNamespace creates a namespace of its own for one test (prefix-N), so
// that the tests' cluster-scoped objects never meet either.
func newNamespace(t *testing.T, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d", prefix, nsCounter.Add(1))
	ensureNamespace(t, name)
	return name
}

func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	ns := &unstructured.Unstructured{}
	ns.SetAPIVersion("v1")
	ns.SetKind("Namespace")
	ns.SetName(name)
	if err := k8s.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// find returns the rendered object of that kind and name.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o.DeepCopy()
		}
	}
	t.Fatalf("the render has no %s %s", kind, name)
	return nil
}

// eventually polls cond until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %s: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var errNotYet = errors.New("not yet")

func notYet(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errNotYet, strings.TrimSpace(fmt.Sprintf(format, a...)))
}

// webhookClientCredentials writes a CA, a client certificate it signs, the
// kubeconfig that gives it to the API server for every webhook ("*"), and
// the admission configuration that names that kubeconfig; it sets
// clientCAFile and returns the admission configuration's path.
func webhookClientCredentials(dir string) (string, error) {
	cr := &rotator.CertRotator{CAName: "kube-apiserver-webhook-client-ca", CAOrganization: "test",
		DNSName: "kube-apiserver", ExtKeyUsages: &[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	now := time.Now()
	ca, err := cr.CreateCACert(now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		return "", err
	}
	certPEM, keyPEM, err := cr.CreateCertPEM(ca, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		return "", err
	}
	clientCAFile = filepath.Join(dir, "webhook-client-ca.crt")
	kubeconfig := filepath.Join(dir, "webhook-client.kubeconfig")
	config := filepath.Join(dir, "admission.yaml")
	files := map[string]string{
		clientCAFile:                             string(ca.CertPEM),
		filepath.Join(dir, "webhook-client.crt"): string(certPEM),
		filepath.Join(dir, "webhook-client.key"): string(keyPEM),
		kubeconfig: fmt.Sprintf(`apiVersion: v1
kind: Config
users:
  - name: "*"
    user:
      client-certificate: %s
      client-key: %s
`, filepath.Join(dir, "webhook-client.crt"), filepath.Join(dir, "webhook-client.key")),
		config: fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
  - name: MutatingAdmissionWebhook
    configuration:
      apiVersion: apiserver.config.k8s.io/v1
      kind: WebhookAdmissionConfiguration
      kubeConfigFile: %[1]s
  - name: ValidatingAdmissionWebhook
    configuration:
      apiVersion: apiserver.config.k8s.io/v1
      kind: WebhookAdmissionConfiguration
      kubeConfigFile: %[1]s
`, kubeconfig),
	}
	for path, content := range files {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			return "", err
		}
	}
	return config, nil
}
