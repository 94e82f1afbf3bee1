package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/metrics"
)

// PodGuardPath is where the pod update guard is served.
const PodGuardPath = "/validate-v1-pod"

// EventUpdateRefused is the reason of the Event a refused edit leaves.
const EventUpdateRefused = "BillingEditRefused"

// +kubebuilder:webhook:path=/validate-v1-pod,mutating=false,failurePolicy=fail,sideEffects=None,groups="",resources=pods,verbs=update,versions=v1,name=pod-updates.hubcredits.io,admissionReviewVersions=v1,timeoutSeconds=2,matchPolicy=Equivalent

// PodGuard refuses edits of the keys that bind a billed pod to its
// account (billing.BoundKeyChanged) unless the operator itself makes them.
// It reads only the pods' metadata: the spec carries the user's Hub token
// and is never decoded.
type PodGuard struct {
	// Self is the operator's own username (from a SelfSubjectReview at
	// start); its edits are let through. "" exempts nobody.
	Self string
	// Recorder, when set, leaves a Warning Event on the pod.
	Recorder record.EventRecorder
}

var _ admission.Handler = (*PodGuard)(nil)

var errDecodeMeta = errors.New("hubcredits could not decode the pod's metadata")

// podMeta is the part of a pod the guard decodes.
type podMeta struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
}

// Handle implements admission.Handler.
func (g *PodGuard) Handle(_ context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Update || req.Kind.Kind != "Pod" || req.SubResource != "" {
		return admission.Allowed("")
	}
	var oldPod, newPod podMeta
	if json.Unmarshal(req.OldObject.Raw, &oldPod) != nil || json.Unmarshal(req.Object.Raw, &newPod) != nil {
		return admission.Errored(http.StatusBadRequest, errDecodeMeta)
	}
	if !billing.AdmittedPod(oldPod.Metadata.Annotations) || (g.Self != "" && req.UserInfo.Username == g.Self) {
		return admission.Allowed("")
	}
	key := billing.BoundKeyChanged(oldPod.Metadata.Labels, newPod.Metadata.Labels, oldPod.Metadata.Annotations, newPod.Metadata.Annotations)
	if key == "" {
		return admission.Allowed("")
	}
	metrics.IntegrityDecisions.WithLabelValues(metrics.UpdateRefused).Inc()
	msg := billing.RefusedUpdateMessage(req.Name, key)
	if g.Recorder != nil {
		ref := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: req.Namespace, Name: req.Name, UID: oldPod.Metadata.UID}}
		g.Recorder.Eventf(ref, corev1.EventTypeWarning, EventUpdateRefused, "%s (requested by %s)", msg, req.UserInfo.Username)
	}
	return admission.Denied(msg)
}

// SetupPodGuard registers the pod update guard with the manager.
func SetupPodGuard(mgr ctrl.Manager, g *PodGuard) {
	mgr.GetWebhookServer().Register(PodGuardPath, &admission.Webhook{Handler: g, RecoverPanic: ptrTrue()})
}
