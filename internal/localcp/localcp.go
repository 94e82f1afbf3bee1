// Package localcp starts a local control plane (kube-apiserver and etcd
// built from source into bin/k8s) with hubcredits' CRDs and webhook
// configurations installed, for `make dev`, the integration tests and the
// benchmarks. It listens on 127.0.0.1 only.
package localcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// Options for Start.
type Options struct {
	// Root is the repository root ("" finds it from the working directory).
	Root string
	// Webhooks installs hubcredits' webhook configurations, pointing at a
	// local webhook server (see Env.WebhookHost/Port/CertDir).
	Webhooks bool
	// FailurePolicy of the pod webhook ("" keeps the generated Fail).
	FailurePolicy admissionregistrationv1.FailurePolicyType
	// ExcludeNamespaces are never sent to the pod webhook (kube-system always).
	ExcludeNamespaces []string
	// APIServerArgs are extra kube-apiserver flags (e.g. an
	// admission-control-config-file giving webhooks client credentials).
	APIServerArgs map[string]string
}

// Env is a running local control plane.
type Env struct {
	*envtest.Environment
	Config *rest.Config

	// restarted is the kube-apiserver started by RestartAPIServer, if any
	// (envtest only knows the first one).
	restarted *exec.Cmd
	exited    chan struct{}
}

// Stop stops the control plane, including an API server started by
// RestartAPIServer.
func (e *Env) Stop() error {
	e.killRestarted()
	return e.Environment.Stop()
}

// killRestarted kills the API server RestartAPIServer started, if any, and
// returns its command (nil if there was none).
func (e *Env) killRestarted() *exec.Cmd {
	cmd := e.restarted
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Kill()
	<-e.exited
	e.restarted = nil
	return cmd
}

// RestartAPIServer crashes kube-apiserver (SIGKILL: no graceful shutdown,
// requests in flight are cut wherever they are), keeps it down for the
// given time, and starts it again with the same flags, certificates and
// port against the same etcd. It returns once the new process reports
// /readyz, so clients built from Config keep working.
func (e *Env) RestartAPIServer(ctx context.Context, down time.Duration) error {
	path, args, err := e.killAPIServer()
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(down):
	}
	cmd := exec.Command(path, args...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("restarting kube-apiserver: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	e.restarted, e.exited = cmd, exited
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("the restarted kube-apiserver exited: %v", cmd.ProcessState)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the restarted kube-apiserver is not ready after 2m: %w", err)
		}
	}
}

// killAPIServer kills the running kube-apiserver with SIGKILL, waits until
// it is gone and returns its command line.
func (e *Env) killAPIServer() (string, []string, error) {
	if cmd := e.killRestarted(); cmd != nil {
		return cmd.Path, cmd.Args[1:], nil
	}
	// The first one was started by envtest: find it by its certificate
	// directory, which is unique to this control plane.
	want := "--cert-dir=" + e.ControlPlane.APIServer.CertDir
	pid, argv := FindProcess("kube-apiserver", want)
	if pid == 0 {
		return "", nil, fmt.Errorf("no kube-apiserver running with %s", want)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return "", nil, fmt.Errorf("killing kube-apiserver: %w", err)
	}
	// envtest's goroutine reaps it; wait until the pid is gone.
	for i := 0; ; i++ {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			break
		}
		if i > 300 {
			return "", nil, fmt.Errorf("kube-apiserver (pid %d) did not exit after SIGKILL", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return argv[0], argv[1:], nil //nolint:nilerr // the failed Stat of /proc/<pid> is the success: the process is gone
}

// FindProcess returns the pid and command line of a running process named
// name (the base name of its executable) that has every one of args among
// its arguments, or 0 and nil.
func FindProcess(name string, args ...string) (int, []string) {
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		return 0, nil
	}
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil || len(b) == 0 {
			continue
		}
		argv := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		if filepath.Base(argv[0]) != name || !containsAll(argv[1:], args) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f))); err == nil {
			return pid, argv
		}
	}
	return 0, nil
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// Root finds the repository root (the directory holding PROJECT) upwards
// from the working directory.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "PROJECT")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the hubcredits repository root (PROJECT) above the working directory")
		}
		dir = parent
	}
}

