// Package indexer holds the field indexes the controllers and the webhook
// list by: their keys, their extractors, and the one place that registers
// them, on the manager's cache (Setup) or on a fake client in unit tests
// (WithIndexes), so the two cannot drift.
//
// Every list hubcredits makes by an index is namespaced
// (client.InNamespace with client.MatchingFields). Setup therefore indexes
// each value under its namespace only, where controller-runtime's
// IndexField indexes it twice (also for a list across all namespaces).
// That halves the index sets: 2.7 → 1.3 KB of the 7.4 → 6.0 KB the cache
// keeps per billed server (BenchmarkCacheRetained in internal/operator). A
// list by one of these indexes without a namespace is refused with an
// error by the cache NamespacedOnly wraps, instead of finding nothing.
package indexer

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
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

// Informers is where Setup registers the indexes: the manager's cache.
type Informers interface {
	GetInformer(ctx context.Context, obj client.Object, opts ...cache.InformerGetOption) (cache.Informer, error)
}

// Setup registers every index on the informers of the manager's cache, so
// that controller-runtime's cache reader answers a namespaced list by it
// (client.InNamespace and client.MatchingFields through the manager's
// client). Each value is indexed under its namespace only (IndexName,
// NamespacedValue): unlike the cache's IndexField, not a second time for
// lists across all namespaces, which hubcredits does not make
// (NamespacedOnly refuses them).
func Setup(ctx context.Context, informers Informers) error {
	for _, ix := range indexes {
		inf, err := informers.GetInformer(ctx, ix.obj(), cache.BlockUntilSynced(false))
		if err != nil {
			return fmt.Errorf("indexing by %s: %w", ix.key, err)
		}
		if err := inf.AddIndexers(toolscache.Indexers{IndexName(ix.key): namespaced(ix.extract)}); err != nil {
			return fmt.Errorf("indexing by %s: %w", ix.key, err)
		}
	}
	return nil
}

// IndexName is the name of field's index in an informer's store, and
// NamespacedValue the index value of value in namespace ns: what
// controller-runtime's cache reader looks up for a list by
// client.MatchingFields{field: value} in namespace ns (FieldIndexName and
// KeyToNamespacedKey in sigs.k8s.io/controller-runtime/pkg/cache/internal;
// TestCacheIndexes in internal/operator lists through the real reader).
func IndexName(field string) string { return "field:" + field }

// NamespacedValue is the index value of value in namespace ns: see
// IndexName. (Every indexed kind is namespaced; an object without a
// namespace would be indexed as controller-runtime does.)
func NamespacedValue(ns, value string) string {
	if ns == "" {
		return "__all_namespaces/" + value
	}
	return ns + "/" + value
}

// namespaced turns an extractor into the store's index function: every
// value under the object's namespace.
func namespaced(extract client.IndexerFunc) toolscache.IndexFunc {
	return func(o any) ([]string, error) {
		obj, ok := o.(client.Object)
		if !ok {
			return nil, fmt.Errorf("indexing %T, not an object", o)
		}
		vals := extract(obj)
		if len(vals) == 0 {
			return nil, nil
		}
		out := make([]string, len(vals))
		for i, v := range vals {
			out[i] = NamespacedValue(obj.GetNamespace(), v)
		}
		return out, nil
	}
}

// NamespacedOnly wraps the manager's cache so that a list by one of
// Setup's indexes without a namespace fails with an error saying so: the
// indexes hold namespaced values only, and such a list would otherwise
// find nothing.
func NamespacedOnly(c cache.Cache) cache.Cache { return namespacedOnly{c} }

type namespacedOnly struct{ cache.Cache }

func (c namespacedOnly) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if err := CheckNamespaced(opts...); err != nil {
		return err
	}
	return c.Cache.List(ctx, list, opts...)
}

// CheckNamespaced returns an error for a list by one of the indexes
// without a namespace (the manager's cache refuses it: NamespacedOnly; the
// unit tests' fake client too).
func CheckNamespaced(opts ...client.ListOption) error {
	lo := (&client.ListOptions{}).ApplyOptions(opts)
	if lo.Namespace != "" || lo.FieldSelector == nil {
		return nil
	}
	for _, r := range lo.FieldSelector.Requirements() {
		for _, ix := range indexes {
			if r.Field == ix.key {
				return fmt.Errorf("listing by the index %s needs a namespace (client.InNamespace): the cache indexes it by namespace only", r.Field)
			}
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
