package billing

import (
	"math"
	"testing"
	"time"
)

const maxDuration = time.Duration(math.MaxInt64)

func TestPeriodsDue(t *testing.T) {
	cases := map[string]struct {
		t        time.Time
		interval time.Duration
		ended    bool
		want     int64
		bug      string
	}{
		"before the clock starts: the reserved period": {t: at(-time.Minute), interval: interval, want: 1},
		"at the start: the reserved period":            {t: at(0), interval: interval, want: 1},
		"inside period 0":                              {t: at(5 * time.Minute), interval: interval, want: 1},
		"one nanosecond before the first boundary":     {t: at(interval - time.Nanosecond), interval: interval, want: 1},
		"running at the first boundary: period 1 is due": {
			t: at(interval), interval: interval, want: 2,
		},
		"ended exactly at the first boundary: period 1 never began": {
			t: at(interval), interval: interval, ended: true, want: 1,
		},
		"ended one nanosecond after the boundary: period 1 began": {
			t: at(interval + time.Nanosecond), interval: interval, ended: true, want: 2,
		},
		"ended at the start: still the reserved period": {t: at(0), interval: interval, ended: true, want: 1},
		"ended inside period 0":                         {t: at(time.Minute), interval: interval, ended: true, want: 1},
		"ended exactly at the third boundary":           {t: at(30 * time.Minute), interval: interval, ended: true, want: 3},
		"running at the third boundary":                 {t: at(30 * time.Minute), interval: interval, want: 4},
		"running mid period 3":                          {t: at(35 * time.Minute), interval: interval, want: 4},
		"a thousand hours of downtime":                  {t: at(1000 * time.Hour), interval: interval, want: 6001},
		"zero interval: only the reserved period":       {t: at(time.Hour), interval: 0, want: 1},
		"negative interval: only the reserved period":   {t: at(time.Hour), interval: -time.Minute, want: 1},
		"one-second periods for a year": {
			t: at(8760 * time.Hour), interval: time.Second, want: 8760*3600 + 1,
		},
		"beyond the largest duration, one-second periods: elapsed saturates": {
			t: t0.AddDate(300, 0, 0), interval: time.Second, want: int64(maxDuration/time.Second) + 1,
		},
		// t.Sub saturates at the largest Duration: n = MaxInt64 must not wrap
		// to MinInt64 on n+1.
		"beyond the largest duration, one-nanosecond periods: saturates, no wrap": {
			t: t0.AddDate(300, 0, 0), interval: time.Nanosecond, want: math.MaxInt64,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if tc.bug != "" {
				skipBug(t, tc.bug)
			}
			got := PeriodsDue(t0, tc.t, tc.interval, tc.ended)
			if got != tc.want {
				t.Errorf("PeriodsDue(t0, %s, %s, ended=%v) = %d, want %d", tc.t.Sub(t0), tc.interval, tc.ended, got, tc.want)
			}
		})
	}
}

func TestBoundary(t *testing.T) {
	cases := map[string]struct {
		k        int64
		interval time.Duration
		want     time.Time
	}{
		"period 0 starts at the start":       {k: 0, interval: interval, want: t0},
		"negative k is the start":            {k: -3, interval: interval, want: t0},
		"period 3":                           {k: 3, interval: interval, want: at(30 * time.Minute)},
		"zero interval stays at the start":   {k: 5, interval: 0, want: t0},
		"largest k that fits exactly":        {k: int64(maxDuration / interval), interval: interval, want: at(maxDuration.Truncate(interval))},
		"one past the largest k saturates":   {k: int64(maxDuration/interval) + 1, interval: interval, want: at(maxDuration)},
		"k = MaxInt64 saturates, no wrap":    {k: math.MaxInt64, interval: time.Second, want: at(maxDuration)},
		"k = MaxInt64 with 1ns periods fits": {k: math.MaxInt64, interval: time.Nanosecond, want: at(maxDuration)},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := Boundary(t0, tc.k, tc.interval)
			if !got.Equal(tc.want) {
				t.Errorf("Boundary(t0, %d, %s) = t0+%s, want t0+%s", tc.k, tc.interval, got.Sub(t0), tc.want.Sub(t0))
			}
			if got.Before(t0) {
				t.Errorf("Boundary went back in time: t0%s", got.Sub(t0))
			}
		})
	}
}

