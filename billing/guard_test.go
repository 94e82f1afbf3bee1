package billing

import (
	"maps"
	"testing"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

func TestBoundKeyChanged(t *testing.T) {
	admitted := map[string]string{hcv1.AnnotationUsername: "alice", hcv1.AnnotationAccount: "alice", hcv1.AnnotationReservation: "r1", "other": "x"}
	labels := map[string]string{hcv1.ComponentLabel: hcv1.SingleuserComponent, "hub.jupyter.org/username": "alice"}
	// with returns a copy of m with k set to v ("" removes it).
	with := func(m map[string]string, k, v string) map[string]string {
		out := maps.Clone(m)
		out[k] = v
		if v == "" {
			delete(out, k)
		}
		return out
	}
	cases := map[string]struct {
		newLabels, newAnnotations map[string]string
		want                      string
	}{
		"nothing changed":                  {labels, admitted, ""},
		"an unrelated annotation":          {labels, with(admitted, "other", "y"), ""},
		"an unrelated label":               {with(labels, "app", "x"), admitted, ""},
		"the account annotation":           {labels, with(admitted, hcv1.AnnotationAccount, "pool"), "annotation " + hcv1.AnnotationAccount},
		"the reservation removed":          {labels, with(admitted, hcv1.AnnotationReservation, ""), "annotation " + hcv1.AnnotationReservation},
		"a new hubcredits annotation":      {labels, with(admitted, hcv1.AnnotationProject, "pool"), "annotation " + hcv1.AnnotationProject},
		"the username annotation":          {labels, with(admitted, hcv1.AnnotationUsername, "bob"), "annotation " + hcv1.AnnotationUsername},
		"the account label added":          {with(labels, hcv1.LabelAccount, "pool"), admitted, "label " + hcv1.LabelAccount},
		"the singleuser label removed":     {with(labels, hcv1.ComponentLabel, ""), admitted, "label " + hcv1.ComponentLabel},
		"the singleuser label changed":     {with(labels, hcv1.ComponentLabel, "other"), admitted, "label " + hcv1.ComponentLabel},
		"annotation reported before label": {with(labels, hcv1.ComponentLabel, ""), with(admitted, hcv1.AnnotationAccount, "x"), "annotation " + hcv1.AnnotationAccount},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := BoundKeyChanged(labels, tc.newLabels, admitted, tc.newAnnotations); got != tc.want {
				t.Errorf("BoundKeyChanged = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestAdmittedPod(t *testing.T) {
	if AdmittedPod(map[string]string{hcv1.AnnotationUsername: "alice"}) {
		t.Error("a pod with only KubeSpawner's annotations is not admitted by hubcredits")
	}
	if !AdmittedPod(map[string]string{hcv1.AnnotationBillingValue: "10"}) {
		t.Error("a pod with a pinned price was admitted")
	}
}
