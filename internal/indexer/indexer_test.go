package indexer

import (
	"context"
	"fmt"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/scheme"
)

func account(name string, project string, users ...string) *hcv1.CreditAccount {
	return &hcv1.CreditAccount{
		ObjectMeta: metav1.ObjectMeta{Namespace: "hub", Name: name},
		Spec:       hcv1.CreditAccountSpec{Users: users, Project: project, Cap: 100},
	}
}

func TestAccountIndexes(t *testing.T) {
	cases := map[string]struct {
		account     *hcv1.CreditAccount
		wantUsers   []string
		wantProject []string
	}{
		"a wallet":                 {account: account("alice", "", "alice"), wantUsers: []string{"alice"}},
		"a funded wallet":          {account: account("alice", "lab", "alice"), wantUsers: []string{"alice"}, wantProject: []string{"lab"}},
		"a pool with many members": {account: account("lab", "", "alice", "bob"), wantUsers: []string{"alice", "bob"}},
		"no users, no project":     {account: account("empty", "")},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if d := cmp.Diff(tc.wantUsers, AccountUsers(tc.account)); d != "" {
				t.Errorf("AccountUsers (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantProject, AccountProject(tc.account)); d != "" {
				t.Errorf("AccountProject (-want +got):\n%s", d)
			}
		})
	}
}

func TestPodAccounts(t *testing.T) {
	pod := func(labels, annotations map[string]string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "hub", Name: "jupyter-alice",
			Labels:      map[string]string{hcv1.ComponentLabel: hcv1.SingleuserComponent},
			Annotations: map[string]string{hcv1.AnnotationUsername: "alice"},
		}}
		for k, v := range labels {
			p.Labels[k] = v
		}
		for k, v := range annotations {
			p.Annotations[k] = v
		}
		return p
	}
	cases := map[string]struct {
		pod          *corev1.Pod
		want         []string
		wantUnbilled []string
	}{
		"not billed yet, no label": {pod: pod(nil, nil), wantUnbilled: []string{"alice"}},
		"the profile's account label": {
			pod:  pod(map[string]string{hcv1.LabelAccount: "lab"}, nil),
			want: []string{"lab"},
		},
		"the pinned account wins over the label": {
			pod:  pod(map[string]string{hcv1.LabelAccount: "lab"}, map[string]string{hcv1.AnnotationAccount: "alice"}),
			want: []string{"alice"},
		},
		"the pinned account and its project": {
			pod:  pod(nil, map[string]string{hcv1.AnnotationAccount: "alice", hcv1.AnnotationProject: "lab"}),
			want: []string{"alice", "lab"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, PodAccounts(tc.pod)); d != "" {
				t.Errorf("PodAccounts (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantUnbilled, UnbilledPodUser(tc.pod)); d != "" {
				t.Errorf("UnbilledPodUser (-want +got):\n%s", d)
			}
		})
	}
}

// informers hands out client-go informers (never started) and keeps them
// by kind, to see what Setup registers on them.
type informers map[string]toolscache.SharedIndexInformer

func (r informers) GetInformer(_ context.Context, obj client.Object, _ ...cache.InformerGetOption) (cache.Informer, error) {
	kind := fmt.Sprintf("%T", obj)
	if r[kind] == nil {
		r[kind] = toolscache.NewSharedIndexInformer(&toolscache.ListWatch{}, obj, 0,
			toolscache.Indexers{toolscache.NamespaceIndex: toolscache.MetaNamespaceIndexFunc})
	}
	return r[kind], nil
}

