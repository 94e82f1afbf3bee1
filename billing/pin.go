package billing

import (
	"strconv"
	"time"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// The webhook pins the price it admitted a server at on the pod, so the
// controller bills the same price even when the policies change meanwhile
// (and can bill a pod the webhook admitted without a reservation).

// PinPrice returns the annotations that pin price on a pod.
func PinPrice(price Price) map[string]string {
	return map[string]string{
		hcv1.AnnotationBillingValue:    strconv.FormatInt(price.Value, 10),
		hcv1.AnnotationBillingInterval: price.Interval.String(),
		hcv1.AnnotationPolicy:          price.Policy,
	}
}

// PinnedPrice reads the price PinPrice pinned in a pod's annotations. It
// reports false when none is pinned or the pinned one does not parse.
func PinnedPrice(annotations map[string]string) (Price, bool) {
	v, errValue := strconv.ParseInt(annotations[hcv1.AnnotationBillingValue], 10, 64)
	d, errInterval := time.ParseDuration(annotations[hcv1.AnnotationBillingInterval])
	if errValue != nil || errInterval != nil || v < 0 || d < time.Second {
		return Price{}, false
	}
	return Price{Value: v, Interval: d, Policy: annotations[hcv1.AnnotationPolicy]}, true
}
