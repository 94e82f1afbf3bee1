package operator

import (
	"time"

	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

// LeaderElectionID is the Lease the billing controllers' leader holds (the
// chart's Role names it).
const LeaderElectionID = "hubcredits.hubcredits.io"

// Process is what differs between the processes that run the operator's
// manager: the flags of main.go, or a test's choices.
type Process struct {
	// MetricsAddr and ProbeAddr are bind addresses; "0" (or "") disables.
	MetricsAddr, ProbeAddr string
	// LeaderElection elects a leader for the billing controllers in
	// LeaderElectionNamespace ("": the pod's namespace).
	LeaderElection          bool
	LeaderElectionNamespace string
	// LeaseDuration, RenewDeadline and RetryPeriod tune the election (nil:
	// controller-runtime's defaults).
	LeaseDuration, RenewDeadline, RetryPeriod *time.Duration
	// ReleaseOnCancel gives the lease up on a clean stop, so a successor
	// takes over at once.
	ReleaseOnCancel bool
	// WebhookServer serves the webhooks (nil: controller-runtime's default).
	WebhookServer webhook.Server
	// SeveralManagers lets one process run several managers (tests): the
	// controllers' names are then not checked for uniqueness.
	SeveralManagers bool
}

// ManagerOptions are the manager's options for o and p: the one place the
// scheme, the caches, the client, the election and the servers are put
// together.
func ManagerOptions(o Options, p Process) ctrl.Options {
	orZero := func(addr string) string {
		if addr == "" {
			return "0"
		}
		return addr
	}
	mo := ctrl.Options{
		Scheme:                        Scheme(),
		Cache:                         CacheOptions(o),
		NewCache:                      NewCache,
		Client:                        ClientOptions(),
		Metrics:                       metricsserver.Options{BindAddress: orZero(p.MetricsAddr)},
		HealthProbeBindAddress:        orZero(p.ProbeAddr),
		LeaderElection:                p.LeaderElection,
		LeaderElectionID:              LeaderElectionID,
		LeaderElectionNamespace:       p.LeaderElectionNamespace,
		LeaseDuration:                 p.LeaseDuration,
		RenewDeadline:                 p.RenewDeadline,
		RetryPeriod:                   p.RetryPeriod,
		LeaderElectionReleaseOnCancel: p.ReleaseOnCancel,
		WebhookServer:                 p.WebhookServer,
	}
	if p.SeveralManagers {
		mo.Controller = config.Controller{SkipNameValidation: ptr.To(true)}
	}
	return mo
}
