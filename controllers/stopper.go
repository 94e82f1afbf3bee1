package controllers

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/metrics"
)

// MaxHubStops is how many stops of one server the Hub API may answer as
// done (202/204) while its pod keeps running; the next stop deletes the pod
// (with its UID as precondition). A stop is repeated every --stop-retry, so
// a server the hub does not stop runs at most MaxHubStops × stop-retry
// unpaid (60 s by default).
const MaxHubStops = 2

// EventStopEscalated is the Event of a stop carried out by deleting the pod
// after the Hub API answered stops as done that did not happen.
const EventStopEscalated = "StopEscalated"

// stopAttemptsKept is how long a server's count of stops is remembered
// after its last stop: far longer than the stop retry, so a server that
// keeps running is never counted from zero again.
const stopAttemptsKept = time.Hour

// hubStopTimeout bounds one call to the Hub API.
const hubStopTimeout = 15 * time.Second

// stopRequest asks for one server to be stopped.
type stopRequest struct {
	// account is the account that asked (for Events).
	account types.NamespacedName
	user    string
	server  string
	pod     string
	podUID  types.UID
	// deletePod skips the Hub API (the account is gone: nobody will repeat
	// the stop).
	deletePod bool
}

// Stopper carries out stops outside the reconcile workers, with its own
// concurrency, so a hub that is slow or down never holds up the billing of
// other accounts. Stops of one server are never run concurrently (the
// queue holds one item per pod). It counts the stops of each server and
// escalates to deleting the pod after MaxHubStops stops that the hub
// answered as done.
type Stopper struct {
	Client   client.Client
	Hub      ServerStopper
	Recorder record.EventRecorder
	Clock    clock.Clock
	// Workers run stops at once (default 2).
	Workers int

	mu       sync.Mutex
	attempts map[types.UID]stopAttempts
	pending  map[types.UID]stopRequest
	queue    workqueue.TypedRateLimitingInterface[types.UID]
}

type stopAttempts struct {
	hubAnswered int // stops the Hub API answered as done
	last        time.Time
}

// NewStopper returns a stopper that runs stops on its own workers once
// started (Start, as a manager Runnable).
func NewStopper(s *Stopper) *Stopper {
	s.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[types.UID](),
		workqueue.TypedRateLimitingQueueConfig[types.UID]{Name: "hubcredits-stops"})
	return s
}

// Request asks for a stop: queued when the stopper runs its own workers,
// carried out at once otherwise.
func (s *Stopper) Request(ctx context.Context, req stopRequest) {
	if s.queue == nil {
		s.do(ctx, req)
		return
	}
	s.mu.Lock()
	if s.pending == nil {
		s.pending = map[types.UID]stopRequest{}
	}
	s.pending[req.podUID] = req
	s.mu.Unlock()
	s.queue.Add(req.podUID)
}

// Start runs the workers until ctx ends.
func (s *Stopper) Start(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		s.queue.ShutDown()
	}()
	var wg sync.WaitGroup
	for range max(s.Workers, 2) {
		wg.Go(func() {
			for s.next(ctx) {
			}
		})
	}
	wg.Wait()
	return nil
}

// NeedLeaderElection is true: only the leader stops servers.
func (s *Stopper) NeedLeaderElection() bool { return true }

func (s *Stopper) next(ctx context.Context) bool {
	uid, shutdown := s.queue.Get()
	if shutdown {
		return false
	}
	defer s.queue.Done(uid)
	s.mu.Lock()
	req, ok := s.pending[uid]
	delete(s.pending, uid)
	s.mu.Unlock()
	if ok {
		s.do(ctx, req)
	}
	s.queue.Forget(uid)
	return true
}

// do stops one server: through the Hub API while it has answered fewer
// than MaxHubStops stops of it as done, else (or when the Hub API fails, or
// there is none) by deleting the pod.
func (s *Stopper) do(ctx context.Context, req stopRequest) {
	logger := log.FromContext(ctx).WithValues("pod", klog.KRef(req.account.Namespace, req.pod), "user", req.user)
	pod := podRef(req.account.Namespace, req.pod, req.podUID)
	if s.Hub != nil && !req.deletePod {
		if s.hubAnswered(req.podUID) < MaxHubStops {
			hubCtx, cancel := context.WithTimeout(ctx, hubStopTimeout)
			err := s.Hub.StopServer(hubCtx, req.user, req.server)
			cancel()
			if err == nil {
				s.countHubAnswer(req.podUID)
				logger.Info("Stopped server through the Hub API")
				return
			}
			logger.Error(err, "Stopping through the Hub API failed; deleting the pod")
		} else {
			msg := "The Hub API answered earlier stops of this server as done, but it kept running; its pod is deleted."
			logger.Info("The Hub API did not stop the server; deleting the pod", "hubStops", MaxHubStops)
			metrics.IntegrityDecisions.WithLabelValues(metrics.StopEscalated).Inc()
			s.Recorder.Event(pod, corev1.EventTypeWarning, EventStopEscalated, msg)
			account := &hcv1.CreditAccount{}
			account.APIVersion, account.Kind = hcv1.GroupVersion.String(), "CreditAccount"
			account.Namespace, account.Name = req.account.Namespace, req.account.Name
			s.Recorder.Event(account, corev1.EventTypeWarning, EventStopEscalated, req.pod+": "+msg)
		}
	}
	uid := req.podUID
	err := s.Client.Delete(ctx, pod, client.Preconditions{UID: &uid})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		logger.Error(err, "Deleting the pod of an unpaid server failed")
		return
	}
	logger.Info("Deleted the pod of an unpaid server")
}

func (s *Stopper) now() time.Time {
	if s.Clock == nil {
		return time.Now()
	}
	return s.Clock.Now()
}

// hubAnswered is how many stops of the server the Hub API answered as done.
func (s *Stopper) hubAnswered(uid types.UID) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts[uid].hubAnswered
}

// countHubAnswer counts a stop the Hub API answered as done, and forgets
// servers not stopped for stopAttemptsKept.
func (s *Stopper) countHubAnswer(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.attempts == nil {
		s.attempts = map[types.UID]stopAttempts{}
	}
	for k, a := range s.attempts {
		if now.Sub(a.last) > stopAttemptsKept {
			delete(s.attempts, k)
		}
	}
	a := s.attempts[uid]
	a.hubAnswered++
	a.last = now
	s.attempts[uid] = a
}
