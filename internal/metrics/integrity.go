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

// Integrity decisions about accounts and stops (the account controller).
const (
	// DeletionHeld: an account being deleted is kept because servers it
	// funds still run.
	DeletionHeld = "DeletionHeld"
	// DeletionForced: an account was released with servers still running
	// (hubcredits.io/force-delete); its own servers are stopped.
	DeletionForced = "DeletionForced"
	// AccountReopened: a re-created account took over its predecessor's
	// tombstone (balance and applied top-ups).
	AccountReopened = "AccountReopened"
	// StopEscalated: the Hub API answered a stop as done, the server kept
	// running, and its pod was deleted instead.
	StopEscalated = "StopEscalated"
	// GraceFromFirstSight: a reservation appeared already older than the
	// orphan grace (its writer's clock lags); its grace runs from when the
	// operator saw it, instead of refunding it at once.
	GraceFromFirstSight = "GraceFromFirstSight"
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
