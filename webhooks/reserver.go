package webhooks

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/indexer"
	"github.com/hubcredits/hubcredits/internal/ledgerpages"
)

// The Reserver writes reservations to account status, reading an account
// live after a conflict, and (with Pages) to the account's LedgerPages:
// it reads them (from the cache, live where the cache may lag), creates a
// new one and writes their status.
// +kubebuilder:rbac:groups=hubcredits.io,namespace=system,resources=creditaccounts,verbs=get
// +kubebuilder:rbac:groups=hubcredits.io,namespace=system,resources=creditaccounts/status,verbs=get;update
// +kubebuilder:rbac:groups=hubcredits.io,namespace=system,resources=ledgerpages,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups=hubcredits.io,namespace=system,resources=ledgerpages/status,verbs=get;update

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
//
// With Pages, a reservation the account pays for alone (no project pool)
// goes to a LedgerPage once the account holds PageLimits.Inline entries in
// status.servers (billing.ReserveBatch; the protocol is billing/pages.go's).
// A batch is then a series of rounds, each one account write: the
// transfers of earlier writers that their pages do not show are completed
// and confirmed (ledgerpages.Store.Complete); the round's reservations are
// placed, one transaction per page; the account is written (the commit
// point); then each page the round committed a transfer for is written;
// then the round's requests are answered. Reservations a round could not
// place (a page takes one transfer of at most hcv1.MaxReserveBatch new
// entries per account write; status.pending holds PageLimits.Pending) go
// into the next round.
type Reserver struct {
	Client client.Client
	// APIReader reads around the cache after a conflict.
	APIReader client.Reader
	Clock     clock.Clock
	// Retries bounds the attempts per account write of a batch (0: as
	// many as Budget allows).
	Retries int
	// Budget bounds the time a batch keeps retrying conflicts (0:
	// defaultConflictBudget). Two replicas writing one account can make the
	// same replica lose several times in a row; a count alone would turn
	// that into a denial.
	Budget time.Duration
	// Pages puts reservations an account pays for alone on its
	// LedgerPages once status.servers holds PageLimits.Inline entries
	// (off: status.servers takes every new entry, and the billing
	// controller moves those beyond PageLimits.Inline to pages).
	Pages bool
	// PageLimits bound status.servers, pages and status.pending (zero:
	// billing.DefaultPageLimits); tests use small pages.
	PageLimits billing.PageLimits

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
	// page, when set, is the reservation apply makes, paid by the account
	// alone: with Pages it is placed by billing.ReserveBatch instead (in
	// status.servers or on a page).
	page *billing.PageReservation
	done chan opResult
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
	return r.do(ctx, key, &accountOp{apply: fn, done: make(chan opResult, 1)})
}

// doReservation is Do for a reservation that the account pays for alone:
// take applies it in status.servers; with Pages, billing.ReserveBatch
// places res there or on a page.
func (r *Reserver) doReservation(ctx context.Context, key types.NamespacedName, res billing.PageReservation,
	take func(a *hcv1.CreditAccount, now time.Time) error) (*hcv1.CreditAccount, error) {
	return r.do(ctx, key, &accountOp{apply: take, page: &res, done: make(chan opResult, 1)})
}

func (r *Reserver) do(ctx context.Context, key types.NamespacedName, op *accountOp) (*hcv1.CreditAccount, error) {
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

// process answers one batch: round after round (one account write
// each) until every op is answered.
func (r *Reserver) process(key types.NamespacedName, ops []*accountOp) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	budget := r.Budget
	if budget <= 0 {
		budget = defaultConflictBudget
	}
	giveUp := time.Now().Add(budget)
	known := &knownPages{}
	for len(ops) > 0 {
		next, err := r.round(ctx, key, ops, giveUp, known)
		if err == nil && len(next) == len(ops) {
			err = errors.New("no reservation of the batch could be placed on a ledger page")
		}
		if err != nil {
			if apierrors.IsNotFound(err) {
				err = ErrAccountGone
			}
			for _, op := range ops {
				op.done <- opResult{err: fmt.Errorf("updating credit account %s: %w", key.Name, err)}
			}
			return
		}
		ops = next
	}
}

