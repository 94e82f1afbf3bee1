package webhooks

import (
	"context"
	"fmt"
	"sync"
	"testing"

	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// recordedEvent is one Event handed to the recorder.
type recordedEvent struct {
	kind, name, uid, eventType, reason, message string
}

// eventSink is a record.EventRecorder that keeps what it is given, with
// the object it is about.
type eventSink struct {
	mu     sync.Mutex
	events []recordedEvent
}

func (s *eventSink) Event(obj runtime.Object, eventType, reason, message string) {
	ref, ok := obj.(*corev1.ObjectReference)
	if !ok {
		panic(fmt.Sprintf("denial events are recorded on references, got %T", obj))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, recordedEvent{ref.Kind, ref.Name, string(ref.UID), eventType, reason, message})
}

func (s *eventSink) Eventf(obj runtime.Object, eventType, reason, format string, args ...any) {
	s.Event(obj, eventType, reason, fmt.Sprintf(format, args...))
}

func (s *eventSink) AnnotatedEventf(obj runtime.Object, _ map[string]string, eventType, reason, format string, args ...any) {
	s.Eventf(obj, eventType, reason, format, args...)
}

// summary lists the events as "Kind/name Reason" (Warning ones; others
// are marked).
func (s *eventSink) summary() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.events {
		line := e.kind + "/" + e.name + " " + e.reason
		if e.eventType != corev1.EventTypeWarning {
			line += " (" + e.eventType + ")"
		}
		out = append(out, line)
	}
	return out
}

func TestDenialEventCarriesTheAccountUID(t *testing.T) {
	a := openAccount("alice", "alice").Balance(4).Obj()
	a.UID = "uid-alice"
	env := newWebhookEnv(a)
	rec := &eventSink{}
	env.h.Denials = &DenialReporter{Recorder: rec}
	env.h.Handle(context.Background(), makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj()).Obj())
	// kubectl describe finds an object's Events by its UID too.
	if len(rec.events) != 1 || rec.events[0].uid != "uid-alice" {
		t.Fatalf("events %+v, want one on alice's UID", rec.events)
	}
}

// TestNoDenialEventForDryRunsAndShadowMode: a dry run has no side effects
// (kubectl credits why asks through one), and shadow mode denies nothing.
func TestNoDenialEventForDryRunsAndShadowMode(t *testing.T) {
	for name, shadow := range map[string]bool{"dry run": false, "shadow mode": true} {
		t.Run(name, func(t *testing.T) {
			env := newWebhookEnv(openAccount("alice", "alice").Balance(4).Obj())
			rec := &eventSink{}
			env.h.Denials = &DenialReporter{Recorder: rec}
			env.h.Shadow = shadow
			counted := promtestutil.ToFloat64(denials.WithLabelValues(billing.DenyNotEnough))
			rb := makeRequest(t, testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj())
			if !shadow {
				rb.DryRun()
			}
			env.h.Handle(context.Background(), rb.Obj())
			if len(rec.events) != 0 {
				t.Errorf("events %+v, want none", rec.events)
			}
			if got := promtestutil.ToFloat64(denials.WithLabelValues(billing.DenyNotEnough)) - counted; got != 0 {
				t.Errorf("denials counted %v, want 0", got)
			}
		})
	}
}

// TestDenialEventsAreBounded: a storm of denials (each for another pod and
// user, as forged reviews could be, so the correlator's per-object limit
// does not hold them) writes at most the burst of Events; every denial is
// still counted.
func TestDenialEventsAreBounded(t *testing.T) {
	env := newWebhookEnv()
	rec := &eventSink{}
	env.h.Denials = &DenialReporter{Recorder: rec}
	counted := promtestutil.ToFloat64(denials.WithLabelValues(billing.DenyNoAccount))
	dropped := promtestutil.ToFloat64(droppedDenialEvents)
	const n = 3 * denialEventsBurst
	for i := range n {
		pod := testutil.MakeKubeSpawnerPod(testNS, fmt.Sprintf("user%d", i), "").Obj()
		env.h.Handle(context.Background(), makeRequest(t, pod).Obj())
	}
	if got := promtestutil.ToFloat64(denials.WithLabelValues(billing.DenyNoAccount)) - counted; got != n {
		t.Errorf("counted %v denials, want %d", got, n)
	}
	// The fake clock stands still: nothing is refilled.
	if got := len(rec.events); got != denialEventsBurst {
		t.Errorf("%d events, want the burst of %d", got, denialEventsBurst)
	}
	if got := promtestutil.ToFloat64(droppedDenialEvents) - dropped; int(got)+len(rec.events) != n {
		t.Errorf("%v dropped + %d written != %d", got, len(rec.events), n)
	}
}
