// Command demo tells hubcredits' story on the local control plane started
// by `make dev`, as a timeline with real timestamps: an admin sets up a
// project pool, two wallets and a GPU policy; alice spawns and sees the
// price; her server is charged at each boundary; bob races her for the last
// credits of the pool and one of them is denied with the sentence
// JupyterHub shows; a grant arrives; alice's wallet runs dry and her server
// is stopped with the reason. It exits 0 only if every step happened as the
// story says, so it doubles as an end-to-end test (make demo).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/operator"
)

const interval = 5 * time.Second

var (
	c   client.Client
	ns  string
	ctx = context.Background()
)

func main() {
	kubeconfig := os.Getenv("KUBECONFIG")
	if kubeconfig == "" {
		kubeconfig = ".dev/kubeconfig" // written by `make dev`
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fail("no control plane: start `make dev` in another shell first (%v)", err)
	}
	if c, err = client.New(cfg, client.Options{Scheme: operator.Scheme()}); err != nil {
		fail("%v", err)
	}
	ns = fmt.Sprintf("demo-%d", time.Now().Unix())
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		fail("cannot reach the control plane: is `make dev` running? (%v)", err)
	}
	story(kubeconfig)
}

func story(kubeconfig string) {
	say("admin", "applies a project pool, two wallets and a GPU policy in namespace %s", ns)
	create(&hcv1.CreditAccount{ObjectMeta: meta("physics"), Spec: hcv1.CreditAccountSpec{
		Users: []string{"alice", "bob"}, Cap: 100, InitialBalance: ptr.To[int64](10)}})
	create(&hcv1.CreditAccount{ObjectMeta: meta("alice"), Spec: hcv1.CreditAccountSpec{
		Users: []string{"alice"}, Cap: 20,
		Grant: &hcv1.Grant{Amount: 5, Interval: metav1.Duration{Duration: 8 * time.Second}}}})
	create(&hcv1.CreditAccount{ObjectMeta: meta("bob"), Spec: hcv1.CreditAccountSpec{
		Users: []string{"bob"}, Cap: 20, InitialBalance: ptr.To[int64](0)}})
	create(&hcv1.BillingPolicy{ObjectMeta: meta("gpu"), Spec: hcv1.BillingPolicySpec{
		PodSelector:     &metav1.LabelSelector{MatchLabels: map[string]string{"hubcredits.io/policy": "gpu"}},
		BillingValue:    ptr.To[int64](10),
		BillingInterval: metav1.Duration{Duration: interval}, Priority: 10}})
	waitFor("accounts open", func() error {
		for _, n := range []string{"physics", "alice", "bob"} {
			if a := account(n); a.Status.OpenedAt == nil {
				return fmt.Errorf("%s not open yet", n)
			}
		}
		return nil
	})
	kubectl(kubeconfig, "get", "ca,bp")

	say("alice", "starts her GPU server (its profile sets hubcredits.io/policy=gpu, hubcredits.io/account=alice)")
	pod := spawnPod("alice", "", map[string]string{"hubcredits.io/policy": "gpu", hcv1.LabelAccount: "alice"})
	if err := c.Create(ctx, pod); err != nil {
		fail("alice's spawn was refused: %v", err)
	}
	say("webhook", "admitted %s; pinned price: %s credits every %s, account %s", pod.Name,
		pod.Annotations[hcv1.AnnotationBillingValue], pod.Annotations[hcv1.AnnotationBillingInterval], pod.Annotations[hcv1.AnnotationAccount])
	ev := waitEvent(pod.Name, "CreditsReserved")
	say("alice", "sees on the spawn page: %q", ev)
	expect(ev == "This server costs 10 credits every 5s, paid from account alice (10 left).", "the price event")

	start := time.Now().Truncate(time.Second)
	setRunning(pod, start)
	say("kubelet", "%s is running; its clock starts at %s", pod.Name, start.Format("15:04:05"))

	say("alice+bob", "race for the last 10 credits of the physics pool (profile sets hubcredits.io/account=physics)")
	race()

	waitFor("the first boundary is charged", func() error {
		if a := account("alice"); a.Status.Balance != 0 {
			return fmt.Errorf("alice has %d", a.Status.Balance)
		}
		return nil
	})
	say("controller", "boundary %s: charged 10 to alice (balance 0)", start.Add(interval).Format("15:04:05"))

	waitFor("a grant arrives", func() error {
		a := account("alice")
		if a.Status.TotalGranted < 5 {
			return fmt.Errorf("no grant yet")
		}
		return nil
	})
	say("controller", "grant: alice +5 (balance %d)", account("alice").Status.Balance)

	msg := waitEvent(pod.Name, "CreditsExhausted")
	say("controller", "boundary %s: alice cannot pay the next period; her server is stopped", start.Add(2*interval).Format("15:04:05"))
	say("alice", "sees: %q", msg)
	expect(msg == "Stopped: account alice has 5 credits, the next 5s costs 10.", "the stop reason")
	waitFor("the server is gone", func() error {
		p := &corev1.Pod{}
		err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: pod.Name}, p)
		if apierrors.IsNotFound(err) || (err == nil && p.DeletionTimestamp != nil) {
			return nil
		}
		return errors.New("pod still running")
	})
	a := account("alice")
	expect(a.Status.TotalCharged == 20, fmt.Sprintf("alice paid 20 (two periods), not %d", a.Status.TotalCharged))
	kubectl(kubeconfig, "get", "ca,bp")
	say("demo", "every step happened as the story says")
}

