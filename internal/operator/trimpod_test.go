package operator

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/indexer"
	"github.com/hubcredits/hubcredits/internal/kubespawner"
)

const trimToken = "hubtoken-trim-0123456789abcdef"

// fullPod is a KubeSpawner pod as the API server returns it once admitted
// and running, with everything a cluster adds.
func fullPod() *corev1.Pod {
	p := kubespawner.Pod("jhub", "alice", "gpu", trimToken)
	p.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
	p.UID = "uid-1"
	p.ResourceVersion = "42"
	p.Generation = 1
	p.CreationTimestamp = metav1.NewTime(time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC))
	p.Labels[hcv1.LabelAccount] = "physics"
	p.Annotations[hcv1.AnnotationAccount] = "alice"
	p.Annotations[hcv1.AnnotationProject] = "physics"
	p.Annotations[hcv1.AnnotationBillingValue] = "5"
	p.Annotations[hcv1.AnnotationBillingInterval] = "10m0s"
	p.Annotations[hcv1.AnnotationPolicy] = "default"
	p.Annotations[hcv1.AnnotationReservation] = "res-1"
	p.Annotations[hcv1.AnnotationGroups] = `["physics-101"]`
	p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: "n", UID: "u"}}
	p.Finalizers = []string{"example.com/keep"}
	p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubespawner", Operation: metav1.ManagedFieldsOperationUpdate}}
	p.Spec.NodeName = "node-1"
	started := metav1.NewTime(time.Date(2026, 1, 1, 9, 0, 30, 0, time.UTC))
	p.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, StartTime: &started, HostIP: "10.0.0.1", PodIP: "10.1.0.7",
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: "notebook", Image: "quay.io/jupyter/base-notebook", ImageID: "sha256:x", ContainerID: "containerd://c",
			Ready: true, RestartCount: 1,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 137, Reason: "OOMKilled", Message: "a long termination message",
				StartedAt: metav1.NewTime(started.Add(-time.Minute)), FinishedAt: started,
			}},
		}, {
			Name: "sidecar", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "pull failed"}},
		}},
	}
	return p
}

