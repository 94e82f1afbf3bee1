package controllers

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/metrics"
	"github.com/hubcredits/hubcredits/internal/testutil"
	"github.com/hubcredits/hubcredits/internal/testutil/fakeclient"
)

func TestStopperEscalatesStopsTheHubDoesNotCarryOut(t *testing.T) {
	cases := map[string]struct {
		hub *fakeHub // nil: no Hub API
		// requests is how many times the stop is asked for (the settle
		// repeats it every StopRetry while the pod runs).
		requests      int
		deletePod     bool
		wantHubStops  int
		wantPodGone   bool
		wantReasons   []string
		wantEscalated float64
	}{
		"the hub answers 202 twice and does nothing: the third stop deletes the pod": {
			hub: &fakeHub{}, requests: 3,
			wantHubStops: 2, wantPodGone: true,
			wantReasons: []string{EventStopEscalated, EventStopEscalated}, wantEscalated: 1,
		},
		"two stops the hub answered: not escalated yet": {
			hub: &fakeHub{}, requests: 2,
			wantHubStops: 2,
		},
		"a failing hub: the pod is deleted at once, nothing to escalate": {
			hub: &fakeHub{err: errors.New("the Hub API answered 503 Service Unavailable")}, requests: 1,
			wantHubStops: 1, wantPodGone: true,
		},
		"no Hub API: the pod is deleted": {
			requests: 1, wantPodGone: true,
		},
		"a stop nobody will repeat skips the hub": {
			hub: &fakeHub{}, requests: 1, deletePod: true,
			wantPodGone: true,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			before := decisions(metrics.StopEscalated)
			api := fakeclient.New(nil, billedPod("jupyter-alice", "u1", "alice", "r1").Running(0).Obj())
			env := newControllerEnv(api, at(0))
			s := &Stopper{Client: api, Recorder: env.rec, Clock: env.clock}
			if tc.hub != nil {
				s.Hub = tc.hub
			}
			req := stopRequest{account: aliceKey.NamespacedName, user: "alice", pod: "jupyter-alice", podUID: "u1", deletePod: tc.deletePod}

			for range tc.requests {
				s.Request(context.Background(), req)
				env.clock.Step(30 * time.Second)
			}

			if tc.hub != nil && len(tc.hub.stops()) != tc.wantHubStops {
				t.Errorf("%d stops through the Hub API, want %d", len(tc.hub.stops()), tc.wantHubStops)
			}
			err := api.Get(context.Background(), types.NamespacedName{Namespace: testNS, Name: "jupyter-alice"}, &corev1.Pod{})
			if gone := apierrors.IsNotFound(err); gone != tc.wantPodGone {
				t.Errorf("pod gone %v (%v), want %v", gone, err, tc.wantPodGone)
			}
			if d := testutil.Diff(tc.wantReasons, reasons(env.eventList())); d != "" {
				t.Errorf("events (-want +got):\n%s", d)
			}
			if n := decisions(metrics.StopEscalated) - before; n != tc.wantEscalated {
				t.Errorf("%v StopEscalated decisions, want %v", n, tc.wantEscalated)
			}
		})
	}
}

// blockingHub answers no stop until released.
type blockingHub struct {
	called  chan stopCall
	release chan struct{}
}

func (h *blockingHub) StopServer(ctx context.Context, user, server string) error {
	h.called <- stopCall{user, server}
	select {
	case <-h.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestStopsRunOutsideTheReconcileWorkers: a hub that does not answer holds
// up neither the account that asked for the stop nor any other.
func TestStopsRunOutsideTheReconcileWorkers(t *testing.T) {
	stopping := testutil.MakeServerCharge("r1").Pod("jupyter-alice").UID("u1").Running(0).Obj()
	bobs := testutil.MakeServerCharge("r2").Pod("jupyter-bob").UID("u2").Running(0).Obj()
	bobs.User, bobs.Wallet = "bob", "bob"
	bobPod := billedPod("jupyter-bob", "u2", "bob", "r2").Running(0).Obj()
	bobPod.Annotations[hcv1.AnnotationUsername] = "bob"
	api := fakeclient.New(nil,
		openAccount("alice", "alice").Balance(5).Servers(stopping).Obj(),
		billedPod("jupyter-alice", "u1", "alice", "r1").Running(0).Obj(),
		openAccount("bob", "bob").Balance(90).Servers(bobs).Obj(), bobPod,
	)
	env := newControllerEnv(api, at(10*time.Minute))
	hub := &blockingHub{called: make(chan stopCall, 1), release: make(chan struct{})}
	env.r.Hub = hub
	env.r.Stops = NewStopper(&Stopper{Client: api, Hub: hub, Recorder: env.rec, Clock: env.clock})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = env.r.Stops.Start(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	finished := make(chan error, 2)
	go func() {
		_, err := env.r.Reconcile(ctx, aliceKey)
		finished <- err
	}()
	go func() {
		_, err := env.r.Reconcile(ctx, reconcileKey("bob"))
		finished <- err
	}()
	for range 2 {
		select {
		case err := <-finished:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a reconcile waited for the Hub API")
		}
	}
	select {
	case c := <-hub.called:
		if c.User != "alice" {
			t.Errorf("stopped %+v, want alice's server", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stop never reached the Hub API")
	}
	close(hub.release)
	if a := testutil.GetAccount(t, api, testNS, "bob"); a.Status.Balance != 80 {
		t.Errorf("bob's balance %d, want 80 (charged while alice's stop hung)", a.Status.Balance)
	}
}
