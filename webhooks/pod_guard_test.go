package webhooks

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

func TestPodGuard(t *testing.T) {
	admitted := func() *corev1.Pod {
		return &corev1.Pod{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Name: "jupyter-alice", Namespace: "jhub", UID: "u1",
				Labels: map[string]string{hcv1.ComponentLabel: hcv1.SingleuserComponent},
				Annotations: map[string]string{hcv1.AnnotationUsername: "alice", hcv1.AnnotationAccount: "alice",
					hcv1.AnnotationReservation: "r1", hcv1.AnnotationBillingValue: "10"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "notebook",
				Env: []corev1.EnvVar{{Name: "JUPYTERHUB_API_TOKEN", Value: "PLANTED-TOKEN"}}}}},
		}
	}
	unbilled := func() *corev1.Pod {
		p := admitted()
		p.Annotations = map[string]string{hcv1.AnnotationUsername: "alice"}
		return p
	}
	cases := map[string]struct {
		old      *corev1.Pod
		edit     func(*corev1.Pod)
		user     string
		sub      string
		op       admissionv1.Operation
		wantDeny string
	}{
		"account annotation changed by an admin": {old: admitted(), user: "admin",
			edit:     func(p *corev1.Pod) { p.Annotations[hcv1.AnnotationAccount] = "pool" },
			wantDeny: "the annotation hubcredits.io/account of pod jupyter-alice is bound to its billing"},
		"account label added": {old: admitted(), user: "admin",
			edit:     func(p *corev1.Pod) { p.Labels[hcv1.LabelAccount] = "pool" },
			wantDeny: "the label hubcredits.io/account of pod jupyter-alice"},
		"singleuser label removed": {old: admitted(), user: "admin",
			edit:     func(p *corev1.Pod) { delete(p.Labels, hcv1.ComponentLabel) },
			wantDeny: "the label component of pod jupyter-alice"},
		"username annotation changed": {old: admitted(), user: "admin",
			edit:     func(p *corev1.Pod) { p.Annotations[hcv1.AnnotationUsername] = "bob" },
			wantDeny: "the annotation hub.jupyter.org/username"},
		"the operator itself":     {old: admitted(), user: "system:serviceaccount:hc:hubcredits", edit: func(p *corev1.Pod) { p.Annotations[hcv1.AnnotationAccount] = "pool" }},
		"an unrelated label":      {old: admitted(), user: "admin", edit: func(p *corev1.Pod) { p.Labels["team"] = "x" }},
		"a pod never admitted":    {old: unbilled(), user: "admin", edit: func(p *corev1.Pod) { p.Labels[hcv1.LabelAccount] = "pool" }},
		"a status update":         {old: admitted(), user: "kubelet", sub: "status", edit: func(p *corev1.Pod) { delete(p.Labels, hcv1.ComponentLabel) }},
		"a create is not guarded": {old: admitted(), user: "admin", op: admissionv1.Create, edit: func(p *corev1.Pod) { p.Annotations[hcv1.AnnotationAccount] = "pool" }},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			rec := record.NewFakeRecorder(4)
			g := &PodGuard{Self: "system:serviceaccount:hc:hubcredits", Recorder: rec}
			updated := tc.old.DeepCopy()
			tc.edit(updated)
			op := tc.op
			if op == "" {
				op = admissionv1.Update
			}
			resp := g.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
				UID: "req", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Operation: op,
				Name: tc.old.Name, Namespace: tc.old.Namespace, SubResource: tc.sub,
				UserInfo:  authenticationv1.UserInfo{Username: tc.user},
				OldObject: raw(t, tc.old), Object: raw(t, updated),
			}})
			if tc.wantDeny == "" {
				if !resp.Allowed {
					t.Fatalf("denied: %s", resp.Result.Message)
				}
				if len(rec.Events) != 0 {
					t.Errorf("an allowed edit left an Event: %s", <-rec.Events)
				}
				return
			}
			if resp.Allowed {
				t.Fatal("allowed, want denied")
			}
			if !strings.Contains(resp.Result.Message, tc.wantDeny) {
				t.Errorf("message %q does not contain %q", resp.Result.Message, tc.wantDeny)
			}
			select {
			case e := <-rec.Events:
				if !strings.Contains(e, EventUpdateRefused) || !strings.Contains(e, tc.user) || strings.Contains(e, "PLANTED") {
					t.Errorf("event %q", e)
				}
			default:
				t.Error("no Event for the refused edit")
			}
		})
	}
}

func TestPodGuardBadInput(t *testing.T) {
	g := &PodGuard{}
	resp := g.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Operation: admissionv1.Update,
		OldObject: runtime.RawExtension{Raw: []byte("{not json")}, Object: runtime.RawExtension{Raw: []byte("{}")},
	}})
	if resp.Allowed || resp.Result.Code != 400 {
		t.Fatalf("want a 400, got allowed=%v %+v", resp.Allowed, resp.Result)
	}
}

func raw(t *testing.T, p *corev1.Pod) runtime.RawExtension {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return runtime.RawExtension{Raw: b}
}
