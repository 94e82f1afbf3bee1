package main

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/kubespawner"
)

// kubespawnerPod is a pod shaped like the one KubeSpawner 7 creates under
// Z2JH 4 for user (server "" is the default server).
func kubespawnerPod(ns, user, server string) *corev1.Pod {
	return kubespawner.Pod(ns, user, server, "hubtoken-bench-0123456789abcdef")
}

// unrelatedPod is an ordinary workload pod (no singleuser label), about the
// size of a singleuser pod.
func unrelatedPod(ns string, i int) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: fmt.Sprintf("worker-%06d", i),
			Labels: map[string]string{
				"app": "batch", "app.kubernetes.io/name": "batch-worker",
				"app.kubernetes.io/instance": fmt.Sprintf("run-%d", i/100), "pod-template-hash": "5d8f7c9b6",
			},
			Annotations: map[string]string{"example.com/owner": "analytics", "example.com/run": fmt.Sprint(i / 100)},
		},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name:  "worker",
				Image: "registry.example.com/analytics/worker:2.3.1",
				Args:  []string{"--queue", "default", "--concurrency", "4"},
				Env: []corev1.EnvVar{
					{Name: "QUEUE_URL", Value: "amqp://queue.analytics.svc:5672"},
					{Name: "WORKER_ID", Value: fmt.Sprint(i)},
					{Name: "LOG_LEVEL", Value: "info"},
				},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("256Mi")},
				},
			}},
		},
	}
}

// createRetrying creates a setup pod, retrying what a loaded machine
// causes (a webhook call past its 2 s timeout, 429s, 5xx): setup is not
// measured, but the retries are counted. A retried spawn may leave a
// reservation without a pod; the controller refunds it after the grace.
func (b *bench) createRetrying(ctx context.Context, p *corev1.Pod, retries *atomic.Int64) (*corev1.Pod, error) {
	for attempt := 0; ; attempt++ {
		out, err := b.cs.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
		if err == nil || attempt >= 5 || ctx.Err() != nil || !transient(err) {
			return out, err
		}
		if apierrors.IsAlreadyExists(err) {
			return b.cs.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		}
		retries.Add(1)
		time.Sleep(time.Duration(attempt+1) * 500 * time.Millisecond)
	}
}

func transient(err error) bool {
	return apierrors.IsInternalError(err) || apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err) ||
		apierrors.IsTooManyRequests(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsAlreadyExists(err)
}

// setRunning marks the pod Running with its container started at start, as
// a kubelet would (through the status subresource).
func (b *bench) setRunning(ctx context.Context, p *corev1.Pod, start time.Time) error {
	p.Status.Phase = corev1.PodRunning
	st := metav1.NewTime(start)
	p.Status.StartTime = &st
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: "notebook", Ready: true, Image: p.Spec.Containers[0].Image,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: st}},
	}}
	_, err := b.cs.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	return err
}

func (b *bench) namespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := b.c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// parallel runs fn(i) for i in [0, n) on workers goroutines and returns the
// first error.
func parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}

// createAccounts creates n accounts and waits until the webhook's cache
// holds them all (a spawn before that would be denied: no account).
func (b *bench) createAccounts(ctx context.Context, ns string, n int, mk func(i int) *hcv1.CreditAccount) error {
	start := time.Now()
	if err := parallel(ctx, n, b.cfg.createWorker, func(ctx context.Context, i int) error {
		return b.c.Create(ctx, mk(i))
	}); err != nil {
		return fmt.Errorf("creating accounts: %w", err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var l hcv1.CreditAccountList
		if err := b.webhookCache.List(ctx, &l, client.InNamespace(ns)); err != nil {
			return err
		}
		if len(l.Items) >= n {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the webhook's cache holds %d of %d accounts after 2m", len(l.Items), n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	logf("bench: %d accounts in %s (%.1fs)", n, ns, time.Since(start).Seconds())
	return nil
}

// quantile of sorted durations (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)) + 0.5)
	if i < 1 {
		i = 1
	}
	if i > len(sorted) {
		i = len(sorted)
	}
	return sorted[i-1]
}

func sortDurations(d []time.Duration) []time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
