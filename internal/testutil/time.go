package testutil

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// T0 is the fixed "now" of the unit tests, a Monday morning; they speak in
// offsets from it, and the wrappers' time arguments are such offsets.
var T0 = time.Date(2026, time.January, 5, 9, 0, 0, 0, time.UTC)

// Interval is the billing interval the wrappers default to.
const Interval = 10 * time.Minute

// HubToken is the Hub API token planted in every KubeSpawner-shaped test
// pod; no response, log line, Event or status may ever carry it.
const HubToken = "hubtoken-PLANTED-7f3a9c"

// At is T0 plus d.
func At(d time.Duration) time.Time { return T0.Add(d) }

// MetaAt is a *metav1.Time at T0 plus d.
func MetaAt(d time.Duration) *metav1.Time {
	t := metav1.NewTime(At(d))
	return &t
}

// TimeAt is a *time.Time at T0 plus d.
func TimeAt(d time.Duration) *time.Time {
	t := At(d)
	return &t
}
