package webhooks

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/testutil"
	"github.com/hubcredits/hubcredits/internal/testutil/fakeclient"
)

var poolKey = types.NamespacedName{Namespace: testNS, Name: "pool"}

// takeOne reserves 1 credit for reservation id, the way the webhook's
// wallet step does.
func takeOne(id string) func(a *hcv1.CreditAccount, now time.Time) error {
	return func(a *hcv1.CreditAccount, now time.Time) error {
		r := billing.Reservation{ID: id, Pod: "jupyter-" + id, User: id, Wallet: a.Name,
			Price: billing.Price{Value: 1, Interval: 10 * time.Minute}}
		_, err := billing.Take(a, r, 1, 1, 0, now)
		return err
	}
}

// writeCounter counts status writes and live reads.
type writeCounter struct {
	statusWrites atomic.Int32
	liveReads    atomic.Int32
}

// newReserver returns a Reserver on api whose status writes go through
// update (nil: straight to api) and whose live reads are counted.
func newReserver(api client.WithWatch, update func(ctx context.Context, c client.Client, obj client.Object, n int32) error) (*Reserver, *writeCounter) {
	w := &writeCounter{}
	c := interceptor.NewClient(api, interceptor.Funcs{
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			n := w.statusWrites.Add(1)
			if update != nil {
				return update(ctx, c, obj, n)
			}
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
	})
	live := interceptor.NewClient(api, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			w.liveReads.Add(1)
			return c.Get(ctx, key, obj, opts...)
		},
	})
	return &Reserver{Client: c, APIReader: live, Clock: clocktesting.NewFakeClock(t0)}, w
}

func getAccount(t *testing.T, r client.Reader, key types.NamespacedName) *hcv1.CreditAccount {
	t.Helper()
	a := &hcv1.CreditAccount{}
	if err := r.Get(context.Background(), key, a); err != nil {
		t.Fatal(err)
	}
	return a
}

// concurrentlyTakeOne runs n takeOne requests at once and counts how they
// ended.
func concurrentlyTakeOne(t *testing.T, r *Reserver, n int) (ok, short int) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var other []error
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("r%03d", i)
			a, err := r.Do(context.Background(), poolKey, takeOne(id))
			mu.Lock()
			defer mu.Unlock()
			var ie *billing.InsufficientError
			switch {
			case err == nil:
				ok++
				if a == nil || billing.FindServer(a, id) < 0 {
					other = append(other, fmt.Errorf("%s: the returned account lacks the entry", id))
				}
			case errors.As(err, &ie):
				short++
			default:
				other = append(other, err)
			}
		}()
	}
	wg.Wait()
	for _, err := range other {
		t.Error(err)
	}
	return ok, short
}

func TestReserverAppliesConcurrentRequestsExactly(t *testing.T) {
	cases := map[string]struct {
		balance  int64
		requests int
		// conflictFirst makes the first status write conflict, as if the
		// billing controller wrote the account meanwhile.
		conflictFirst bool
		wantOK        int
	}{
		"fewer credits than requests":                {balance: 7, requests: 30, wantOK: 7},
		"no credits":                                 {balance: 0, requests: 5, wantOK: 0},
		"exactly enough":                             {balance: 20, requests: 20, wantOK: 20},
		"more than enough":                           {balance: 100, requests: 25, wantOK: 25},
		"fewer credits than requests, with conflict": {balance: 7, requests: 30, conflictFirst: true, wantOK: 7},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			api := fakeclient.New(nil, openAccount("pool", "u").Balance(tc.balance).Obj())
			var update func(ctx context.Context, c client.Client, obj client.Object, n int32) error
			if tc.conflictFirst {
				update = func(ctx context.Context, c client.Client, obj client.Object, n int32) error {
					if n == 1 {
						return apierrors.NewConflict(schema.GroupResource{Group: "hubcredits.io", Resource: "creditaccounts"}, obj.GetName(), errors.New("the object has been modified"))
					}
					return c.Status().Update(ctx, obj)
				}
			}
			r, w := newReserver(api, update)

			ok, short := concurrentlyTakeOne(t, r, tc.requests)

			if ok != tc.wantOK || short != tc.requests-tc.wantOK {
				t.Errorf("%d reserved and %d refused, want %d and %d", ok, short, tc.wantOK, tc.requests-tc.wantOK)
			}
			a := getAccount(t, api, poolKey)
			if a.Status.Balance != tc.balance-int64(tc.wantOK) || len(a.Status.Servers) != tc.wantOK || a.Status.TotalCharged != int64(tc.wantOK) {
				t.Errorf("balance %d, %d entries, charged %d; want %d, %d, %d",
					a.Status.Balance, len(a.Status.Servers), a.Status.TotalCharged, tc.balance-int64(tc.wantOK), tc.wantOK, tc.wantOK)
			}
			if tc.conflictFirst && w.liveReads.Load() == 0 {
				t.Error("the conflict was not retried from the API reader")
			}
			if int(w.statusWrites.Load()) > tc.requests+1 {
				t.Errorf("%d status writes for %d requests", w.statusWrites.Load(), tc.requests)
			}
		})
	}
}

