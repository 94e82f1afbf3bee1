package billing

import (
	"math"
	"testing"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

const maxCredits = hcv1.MaxCredits

func TestAddSat(t *testing.T) {
	cases := map[string]struct {
		a, b int64
		want int64
	}{
		"small":                          {a: 1, b: 2, want: 3},
		"zero":                           {a: 0, b: 0, want: 0},
		"exactly MaxCredits":             {a: maxCredits - 1, b: 1, want: maxCredits},
		"one past MaxCredits saturates":  {a: maxCredits, b: 1, want: maxCredits},
		"MaxInt64 + MaxInt64, no wrap":   {a: math.MaxInt64, b: math.MaxInt64, want: maxCredits},
		"an operand above MaxCredits":    {a: maxCredits + 5, b: 0, want: maxCredits},
		"negative operand clamps to 0":   {a: -5, b: 3, want: 3},
		"both negative clamp to 0":       {a: -5, b: -7, want: 0},
		"MinInt64 clamps, no wrap":       {a: math.MinInt64, b: math.MaxInt64, want: maxCredits},
		"half and half of MaxCredits":    {a: maxCredits / 2, b: maxCredits / 2, want: maxCredits},
		"MaxCredits + MaxInt64 saturate": {a: maxCredits, b: math.MaxInt64, want: maxCredits},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := addSat(tc.a, tc.b); got != tc.want {
				t.Errorf("addSat(%d, %d) = %d, want %d", tc.a, tc.b, got, tc.want)
			}
		})
	}
}

func TestMulSat(t *testing.T) {
	cases := map[string]struct {
		a, b int64
		want int64
	}{
		"small":                           {a: 3, b: 4, want: 12},
		"zero":                            {a: 0, b: 7, want: 0},
		"negative is zero":                {a: -1, b: 5, want: 0},
		"MaxCredits × 1":                  {a: maxCredits, b: 1, want: maxCredits},
		"just above MaxCredits saturates": {a: maxCredits + 1, b: 1, want: maxCredits},
		"product above MaxCredits":        {a: 100_000_000, b: 100_000_000, want: maxCredits},
		"product above MaxInt64, no wrap": {a: math.MaxInt64, b: 2, want: maxCredits},
		"4e9 × 4e9 wraps int64, not here": {a: 4_000_000_000, b: 4_000_000_000, want: maxCredits},
		"year of 1s periods at max price": {a: 31_536_000, b: maxCredits, want: maxCredits},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := mulSat(tc.a, tc.b); got != tc.want {
				t.Errorf("mulSat(%d, %d) = %d, want %d", tc.a, tc.b, got, tc.want)
			}
		})
	}
}
