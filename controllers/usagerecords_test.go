package controllers

import (
	"errors"
	"fmt"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// TestSchemaInvalid: only the API server refusing the record's own fields
// (Invalid naming a field: the CRD's schema) is permanent; an admission
// policy's Invalid (no field, may be lifted) and other errors are retried.
func TestSchemaInvalid(t *testing.T) {
	gk := schema.GroupKind{Group: "hubcredits.io", Kind: "UsageRecord"}
	policy := apierrors.NewInvalid(gk, "r", nil)
	policy.ErrStatus.Details.Causes = []metav1.StatusCause{{Message: "usage records are refused by this test"}}
	cases := map[string]struct {
		err  error
		want bool
	}{
		"a field too long":             {apierrors.NewInvalid(gk, "r", field.ErrorList{field.TooLong(field.NewPath("user"), "", 255)}), true},
		"wrapped":                      {fmt.Errorf("create: %w", apierrors.NewInvalid(gk, "r", field.ErrorList{field.TooLong(field.NewPath("serverName"), "", 255)})), true},
		"an admission policy's denial": {policy, false},
		"forbidden":                    {apierrors.NewForbidden(schema.GroupResource{Group: "hubcredits.io", Resource: "usagerecords"}, "r", errors.New("no")), false},
		"a plain error":                {errors.New("connection refused"), false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := schemaInvalid(tc.err); got != tc.want {
				t.Errorf("schemaInvalid(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
