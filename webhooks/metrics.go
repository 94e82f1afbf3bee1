package webhooks

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/hubcredits/hubcredits/billing"
)

var (
	decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hubcredits_admission_decisions_total",
		Help: "Pod admission decisions by result (admitted, denied, error) and reason.",
	}, []string{"result", "reason"})
	decisionSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hubcredits_admission_duration_seconds",
		Help:    "Time to decide on a singleuser pod, reservation write included.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2},
	})
	conflicts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "hubcredits_reservation_conflicts_total",
		Help: "Reservation writes retried because the account changed meanwhile.",
	})
	denials = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hubcredits_admission_denials_total",
		Help: "Spawns denied, by reason (dry runs and shadow mode not counted); each also leaves a Warning Event.",
	}, []string{"reason"})
	droppedDenialEvents = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "hubcredits_admission_denial_events_dropped_total",
		Help: "Denials whose Event was not written because this replica's Event budget for denials was spent.",
	})
)

// denialReasons are the reasons a spawn is denied for; their counters start
// at 0, so a dashboard shows every reason before the first denial.
var denialReasons = []string{
	billing.DenyNotEnough, billing.DenyNoAccount, billing.DenyNotMember, billing.DenyAccountMissing,
	billing.DenyAmbiguous, billing.DenyMissingUser, billing.DenyPriceError, billing.DenyProjectMissing,
	billing.DenyForbidden, billing.DenyInvalidGroups, billing.DenyNameTooLong, DenyUnknownUser, DenyWalletLimited,
}

func init() {
	metrics.Registry.MustRegister(decisions, decisionSeconds, conflicts, denials, droppedDenialEvents)
	for _, r := range denialReasons {
		denials.WithLabelValues(r)
	}
}

// recordDecision counts one answered admission request.
func recordDecision(v verdict, took time.Duration) {
	decisions.WithLabelValues(v.result, v.reason).Inc()
	decisionSeconds.Observe(took.Seconds())
}

// recordConflict counts one reservation write lost to a newer write.
func recordConflict() {
	conflicts.Inc()
}
