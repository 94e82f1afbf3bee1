package indexer

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// recorder is a client.FieldIndexer that records what is registered.
type recorder []string

func (r *recorder) IndexField(_ context.Context, obj client.Object, field string, _ client.IndexerFunc) error {
	*r = append(*r, field)
	return nil
}

// TestEveryIndexIsServed: the manager (Setup) and a fake client
// (WithIndexes) answer a list by every key.
func TestEveryIndexIsServed(t *testing.T) {
	var got recorder
	if err := Setup(context.Background(), &got); err != nil {
		t.Fatal(err)
	}
	want := recorder{AccountUsersKey, AccountGroupsKey, AccountProjectKey, PodAccountKey, UnbilledPodUserKey, AccountServerKey, PageServerKey}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Setup registered (-want +got):\n%s", d)
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
	if err := c.List(ctx, &pages, client.MatchingFields{PageServerKey: "x"}); err != nil {
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
