package testutil

import (
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/util/diff"
)

// Diff compares API objects semantically (equality.Semantic, so
// resource.Quantity and friends compare by value, which cmp.Diff cannot do
// without options) and returns "" when they are equal, else a diff
// (-want +got). Like cmpopts.EquateEmpty, nil and empty slices and maps
// are equal; times are compared with time.Time.Equal.
func Diff(want, got any) string {
	if semantic.DeepEqual(want, got) {
		return ""
	}
	return diff.Diff(want, got)
}

var semantic = func() conversion.Equalities {
	e := equality.Semantic.Copy()
	if err := e.AddFunc(func(a, b time.Time) bool { return a.Equal(b) }); err != nil {
		panic(err)
	}
	return e
}()