// Start starts kube-apiserver and etcd and installs the CRDs and webhooks.
func Start(o Options) (*Env, error) {
	if o.Root == "" {
		r, err := Root()
		if err != nil {
			return nil, err
		}
		o.Root = r
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(o.Root, "bin", "k8s")
	}
	if _, err := os.Stat(filepath.Join(assets, "kube-apiserver")); err != nil {
		return nil, fmt.Errorf("no kube-apiserver in %s: run `make k8s-tools` (builds it from source, 11-14 minutes the first time)", assets)
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(o.Root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	if o.Webhooks {
		mut, val, err := WebhookConfigs(o.Root, o.FailurePolicy, o.ExcludeNamespaces)
		if err != nil {
			return nil, err
		}
		env.WebhookInstallOptions = envtest.WebhookInstallOptions{
			MutatingWebhooks:   mut,
			ValidatingWebhooks: val,
			LocalServingHost:   "127.0.0.1",
		}
	}
	for k, v := range o.APIServerArgs {
		env.ControlPlane.GetAPIServer().Configure().Set(k, v)
	}
	cfg, err := env.Start()
	if err != nil {
		// envtest leaves etcd and kube-apiserver running when a later step
		// fails (e.g. a CRD the API server refuses): stop them.
		_ = env.Stop()
		return nil, fmt.Errorf("starting the local control plane: %w", err)
	}
	return &Env{Environment: env, Config: cfg}, nil
}

// AdminKubeconfig returns a kubeconfig for a cluster-admin user.
func (e *Env) AdminKubeconfig() ([]byte, error) {
	u, err := e.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, err
	}
	return u.KubeConfig()
}

// WebhookConfigs reads the generated webhook configurations and scopes the
// pod webhook the way the chart does: singleuser pods only, never
// kube-system or the excluded namespaces.
func WebhookConfigs(root string, fp admissionregistrationv1.FailurePolicyType, exclude []string) ([]*admissionregistrationv1.MutatingWebhookConfiguration, []*admissionregistrationv1.ValidatingWebhookConfiguration, error) {
	data, err := os.ReadFile(filepath.Join(root, "config", "webhook", "manifests.yaml"))
	if err != nil {
		return nil, nil, err
	}
	var muts []*admissionregistrationv1.MutatingWebhookConfiguration
	var vals []*admissionregistrationv1.ValidatingWebhookConfiguration
	for _, doc := range bytes.Split(data, []byte("\n---")) {
		doc = bytes.TrimSpace(doc)
		if len(doc) == 0 || bytes.Equal(doc, []byte("---")) {
			continue
		}
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return nil, nil, err
		}
		switch meta.Kind {
		case "MutatingWebhookConfiguration":
			m := &admissionregistrationv1.MutatingWebhookConfiguration{}
			if err := yaml.Unmarshal(doc, m); err != nil {
				return nil, nil, err
			}
			m.Name = "hubcredits-mutating"
			for i := range m.Webhooks {
				ScopePodWebhook(&m.Webhooks[i], exclude)
				if fp != "" {
					m.Webhooks[i].FailurePolicy = &fp
				}
			}
			muts = append(muts, m)
		case "ValidatingWebhookConfiguration":
			v := &admissionregistrationv1.ValidatingWebhookConfiguration{}
			if err := yaml.Unmarshal(doc, v); err != nil {
				return nil, nil, err
			}
			v.Name = "hubcredits-validating"
			for i := range v.Webhooks {
				if v.Webhooks[i].Name == "pod-updates.hubcredits.io" {
					v.Webhooks[i].ObjectSelector, v.Webhooks[i].NamespaceSelector = podSelectors(exclude)
					if fp != "" {
						v.Webhooks[i].FailurePolicy = &fp
					}
				}
			}
			vals = append(vals, v)
		}
	}
	return muts, vals, nil
}

// ScopePodWebhook sets the selectors of the pod webhook.
func ScopePodWebhook(w *admissionregistrationv1.MutatingWebhook, exclude []string) {
	w.ObjectSelector, w.NamespaceSelector = podSelectors(exclude)
}

// podSelectors are the selectors of the pod webhook and the pod update
// guard: singleuser pods, never in kube-system or the excluded namespaces.
func podSelectors(exclude []string) (object, namespace *metav1.LabelSelector) {
	return &metav1.LabelSelector{MatchLabels: map[string]string{hcv1.ComponentLabel: hcv1.SingleuserComponent}},
		&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn,
			Values: append([]string{"kube-system"}, exclude...),
		}}}
}
