package billing

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// ObserveEntry is what pod says about the server of entry e. A missing pod,
// or one with another UID than the entry recorded (the server was restarted
// under the same name), means the entry's pod is gone.
func ObserveEntry(pod *corev1.Pod, e hcv1.ServerCharge) PodObservation {
	if pod == nil || (e.PodUID != "" && pod.UID != e.PodUID) {
		return PodObservation{}
	}
	return ObservePod(pod)
}

// ObservePod reads a pod's run times: the clock starts when its first
// container started running and stops when deletion was requested or its
// containers terminated.
func ObservePod(p *corev1.Pod) PodObservation {
	o := PodObservation{Exists: true, UID: p.UID}
	var started, finished *time.Time
	stillRunning := false
	for _, cs := range p.Status.ContainerStatuses {
		var t *metav1.Time
		switch {
		case cs.State.Running != nil:
			t = &cs.State.Running.StartedAt
			stillRunning = true
		case cs.State.Terminated != nil:
			t = &cs.State.Terminated.StartedAt
			if f := cs.State.Terminated.FinishedAt.Time; !f.IsZero() && (finished == nil || f.After(*finished)) {
				finished = &f
			}
		case cs.LastTerminationState.Terminated != nil:
			t = &cs.LastTerminationState.Terminated.StartedAt
		}
		if t != nil && !t.IsZero() && (started == nil || t.Time.Before(*started)) {
			tt := t.Time
			started = &tt
		}
	}
	if started == nil && p.Status.Phase == corev1.PodRunning && p.Status.StartTime != nil {
		t := p.Status.StartTime.Time
		started = &t
	}
	o.StartedAt = started
	switch {
	case p.DeletionTimestamp != nil:
		// The API server sets deletionTimestamp to the request time plus the
		// grace period; the server stopped being the user's at the request.
		t := p.DeletionTimestamp.Time
		if g := p.DeletionGracePeriodSeconds; g != nil && *g > 0 {
			t = t.Add(-time.Duration(*g) * time.Second)
		}
		o.EndedAt = &t
	case (p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed) && finished == nil && stillRunning && started != nil:
		// Failed while its containers still say running: PodGC does this to
		// the pods of a lost node, and nothing records when they stopped.
		// They ran at least until the node was lost; the start is never the
		// end (that would give back periods that were used). Settle ends
		// the server when it first sees this.
		o.Lost = true
	case p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed:
		if finished == nil {
			t := p.CreationTimestamp.Time
			if started != nil {
				t = *started
			}
			finished = &t
		}
		o.EndedAt = finished
	}
	return o
}

// Ended reports whether the pod has ended (its end may be unrecorded: Lost).
func (o PodObservation) Ended() bool { return o.EndedAt != nil || o.Lost }
