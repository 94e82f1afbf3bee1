package billing

import (
	"testing"
	"time"

	"github.com/hubcredits/hubcredits/internal/testutil"
)

// TestRefundMarksOrphanedReservations: the return of a reservation whose
// pod never appeared is marked (the controller counts it in
// hubcredits_reservations_orphaned_total: forged reviews show there); a pod
// that appeared and was deleted before it ran is not.
func TestRefundMarksOrphanedReservations(t *testing.T) {
	tests := map[string]struct {
		pod          PodObservation
		uid          string
		wantOrphaned bool
	}{
		"the pod never appeared":         {wantOrphaned: true},
		"the pod was seen, then deleted": {uid: "u1"},
		"the pod ended without running":  {uid: "u1", pod: endedPending("u1", 2*time.Minute)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := testutil.MakeServerCharge("r1")
			if tc.uid != "" {
				s = s.UID("u1")
			}
			pods := map[string]PodObservation{}
			if tc.pod.Exists {
				pods["r1"] = tc.pod
			}
			res := Settle(wallet(90).Servers(s.Obj()).Obj(), nil, podsByID(pods), nil, at(3*time.Minute), testOptions)
			var refunds, orphaned int
			for _, n := range res.Notes {
				if n.Reason == EventRefunded {
					refunds++
					if n.Orphaned {
						orphaned++
					}
				}
			}
			if refunds != 1 {
				t.Fatalf("%d refund notes, want 1: %+v", refunds, res.Notes)
			}
			if (orphaned == 1) != tc.wantOrphaned {
				t.Errorf("refund marked orphaned: %v, want %v", orphaned == 1, tc.wantOrphaned)
			}
		})
	}
}
