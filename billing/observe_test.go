package billing

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

func TestObservePod(t *testing.T) {
	uid := types.UID("u1")
	running := func(started time.Duration) corev1.ContainerStatus {
		return corev1.ContainerStatus{State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: *mt(started)}}}
	}
	terminated := func(started, finished time.Duration) corev1.ContainerStatus {
		return corev1.ContainerStatus{State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{StartedAt: *mt(started), FinishedAt: *mt(finished)}}}
	}
	waiting := corev1.ContainerStatus{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}
	pod := func(phase corev1.PodPhase, cs ...corev1.ContainerStatus) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "hub", Name: "jupyter-alice", UID: uid, CreationTimestamp: metav1.NewTime(t0)}}
		p.Status.Phase = phase
		p.Status.ContainerStatuses = cs
		return p
	}
	withStartTime := func(p *corev1.Pod, d time.Duration) *corev1.Pod { p.Status.StartTime = mt(d); return p }
	deleting := func(p *corev1.Pod, at time.Time, grace *int64) *corev1.Pod {
		ts := metav1.NewTime(at)
		p.DeletionTimestamp, p.DeletionGracePeriodSeconds = &ts, grace
		return p
	}

	cases := map[string]struct {
		pod  *corev1.Pod
		want PodObservation
	}{
		"pending, no containers yet": {
			pod:  pod(corev1.PodPending),
			want: PodObservation{Exists: true, UID: uid},
		},
		"pending, image pulling": {
			pod:  withStartTime(pod(corev1.PodPending, waiting), time.Second),
			want: PodObservation{Exists: true, UID: uid},
		},
		"running: the container's start": {
			pod:  withStartTime(pod(corev1.PodRunning, running(90*time.Second)), time.Second),
			want: PodObservation{Exists: true, UID: uid, StartedAt: tp(90 * time.Second)},
		},
		"running: the earliest container's start": {
			pod:  pod(corev1.PodRunning, running(3*time.Minute), running(2*time.Minute), waiting),
			want: PodObservation{Exists: true, UID: uid, StartedAt: tp(2 * time.Minute)},
		},
		"running without container statuses: the pod's start time": {
			pod:  withStartTime(pod(corev1.PodRunning), 5*time.Second),
			want: PodObservation{Exists: true, UID: uid, StartedAt: tp(5 * time.Second)},
		},
		"crash-looping: the last run's start": {
			pod: pod(corev1.PodRunning, corev1.ContainerStatus{
				State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{StartedAt: *mt(time.Minute), FinishedAt: *mt(2 * time.Minute)}},
			}),
			want: PodObservation{Exists: true, UID: uid, StartedAt: tp(time.Minute)},
		},
		"a container terminated while the pod runs: still running": {
			pod:  pod(corev1.PodRunning, running(time.Minute), terminated(time.Minute, 5*time.Minute)),
			want: PodObservation{Exists: true, UID: uid, StartedAt: tp(time.Minute)},
		},
		"succeeded: ends at the last container's finish": {
			pod:  pod(corev1.PodSucceeded, terminated(time.Minute, 30*time.Minute), terminated(2*time.Minute, 45*time.Minute)),
			want: PodObservation{Exists: true, UID: uid, StartedAt: tp(time.Minute), EndedAt: tp(45 * time.Minute)},
		},
		"failed: ends at the container's finish": {
			pod:  pod(corev1.PodFailed, terminated(time.Minute, 12*time.Minute)),
			want: PodObservation{Exists: true, UID: uid, StartedAt: tp(time.Minute), EndedAt: tp(12 * time.Minute)},
		},
		"failed before any container ran: ends at creation": {
			pod:  pod(corev1.PodFailed),
			want: PodObservation{Exists: true, UID: uid, EndedAt: tp(0)},
		},
		"failed with a finish time unknown: ends at its start": {
			pod: pod(corev1.PodFailed, corev1.ContainerStatus{State: corev1.ContainerState{
				Terminated: &corev1.ContainerStateTerminated{StartedAt: *mt(3 * time.Minute)}}}),
			want: PodObservation{Exists: true, UID: uid, StartedAt: tp(3 * time.Minute), EndedAt: tp(3 * time.Minute)},
		},
		"deleted with a grace period: ends when the deletion was asked for": {
			pod:  deleting(pod(corev1.PodRunning, running(time.Minute)), at(time.Hour), i64(30)),
			want: PodObservation{Exists: true, UID: uid, StartedAt: tp(time.Minute), EndedAt: tp(time.Hour - 30*time.Second)},
		},
		"deleted with grace 0": {
			pod:  deleting(pod(corev1.PodRunning, running(time.Minute)), at(time.Hour), i64(0)),
			want: PodObservation{Exists: true, UID: uid, StartedAt: tp(time.Minute), EndedAt: tp(time.Hour)},
		},
		"deleted without a grace period recorded": {
			pod:  deleting(pod(corev1.PodRunning, running(time.Minute)), at(time.Hour), nil),
			want: PodObservation{Exists: true, UID: uid, StartedAt: tp(time.Minute), EndedAt: tp(time.Hour)},
		},
		"deleted while pending": {
			pod:  deleting(pod(corev1.PodPending), at(time.Minute), i64(30)),
			want: PodObservation{Exists: true, UID: uid, EndedAt: tp(30 * time.Second)},
		},
		"deletion wins over the containers' finish": {
			pod:  deleting(pod(corev1.PodSucceeded, terminated(time.Minute, 50*time.Minute)), at(time.Hour), i64(30)),
			want: PodObservation{Exists: true, UID: uid, StartedAt: tp(time.Minute), EndedAt: tp(time.Hour - 30*time.Second)},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := ObservePod(tc.pod)
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("ObservePod (-want +got):\n%s", d)
			}
		})
	}
}

func TestObserveEntry(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "jupyter-alice", UID: "u2"}, Status: corev1.PodStatus{Phase: corev1.PodPending}}
	cases := map[string]struct {
		pod   *corev1.Pod
		entry hcv1.ServerCharge
		want  PodObservation
	}{
		"no pod":                       {entry: testutil.MakeServerCharge("r1").Obj()},
		"the entry's pod":              {pod: pod, entry: testutil.MakeServerCharge("r1").UID("u2").Obj(), want: PodObservation{Exists: true, UID: "u2"}},
		"a pod not seen before":        {pod: pod, entry: testutil.MakeServerCharge("r1").Obj(), want: PodObservation{Exists: true, UID: "u2"}},
		"another pod of the same name": {pod: pod, entry: testutil.MakeServerCharge("r1").UID("u1").Obj()},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, ObserveEntry(tc.pod, tc.entry)); d != "" {
				t.Errorf("ObserveEntry (-want +got):\n%s", d)
			}
		})
	}
}
