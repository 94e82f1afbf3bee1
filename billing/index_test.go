package billing

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

func TestAccountIndexes(t *testing.T) {
	cases := map[string]struct {
		account     *hcv1.CreditAccount
		wantUsers   []string
		wantProject []string
	}{
		"a wallet":                 {account: makeAccount("alice").withUsers("alice").obj(), wantUsers: []string{"alice"}},
		"a funded wallet":          {account: makeAccount("alice").withUsers("alice").withProject("lab").obj(), wantUsers: []string{"alice"}, wantProject: []string{"lab"}},
		"a pool with many members": {account: makeAccount("lab").withUsers("alice", "bob").obj(), wantUsers: []string{"alice", "bob"}},
		"no users, no project":     {account: makeAccount("empty").obj()},
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
		p := makePod("jupyter-alice").obj()
		for k, v := range labels {
			p.Labels[k] = v
		}
		for k, v := range annotations {
			p.Annotations[k] = v
		}
		return p
	}
	cases := map[string]struct {
		pod  *corev1.Pod
		want []string
	}{
		"not billed yet, no label": {pod: pod(nil, nil)},
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
		})
	}
}