type batchResult struct {
	account *hcv1.CreditAccount
	err     error
}

// holdQueue makes key's queue wait: a gate request is being applied until
// release is called, so the requests queued meanwhile form the next batch.
func holdQueue(r *Reserver, key types.NamespacedName) (release func()) {
	entered, gate := make(chan struct{}), make(chan struct{})
	var once sync.Once
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = r.Do(context.Background(), key, func(*hcv1.CreditAccount, time.Time) error {
			once.Do(func() { close(entered) })
			<-gate
			return errors.New("gate") // changes nothing, writes nothing
		})
	}()
	<-entered
	return func() { close(gate); <-done }
}

// inOneBatch runs fns through r.Do as a single batch, in order.
func inOneBatch(t *testing.T, r *Reserver, key types.NamespacedName, fns ...func(*hcv1.CreditAccount, time.Time) error) []batchResult {
	t.Helper()
	release := holdQueue(r, key)
	out := make([]batchResult, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := r.Do(context.Background(), key, fn)
			out[i] = batchResult{a, err}
		}()
		waitQueued(t, r, key, i+1)
	}
	release()
	wg.Wait()
	return out
}

// waitQueued waits until n requests wait for key's next batch.
func waitQueued(t *testing.T, r *Reserver, key types.NamespacedName, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		got := 0
		if q := r.queues[key]; q != nil {
			got = len(q.pending)
		}
		r.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued, want %d", got, n)
		}
		runtime.Gosched()
	}
}

func TestReserverWritesABatchOnce(t *testing.T) {
	api := fakeclient.New(nil, openAccount("pool", "u").Balance(5).Obj())
	r, w := newReserver(api, nil)
	errBoom := errors.New("boom")
	var fns []func(*hcv1.CreditAccount, time.Time) error
	for i := range 8 {
		fns = append(fns, takeOne(fmt.Sprintf("r%d", i)))
	}
	// A request that fails must leave the account as it found it and not
	// spoil the others.
	fns = append(fns[:3], append([]func(*hcv1.CreditAccount, time.Time) error{func(a *hcv1.CreditAccount, _ time.Time) error {
		return errBoom
	}}, fns[3:]...)...)

	got := inOneBatch(t, r, poolKey, fns...)

	var errs []string
	for _, res := range got {
		switch res.err {
		case nil:
			errs = append(errs, "ok")
		case errBoom: //nolint:errorlint // errBoom is returned as is: identity, not kind
			errs = append(errs, "boom")
		default:
			var ie *billing.InsufficientError
			if errors.As(res.err, &ie) {
				errs = append(errs, "short")
			} else {
				errs = append(errs, res.err.Error())
			}
		}
	}
	want := []string{"ok", "ok", "ok", "boom", "ok", "ok", "short", "short", "short"}
	if d := testutil.Diff(want, errs); d != "" {
		t.Errorf("results in queue order (-want +got):\n%s", d)
	}
	if n := w.statusWrites.Load(); n != 1 {
		t.Errorf("%d status writes for one batch, want 1", n)
	}
	a := getAccount(t, api, poolKey)
	if a.Status.Balance != 0 || len(a.Status.Servers) != 5 {
		t.Errorf("balance %d with %d entries, want 0 with 5", a.Status.Balance, len(a.Status.Servers))
	}
	// Every request of the batch sees the account as written.
	for i, res := range got {
		if res.account == nil || res.account.ResourceVersion != a.ResourceVersion {
			t.Errorf("request %d was answered with a copy other than the one written", i)
		}
	}
}

