package rbac

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
)

// access is one request a subject may or may not make, as `kubectl auth
// can-i VERB RESOURCE[/SUB] [NAME] -n NS` states it.
type access struct {
	ns, verb, group, resource, sub, name string
}

func (a access) String() string {
	r := a.resource
	if a.group != "" {
		r += "." + a.group
	}
	if a.sub != "" {
		r += "/" + a.sub
	}
	if a.name != "" {
		r += " " + a.name
	}
	ns := a.ns
	if ns == "" {
		ns = "(cluster)"
	}
	return fmt.Sprintf("%s %s -n %s", a.verb, r, ns)
}

// each expands verbs into one access each.
func each(ns, group, resource, sub, name string, verbs ...string) []access {
	var out []access
	for _, v := range verbs {
		out = append(out, access{ns: ns, verb: v, group: group, resource: resource, sub: sub, name: name})
	}
	return out
}

const hc = "hubcredits.io"
const adm = "admissionregistration.k8s.io"

// serviceAccount is who a SubjectAccessReview asks about.
type serviceAccount struct{ ns, name string }

func (s serviceAccount) user() string { return "system:serviceaccount:" + s.ns + ":" + s.name }

// allowed asks the API server's authorizer, as `kubectl auth can-i --as`.
func allowed(t *testing.T, sa serviceAccount, a access) bool {
	t.Helper()
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   sa.user(),
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + sa.ns, "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: a.ns, Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.sub, Name: a.name,
		},
	}}
	if err := k8s.Create(context.Background(), sar); err != nil {
		t.Fatalf("SubjectAccessReview %s: %v", a, err)
	}
	return sar.Status.Allowed
}

// operatorMust is what the operator needs in the hub namespace hub, with
// its lease in operatorNS and its tombstones in the ConfigMap tombstones.
func operatorMust(hub, operatorNS, tombstones string) []access {
	var m []access
	m = append(m, each(hub, "", "configmaps", "", tombstones, "get", "update")...)
	m = append(m, each(hub, "", "pods", "", "", "get", "list", "watch", "delete")...)
	m = append(m, each(hub, "", "events", "", "", "create", "patch")...)
	m = append(m, each(hub, hc, "creditaccounts", "", "", "get", "list", "watch", "create")...)
	// The finalizer hubcredits.io/ledger is added and removed with a merge
	// patch carrying the resourceVersion (no status subresource can): patch,
	// never update or delete.
	m = append(m, access{ns: hub, verb: "patch", group: hc, resource: "creditaccounts"})
	m = append(m, each(hub, hc, "creditaccounts", "status", "", "get", "update")...)
	m = append(m, each(hub, hc, "billingpolicies", "", "", "get", "list", "watch")...)
	m = append(m, each(hub, hc, "billingpolicies", "status", "", "get", "update")...)
	m = append(m, each(hub, hc, "creditaccounttemplates", "", "", "get", "list", "watch")...)
	m = append(m, each(hub, hc, "usagerecords", "", "", "create", "list", "delete")...)
	// LedgerPages: created and written by the webhook and the controllers,
	// updated for their finalizer (held until the account is released).
	m = append(m, each(hub, hc, "ledgerpages", "", "", "get", "list", "watch", "create", "update")...)
	m = append(m, each(hub, hc, "ledgerpages", "status", "", "get", "update")...)
	m = append(m, access{ns: operatorNS, verb: "create", group: "coordination.k8s.io", resource: "leases"})
	m = append(m, each(operatorNS, "coordination.k8s.io", "leases", "", "hubcredits.hubcredits.io", "get", "update")...)
	m = append(m, each(operatorNS, "", "events", "", "", "create", "patch")...)
	return m
}

