package webhooks

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
)

// The Reserver writes reservations to account status, reading an account
// live after a conflict.
// +kubebuilder:rbac:groups=hubcredits.io,namespace=system,resources=creditaccounts,verbs=get
// +kubebuilder:rbac:groups=hubcredits.io,namespace=system,resources=creditaccounts/status,verbs=get;update

const (
	// defaultConflictBudget is how long a batch keeps retrying conflicts
	// unless Budget says otherwise: most of the webhook's 2 s timeout
	// (timeoutSeconds=2), leaving the rest for the request's cache reads
	// and the answer.
	defaultConflictBudget = 1500 * time.Millisecond
	// batchTimeout bounds one batch's reads and writes. A batch answers
	// several requests, so it cannot run on any one request's context; a
	// request that stops waiting earlier is refunded by the controller if
	// its pod never appears.
	batchTimeout = 5 * time.Second
	// maxConflictJitter caps the random pause before a retry (which grows
	// by a millisecond per attempt): enough to put two replicas out of
	// step, small against the budget.
	maxConflictJitter = 10 * time.Millisecond
	// maxRememberedAccounts bounds the copies kept in latest. Past it, all
	// are forgotten at once; the price is a batch that starts from a cache
	// not caught up yet, and so one conflict and a live read.
	maxRememberedAccounts = 4096
)

// Reserver moves credits on CreditAccounts from the admission webhook, the
// way the API server's ResourceQuota admission moves quota: the requests for
// one account are batched, applied in order to the newest copy of the
// account, and written with one status update carrying its resourceVersion.
// A conflict (another replica, or the billing controller, wrote first) is
// retried from a live read. A request is answered only after its write
// succeeded, so two spawns racing for the last credits can never both pass.
type Reserver struct {
	Client client.Client
	// APIReader reads around the cache after a conflict.
	APIReader client.Reader
	Clock     clock.Clock
	// Retries bounds the attempts per batch (0: as many as Budget allows).
	Retries int
	// Budget bounds the time a batch keeps retrying conflicts (0:
	// defaultConflictBudget). Two replicas writing one account can make the
	// same replica lose several times in a row; a count alone would turn
	// that into a denial.
	Budget time.Duration

	mu     sync.Mutex
	queues map[types.NamespacedName]*accountQueue
	// latest keeps the copy of each account this replica last wrote, so the
	// next batch does not start from a cache that has not caught up yet.
	latest map[types.NamespacedName]*hcv1.CreditAccount
}

// accountOp is one change to an account. apply must leave the account as it
// found it when it returns an error.
type accountOp struct {
	apply func(a *hcv1.CreditAccount, now time.Time) error
	done  chan opResult
}

type opResult struct {
	account *hcv1.CreditAccount // the account after the batch (read-only)
	err     error
}

type accountQueue struct {
	pending []*accountOp
}

// ErrAccountGone says that the account was deleted.
var ErrAccountGone = errors.New("credit account not found")

// Do applies fn to the account, batched with concurrent requests, and
// returns the account as written. An error from fn is returned as is (and
// nothing of fn's is written).
func (r *Reserver) Do(ctx context.Context, key types.NamespacedName, fn func(a *hcv1.CreditAccount, now time.Time) error) (*hcv1.CreditAccount, error) {
	op := &accountOp{apply: fn, done: make(chan opResult, 1)}
	r.mu.Lock()
	if r.queues == nil {
		r.queues = map[types.NamespacedName]*accountQueue{}
		r.latest = map[types.NamespacedName]*hcv1.CreditAccount{}
	}
	q, running := r.queues[key]
	if !running {
		q = &accountQueue{}
		r.queues[key] = q
	}
	q.pending = append(q.pending, op)
	r.mu.Unlock()
	if !running {
		go r.drain(key, q)
	}
	select {
	case res := <-op.done:
		return res.account, res.err
	case <-ctx.Done():
		// The batch may still write this op; a reservation nobody answered
		// for is refunded by the controller once its pod fails to appear.
		return nil, ctx.Err()
	}
}