// The webhook's pool step takes "as much as the pool holds"; when it takes
// nothing it returns errNothingTaken, but billing.Take has already
// appended a zero-paid entry. Batched with a pool step that is written (two
// members of one pool spawning at once), that entry and a "Reserve 0"
// ledger line are written too.
func TestReserverFailedPoolStepLeavesNoEntry(t *testing.T) {
	env := newWebhookEnv(
		openAccount("pool").Balance(4).Obj(),
		openAccount("alice", "alice").Project("pool").Obj(),
		openAccount("bob", "bob").Project("pool").Obj(),
	)
	release := holdQueue(env.h.Reserver, poolKey)
	var wg sync.WaitGroup
	resps := map[string]bool{}
	var mu sync.Mutex
	for i, user := range []string{"bob", "alice"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := env.h.Handle(context.Background(), makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, user, "").Obj()).UID("req-"+user).Obj())
			mu.Lock()
			resps[user] = resp.Allowed
			mu.Unlock()
		}()
		waitQueued(t, env.h.Reserver, poolKey, i+1)
	}
	release()
	wg.Wait()

	if !resps["bob"] || !resps["alice"] {
		t.Fatalf("admitted %v, want both", resps)
	}
	pool := getAccount(t, env.api, poolKey)
	if i := billing.FindServer(pool, "req-alice"); i >= 0 {
		t.Errorf("the pool holds an entry for alice's server, which it paid nothing for: %+v", pool.Status.Servers[i])
	}
	for _, l := range pool.Status.Ledger {
		if l.Amount == 0 {
			t.Errorf("the pool's ledger has a zero movement: %+v", l)
		}
	}
}

func TestReserverRetriesConflictsFromTheAPIReader(t *testing.T) {
	cases := map[string]struct {
		retries int
		budget  time.Duration
		// atLeast: wantWrites and wantLiveReads are lower bounds (a budget,
		// not a count, ends the retries).
		atLeast bool
		// conflicts is how many status writes conflict (-1: all).
		conflicts int
		// concurrent is a write by another writer just before the first
		// status write (the billing controller charging 3 credits).
		concurrent    bool
		wantErr       bool
		wantBalance   int64
		wantWrites    int32
		wantLiveReads int32
	}{
		"another writer came first: retried on its result": {
			concurrent: true, wantBalance: 100 - 3 - 1, wantWrites: 2, wantLiveReads: 1,
		},
		"two conflicts in a row": {
			conflicts: 2, wantBalance: 99, wantWrites: 3, wantLiveReads: 2,
		},
		"conflicts on every attempt: give up after Retries": {
			retries: 3, conflicts: -1, wantErr: true, wantBalance: 100, wantWrites: 3, wantLiveReads: 2,
		},
		"conflicts on every attempt: by default retried until the budget is spent": {
			budget: 30 * time.Millisecond, conflicts: -1, wantErr: true, wantBalance: 100,
			atLeast: true, wantWrites: 5, wantLiveReads: 4,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			api := fakeclient.New(nil, openAccount("pool", "u").Obj())
			r, w := newReserver(api, func(ctx context.Context, c client.Client, obj client.Object, n int32) error {
				if tc.concurrent && n == 1 {
					other := &hcv1.CreditAccount{}
					if err := c.Get(ctx, poolKey, other); err != nil {
						return err
					}
					other.Status.Balance -= 3
					other.Status.TotalCharged += 3
					if err := c.Status().Update(ctx, other); err != nil {
						return err
					}
				}
				if tc.conflicts < 0 || int(n) <= tc.conflicts {
					return apierrors.NewConflict(schema.GroupResource{Group: "hubcredits.io", Resource: "creditaccounts"}, obj.GetName(), errors.New("the object has been modified"))
				}
				return c.Status().Update(ctx, obj) // a real conflict if another writer came first
			})
			r.Retries, r.Budget = tc.retries, tc.budget
			start := time.Now()

			_, err := r.Do(context.Background(), poolKey, takeOne("alice"))

			if tc.wantErr != (err != nil) {
				t.Fatalf("error %v, want error: %v", err, tc.wantErr)
			}
			if err != nil && !apierrors.IsConflict(err) {
				t.Errorf("error %v does not wrap the conflict", err)
			}
			a := getAccount(t, api, poolKey)
			if a.Status.Balance != tc.wantBalance {
				t.Errorf("balance %d, want %d", a.Status.Balance, tc.wantBalance)
			}
			if got, want := billing.FindServer(a, "alice") >= 0, !tc.wantErr; got != want {
				t.Errorf("entry written %v, want %v", got, want)
			}
			writes, reads := w.statusWrites.Load(), w.liveReads.Load()
			switch {
			case tc.atLeast:
				if writes < tc.wantWrites || reads < tc.wantLiveReads || reads != writes-1 {
					t.Errorf("%d status writes and %d live reads, want at least %d and %d, one read per retry",
						writes, reads, tc.wantWrites, tc.wantLiveReads)
				}
				if took := time.Since(start); took < tc.budget {
					t.Errorf("gave up after %v, before the budget of %v", took, tc.budget)
				}
			case writes != tc.wantWrites || reads != tc.wantLiveReads:
				t.Errorf("%d status writes and %d live reads, want %d and %d", writes, reads, tc.wantWrites, tc.wantLiveReads)
			}
		})
	}
}

