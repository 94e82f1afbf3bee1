package testutil

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/kubespawner"
)

// PodWrapper builds a pod.
type PodWrapper struct{ p corev1.Pod }

// MakePod is a bare singleuser pod name in ns: the singleuser component
// label and nothing else (no user, no containers, no phase).
func MakePod(ns, name string) *PodWrapper {
	return &PodWrapper{p: corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Namespace: ns, Name: name,
		Labels:      map[string]string{hcv1.ComponentLabel: hcv1.SingleuserComponent},
		Annotations: map[string]string{},
	}}}
}

// MakeKubeSpawnerPod is user's server pod (server "" is the default server)
// exactly as KubeSpawner 7 creates it under Z2JH 4, HubToken in its env.
func MakeKubeSpawnerPod(ns, user, server string) *PodWrapper {
	return &PodWrapper{p: *kubespawner.Pod(ns, user, server, HubToken)}
}

// Obj is a copy of the pod built so far.
func (w *PodWrapper) Obj() *corev1.Pod { return w.p.DeepCopy() }

// UID sets metadata.uid.
func (w *PodWrapper) UID(uid types.UID) *PodWrapper { w.p.UID = uid; return w }

// CreatedAt sets metadata.creationTimestamp to T0+d.
func (w *PodWrapper) CreatedAt(d time.Duration) *PodWrapper {
	w.p.CreationTimestamp = metav1.NewTime(At(d))
	return w
}

// Label sets a label.
func (w *PodWrapper) Label(k, v string) *PodWrapper { w.p.Labels[k] = v; return w }

// Annotation sets an annotation.
func (w *PodWrapper) Annotation(k, v string) *PodWrapper { w.p.Annotations[k] = v; return w }

// User sets the JupyterHub username annotation.
func (w *PodWrapper) User(u string) *PodWrapper { return w.Annotation(hcv1.AnnotationUsername, u) }

// NoUsername removes the JupyterHub username annotation.
func (w *PodWrapper) NoUsername() *PodWrapper {
	delete(w.p.Annotations, hcv1.AnnotationUsername)
	return w
}

// Account pins the account billed, as the webhook does.
func (w *PodWrapper) Account(a string) *PodWrapper { return w.Annotation(hcv1.AnnotationAccount, a) }

// Reservation pins the reservation id, as the webhook does; "" pins none.
func (w *PodWrapper) Reservation(id string) *PodWrapper {
	if id == "" {
		return w
	}
	return w.Annotation(hcv1.AnnotationReservation, id)
}

// Container appends a container.
func (w *PodWrapper) Container(name, image string) *PodWrapper {
	w.p.Spec.Containers = append(w.p.Spec.Containers, corev1.Container{Name: name, Image: image})
	return w
}

// NodeSelector adds k=v to spec.nodeSelector.
func (w *PodWrapper) NodeSelector(k, v string) *PodWrapper {
	if w.p.Spec.NodeSelector == nil {
		w.p.Spec.NodeSelector = map[string]string{}
	}
	w.p.Spec.NodeSelector[k] = v
	return w
}

// GPUs makes the first container ask for n nvidia.com/gpu (limit and
// request).
func (w *PodWrapper) GPUs(n string) *PodWrapper {
	q := resource.MustParse(n)
	c := &w.p.Spec.Containers[0]
	c.Resources.Limits = corev1.ResourceList{"nvidia.com/gpu": q}
	if c.Resources.Requests == nil {
		c.Resources.Requests = corev1.ResourceList{}
	}
	c.Resources.Requests["nvidia.com/gpu"] = q
	return w
}

// Pending sets status.phase Pending.
func (w *PodWrapper) Pending() *PodWrapper { w.p.Status.Phase = corev1.PodPending; return w }

// Running marks the pod Running with its notebook container started at
// T0+d.
func (w *PodWrapper) Running(d time.Duration) *PodWrapper {
	w.p.Status.Phase = corev1.PodRunning
	w.p.Status.StartTime = MetaAt(d)
	w.p.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name:  "notebook",
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: *MetaAt(d)}},
	}}
	return w
}

// FailedByPodGC marks the pod Failed and leaves its container statuses as
// the lost node last reported them, as PodGC does to the pods of a lost
// node.
func (w *PodWrapper) FailedByPodGC() *PodWrapper { w.p.Status.Phase = corev1.PodFailed; return w }

// Deleting marks the pod as being deleted: asked at T0+d with grace
// seconds. It carries a finalizer, as the fake client holds a deleting
// object only with one.
func (w *PodWrapper) Deleting(d time.Duration, grace int64) *PodWrapper {
	w.p.DeletionTimestamp = MetaAt(d + time.Duration(grace)*time.Second)
	w.p.DeletionGracePeriodSeconds = &grace
	w.p.Finalizers = []string{"test/keep"}
	return w
}
