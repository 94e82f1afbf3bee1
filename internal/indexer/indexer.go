// Package indexer holds the field indexes the controllers and the webhook
// list by: their keys, their extractors, and the one place that registers
// them, on the manager's cache (Setup) or on a fake client in unit tests
// (WithIndexes), so the two cannot drift.
package indexer

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
)

// Index keys.
const (
	// AccountUsersKey indexes CreditAccounts by spec.users.
	AccountUsersKey = "hubcredits.io/users"
	// AccountGroupsKey indexes CreditAccounts by spec.groups.
	AccountGroupsKey = "hubcredits.io/groups"
	// AccountProjectKey indexes CreditAccounts by spec.project.
	AccountProjectKey = "hubcredits.io/project"
	// PodAccountKey indexes singleuser pods by the accounts billed for them
	// (the pinned account and project annotations, or the account label).
	PodAccountKey = "hubcredits.io/account"
	// UnbilledPodUserKey indexes singleuser pods that name no account (the
	// webhook never saw them: failurePolicy Ignore while it was down) by
	// their JupyterHub user, so the user's wallet can adopt them.
	UnbilledPodUserKey = "hubcredits.io/unbilled-user"
	// AccountServerKey indexes CreditAccounts by the servers their ledger
	// holds (billing.LedgerKeys: entry ids and bound pod UIDs), so a pod is
	// adopted only when no ledger holds it, and wakes the account that
	// holds it whatever its annotations say now.
	AccountServerKey = "hubcredits.io/server"
	// PageServerKey indexes LedgerPages by the servers they hold
	// (billing.PageLedgerKeys), as AccountServerKey does accounts: a pod
	// whose entry is on a page is held, never adopted (charged twice).
	PageServerKey = "hubcredits.io/page-server"
)

// index is one field index.
type index struct {
	obj     func() client.Object
	key     string
	extract client.IndexerFunc
}

// indexes is every index hubcredits lists by.
var indexes = []index{
	{func() client.Object { return &hcv1.CreditAccount{} }, AccountUsersKey, AccountUsers},
	{func() client.Object { return &hcv1.CreditAccount{} }, AccountGroupsKey, AccountGroups},
	{func() client.Object { return &hcv1.CreditAccount{} }, AccountProjectKey, AccountProject},
	{func() client.Object { return &corev1.Pod{} }, PodAccountKey, PodAccounts},
	{func() client.Object { return &corev1.Pod{} }, UnbilledPodUserKey, UnbilledPodUser},
	{func() client.Object { return &hcv1.CreditAccount{} }, AccountServerKey, AccountServers},
	{func() client.Object { return &hcv1.LedgerPage{} }, PageServerKey, PageServers},
}

// Setup registers every index on idx (the manager's field indexer).
func Setup(ctx context.Context, idx client.FieldIndexer) error {
	for _, ix := range indexes {
		if err := idx.IndexField(ctx, ix.obj(), ix.key, ix.extract); err != nil {
			return err
		}
	}
	return nil
}

// WithIndexes registers every index on a client builder that takes them one
// by one, such as controller-runtime's fake.ClientBuilder:
//
//	indexer.WithIndexes(fake.NewClientBuilder().WithScheme(s)).Build()
//
// (Generic, so the operator's binary does not link the fake client.)
func WithIndexes[B interface {
	WithIndex(runtime.Object, string, client.IndexerFunc) B
}](b B) B {
	for _, ix := range indexes {
		b = b.WithIndex(ix.obj(), ix.key, ix.extract)
	}
	return b
}

// AccountUsers is the AccountUsersKey extractor.
func AccountUsers(o client.Object) []string {
	return o.(*hcv1.CreditAccount).Spec.Users
}

// AccountGroups is the AccountGroupsKey extractor.
func AccountGroups(o client.Object) []string {
	return o.(*hcv1.CreditAccount).Spec.Groups
}

// AccountProject is the AccountProjectKey extractor.
func AccountProject(o client.Object) []string {
	if p := o.(*hcv1.CreditAccount).Spec.Project; p != "" {
		return []string{p}
	}
	return nil
}

// AccountServers is the AccountServerKey extractor.
func AccountServers(o client.Object) []string {
	return billing.LedgerKeys(o.(*hcv1.CreditAccount))
}

// PageServers is the PageServerKey extractor.
func PageServers(o client.Object) []string {
	return billing.PageLedgerKeys(o.(*hcv1.LedgerPage))
}

// PodAccounts is the PodAccountKey extractor: the account a pod is billed
// to first (pinned by the webhook, else the profile's label), then its
// project pool.
func PodAccounts(o client.Object) []string {
	pod := o.(*corev1.Pod)
	var out []string
	if a := pod.Annotations[hcv1.AnnotationAccount]; a != "" {
		out = append(out, a)
	} else if a := pod.Labels[hcv1.LabelAccount]; a != "" {
		out = append(out, a)
	}
	if p := pod.Annotations[hcv1.AnnotationProject]; p != "" {
		out = append(out, p)
	}
	return out
}

// UnbilledPodUser is the UnbilledPodUserKey extractor.
func UnbilledPodUser(o client.Object) []string {
	pod := o.(*corev1.Pod)
	if len(PodAccounts(pod)) > 0 {
		return nil
	}
	if u := pod.Annotations[hcv1.AnnotationUsername]; u != "" {
		return []string{u}
	}
	return nil
}