func TestReserverAccountGone(t *testing.T) {
	notFound := apierrors.NewNotFound(schema.GroupResource{Group: "hubcredits.io", Resource: "creditaccounts"}, "pool")
	cases := map[string]struct {
		objs   []client.Object
		update func(ctx context.Context, c client.Client, obj client.Object, n int32) error
	}{
		"no such account": {},
		"deleted between the read and the write": {
			objs: []client.Object{openAccount("pool", "u").Obj()},
			update: func(context.Context, client.Client, client.Object, int32) error {
				return notFound
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r, _ := newReserver(fakeclient.New(nil, tc.objs...), tc.update)

			_, err := r.Do(context.Background(), poolKey, takeOne("alice"))

			if !errors.Is(err, ErrAccountGone) {
				t.Fatalf("error %v, want ErrAccountGone", err)
			}
		})
	}
}

// The cache lags behind this replica's own writes; the Reserver starts
// from the copy it wrote instead of conflicting on the stale one.
func TestReserverPrefersItsOwnNewerWrite(t *testing.T) {
	api := fakeclient.New(nil, openAccount("pool", "u").Obj())
	frozen := getAccount(t, api, poolKey)
	r, w := newReserver(api, nil)
	stale := interceptor.NewClient(api, interceptor.Funcs{
		Get: func(_ context.Context, _ client.WithWatch, _ client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
			frozen.DeepCopyInto(obj.(*hcv1.CreditAccount))
			return nil
		},
	})
	r.Client = interceptor.NewClient(stale, interceptor.Funcs{
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			w.statusWrites.Add(1)
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
	})

	for _, id := range []string{"a", "b", "c"} {
		if _, err := r.Do(context.Background(), poolKey, takeOne(id)); err != nil {
			t.Fatal(err)
		}
	}

	if got := getAccount(t, api, poolKey).Status.Balance; got != 97 {
		t.Errorf("balance %d, want 97", got)
	}
	if n, live := w.statusWrites.Load(), w.liveReads.Load(); n != 3 || live != 0 {
		t.Errorf("%d writes and %d live reads, want 3 and 0 (no conflicts)", n, live)
	}
}

func TestNewer(t *testing.T) {
	cases := map[string]struct {
		a, b string
		want bool
	}{
		"greater":                  {a: "1001", b: "1000", want: true},
		"equal":                    {a: "1000", b: "1000"},
		"smaller":                  {a: "999", b: "1000"},
		"numerically, not by text": {a: "1000", b: "999", want: true},
		"mine unparsable":          {a: "abc", b: "1"},
		"cache unparsable":         {a: "2", b: "x"},
		"empty":                    {a: "", b: ""},
		"mine empty":               {a: "", b: "5"},
		"cache empty":              {a: "5", b: ""},
		"negative":                 {a: "-1", b: "0"},
		"beyond int64":             {a: "18446744073709551615", b: "9223372036854775808", want: true},
		"beyond uint64":            {a: "18446744073709551616", b: "1"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := newer(tc.a, tc.b); got != tc.want {
				t.Errorf("newer(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
			}
		})
	}
}
