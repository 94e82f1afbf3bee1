// Package metrics holds the metric families that both the webhooks and the
// controllers record (each registers only its own otherwise).
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Integrity decisions: what the operator did about a pod or account whose
// billing was tampered with or could not be settled the ordinary way.
const (
	// UpdateRefused: an edit of a billed pod's bound keys was refused.
	UpdateRefused = "UpdateRefused"
	// Readopted: a running pod whose reservation no ledger held any more
	// (returned while the pod was out of sight) is billed again.
	Readopted = "Readopted"
	// Unbillable: a pod no account may pay for (its user is not a member of
	// the account it names, or it names no user) is left unbilled.
	Unbillable = "Unbillable"
	// UnbillableStopped: such a pod is deleted (--unbillable-pods=stop).
	UnbillableStopped = "UnbillableStopped"
	// AccountEditIgnored: a running billed pod names another account than
	// the one that admitted it (its annotation was edited); the admitting
	// account bills on.
	AccountEditIgnored = "AccountEditIgnored"
)

// IntegrityDecisions counts integrity decisions by kind; each one also
// leaves an Event on the object it concerns.
var IntegrityDecisions = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "hubcredits_integrity_decisions_total",
	Help: "Integrity decisions (refused edits of billed pods, re-adopted or unbillable servers, held deletions), by decision.",
}, []string{"decision"})

func init() {
	metrics.Registry.MustRegister(IntegrityDecisions)
}
