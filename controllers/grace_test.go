package controllers

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hubcredits/hubcredits/internal/metrics"
	"github.com/hubcredits/hubcredits/internal/testutil"
	"github.com/hubcredits/hubcredits/internal/testutil/fakeclient"
)

// TestOrphanGraceRunsOnTheControllersClock: a webhook replica whose clock
// is 30 s behind writes a reservation whose pod never comes. Its reservedAt
// looks 30 s old (the whole grace) when it appears; it is refunded a full
// grace after the controller first saw it, never at once.
func TestOrphanGraceRunsOnTheControllersClock(t *testing.T) {
	const lag = 30 * time.Second
	cases := map[string]struct {
		// watched: the controller saw the account before the reservation.
		watched bool
		// checks are the times (after the reservation appeared) of the
		// reconciles; wantKept whether the reservation is kept after each.
		checks   []time.Duration
		wantKept []bool
		// wantReasons are the Events, in order; wantFlagged the count of
		// GraceFromFirstSight decisions.
		wantReasons []string
		wantFlagged float64
	}{
		"it appears while the controller watches: a full grace from then": {
			watched:     true,
			checks:      []time.Duration{0, 29 * time.Second, 30 * time.Second},
			wantKept:    []bool{true, true, false},
			wantReasons: []string{EventGraceFromFirstSight, "ReservationRefunded"},
			wantFlagged: 1,
		},
		"it was there when the controller first looked: reservedAt is all it knows": {
			checks:      []time.Duration{0},
			wantKept:    []bool{false},
			wantReasons: []string{"ReservationRefunded"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			flaggedBefore := decisions(metrics.GraceFromFirstSight)
			appear := 10 * time.Minute
			api := fakeclient.New(nil, openAccount("alice", "alice").Balance(100).Obj())
			env := newControllerEnv(api, at(appear-time.Minute))
			if tc.watched {
				if _, err := env.r.Reconcile(context.Background(), aliceKey); err != nil {
					t.Fatal(err)
				}
			}
			// The lagging replica's reservation.
			a := testutil.GetAccount(t, api, testNS, "alice")
			e := testutil.MakeServerCharge("r1").Obj()
			e.ReservedAt = metav1.NewTime(at(appear - lag))
			a.Status.Servers = append(a.Status.Servers, e)
			a.Status.Balance -= 10
			if err := api.Status().Update(context.Background(), a); err != nil {
				t.Fatal(err)
			}

			var kept []bool
			for _, d := range tc.checks {
				env.clock.SetTime(at(appear + d))
				if _, err := env.r.Reconcile(context.Background(), aliceKey); err != nil {
					t.Fatal(err)
				}
				kept = append(kept, len(testutil.GetAccount(t, api, testNS, "alice").Status.Servers) == 1)
			}

			if d := testutil.Diff(tc.wantKept, kept); d != "" {
				t.Errorf("reservation kept after each reconcile (-want +got):\n%s", d)
			}
			if d := testutil.Diff(tc.wantReasons, reasons(env.eventList())); d != "" {
				t.Errorf("events (-want +got):\n%s", d)
			}
			if n := decisions(metrics.GraceFromFirstSight) - flaggedBefore; n != tc.wantFlagged {
				t.Errorf("%v GraceFromFirstSight decisions, want %v", n, tc.wantFlagged)
			}
			if !kept[len(kept)-1] {
				if b := testutil.GetAccount(t, api, testNS, "alice").Status.Balance; b != 100 {
					t.Errorf("balance %d after the refund, want 100", b)
				}
			}
		})
	}
}
