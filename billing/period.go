package billing

import (
	"math"
	"time"
)

// Period arithmetic. A server's clock starts at start (its container start).
// Period k (k = 0, 1, ...) covers [start + k·interval, start + (k+1)·interval).
// Period 0 is paid by the reservation made at admission; period k is due at
// its boundary start + k·interval while the server is still running.

// PeriodsDue returns how many periods must have been paid for a server that
// started at start and is observed running at t: every period that has begun
// by t. For a server that ended at t, a period beginning exactly at t is not
// owed. The result is at least 1 (the reserved first period).
func PeriodsDue(start, t time.Time, interval time.Duration, ended bool) int64 {
	if interval <= 0 {
		return 1
	}
	if !t.After(start) {
		return 1
	}
	elapsed := t.Sub(start)
	n := int64(elapsed / interval)
	if ended && elapsed%interval == 0 {
		// The server stopped exactly on a boundary: that period never began.
		return max(n, 1)
	}
	if n == math.MaxInt64 {
		return n
	}
	return n + 1
}

// Boundary returns the start of period k (start + k·interval), saturating at
// a far-future time instead of overflowing.
func Boundary(start time.Time, k int64, interval time.Duration) time.Time {
	if k <= 0 {
		return start
	}
	const maxDur = time.Duration(1<<63 - 1)
	if interval > 0 && k > int64(maxDur/interval) {
		return start.Add(maxDur)
	}
	return start.Add(time.Duration(k) * interval)
}

// NextBoundary returns the first boundary strictly after t for a server that
// started at start: the moment the next period becomes due.
func NextBoundary(start, t time.Time, interval time.Duration) time.Time {
	return Boundary(start, PeriodsDue(start, t, interval, false), interval)
}