// drain processes batches for one account until its queue is empty.
func (r *Reserver) drain(key types.NamespacedName, q *accountQueue) {
	for {
		r.mu.Lock()
		ops := q.pending
		q.pending = nil
		if len(ops) == 0 {
			delete(r.queues, key)
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		r.process(key, ops)
	}
}

// process applies one batch to the newest copy of the account and writes
// it, retrying conflicts within the budget, then answers every op.
func (r *Reserver) process(key types.NamespacedName, ops []*accountOp) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	budget := r.Budget
	if budget <= 0 {
		budget = defaultConflictBudget
	}
	giveUp := time.Now().Add(budget)
	var lastErr error
	for attempt := 0; r.Retries <= 0 || attempt < r.Retries; attempt++ {
		cur, err := r.current(ctx, key, attempt > 0)
		if err != nil {
			lastErr = err
			break
		}
		work, errs, applied := applyBatch(cur, ops, r.Clock.Now())
		if applied > 0 {
			err = r.Client.Status().Update(ctx, work)
			if apierrors.IsConflict(err) {
				recordConflict()
				lastErr = err
				if time.Now().After(giveUp) {
					break
				}
				pauseBeforeRetry(attempt)
				continue
			}
			if err != nil {
				lastErr = err
				break
			}
			r.remember(key, work)
		}
		snapshot := work.DeepCopy()
		for i, op := range ops {
			op.done <- opResult{account: snapshot, err: errs[i]}
		}
		return
	}
	if apierrors.IsNotFound(lastErr) {
		lastErr = ErrAccountGone
	}
	for _, op := range ops {
		op.done <- opResult{err: fmt.Errorf("updating credit account %s: %w", key.Name, lastErr)}
	}
}

// applyBatch applies ops in order to a refreshed copy of cur. It returns
// the copy, each op's error, and how many ops changed it.
func applyBatch(cur *hcv1.CreditAccount, ops []*accountOp, now time.Time) (*hcv1.CreditAccount, []error, int) {
	work := cur.DeepCopy()
	billing.RefreshForAdmission(work, now)
	errs := make([]error, len(ops))
	applied := 0
	for i, op := range ops {
		if errs[i] = op.apply(work, now); errs[i] == nil {
			applied++
		}
	}
	return work, errs, applied
}

// pauseBeforeRetry waits a little, at random, so two replicas stop
// colliding in step.
func pauseBeforeRetry(attempt int) {
	jitter := min(time.Duration(attempt+1)*time.Millisecond, maxConflictJitter)
	time.Sleep(time.Duration(rand.Int64N(int64(jitter))))
}

// current returns the newest copy of the account: the cache's, or the one
// this replica wrote last if the cache has not seen it yet; live after a
// conflict.
func (r *Reserver) current(ctx context.Context, key types.NamespacedName, live bool) (*hcv1.CreditAccount, error) {
	a := &hcv1.CreditAccount{}
	if live {
		if err := r.APIReader.Get(ctx, key, a); err != nil {
			return nil, err
		}
		r.remember(key, a)
		return a, nil
	}
	if err := r.Client.Get(ctx, key, a); apierrors.IsNotFound(err) {
		// Just created (a new user's wallet) and not in the cache yet?
		return r.current(ctx, key, true)
	} else if err != nil {
		return nil, err
	}
	r.mu.Lock()
	mine := r.latest[key]
	r.mu.Unlock()
	if mine != nil && newer(mine.ResourceVersion, a.ResourceVersion) {
		return mine, nil
	}
	return a, nil
}

func (r *Reserver) remember(key types.NamespacedName, a *hcv1.CreditAccount) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.latest) > maxRememberedAccounts {
		clear(r.latest)
	}
	r.latest[key] = a.DeepCopy()
}

// newer reports whether resourceVersion a is newer than b. Resource versions
// are opaque, but the API server's etcd storage issues increasing integers;
// when either does not parse, the cache's copy (b) wins.
func newer(a, b string) bool {
	x, err1 := strconv.ParseUint(a, 10, 64)
	y, err2 := strconv.ParseUint(b, 10, 64)
	return err1 == nil && err2 == nil && x > y
}
