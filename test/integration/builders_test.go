package integration

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/kubespawner"
)

// plantedToken is the Hub API token in every test pod; it must never show
// up in logs, Events or status.
const plantedToken = "hubtoken-PLANTED-7f3a9c"

type accountBuilder struct{ a *hcv1.CreditAccount }

func makeAccount(ns, name string, users ...string) *accountBuilder {
	return &accountBuilder{a: &hcv1.CreditAccount{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       hcv1.CreditAccountSpec{Users: users, Cap: 100},
	}}
}

func (b *accountBuilder) cap(c int64) *accountBuilder { b.a.Spec.Cap = c; return b }
func (b *accountBuilder) balance(v int64) *accountBuilder {
	b.a.Spec.InitialBalance = ptr.To(v)
	return b
}
func (b *accountBuilder) project(p string) *accountBuilder { b.a.Spec.Project = p; return b }
func (b *accountBuilder) grant(amount int64, every time.Duration) *accountBuilder {
	b.a.Spec.Grant = &hcv1.Grant{Amount: amount, Interval: metav1.Duration{Duration: every}}
	return b
}
func (b *accountBuilder) topUp(id string, amount int64) *accountBuilder {
	b.a.Spec.TopUps = append(b.a.Spec.TopUps, hcv1.TopUp{ID: id, Amount: amount})
	return b
}
func (b *accountBuilder) create(t *testing.T) *hcv1.CreditAccount {
	t.Helper()
	if err := k8s.Create(context.Background(), b.a); err != nil {
		t.Fatalf("creating account %s: %v", b.a.Name, err)
	}
	return b.a
}

func makePolicy(ns, name string, value int64, interval time.Duration) *hcv1.BillingPolicy {
	return &hcv1.BillingPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: hcv1.BillingPolicySpec{
			BillingValue: ptr.To(value), BillingInterval: metav1.Duration{Duration: interval},
		},
	}
}

func createPolicy(t *testing.T, p *hcv1.BillingPolicy) {
	t.Helper()
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatalf("creating policy %s: %v", p.Name, err)
	}
}

// kubespawnerPod is a pod shaped like the one KubeSpawner 7 creates under
// Z2JH 4 for user (server "" is the default server).
func kubespawnerPod(ns, user, server string) *corev1.Pod {
	return kubespawner.Pod(ns, user, server, plantedToken)
}

func withLabel(p *corev1.Pod, k, v string) *corev1.Pod { p.Labels[k] = v; return p }

func withGPUs(p *corev1.Pod, n string) *corev1.Pod {
	q := resource.MustParse(n)
	p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{"nvidia.com/gpu": q}
	p.Spec.Containers[0].Resources.Requests["nvidia.com/gpu"] = q
	return p
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

func deletePod(t *testing.T, p *corev1.Pod) {
	t.Helper()
	if err := k8s.Delete(context.Background(), p, client.GracePeriodSeconds(0)); err != nil {
		t.Fatalf("deleting pod %s: %v", p.Name, err)
	}
}