// TestTrimPod lists what the pod cache keeps, and checks that everything
// billing reads from a cached pod reads the same from the trimmed copy.
func TestTrimPod(t *testing.T) {
	full := fullPod()
	got, err := TrimPod(full.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	trimmed := got.(*corev1.Pod)
	started := *full.Status.StartTime
	want := &corev1.Pod{
		TypeMeta: full.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: full.Name, Namespace: "jhub", UID: "uid-1", ResourceVersion: "42", CreationTimestamp: full.CreationTimestamp,
			Labels: map[string]string{hcv1.LabelAccount: "physics"},
			Annotations: map[string]string{
				hcv1.AnnotationUsername: "alice", hcv1.AnnotationServerName: "gpu",
				hcv1.AnnotationAccount: "alice", hcv1.AnnotationProject: "physics",
				hcv1.AnnotationBillingValue: "5", hcv1.AnnotationBillingInterval: "10m0s",
				hcv1.AnnotationPolicy: "default", hcv1.AnnotationReservation: "res-1",
			},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, StartTime: &started,
			ContainerStatuses: []corev1.ContainerStatus{{
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					StartedAt: metav1.NewTime(started.Add(-time.Minute)), FinishedAt: started,
				}},
			}, {}},
		},
	}
	if d := cmp.Diff(want, trimmed); d != "" {
		t.Errorf("trimmed pod (-want +got):\n%s", d)
	}
	raw, _ := json.Marshal(trimmed)
	if strings.Contains(string(raw), trimToken) {
		t.Error("the trimmed pod still holds the Hub token")
	}

	// The pod's lives, as billing observes them.
	lives := map[string]func(p *corev1.Pod){
		"running after a restart": func(*corev1.Pod) {},
		"pending":                 func(p *corev1.Pod) { p.Status = corev1.PodStatus{Phase: corev1.PodPending} },
		"running, no container status": func(p *corev1.Pod) {
			p.Status.ContainerStatuses = nil
		},
		"deletion requested": func(p *corev1.Pod) {
			p.DeletionTimestamp = ptr.To(metav1.NewTime(time.Date(2026, 1, 1, 10, 0, 30, 0, time.UTC)))
			p.DeletionGracePeriodSeconds = ptr.To[int64](30)
		},
		"succeeded": func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodSucceeded
			p.Status.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 0, Reason: "Completed", StartedAt: *p.Status.StartTime, FinishedAt: metav1.NewTime(time.Date(2026, 1, 1, 11, 0, 0, 0, time.UTC)),
			}}
		},
		"failed on a lost node (containers still running)": func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed },
		"failed before any container ran": func(p *corev1.Pod) {
			p.Status = corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted"}
		},
		"crash loop": func(p *corev1.Pod) {
			p.Status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}
		},
		"no account named (unbilled)": func(p *corev1.Pod) {
			delete(p.Labels, hcv1.LabelAccount)
			delete(p.Annotations, hcv1.AnnotationAccount)
			delete(p.Annotations, hcv1.AnnotationProject)
		},
	}
	for name, edit := range lives {
		t.Run(name, func(t *testing.T) {
			p := fullPod()
			edit(p)
			got, err := TrimPod(p.DeepCopy())
			if err != nil {
				t.Fatal(err)
			}
			tp := got.(*corev1.Pod)
			if d := cmp.Diff(billing.ObservePod(p), billing.ObservePod(tp)); d != "" {
				t.Errorf("ObservePod differs (-full +trimmed):\n%s", d)
			}
			if d := cmp.Diff(indexer.PodAccounts(p), indexer.PodAccounts(tp)); d != "" {
				t.Errorf("PodAccounts differs:\n%s", d)
			}
			if d := cmp.Diff(indexer.UnbilledPodUser(p), indexer.UnbilledPodUser(tp)); d != "" {
				t.Errorf("UnbilledPodUser differs:\n%s", d)
			}
			fp, fok := billing.PinnedPrice(p.Annotations)
			tpp, tok := billing.PinnedPrice(tp.Annotations)
			if fok != tok || fp != tpp {
				t.Errorf("PinnedPrice %v %v, trimmed %v %v", fp, fok, tpp, tok)
			}
			held := func([]string) bool { return false }
			if billing.Adoptable(p, held) != billing.Adoptable(tp, held) {
				t.Error("Adoptable differs")
			}
			wallet := &hcv1.CreditAccount{ObjectMeta: metav1.ObjectMeta{Name: "alice"}}
			fa, ferr := billing.Adoption(p, wallet, fp)
			ta, terr := billing.Adoption(tp, wallet, fp)
			if (ferr == nil) != (terr == nil) {
				t.Errorf("Adoption errors %v, trimmed %v", ferr, terr)
			}
			if d := cmp.Diff(fa, ta); d != "" {
				t.Errorf("Adoption differs (-full +trimmed):\n%s", d)
			}
		})
	}

	if o, err := TrimPod("not a pod"); err != nil || o != "not a pod" {
		t.Errorf("a non-pod is returned as is: %v, %v", o, err)
	}
}

// BenchmarkTrimPodRetained reports the heap a cached pod keeps after
// TrimPod (retained-B/pod), for a running KubeSpawner pod on a wallet as
// the API server returns it (decoded anew for each pod, as an informer does, and dropped
// once trimmed).
func BenchmarkTrimPodRetained(b *testing.B) {
	const n = 10000
	full := fullPod() // a server on a wallet: no profile label, no pool
	delete(full.Labels, hcv1.LabelAccount)
	delete(full.Annotations, hcv1.AnnotationProject)
	full.Status.ContainerStatuses = full.Status.ContainerStatuses[:1]
	raw, err := json.Marshal(full)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		kept := make([]any, n)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range kept {
			p := &corev1.Pod{}
			if err := json.Unmarshal(raw, p); err != nil {
				b.Fatal(err)
			}
			kept[i], _ = TrimPod(p)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "retained-B/pod")
		runtime.KeepAlive(kept)
	}
}
