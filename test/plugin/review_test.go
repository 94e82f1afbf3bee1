package plugin

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// chartDryRunPolicy renders the chart's ValidatingAdmissionPolicy (and its
// binding) for billing.dryRunIdentities=[identity] with bin/helm ($HELM
// overrides it).
func chartDryRunPolicy(t *testing.T, identity string) []*unstructured.Unstructured {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	h := os.Getenv("HELM")
	if h == "" {
		h = filepath.Join(root, "bin", "helm")
	}
	cmd := exec.Command(h, "template", "hubcredits", filepath.Join(root, "charts", "hubcredits"),
		"--show-only", "templates/webhook/dry-run-only.yaml", "--set-json", fmt.Sprintf(`billing.dryRunIdentities=[%q]`, identity))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template (make bin/helm, or set HELM): %v\n%s", err, stderr.String())
	}
	var objs []*unstructured.Unstructured
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(out), -1) {
		m := map[string]any{}
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatal(err)
		}
		if len(m) > 0 {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
	if len(objs) != 2 {
		t.Fatalf("the chart renders %d objects for billing.dryRunIdentities, want the policy and its binding", len(objs))
	}
	return objs
}

// TestWhyRoleForATAGrantsDryRunsOnly (from an adversarial review: the
// Role docs/operations.md used to give a TA let them impersonate the hub's
// ServiceAccount, which under Z2JH may read every Secret of the hub's
// namespace): the documented Role now grants `create` on pods and read on
// the accounts, the TA is one of the operator's --dry-run-identities, and
// the chart's ValidatingAdmissionPolicy (billing.dryRunIdentities) refuses
// every pod the TA creates for real — a plain pod mounting the hub's
// Secret, which the pod webhook never sees, as well as a user server.
// `kubectl credits why` works as the TA, without --as.
func TestWhyRoleForATAGrantsDryRunsOnly(t *testing.T) {
	const ta = taWhy
	ns := newNamespace(t)
	for _, o := range chartDryRunPolicy(t, ta) {
		create(t, o)
		t.Cleanup(func() { _ = admin.Delete(context.Background(), o) })
	}
	create(t,
		testutil.MakeAccount(ns, "alice", "alice").Cap(100).Obj(),
		// Z2JH's hub Role (the part that matters here), in the hub's namespace.
		&rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "z2jh-hub"},
			Rules: []rbacv1.PolicyRule{{
				APIGroups: []string{""}, Resources: []string{"pods", "persistentvolumeclaims", "secrets", "services"},
				Verbs: []string{"get", "watch", "list", "create", "delete"},
			}},
		},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "z2jh-hub"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "z2jh-hub"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "hub-system", Name: "hub"}},
		},
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hub"},
			StringData: map[string]string{"hub.config.ConfigurableHTTPProxy.auth_token": "proxy-token"},
		},
		// The Role and binding docs/operations.md documents for a TA.
		&rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hubcredits-why"},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"create"}},
				{APIGroups: []string{"hubcredits.io"}, Resources: []string{"creditaccounts"}, Verbs: []string{"get", "list", "watch"}},
			},
		},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hubcredits-why-ta"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "hubcredits-why"},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: ta}},
		},
	)
	opened(t, ns, "alice")
	before := getAccount(t, ns, "alice")
	u, err := env.AddUser(envtest.User{Name: ta}, nil)
	if err != nil {
		t.Fatal(err)
	}
	taClient, err := client.New(u.Config(), client.Options{Scheme: operator.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// A plain pod that mounts the hub's Secret (the pod webhook does not
	// see it: not a user server). Until the policy is in force (the API
	// server's informer) such a create may go through: removed, retried.
	stealer := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "stealer"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "c", Image: "busybox",
				VolumeMounts: []corev1.VolumeMount{{Name: "s", MountPath: "/s"}}}},
			Volumes: []corev1.Volume{{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "hub"}}}},
		},
	}
	testutil.Eventually(t, 15*time.Second, func() error {
		err := taClient.Create(ctx, stealer.DeepCopy())
		if err == nil {
			if err := admin.Delete(ctx, stealer.DeepCopy(), client.GracePeriodSeconds(0)); err != nil {
				t.Fatal(err)
			}
			return fmt.Errorf("the TA created a real pod: the policy is not in force yet")
		}
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "may only dry-run pods") {
			return fmt.Errorf("refused, but not by the chart's policy: %w", err)
		}
		return nil
	})
	// The same pod as a dry run goes through (nothing stored).
	if err := taClient.Create(ctx, stealer.DeepCopy(), client.DryRunAll); err != nil {
		t.Errorf("the TA's dry run of a plain pod: %v", err)
	}
	// A real user server for alice: refused, nothing reserved.
	server := testutil.MakeKubeSpawnerPod(ns, "alice", "").Obj()
	if err := taClient.Create(ctx, server); err == nil {
		t.Errorf("the TA started a real server for alice")
	}
	// The hub's Secret, directly or as the hub.
	if err := taClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "hub"}, &corev1.Secret{}); !apierrors.IsForbidden(err) {
		t.Errorf("the TA reads the hub's Secret: %v", err)
	}
	asHub := rest.CopyConfig(u.Config())
	asHub.Impersonate = rest.ImpersonationConfig{UserName: hubSA}
	hubAsTA, err := client.New(asHub, client.Options{Scheme: operator.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := hubAsTA.Get(ctx, client.ObjectKey{Namespace: ns, Name: "hub"}, &corev1.Secret{}); !apierrors.IsForbidden(err) {
		t.Errorf("the TA reads the hub's Secret as the hub: %v", err)
	}
	// `why` as the TA, no --as.
	cfg := userKubeconfig(t, ta)
	r := kubectlCreditsWith(t, cfg, "why", "--user", "alice", "-n", ns)
	if r.code != 0 || !strings.Contains(r.out, "Paid by:    account alice (100 left)") {
		t.Errorf("why as the TA: exit %d: %s", r.code, r.err)
	}
	after := getAccount(t, ns, "alice")
	if after.Status.Balance != before.Status.Balance || len(after.Status.Servers) != 0 {
		t.Errorf("alice: balance %d -> %d, %d servers: the TA moved credits", before.Status.Balance, after.Status.Balance, len(after.Status.Servers))
	}
}
