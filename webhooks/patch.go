package webhooks

import (
	"net/http"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
)

// patch pins the price on the pod: annotations only, added one by one so
// the patch is small and the pod is not re-encoded.
func patch(pod *corev1.Pod, d *decision, reservation string) admission.Response {
	add := billing.PinPrice(d.price)
	if d.wallet != nil {
		add[hcv1.AnnotationAccount] = d.wallet.Name
	}
	if d.project != nil {
		add[hcv1.AnnotationProject] = d.project.Name
	}
	if reservation != "" {
		add[hcv1.AnnotationReservation] = reservation
	}
	var ops []jsonpatch.JsonPatchOperation
	if pod.Annotations == nil {
		ops = append(ops, jsonpatch.NewOperation("add", "/metadata/annotations", add))
	} else {
		for k, v := range add {
			ops = append(ops, jsonpatch.NewOperation("add", "/metadata/annotations/"+escapePointer(k), v))
		}
		// Only the webhook sets these: one preset by the pod's creator
		// would bind this pod to another server's ledger.
		for _, k := range []string{hcv1.AnnotationReservation, hcv1.AnnotationProject} {
			if _, preset := pod.Annotations[k]; preset {
				if _, ours := add[k]; !ours {
					ops = append(ops, jsonpatch.NewOperation("remove", "/metadata/annotations/"+escapePointer(k), nil))
				}
			}
		}
	}
	resp := admission.Patched("", ops...)
	msg := "This server costs " + billing.PriceText(d.price) + "."
	if d.price.Value == 0 {
		msg = "This server is free."
	}
	resp.Result = &metav1.Status{Message: msg, Code: http.StatusOK}
	return resp
}

// escapePointer escapes a JSON pointer segment (RFC 6901).
func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}
