package plugin

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// TestReviewWhyRoleDoesNotHandOutTheHubsSecrets (adversarial review,
// wt-review; fails on main): docs/operations.md gives a course's TA the
// Role hubcredits-why (impersonate the hub's ServiceAccount) so that
// `kubectl credits why` can dry-run a spawn "as the hub", and warns only
// that it lets the TA start servers by hand. Impersonation is not limited
// to dry runs nor to pods: the TA gets every permission of the hub's
// ServiceAccount, which under Z2JH includes the Secrets of the hub's
// namespace (Z2JH's hub Role: pods, persistentvolumeclaims, secrets,
// services) — among them the hub's own Secret (proxy token, cookie secret,
// service API tokens, the operator's Hub API token).
func TestReviewWhyRoleDoesNotHandOutTheHubsSecrets(t *testing.T) {
	const hubNS = "hub-system"
	create(t,
		// Z2JH's hub Role (the part that matters here), in the hub's namespace.
		&rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: hubNS, Name: "z2jh-hub"},
			Rules: []rbacv1.PolicyRule{{
				APIGroups: []string{""}, Resources: []string{"pods", "persistentvolumeclaims", "secrets", "services"},
				Verbs: []string{"get", "watch", "list", "create", "delete"},
			}},
		},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: hubNS, Name: "z2jh-hub"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "z2jh-hub"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: hubNS, Name: "hub"}},
		},
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: hubNS, Name: "hub"},
			StringData: map[string]string{"hub.config.ConfigurableHTTPProxy.auth_token": "proxy-token"},
		},
		// The Role and binding docs/operations.md documents for a TA.
		&rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: hubNS, Name: "hubcredits-why-review"},
			Rules: []rbacv1.PolicyRule{{
				APIGroups: []string{""}, Resources: []string{"serviceaccounts"},
				Verbs: []string{"impersonate"}, ResourceNames: []string{"hub"},
			}},
		},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: hubNS, Name: "hubcredits-why-review-ta"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "hubcredits-why-review"},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "ta-review"}},
		},
	)
	u, err := env.AddUser(envtest.User{Name: "ta-review"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(u.Config())
	cfg.Impersonate = rest.ImpersonationConfig{UserName: hubSA}
	ta, err := client.New(cfg, client.Options{Scheme: operator.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	// RBAC is cached by the API server's authorizer: wait until the hub
	// itself may read the Secret, then ask as the TA.
	testutil.Eventually(t, 10*time.Second, func() error {
		return hub.Get(context.Background(), client.ObjectKey{Namespace: hubNS, Name: "hub"}, &corev1.Secret{})
	})
	s := &corev1.Secret{}
	if err := ta.Get(context.Background(), client.ObjectKey{Namespace: hubNS, Name: "hub"}, s); err == nil {
		t.Errorf("a TA with the documented hubcredits-why Role read the hub's Secret (%d keys) through --as the hub", len(s.Data))
	} else {
		t.Logf("refused: %v", err)
	}
}