// TestEveryIndexIsServed: the manager (Setup) and a fake client
// (WithIndexes) answer a list by every key. Setup's indexes hold each
// value under its object's namespace only.
func TestEveryIndexIsServed(t *testing.T) {
	got := informers{}
	if err := Setup(context.Background(), got); err != nil {
		t.Fatal(err)
	}
	indexNames := func(inf toolscache.SharedIndexInformer) []string {
		var names []string
		for name := range inf.GetIndexer().GetIndexers() {
			names = append(names, name)
		}
		sort.Strings(names)
		return names
	}
	want := map[string][]string{
		"*v1.Pod": {"field:" + PodAccountKey, "field:" + UnbilledPodUserKey, toolscache.NamespaceIndex},
		"*v1alpha1.CreditAccount": {"field:" + AccountGroupsKey, "field:" + AccountProjectKey,
			"field:" + AccountServerKey, "field:" + AccountUsersKey, toolscache.NamespaceIndex},
		"*v1alpha1.LedgerPage": {"field:" + PageServerKey, toolscache.NamespaceIndex},
	}
	for kind, names := range want {
		if got[kind] == nil {
			t.Fatalf("no informer for %s", kind)
		}
		if d := cmp.Diff(names, indexNames(got[kind])); d != "" {
			t.Errorf("indexes of %s (-want +got):\n%s", kind, d)
		}
	}
	accounts := got["*v1alpha1.CreditAccount"].GetIndexer()
	for _, a := range []*hcv1.CreditAccount{account("alice", "lab", "alice", "bob"), account("carol", "", "carol")} {
		if err := accounts.Add(a); err != nil {
			t.Fatal(err)
		}
	}
	other := account("alice", "", "alice")
	other.Namespace = "other"
	if err := accounts.Add(other); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key, value string
		want       []string
	}{
		{AccountUsersKey, "hub/alice", []string{"hub/alice"}},
		{AccountUsersKey, "hub/bob", []string{"hub/alice"}},
		{AccountUsersKey, "other/alice", []string{"other/alice"}},
		{AccountProjectKey, "hub/lab", []string{"hub/alice"}},
		{AccountUsersKey, "__all_namespaces/alice", nil}, // not indexed across namespaces
		{AccountUsersKey, "alice", nil},
	} {
		keys, err := accounts.IndexKeys(IndexName(tc.key), tc.value)
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(keys)
		if d := cmp.Diff(tc.want, keys, cmpopts.EquateEmpty()); d != "" {
			t.Errorf("%s=%s (-want +got):\n%s", tc.key, tc.value, d)
		}
	}

	c := WithIndexes(fake.NewClientBuilder().WithScheme(scheme.New())).
		WithObjects(account("alice", "lab", "alice")).Build()
	ctx := context.Background()
	for _, key := range []string{AccountUsersKey, AccountGroupsKey, AccountProjectKey, AccountServerKey} {
		var accounts hcv1.CreditAccountList
		if err := c.List(ctx, &accounts, client.MatchingFields{key: "x"}); err != nil {
			t.Errorf("listing accounts by %s: %v", key, err)
		}
	}
	for _, key := range []string{PodAccountKey, UnbilledPodUserKey} {
		var pods corev1.PodList
		if err := c.List(ctx, &pods, client.MatchingFields{key: "x"}); err != nil {
			t.Errorf("listing pods by %s: %v", key, err)
		}
	}
	var pages hcv1.LedgerPageList
	if err := c.List(ctx, &pages, client.InNamespace("hub"), client.MatchingFields{PageServerKey: "x"}); err != nil {
		t.Errorf("listing ledger pages by %s: %v", PageServerKey, err)
	}
}

// PageServers indexes a page by its entries' ids and bound pod UIDs.
func TestPageServers(t *testing.T) {
	p := &hcv1.LedgerPage{Status: hcv1.LedgerPageStatus{Servers: []hcv1.ServerCharge{{ID: "r1", PodUID: "u1"}, {ID: "r2"}}}}
	if d := cmp.Diff([]string{"r1", "uid:u1", "r2"}, PageServers(p)); d != "" {
		t.Errorf("PageServers (-want +got):\n%s", d)
	}
}

// TestCheckNamespaced: a list by an index needs a namespace; other lists
// do not.
func TestCheckNamespaced(t *testing.T) {
	cases := map[string]struct {
		opts    []client.ListOption
		wantErr bool
	}{
		"by an index in a namespace":       {opts: []client.ListOption{client.InNamespace("hub"), client.MatchingFields{AccountUsersKey: "alice"}}},
		"by an index across namespaces":    {opts: []client.ListOption{client.MatchingFields{AccountUsersKey: "alice"}}, wantErr: true},
		"by a pod index across namespaces": {opts: []client.ListOption{client.MatchingFields{PodAccountKey: "alice"}}, wantErr: true},
		"by another field":                 {opts: []client.ListOption{client.MatchingFields{"metadata.name": "alice"}}},
		"everything":                       {},
		"a namespace":                      {opts: []client.ListOption{client.InNamespace("hub")}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if err := CheckNamespaced(tc.opts...); (err != nil) != tc.wantErr {
				t.Errorf("CheckNamespaced = %v, want an error: %v", err, tc.wantErr)
			}
		})
	}
}