// operatorMustNot holds in every configuration: the hub's Secret, Secrets
// in general, anything outside the hub namespace, writes the operator never
// makes.
func operatorMustNot(hub, operatorNS, other string) []access {
	var m []access
	nss := []string{hub}
	if operatorNS != hub {
		nss = append(nss, operatorNS)
	}
	for _, ns := range nss {
		m = append(m, each(ns, "", "secrets", "", "hub", "get", "update", "patch", "delete")...)
		m = append(m, each(ns, "", "secrets", "", "", "list", "watch", "create")...)
	}
	m = append(m,
		access{ns: other, verb: "delete", resource: "pods"},
		access{ns: other, verb: "list", resource: "pods"},
		access{ns: other, verb: "watch", resource: "pods"},
		access{verb: "list", resource: "pods"}, // all namespaces
		access{ns: other, verb: "update", group: hc, resource: "creditaccounts", sub: "status"},
		access{ns: other, verb: "create", group: hc, resource: "creditaccounts"},
		access{ns: other, verb: "list", group: hc, resource: "creditaccounts"},
		access{verb: "list", group: hc, resource: "creditaccounts"},
		access{ns: hub, verb: "update", group: hc, resource: "creditaccounts"},
		access{ns: hub, verb: "delete", group: hc, resource: "creditaccounts"},
		access{ns: hub, verb: "update", group: hc, resource: "billingpolicies"},
		// CreditAccountTemplates are the admin's: read, never written.
		access{ns: hub, verb: "create", group: hc, resource: "creditaccounttemplates"},
		access{ns: hub, verb: "update", group: hc, resource: "creditaccounttemplates"},
		access{ns: hub, verb: "delete", group: hc, resource: "creditaccounttemplates"},
		access{ns: other, verb: "list", group: hc, resource: "creditaccounttemplates"},
		// UsageRecords: written once, listed live, deleted after the
		// retention; never edited, watched, or touched elsewhere.
		access{ns: hub, verb: "update", group: hc, resource: "usagerecords"},
		access{ns: hub, verb: "patch", group: hc, resource: "usagerecords"},
		access{ns: hub, verb: "watch", group: hc, resource: "usagerecords"},
		access{ns: hub, verb: "deletecollection", group: hc, resource: "usagerecords"},
		access{ns: other, verb: "create", group: hc, resource: "usagerecords"},
		access{ns: other, verb: "list", group: hc, resource: "usagerecords"},
		access{ns: other, verb: "delete", group: hc, resource: "usagerecords"},
		access{verb: "list", group: hc, resource: "usagerecords"}, // all namespaces
		// LedgerPages: the account owns them (its garbage collection
		// deletes them); never patched, deleted, or touched elsewhere.
		access{ns: hub, verb: "delete", group: hc, resource: "ledgerpages"},
		access{ns: hub, verb: "patch", group: hc, resource: "ledgerpages"},
		access{ns: hub, verb: "deletecollection", group: hc, resource: "ledgerpages"},
		access{ns: other, verb: "create", group: hc, resource: "ledgerpages"},
		access{ns: other, verb: "update", group: hc, resource: "ledgerpages", sub: "status"},
		access{verb: "list", group: hc, resource: "ledgerpages"}, // all namespaces
		access{ns: hub, verb: "create", resource: "pods"},
		access{ns: hub, verb: "update", resource: "pods"},
		access{ns: hub, verb: "patch", resource: "pods"},
		access{ns: hub, verb: "create", resource: "pods", sub: "exec"},
		// Events (the controllers' and the webhook's denials): create and
		// patch in the hub namespace only; never read, edit or delete them,
		// never elsewhere.
		access{ns: other, verb: "create", resource: "events"},
		access{ns: other, verb: "patch", resource: "events"},
		access{ns: "default", verb: "create", resource: "events"},
		access{verb: "create", resource: "events"}, // all namespaces
		access{ns: hub, verb: "list", resource: "events"},
		access{ns: hub, verb: "update", resource: "events"},
		access{ns: hub, verb: "delete", resource: "events"},
		access{ns: hub, verb: "create", group: "events.k8s.io", resource: "events"},
		// ConfigMaps: the tombstones' by name only (operatorMust); Z2JH
		// keeps the hub's config in ConfigMaps of the hub namespace.
		access{ns: hub, verb: "get", resource: "configmaps"},
		access{ns: hub, verb: "list", resource: "configmaps"},
		access{ns: hub, verb: "watch", resource: "configmaps"},
		access{ns: hub, verb: "create", resource: "configmaps"},
		access{ns: hub, verb: "get", resource: "configmaps", name: "hub"},
		access{ns: hub, verb: "update", resource: "configmaps", name: "hub"},
		access{ns: hub, verb: "delete", resource: "configmaps", name: "hub"},
		access{ns: other, verb: "get", resource: "configmaps"},
		access{ns: hub, verb: "create", resource: "serviceaccounts", sub: "token", name: "hub"},
		access{ns: hub, verb: "create", group: "rbac.authorization.k8s.io", resource: "rolebindings"},
		access{ns: operatorNS, verb: "update", group: "coordination.k8s.io", resource: "leases", name: "other-lease"},
		access{ns: operatorNS, verb: "list", group: "coordination.k8s.io", resource: "leases"},
		access{verb: "update", group: adm, resource: "mutatingwebhookconfigurations", name: "other-webhook"},
		access{verb: "update", group: adm, resource: "validatingwebhookconfigurations", name: "other-webhook"},
		access{verb: "list", group: adm, resource: "mutatingwebhookconfigurations"},
		access{verb: "list", group: adm, resource: "validatingwebhookconfigurations"},
		access{verb: "create", group: adm, resource: "mutatingwebhookconfigurations"},
		access{verb: "delete", group: adm, resource: "mutatingwebhookconfigurations"},
	)
	return m
}

func checkAccess(t *testing.T, sa serviceAccount, must, mustNot []access) {
	t.Helper()
	for _, a := range must {
		if !allowed(t, sa, a) {
			t.Errorf("%s must be allowed to %s", sa.user(), a)
		}
	}
	for _, a := range mustNot {
		if allowed(t, sa, a) {
			t.Errorf("%s must NOT be allowed to %s", sa.user(), a)
		}
	}
}