// round applies ops to the newest copy of the account and writes it,
// retrying conflicts within the budget (from scratch, from a live read);
// then writes the pages of the transfers it committed and answers every
// op it placed or refused. It returns the ops left for the next round.
func (r *Reserver) round(ctx context.Context, key types.NamespacedName, ops []*accountOp, giveUp time.Time, known *knownPages) ([]*accountOp, error) {
	var lastErr error
	for attempt := 0; r.Retries <= 0 || attempt < r.Retries; attempt++ {
		cur, err := r.current(ctx, key, attempt > 0)
		if err != nil {
			return nil, err
		}
		b, err := r.build(ctx, cur, ops, r.Clock.Now(), known)
		if err != nil {
			return nil, err
		}
		if b.changed {
			err = r.Client.Status().Update(ctx, b.account)
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
				return nil, err
			}
			r.remember(key, b.account)
		}
		r.writePages(ctx, b, known)
		snapshot := b.account.DeepCopy()
		for i, op := range ops {
			if !b.next[i] {
				op.done <- opResult{account: snapshot, err: b.errs[i]}
			}
		}
		var next []*accountOp
		for i, op := range ops {
			if b.next[i] {
				next = append(next, op)
			}
		}
		return next, nil
	}
	return nil, lastErr
}

// roundPlan is one round built on a copy of the account.
type roundPlan struct {
	account *hcv1.CreditAccount
	// changed says the account must be written.
	changed bool
	// errs, page and next are per op: its refusal; the page its entry is
	// on (0: status.servers, or none); placed in a later round.
	errs []error
	page []int32
	next []bool
}

// build applies ops to a refreshed copy of cur: with Pages, after the
// pending transfers are completed, the reservations the account pays for
// alone by billing.ReserveBatch and the others by their apply.
func (r *Reserver) build(ctx context.Context, cur *hcv1.CreditAccount, ops []*accountOp, now time.Time, known *knownPages) (*roundPlan, error) {
	work := cur.DeepCopy()
	billing.RefreshForAdmission(work, now)
	b := &roundPlan{account: work, errs: make([]error, len(ops)), page: make([]int32, len(ops)), next: make([]bool, len(ops))}
	var pages map[int32]*hcv1.LedgerPage
	if r.Pages {
		var err error
		if pages, err = r.complete(ctx, work, known); err != nil {
			return nil, err
		}
	}
	var paged []int
	for i, op := range ops {
		if r.Pages && op.page != nil {
			paged = append(paged, i)
			continue
		}
		if op.page != nil && (work.Status.Pages > 0 || len(work.Status.Pending) > 0) {
			// Pages off, but the controller moved entries to pages: a
			// retry finds its first attempt there too.
			held, err := r.heldMoved(ctx, work, op.page.ID)
			if err != nil {
				return nil, err
			}
			if held {
				continue
			}
		}
		if b.errs[i] = op.apply(work, now); b.errs[i] == nil {
			b.changed = true
		}
	}
	if len(paged) == 0 {
		return b, nil
	}
	var rs []billing.PageReservation
	var placed []int
	for _, i := range paged {
		n, held, err := r.heldOnAPage(ctx, work, ops[i].page.ID)
		if err != nil {
			return nil, err
		}
		if held {
			b.page[i] = n // a retry: its first attempt is on page n
			continue
		}
		rs = append(rs, *ops[i].page)
		placed = append(placed, i)
	}
	servers, pending := len(work.Status.Servers), len(work.Status.Pending)
	// A retried reservation (the same id: the API server calling the
	// webhook again for one request) takes nothing twice: ReserveBatch
	// looks for it in status.servers, in the pending transfers and on the
	// pages this batch sees (those it completed, wrote, or read to place
	// reservations: the last page, live); heldOnAPage finds it on any
	// other page of the account, through the cache's index of the ledger
	// keys on pages (indexer.PageServerKey, the one the controller adopts
	// pods by). A page is answered for only after its write, so a retry
	// finds the entry unless it comes before the cache has seen that
	// write.
	out, err := billing.ReserveBatch(work, pages, func(n int32) (*hcv1.LedgerPage, error) {
		return r.store().Page(ctx, work, n, true)
	}, rs, now, r.pageLimits())
	if err != nil {
		return nil, err
	}
	for j, i := range placed {
		b.errs[i], b.page[i], b.next[i] = out[j].Err, out[j].Page, out[j].Next
	}
	b.changed = b.changed || len(work.Status.Servers) != servers || len(work.Status.Pending) != pending
	return b, nil
}

