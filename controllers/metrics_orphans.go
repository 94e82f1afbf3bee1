package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// reservationsOrphaned counts reservations returned because their pod never
// appeared. A few are normal (another admission webhook or a quota refused
// the pod after ours reserved); a steady rate means admission reviews that
// no pod creation followed — a caller that reaches the webhook port
// directly with forged reviews, for instance.
var reservationsOrphaned = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "hubcredits_reservations_orphaned_total",
	Help: "Reservations returned because their pod never appeared after the reservation grace.",
})

func init() {
	metrics.Registry.MustRegister(reservationsOrphaned)
}