var rbacKinds = []string{"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}

// TestChartRBACDefault: the recommended install, the operator in the hub's
// namespace with in-process certificate rotation.
func TestChartRBACDefault(t *testing.T) {
	hub := newNamespace(t, "jhub")
	objs := render(t, hub)
	apply(t, objs, rbacKinds...)
	ensureNamespace(t, "other")
	sa := serviceAccount{hub, "hubcredits"}
	must := operatorMust(hub, hub, "hubcredits-tombstones")
	must = append(must, each(hub, "", "secrets", "", "hubcredits-webhook-cert", "get", "list", "watch", "update")...)
	must = append(must, each("", adm, "mutatingwebhookconfigurations", "", "hubcredits-"+hub+"-mutating", "get", "list", "watch", "update")...)
	must = append(must, each("", adm, "validatingwebhookconfigurations", "", "hubcredits-"+hub+"-validating", "get", "list", "watch", "update")...)
	mustNot := operatorMustNot(hub, hub, "other")
	mustNot = append(mustNot,
		// Each configuration by its own kind only.
		access{verb: "update", group: adm, resource: "mutatingwebhookconfigurations", name: "hubcredits-" + hub + "-validating"},
		access{verb: "update", group: adm, resource: "validatingwebhookconfigurations", name: "hubcredits-" + hub + "-mutating"},
		access{ns: hub, verb: "delete", resource: "secrets", name: "hubcredits-webhook-cert"},
		access{ns: "other", verb: "get", resource: "secrets", name: "hubcredits-webhook-cert"},
		// The tombstones: get and update, never delete or patch.
		access{ns: hub, verb: "delete", resource: "configmaps", name: "hubcredits-tombstones"},
		access{ns: hub, verb: "patch", resource: "configmaps", name: "hubcredits-tombstones"},
		access{ns: "other", verb: "update", resource: "configmaps", name: "hubcredits-tombstones"},
	)
	checkAccess(t, sa, must, mustNot)
	// The hub gets nothing from the default install.
	checkAccess(t, serviceAccount{hub, "hub"}, nil, each(hub, hc, "creditaccounts", "", "", "get", "list", "create", "update"))
}

// TestChartRBACAllOn: every option on (charts/hubcredits/ci/all-on-values.yaml):
// the operator in its own namespace billing jhub, certificates from
// cert-manager (no rotation rules at all), the hub's read-only Role.
func TestChartRBACAllOn(t *testing.T) {
	hub, opNS := newNamespace(t, "jhub"), newNamespace(t, "hubcredits-system")
	objs := render(t, opNS, "-f", filepath.Join(root, "charts", "hubcredits", "ci", "all-on-values.yaml"), "--set", "hubNamespace="+hub)
	apply(t, objs, rbacKinds...)
	ensureNamespace(t, "other")
	sa := serviceAccount{opNS, "hubcredits-sa"}
	mustNot := operatorMustNot(hub, opNS, "other")
	mustNot = append(mustNot,
		// cert-manager fills the Secret; the operator only mounts it.
		access{ns: opNS, verb: "get", resource: "secrets", name: "hubcredits-all-on-webhook-cert"},
		access{verb: "update", group: adm, resource: "mutatingwebhookconfigurations", name: "hubcredits-all-on-" + opNS + "-mutating"},
		access{verb: "update", group: adm, resource: "validatingwebhookconfigurations", name: "hubcredits-all-on-" + opNS + "-validating"},
		// Its own namespace is not a hub namespace.
		access{ns: opNS, verb: "list", resource: "pods"},
		access{ns: opNS, verb: "update", group: hc, resource: "creditaccounts", sub: "status"},
		access{ns: opNS, verb: "update", resource: "configmaps", name: "hubcredits-all-on-tombstones"},
		access{ns: hub, verb: "update", resource: "configmaps", name: "hubcredits-tombstones"},
	)
	checkAccess(t, sa, operatorMust(hub, opNS, "hubcredits-all-on-tombstones"), mustNot)

	// hubReadAccess: the hub reads CreditAccounts and LedgerPages and
	// changes nothing.
	hubSA := serviceAccount{hub, "hub"}
	mustNotHub := each(hub, hc, "creditaccounts", "", "", "create", "update", "patch", "delete", "deletecollection")
	mustNotHub = append(mustNotHub, each(hub, hc, "creditaccounts", "status", "", "update", "patch")...)
	mustNotHub = append(mustNotHub, each(hub, hc, "billingpolicies", "", "", "create", "update", "delete")...)
	mustNotHub = append(mustNotHub, access{ns: "other", verb: "list", group: hc, resource: "creditaccounts"})
	mustNotHub = append(mustNotHub, each(hub, hc, "ledgerpages", "", "", "create", "update", "patch", "delete")...)
	mustNotHub = append(mustNotHub, each(hub, hc, "ledgerpages", "status", "", "update", "patch")...)
	mustNotHub = append(mustNotHub, access{ns: "other", verb: "list", group: hc, resource: "ledgerpages"})
	checkAccess(t, hubSA, slices.Concat(each(hub, hc, "creditaccounts", "", "", "get", "list", "watch"),
		each(hub, hc, "ledgerpages", "", "", "get", "list", "watch")), mustNotHub)
}