func TestNextBoundary(t *testing.T) {
	cases := map[string]struct {
		t    time.Time
		want time.Time
	}{
		"before the start: the end of period 0": {t: at(-time.Minute), want: at(interval)},
		"at the start":                          {t: at(0), want: at(interval)},
		"inside period 0":                       {t: at(9 * time.Minute), want: at(interval)},
		"exactly at a boundary: the next one":   {t: at(interval), want: at(20 * time.Minute)},
		"inside period 4":                       {t: at(45 * time.Minute), want: at(50 * time.Minute)},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := NextBoundary(t0, tc.t, interval)
			if !got.Equal(tc.want) {
				t.Errorf("NextBoundary(t0, t0+%s, 10m) = t0+%s, want t0+%s", tc.t.Sub(t0), got.Sub(t0), tc.want.Sub(t0))
			}
			if !got.After(tc.t) {
				t.Errorf("NextBoundary is not strictly after t")
			}
		})
	}
}

// FuzzPeriodsDue checks the period arithmetic against its definition: a
// running server owes every period that has begun, an ended one every period
// that began strictly before it ended, and always the reserved period 0.
func FuzzPeriodsDue(f *testing.F) {
	f.Add(int64(0), int64(600), false)
	f.Add(int64(600_000_000_000), int64(600), false)
	f.Add(int64(600_000_000_000), int64(600), true)
	f.Add(int64(-5), int64(1), true)
	f.Add(int64(31_536_000_000_000_000), int64(1), false) // a year of 1s periods
	f.Add(int64(math.MaxInt64), int64(31_536_000), true)
	f.Fuzz(func(t *testing.T, elapsedNs, intervalSec int64, ended bool) {
		// The API bounds billing intervals to 1s..8760h.
		if intervalSec < 1 || intervalSec > 8760*3600 {
			t.Skip()
		}
		interval := time.Duration(intervalSec) * time.Second
		now := t0.Add(time.Duration(elapsedNs))
		due := PeriodsDue(t0, now, interval, ended)
		if due < 1 {
			t.Fatalf("PeriodsDue = %d, want at least 1", due)
		}
		if elapsedNs <= 0 {
			if due != 1 {
				t.Fatalf("before the start: PeriodsDue = %d, want 1", due)
			}
			return
		}
		if due > int64(maxDuration/interval) {
			return // period starts past the largest Duration: Boundary saturates
		}
		last := Boundary(t0, due-1, interval) // start of the last period owed
		next := Boundary(t0, due, interval)   // start of the first period not owed
		if ended {
			if due > 1 && !last.Before(now) {
				t.Fatalf("ended at t0+%s owes period %d, which begins at t0+%s (not before the end)", now.Sub(t0), due-1, last.Sub(t0))
			}
			if next.Before(now) {
				t.Fatalf("ended at t0+%s owes %d periods, but period %d began at t0+%s", now.Sub(t0), due, due, next.Sub(t0))
			}
		} else {
			if last.After(now) {
				t.Fatalf("at t0+%s owes period %d, which begins later at t0+%s", now.Sub(t0), due-1, last.Sub(t0))
			}
			if !next.After(now) {
				t.Fatalf("at t0+%s owes %d periods, but period %d began at t0+%s", now.Sub(t0), due, due, next.Sub(t0))
			}
			if nb := NextBoundary(t0, now, interval); !nb.Equal(next) {
				t.Fatalf("NextBoundary = t0+%s, want t0+%s", nb.Sub(t0), next.Sub(t0))
			}
		}
		// Monotonic: a later time never owes fewer periods.
		if later := PeriodsDue(t0, now.Add(interval), interval, ended); later < due {
			t.Fatalf("PeriodsDue went down from %d to %d one interval later", due, later)
		}
		// Ending never owes more than running.
		if ended && due > PeriodsDue(t0, now, interval, false) {
			t.Fatalf("an ended server owes more than a running one")
		}
	})
}
