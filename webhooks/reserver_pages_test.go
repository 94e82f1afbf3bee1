package webhooks

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/ledgerpages"
	"github.com/hubcredits/hubcredits/internal/testutil/fakeclient"
)

// smallPages fill up in a test: 4 entries inline, 4 per page.
var smallPages = billing.PageLimits{Inline: 4, PerPage: 4, Pending: 8}

// pagedReserver is a Reserver with Pages on api; fault, when set, sees
// every status write first (obj is an account or a page) and may fail it.
func pagedReserver(api client.WithWatch, fault func(obj client.Object) error) *Reserver {
	c := interceptor.NewClient(api, interceptor.Funcs{
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			if fault != nil {
				if err := fault(obj); err != nil {
					return err
				}
			}
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
	})
	return &Reserver{Client: c, APIReader: api, Clock: clocktesting.NewFakeClock(t0), Pages: true, PageLimits: smallPages}
}

// reserveAlone reserves the first period (1 credit) of server id on the
// pool, which pays alone, as the webhook does.
func reserveAlone(r *Reserver, pool *hcv1.CreditAccount, id string) error {
	res := billing.Reservation{ID: id, Pod: "jupyter-" + id, User: "u", Wallet: pool.Name,
		Price: billing.Price{Value: 1, Interval: 10 * time.Minute}}
	return r.Reserve(context.Background(), pool.Namespace, res, pool, nil)
}

// spawnStorm reserves ids concurrently and sorts the outcomes.
func spawnStorm(t *testing.T, r *Reserver, pool *hcv1.CreditAccount, ids []string) (ok []string, denied int, failed []string) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := reserveAlone(r, pool, id)
			mu.Lock()
			defer mu.Unlock()
			var denial *billing.Denial
			switch {
			case err == nil:
				ok = append(ok, id)
			case errors.As(err, &denial) && denial.Reason == billing.DenyNotEnough:
				denied++
			default:
				failed = append(failed, id)
				t.Logf("%s: %v", id, err)
			}
		}()
	}
	wg.Wait()
	return ok, denied, failed
}