// heldOnAPage finds reservation id on a page of account in the cache's
// index of the ledger keys on pages.
func (r *Reserver) heldOnAPage(ctx context.Context, account *hcv1.CreditAccount, id string) (int32, bool, error) {
	var list hcv1.LedgerPageList
	if err := r.Client.List(ctx, &list, client.InNamespace(account.Namespace), client.MatchingFields{indexer.PageServerKey: id}); err != nil {
		return 0, false, fmt.Errorf("looking for reservation %s on ledger pages: %w", id, err)
	}
	for i := range list.Items {
		p := &list.Items[i]
		n, err := billing.PageNumber(account.Name, p)
		if err != nil {
			continue // another account's page
		}
		if slices.ContainsFunc(p.Status.Servers, func(e hcv1.ServerCharge) bool { return e.ID == id }) {
			return n, true, nil
		}
	}
	return 0, false, nil
}

// heldMoved finds reservation id in the entries account's pending
// transfers add, or on one of its pages.
func (r *Reserver) heldMoved(ctx context.Context, account *hcv1.CreditAccount, id string) (bool, error) {
	if slices.Contains(billing.LedgerKeys(account), id) {
		return true, nil
	}
	_, held, err := r.heldOnAPage(ctx, account, id)
	return held, err
}

// complete confirms on work the transfers of pages this batch wrote, and
// completes the rest (ledgerpages.Store.Complete). It returns the pages it
// knows, completed and at least as new as work: a transaction may be built
// on them.
func (r *Reserver) complete(ctx context.Context, work *hcv1.CreditAccount, known *knownPages) (map[int32]*hcv1.LedgerPage, error) {
	pages := map[int32]*hcv1.LedgerPage{}
	if known.account == work.ResourceVersion {
		// The account as this batch wrote it: nobody else committed on
		// it, so no page moved past the copy this batch wrote.
		for n, p := range known.pages {
			if _, err := billing.Confirm(work, p); err != nil {
				return nil, err
			}
			pages[n] = p
		}
	}
	completed, _, err := r.store().Complete(ctx, work)
	if err != nil {
		return nil, err
	}
	for n, p := range completed {
		pages[n] = p
	}
	return pages, nil
}

// writePages writes the page of every transfer b's account holds (those
// its round committed: the earlier ones were completed first) and fails
// the ops whose entries are on a page whose write failed. The account's
// next writer completes that page.
func (r *Reserver) writePages(ctx context.Context, b *roundPlan, known *knownPages) {
	known.account, known.pages = b.account.ResourceVersion, map[int32]*hcv1.LedgerPage{}
	for i := range b.account.Status.Pending {
		t := &b.account.Status.Pending[i]
		p, err := r.store().Write(ctx, b.account, t)
		if err == nil {
			known.pages[t.Page] = p
			continue
		}
		for j := range b.errs {
			if b.page[j] == t.Page && b.errs[j] == nil && !b.next[j] {
				b.errs[j] = err
			}
		}
	}
}

// knownPages are the pages a batch wrote in its last round, for the
// account as it wrote it (resourceVersion account).
type knownPages struct {
	account string
	pages   map[int32]*hcv1.LedgerPage
}

func (r *Reserver) store() *ledgerpages.Store {
	return &ledgerpages.Store{Client: r.Client, APIReader: r.APIReader}
}

func (r *Reserver) pageLimits() billing.PageLimits {
	if r.PageLimits == (billing.PageLimits{}) {
		return billing.DefaultPageLimits
	}
	return r.PageLimits
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
