package integration

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// The objects come from the wrappers of internal/testutil; what is here
// acts on the API server (k8s).

func createAccount(t *testing.T, a *hcv1.CreditAccount) {
	t.Helper()
	if err := k8s.Create(context.Background(), a); err != nil {
		t.Fatalf("creating account %s: %v", a.Name, err)
	}
}

func createPolicy(t *testing.T, p *hcv1.BillingPolicy) {
	t.Helper()
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatalf("creating policy %s: %v", p.Name, err)
	}
}

func createPod(p *corev1.Pod) error {
	return k8s.Create(context.Background(), p)
}

// setRunning marks the pod Running with its container started at start, as
// a kubelet would.
func setRunning(t *testing.T, p *corev1.Pod, start time.Time) {
	t.Helper()
	p.Status.Phase = corev1.PodRunning
	st := metav1.NewTime(start)
	p.Status.StartTime = &st
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: "notebook", Ready: true, Image: p.Spec.Containers[0].Image,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: st}},
	}}
	if err := k8s.Status().Update(context.Background(), p); err != nil {
		t.Fatalf("setting pod %s running: %v", p.Name, err)
	}
}
