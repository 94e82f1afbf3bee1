package testutil

import (
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Outcomes of a pod create through the hubcredits webhook (SpawnOutcome).
const (
	Admitted = "admitted"
	// Denied: for lack of credits.
	Denied = "denied"
	// TimedOut: the API server gave up on the webhook (its 2 s timeout,
	// on a loaded 2-core machine with many TLS handshakes at once). The
	// reservation may have been written; the controller refunds it once
	// no pod appears.
	TimedOut = "timedOut"
	// Other: any other error.
	Other = "other"
)

// SpawnOutcome classifies the error of a billed pod's create.
func SpawnOutcome(err error) string {
	switch {
	case err == nil:
		return Admitted
	case apierrors.IsForbidden(err) && strings.Contains(err.Error(), "Not enough credits"):
		return Denied
	case strings.Contains(err.Error(), `failed calling webhook "pods.hubcredits.io"`) && strings.Contains(err.Error(), "deadline exceeded"):
		return TimedOut
	}
	return Other
}
