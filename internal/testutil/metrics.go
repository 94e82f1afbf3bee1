package testutil

import (
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Counter reads a counter of the operator's metrics registry (for an
// operator that runs in the test's process), summed over the series whose
// labels include want.
func Counter(t testing.TB, name string, want map[string]string) float64 {
	t.Helper()
	fams, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for k, v := range want {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == k && l.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue series
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// Histogram reads the count and sum of a histogram of the operator's
// metrics registry (summed over its series).
func Histogram(t testing.TB, name string) (count uint64, sum float64) {
	t.Helper()
	fams, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			count += m.GetHistogram().GetSampleCount()
			sum += m.GetHistogram().GetSampleSum()
		}
	}
	return count, sum
}
