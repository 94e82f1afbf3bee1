package controllers

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// reservationsSeen remembers, per account, when this controller first saw
// each reservation whose pod it has not seen yet. The orphan grace of a
// reservation that appeared while the controller watched the account runs
// from then, on the controller's own clock: a webhook replica whose clock
// lags (its reservedAt looks old) cannot have it refunded before its pod
// had the grace to appear. The controller is woken by every reservation
// (a change of status.servers), so "first seen" is within the cache's lag
// of the real write. A reservation already there when the controller
// first saw the account (it just started, or the account is new to it)
// keeps reservedAt: nothing better is known.
type reservationsSeen struct {
	mu       sync.Mutex
	accounts map[types.NamespacedName]*accountSightings
}

type accountSightings struct {
	// first is when each awaiting reservation was first seen (zero: it was
	// there at the first sight of the account).
	first map[string]time.Time
	// lagging are the reservations that appeared older than the grace, not
	// reported yet.
	lagging map[string]hcv1.ServerCharge
}

// observe records the account's reservations that await their pod (inline
// and on its pages: pageEntries), and
// forgets the others; it returns the account's clock for billing. A
// reservation that appeared already older than the grace (its writer's
// clock lags: without this clock it would be refunded at once) is kept for
// takeLagging.
func (s *reservationsSeen) observe(a *hcv1.CreditAccount, pageEntries []hcv1.ServerCharge, now time.Time, grace time.Duration) *accountSightings {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.accounts == nil {
		s.accounts = map[types.NamespacedName]*accountSightings{}
	}
	key := types.NamespacedName{Namespace: a.Namespace, Name: a.Name}
	sight, known := s.accounts[key]
	if !known {
		sight = &accountSightings{first: map[string]time.Time{}, lagging: map[string]hcv1.ServerCharge{}}
		s.accounts[key] = sight
	}
	awaiting := make(map[string]bool, len(sight.first))
	for _, entries := range [][]hcv1.ServerCharge{a.Status.Servers, pageEntries} {
		for i := range entries {
			sight.see(&entries[i], known, now, grace, awaiting)
		}
	}
	for id := range sight.first {
		if !awaiting[id] {
			delete(sight.first, id)
			delete(sight.lagging, id)
		}
	}
	return sight
}

// see records an entry that awaits its pod.
func (a *accountSightings) see(e *hcv1.ServerCharge, known bool, now time.Time, grace time.Duration, awaiting map[string]bool) {
	if e.PodUID != "" || e.EndedAt != nil {
		return
	}
	awaiting[e.ID] = true
	if _, ok := a.first[e.ID]; !ok {
		var t time.Time
		if known {
			t = now
			if !now.Before(e.ReservedAt.Add(grace)) {
				a.lagging[e.ID] = *e
			}
		}
		a.first[e.ID] = t
	}
}

// takeLagging returns the account's lagging reservations not reported yet,
// and forgets them.
func (s *reservationsSeen) takeLagging(key types.NamespacedName) []hcv1.ServerCharge {
	s.mu.Lock()
	defer s.mu.Unlock()
	sight := s.accounts[key]
	if sight == nil || len(sight.lagging) == 0 {
		return nil
	}
	out := make([]hcv1.ServerCharge, 0, len(sight.lagging))
	for id, e := range sight.lagging {
		out = append(out, e)
		delete(sight.lagging, id)
	}
	return out
}

// forget drops a deleted account.
func (s *reservationsSeen) forget(key types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.accounts, key)
}

// FirstSeen implements billing.ReservationClock (zero: use reservedAt).
func (a *accountSightings) FirstSeen(id string) time.Time {
	return a.first[id]
}