// race spawns alice's and bob's physics servers at once: the pool holds
// 10, so exactly one is admitted and the other is denied.
func race() {
	var wg sync.WaitGroup
	errs := map[string]error{}
	var mu sync.Mutex
	for _, u := range []string{"alice", "bob"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.Create(ctx, spawnPod(u, "physics", map[string]string{hcv1.LabelAccount: "physics"}))
			mu.Lock()
			errs[u] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	admitted, denied := 0, 0
	for _, u := range []string{"alice", "bob"} {
		if errs[u] == nil {
			admitted++
			say(u, "wins: server %q admitted, paid from the pool", "physics")
			continue
		}
		denied++
		text := errs[u].Error()
		if i := strings.Index(text, "denied the request: "); i >= 0 {
			text = text[i+len("denied the request: "):]
		}
		say(u, "loses; JupyterHub shows: %q", "Spawn failed: "+text)
		expect(text == `Not enough credits to start this server: it costs 10 credits every 10m, and account "physics" has 0.`, "the denial sentence")
	}
	expect(admitted == 1 && denied == 1, fmt.Sprintf("exactly one admitted (got %d admitted, %d denied)", admitted, denied))
	expect(account("physics").Status.Balance == 0, "the pool is empty")
}

func spawnPod(user, server string, labels map[string]string) *corev1.Pod {
	name := "jupyter-" + user
	ann := map[string]string{hcv1.AnnotationUsername: user}
	if server != "" {
		name += "--" + server
		ann[hcv1.AnnotationServerName] = server
	}
	l := map[string]string{
		"component": "singleuser-server", "app.kubernetes.io/managed-by": "kubespawner",
		"hub.jupyter.org/username": user, "hub.jupyter.org/servername": server,
	}
	for k, v := range labels {
		l[k] = v
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l, Annotations: ann},
		Spec: corev1.PodSpec{
			NodeName: "demo-node",
			Containers: []corev1.Container{{Name: "notebook", Image: "quay.io/jupyter/base-notebook",
				Env: []corev1.EnvVar{{Name: "JUPYTERHUB_API_TOKEN", Value: "demo-token"}}}},
		},
	}
}

func setRunning(p *corev1.Pod, start time.Time) {
	st := metav1.NewTime(start)
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, StartTime: &st, ContainerStatuses: []corev1.ContainerStatus{{
		Name: "notebook", Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: st}}}}}
	if err := c.Status().Update(ctx, p); err != nil {
		fail("setting %s running: %v", p.Name, err)
	}
}

func meta(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }

func create(o client.Object) {
	if err := c.Create(ctx, o); err != nil {
		fail("creating %s: %v", o.GetName(), err)
	}
}

func account(name string) *hcv1.CreditAccount {
	a := &hcv1.CreditAccount{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, a); err != nil {
		fail("reading account %s: %v", name, err)
	}
	return a
}

func waitEvent(object, reason string) string {
	var msg string
	waitFor("event "+reason+" on "+object, func() error {
		var evs corev1.EventList
		if err := c.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == object && e.Reason == reason {
				msg = e.Message
				return nil
			}
		}
		return errors.New("not yet")
	})
	return msg
}

func waitFor(what string, cond func() error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			fail("%s did not happen: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func kubectl(kubeconfig string, args ...string) {
	cmd := exec.Command("bin/k8s/kubectl", append([]string{"--kubeconfig", kubeconfig, "-n", ns}, args...)...)
	out, err := cmd.CombinedOutput()
	fmt.Printf("\n$ kubectl %s\n%s\n", strings.Join(args, " "), out)
	if err != nil {
		fail("kubectl: %v", err)
	}
}

func say(who, format string, args ...any) {
	fmt.Printf("%s  %-10s %s\n", time.Now().Format("15:04:05.000"), who, fmt.Sprintf(format, args...))
}

func expect(ok bool, what string) {
	if !ok {
		fail("the story went wrong: %s", what)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "demo: "+format+"\n", args...)
	os.Exit(1)
}
