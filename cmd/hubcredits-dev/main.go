// Command hubcredits-dev is `make dev`: it starts a local control plane
// (kube-apiserver and etcd built from source into bin/k8s, listening on
// 127.0.0.1) with hubcredits' CRDs and webhook configurations, writes its
// kubeconfig, and runs the operator binary (bin/manager) against it with
// the webhook served on 127.0.0.1. Ctrl-C stops the operator, then the
// control plane.
//
// It is a development tool: the operator binary itself never links the
// control plane (envtest), which would not start under a read-only root
// filesystem.
//
//	hubcredits-dev [--state-dir .dev] [--manager bin/manager] [--webhooks=true] [-- operator flags...]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/hubcredits/hubcredits/internal/localcp"
)

// stopTimeout bounds how long the operator gets to exit after SIGTERM
// before it is killed (the chart gives a pod 30 s as well).
const stopTimeout = 30 * time.Second

func main() {
	if err := run(os.Args[1:]); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "hubcredits-dev:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("hubcredits-dev", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: hubcredits-dev [flags] [-- operator flags]

Starts a local control plane (bin/k8s) with the CRDs and webhook
configurations and runs the operator against it. Flags after -- go to the
operator (bin/manager --help lists them).

Flags:
`)
		fs.PrintDefaults()
	}
	stateDir := fs.String("state-dir", ".dev", "Directory for the kubeconfig of the local control plane.")
	manager := fs.String("manager", "", "The operator binary (default: manager next to this binary).")
	webhooks := fs.Bool("webhooks", true, "Install the webhook configurations and serve them (false: the operator runs with --enable-webhooks=false).")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	bin := *manager
	if bin == "" {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		bin = filepath.Join(filepath.Dir(self), "manager")
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("no operator binary at %s: run `make build`", bin)
	}

	fmt.Println("hubcredits dev: starting kube-apiserver and etcd on 127.0.0.1 ...")
	env, err := localcp.Start(localcp.Options{Webhooks: *webhooks})
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	kubeconfig, err := writeKubeconfig(env, *stateDir)
	if err != nil {
		return err
	}

	opArgs := []string{"--kubeconfig=" + kubeconfig}
	if *webhooks {
		w := env.WebhookInstallOptions
		opArgs = append(opArgs, "--webhook-host="+w.LocalServingHost, "--webhook-port="+strconv.Itoa(w.LocalServingPort),
			"--webhook-cert-dir="+w.LocalServingCertDir)
	} else {
		opArgs = append(opArgs, "--enable-webhooks=false")
	}
	op := exec.Command(bin, append(opArgs, fs.Args()...)...)
	op.Stdout, op.Stderr = os.Stdout, os.Stderr
	if err := op.Start(); err != nil {
		return fmt.Errorf("starting the operator: %w", err)
	}
	fmt.Printf(`hubcredits dev: the control plane is up at %s; the operator is starting (pid %d).
  export KUBECONFIG=%s PATH=$PWD/bin/k8s:$PATH
  kubectl apply -k config/samples/
  kubectl get ca,bp
Ctrl-C stops the operator and the control plane.
`, env.Config.Host, op.Process.Pid, kubeconfig)
	return supervise(op)
}

// supervise waits for the operator; a signal to this process is passed on
// to it (and it is killed if it does not exit in time). It returns the
// operator's exit error, nil after a requested stop.
func supervise(op *exec.Cmd) error {
	exited := make(chan error, 1)
	go func() { exited <- op.Wait() }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	select {
	case err := <-exited:
		return err
	case s := <-sig:
		_ = op.Process.Signal(s)
	}
	// A requested stop: the operator's exit status now says how it took
	// the signal (or the kill), which is no failure of this command.
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	select {
	case <-exited: //nolint:errcheck // the status of a requested stop (above)
	case <-ctx.Done():
		_ = op.Process.Kill()
		<-exited //nolint:errcheck // the status of a requested stop (above)
	}
	return nil
}

// writeKubeconfig writes a cluster-admin kubeconfig of env into dir and
// returns its absolute path.
func writeKubeconfig(env *localcp.Env, dir string) (string, error) {
	kc, err := env.AdminKubeconfig()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path, err := filepath.Abs(filepath.Join(dir, "kubeconfig"))
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, kc, 0o600)
}
