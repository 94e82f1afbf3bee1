package billing

import (
	"math"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// addSat adds two non-negative amounts of credits (totals, counts, credits
// available to pay with), saturating at hcv1.MaxCredits instead of
// wrapping. A negative operand counts as 0: a negative balance has nothing
// to pay with. Never use it to move a balance (that is addSigned: a
// negative balance is a debt, which a movement must not forgive).
func addSat(a, b int64) int64 {
	if a < 0 || b < 0 {
		a, b = max(a, 0), max(b, 0)
	}
	if a > hcv1.MaxCredits-b {
		return hcv1.MaxCredits
	}
	return a + b
}

// mulSat multiplies two non-negative numbers, saturating at hcv1.MaxCredits.
func mulSat(a, b int64) int64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	if a > math.MaxInt64/b || a*b > hcv1.MaxCredits {
		return hcv1.MaxCredits
	}
	return a * b
}

// addSatSigned adds two ledger movements of the same sign (two charges, or
// two credits), saturating their magnitude at hcv1.MaxCredits.
func addSatSigned(a, b int64) int64 {
	if a <= 0 && b <= 0 {
		return -addSat(-a, -b)
	}
	return addSat(a, b)
}

// addSigned adds two signed amounts of any sign (a movement of a balance,
// which may be negative; the net of adjustments), clamping the result to
// ±hcv1.MaxCredits. Amounts in the ledger are
// bounded by hcv1.MaxCredits, so the sum itself cannot overflow.
func addSigned(a, b int64) int64 {
	return max(-hcv1.MaxCredits, min(a+b, hcv1.MaxCredits))
}
