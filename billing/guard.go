package billing

import (
	"sort"
	"strings"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// The pod update guard: once admission has priced a pod and paid its first
// period, the pod's billing keys are bound to it. Changing them (moving the
// server to another account, dropping it from billing by relabelling it)
// would move credits by an edit rather than by the ledger, so only the
// operator itself may change them.

// billingKeyPrefix marks the annotations and labels hubcredits owns.
const billingKeyPrefix = "hubcredits.io/"

// AdmittedPod reports whether admission priced this pod: it carries any
// hubcredits.io/ annotation (the pinned price, the payer, the reservation).
func AdmittedPod(annotations map[string]string) bool {
	for k := range annotations {
		if strings.HasPrefix(k, billingKeyPrefix) {
			return true
		}
	}
	return false
}

// BoundKeyChanged returns the first key, in a stable order, whose change on
// an admitted pod the guard refuses: any hubcredits.io/ annotation or label,
// the JupyterHub username annotation, and the singleuser component label.
// Keys are prefixed "annotation " or "label ". It returns "" when none of
// them changed.
func BoundKeyChanged(oldLabels, newLabels, oldAnnotations, newAnnotations map[string]string) string {
	bound := func(k string, extra string) bool { return strings.HasPrefix(k, billingKeyPrefix) || k == extra }
	if k := firstChanged(oldAnnotations, newAnnotations, func(k string) bool { return bound(k, hcv1.AnnotationUsername) }); k != "" {
		return "annotation " + k
	}
	if k := firstChanged(oldLabels, newLabels, func(k string) bool { return bound(k, hcv1.ComponentLabel) }); k != "" {
		return "label " + k
	}
	return ""
}

// firstChanged returns the smallest key selected by bound that was added,
// removed or changed between a and b.
func firstChanged(a, b map[string]string, bound func(string) bool) string {
	var changed []string
	for k, v := range a {
		if w, ok := b[k]; bound(k) && (!ok || w != v) {
			changed = append(changed, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; bound(k) && !ok {
			changed = append(changed, k)
		}
	}
	if len(changed) == 0 {
		return ""
	}
	sort.Strings(changed)
	return changed[0]
}

// RefusedUpdateMessage is the one sentence a refused edit gets.
func RefusedUpdateMessage(pod, key string) string {
	return "hubcredits: the " + key + " of pod " + pod + " is bound to its billing since admission and cannot be changed; stop the server (or delete the pod) instead."
}