// checkPagedPool checks the pool against its pages (billing.CheckPaged),
// the conservation of credits (balance + Held = initial), that no page
// holds more than limits allow, and returns how many times each
// reservation id is held.
func checkPagedPool(t *testing.T, api client.Client, initial int64, l billing.PageLimits) map[string]int {
	t.Helper()
	a := getAccount(t, api, poolKey)
	store := &ledgerpages.Store{Client: api, APIReader: api}
	pages, err := store.Pages(context.Background(), a, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := billing.CheckPaged(a, pages); err != nil {
		t.Error(err)
	}
	held, err := billing.Held(a, pages)
	if err != nil {
		t.Fatal(err)
	}
	if a.Status.Balance+held != initial {
		t.Errorf("balance %d + held %d = %d, want %d", a.Status.Balance, held, a.Status.Balance+held, initial)
	}
	if len(a.Status.Servers) > l.Inline {
		t.Errorf("%d entries inline, the limit is %d", len(a.Status.Servers), l.Inline)
	}
	count := map[string]int{}
	for _, e := range a.Status.Servers {
		count[e.ID]++
	}
	for n, p := range pages {
		view, err := billing.PageView(a, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(view.Status.Servers) > l.PerPage {
			t.Errorf("page %d holds %d entries, the limit is %d", n, len(view.Status.Servers), l.PerPage)
		}
		for _, e := range view.Status.Servers {
			count[e.ID]++
		}
	}
	return count
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return out
}

func TestReserverPagesAStorm(t *testing.T) {
	for name, tc := range map[string]struct {
		balance, spawns int
		conflicts       int // the first account writes that conflict
	}{
		"more spawns than credits":           {balance: 50, spawns: 60},
		"enough for all":                     {balance: 100, spawns: 60},
		"more spawns than credits, conflict": {balance: 50, spawns: 60, conflicts: 3},
	} {
		t.Run(name, func(t *testing.T) {
			pool := openAccount("pool", "u").Balance(int64(tc.balance)).Obj()
			api := fakeclient.New(nil, pool)
			var conflicts atomic.Int32
			r := pagedReserver(api, func(obj client.Object) error {
				if _, ok := obj.(*hcv1.CreditAccount); ok && conflicts.Add(1) <= int32(tc.conflicts) {
					return apierrors.NewConflict(schema.GroupResource{Group: "hubcredits.io", Resource: "creditaccounts"}, obj.GetName(), errors.New("the object has been modified"))
				}
				return nil
			})
			ok, denied, failed := spawnStorm(t, r, getAccount(t, api, poolKey), ids("s", tc.spawns))
			want := min(tc.balance, tc.spawns)
			if len(ok) != want || denied != tc.spawns-want || len(failed) > 0 {
				t.Fatalf("%d admitted, %d denied, %d failed; want %d, %d, 0", len(ok), denied, len(failed), want, tc.spawns-want)
			}
			held := checkPagedPool(t, api, int64(tc.balance), smallPages)
			for _, id := range ok {
				if held[id] != 1 {
					t.Errorf("admitted %s is held %d times", id, held[id])
				}
			}
			if len(held) != len(ok) {
				t.Errorf("%d reservations held, %d admitted", len(held), len(ok))
			}
			if a := getAccount(t, api, poolKey); a.Status.Pages < int32((want-smallPages.Inline+smallPages.PerPage-1)/smallPages.PerPage) {
				t.Errorf("%d pages for %d entries", a.Status.Pages, want)
			}
		})
	}
}

// The write of a page fails after the account's commit: the requests on
// it fail (answered only after their page's write), the next batch
// completes the page, and no credit is lost or taken twice.
func TestReserverPageWriteLostAfterTheCommit(t *testing.T) {
	pool := openAccount("pool", "u").Balance(100).Obj()
	api := fakeclient.New(nil, pool)
	var dropped atomic.Bool
	r := pagedReserver(api, func(obj client.Object) error {
		if _, ok := obj.(*hcv1.LedgerPage); ok && dropped.CompareAndSwap(false, true) {
			return apierrors.NewServiceUnavailable("connection reset")
		}
		return nil
	})
	fresh := getAccount(t, api, poolKey)
	for _, id := range ids("a", 4) { // inline
		if err := reserveAlone(r, fresh, id); err != nil {
			t.Fatal(err)
		}
	}
	// One batch of 3 on page 1: its page write is lost.
	release := holdQueue(r, poolKey)
	errs := make(chan error, 3)
	for i, id := range ids("b", 3) {
		go func() { errs <- reserveAlone(r, fresh, id) }()
		waitQueued(t, r, poolKey, i+1)
	}
	release()
	for range 3 {
		if err := <-errs; err == nil || !strings.Contains(err.Error(), "connection reset") {
			t.Errorf("a reservation on the lost page: %v, want the page write's error", err)
		}
	}
	if a := getAccount(t, api, poolKey); len(a.Status.Pending) != 1 || a.Status.Balance != 100-4-3 {
		t.Fatalf("after the lost write: pending %v, balance %d; want the transfer committed, 93", a.Status.Pending, a.Status.Balance)
	}
	// The next batch completes page 1 and goes on.
	for _, id := range ids("c", 3) {
		if err := reserveAlone(r, fresh, id); err != nil {
			t.Fatal(err)
		}
	}
	held := checkPagedPool(t, api, 100, smallPages)
	for _, id := range append(ids("b", 3), ids("c", 3)...) {
		if held[id] != 1 {
			t.Errorf("%s is held %d times, want once (b: until the controller returns it)", id, held[id])
		}
	}
	a := getAccount(t, api, poolKey)
	if a.Status.Pages != 2 || a.Status.PagedServers != 6 {
		t.Errorf("pages %d, paged servers %d; want 2, 6", a.Status.Pages, a.Status.PagedServers)
	}
}

// A retried reservation (the same id) takes nothing twice, inline or on a
// page; the reservations of one batch beyond what a page takes per write
// (MaxReserveBatch) go into the batch's next round.
func TestReserverPagesRetriesAndRounds(t *testing.T) {
	pool := openAccount("pool", "u").Balance(1000).Obj()
	api := fakeclient.New(nil, pool)
	var pageWrites atomic.Int32
	r := pagedReserver(api, func(obj client.Object) error {
		if _, ok := obj.(*hcv1.LedgerPage); ok {
			pageWrites.Add(1)
		}
		return nil
	})
	r.PageLimits = billing.PageLimits{Inline: 2, PerPage: 64, Pending: 8}
	fresh := getAccount(t, api, poolKey)
	// One batch of 2 + 20: 2 inline, 16 on page 1, 4 in a second round.
	release := holdQueue(r, poolKey)
	all := ids("r", 22)
	errs := make(chan error, len(all))
	for i, id := range all {
		go func() { errs <- reserveAlone(r, fresh, id) }()
		waitQueued(t, r, poolKey, i+1)
	}
	release()
	for range all {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := pageWrites.Load(); n != 2 {
		t.Errorf("%d page writes, want 2 (two rounds of one batch)", n)
	}
	// Retries: one inline, one on page 1.
	for _, id := range []string{"r000", "r010", "r021"} {
		if err := reserveAlone(r, fresh, id); err != nil {
			t.Fatal(err)
		}
	}
	held := checkPagedPool(t, api, 1000, r.PageLimits)
	for _, id := range all {
		if held[id] != 1 {
			t.Errorf("%s is held %d times", id, held[id])
		}
	}
	if a := getAccount(t, api, poolKey); a.Status.Balance != 1000-22 {
		t.Errorf("balance %d, want %d", a.Status.Balance, 1000-22)
	}
}

// A retried reservation whose first attempt is on a page that is not the
// last one takes nothing twice: found on the page the batch completes
// (the account still holds its transfer, confirmed by the next account
// write), or through the index of ledger keys on pages.
func TestReserverRetryOnAnEarlierPage(t *testing.T) {
	pool := openAccount("pool", "u").Balance(100).Obj()
	api := fakeclient.New(nil, pool)
	r := pagedReserver(api, nil)
	fresh := getAccount(t, api, poolKey)
	// One batch: 4 inline, 4 on page 1, 2 on page 2.
	release := holdQueue(r, poolKey)
	first := ids("r", 10)
	errs := make(chan error, len(first))
	for i, id := range first {
		go func() { errs <- reserveAlone(r, fresh, id) }()
		waitQueued(t, r, poolKey, i+1)
	}
	release()
	for range first {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if a := getAccount(t, api, poolKey); a.Status.Pages != 2 || len(a.Status.Pending) != 2 {
		t.Fatalf("pages %d, pending %v; want 2 pages, both transfers pending", a.Status.Pages, a.Status.Pending)
	}
	// The retry of r005 (page 1) with a new one: page 2 is the last page.
	ok, _, failed := spawnStorm(t, r, fresh, []string{"r005", "new"})
	if len(ok) != 2 || len(failed) > 0 {
		t.Fatalf("%v admitted, %v failed", ok, failed)
	}
	// Long after (pages 3 and 4 written, every transfer confirmed), the
	// cache's index of ledger keys on pages still finds them.
	later := ids("l", 8)
	for _, id := range later {
		if err := reserveAlone(r, fresh, id); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"r001", "r005", "r009"} {
		if err := reserveAlone(r, fresh, id); err != nil {
			t.Fatal(err)
		}
	}
	held := checkPagedPool(t, api, 100, smallPages)
	for _, id := range append(append(first, "new"), later...) {
		if held[id] != 1 {
			t.Errorf("%s is held %d times", id, held[id])
		}
	}
	if a := getAccount(t, api, poolKey); a.Status.Balance != 100-19 || a.Status.Pages != 4 {
		t.Errorf("balance %d, pages %d; want %d, 4", a.Status.Balance, a.Status.Pages, 100-19)
	}
}

// Without Pages every entry stays in status.servers, as before pages.
func TestReserverWithoutPages(t *testing.T) {
	pool := openAccount("pool", "u").Balance(100).Obj()
	api := fakeclient.New(nil, pool)
	r := pagedReserver(api, nil)
	r.Pages = false
	ok, _, failed := spawnStorm(t, r, getAccount(t, api, poolKey), ids("s", 12))
	if len(ok) != 12 || len(failed) > 0 {
		t.Fatalf("%d admitted, %d failed", len(ok), len(failed))
	}
	if a := getAccount(t, api, poolKey); len(a.Status.Servers) != 12 || a.Status.Pages != 0 {
		t.Fatalf("%d entries inline, %d pages; want 12 and none", len(a.Status.Servers), a.Status.Pages)
	}
}

// Pages off on an account that has pages (the controller moved entries
// there, or Pages was on before): new entries go to status.servers, and a
// retry whose first attempt is on a page takes nothing.
func TestReserverWithoutPagesOnAPagedAccount(t *testing.T) {
	pool := openAccount("pool", "u").Balance(100).Obj()
	api := fakeclient.New(nil, pool)
	fresh := getAccount(t, api, poolKey)
	on := pagedReserver(api, nil)
	for _, id := range ids("s", 10) {
		if err := reserveAlone(on, fresh, id); err != nil {
			t.Fatal(err)
		}
	}
	off := pagedReserver(api, nil)
	off.Pages = false
	for _, id := range []string{"s009", "s005", "new"} {
		if err := reserveAlone(off, fresh, id); err != nil {
			t.Fatal(err)
		}
	}
	held := checkPagedPool(t, api, 100, billing.PageLimits{Inline: 5, PerPage: 4})
	for _, id := range append(ids("s", 10), "new") {
		if held[id] != 1 {
			t.Errorf("%s is held %d times", id, held[id])
		}
	}
	if a := getAccount(t, api, poolKey); a.Status.Balance != 100-11 || len(a.Status.Servers) != 5 {
		t.Errorf("balance %d, %d entries inline; want %d, 5", a.Status.Balance, len(a.Status.Servers), 100-11)
	}
}
