package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/operator"
)

// proc is an operator process started by the harness.
type proc struct {
	cmd     *exec.Cmd
	pid     int
	metrics string // http://127.0.0.1:PORT/metrics
	started time.Time
	done    chan error
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startOperator starts bin (the operator binary, or this harness with
// -role=operator) with the billing controllers for ns, and waits for its
// metrics endpoint.
func (b *bench) startOperator(ctx context.Context, bin string, pre []string, ns, logPath string, extra ...string) (*proc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := append(append([]string{}, pre...),
		"--namespace="+ns, "--enable-webhooks=false",
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", port), "--health-probe-bind-address=0")
	if b.cfg.opWorkers > 0 {
		args = append(args, fmt.Sprintf("--workers=%d", b.cfg.opWorkers))
	}
	args = append(args, extra...)
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), "KUBECONFIG="+b.kubeconfig), b.cfg.opEnv...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &proc{cmd: cmd, metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", port), done: make(chan error, 1)}
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, err
	}
	p.pid = cmd.Process.Pid
	go func() { p.done <- cmd.Wait(); _ = logFile.Close() }()
	logf("bench: operator pid %d: %s %v", p.pid, bin, args)
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-p.done:
			return nil, fmt.Errorf("the operator exited: %v (log: %s)", err, logPath) //nolint:errorlint // err is nil on a clean exit: %w would print %!w(<nil>)
		default:
		}
		if _, err := scrapeURL(ctx, p.metrics); err == nil {
			return p, nil
		}
		if time.Now().After(deadline) {
			_ = p.stop()
			return nil, fmt.Errorf("the operator's metrics endpoint did not come up in 60s (log: %s)", logPath)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits (SIGKILL after 30s).
func (p *proc) stop() error {
	if p == nil || p.cmd.Process == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.cmd.Process = nil
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil // terminated by our signal
		}
		return err
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done //nolint:errcheck // the exit status after our SIGKILL says nothing
		p.cmd.Process = nil
		return fmt.Errorf("the operator did not stop on SIGTERM; killed")
	}
}

// waitExit waits for a process that stops by itself.
func (p *proc) waitExit(timeout time.Duration) error {
	select {
	case err := <-p.done:
		p.cmd.Process = nil
		return err
	case <-time.After(timeout):
		return p.stop()
	}
}

// runOperator is the -role=operator child: the billing controllers exactly
// as the operator binary wires them with its default flags, under
// runtime/pprof, for -duration.
func runOperator(args []string) error {
	fs := flag.NewFlagSet("operator", flag.ContinueOnError)
	ns := fs.String("namespace", "", "")
	_ = fs.Bool("enable-webhooks", false, "")
	metricsAddr := fs.String("metrics-bind-address", "0", "")
	_ = fs.String("health-probe-bind-address", "0", "")
	workers := fs.Int("workers", 4, "")
	cpuProfile := fs.String("cpuprofile", "", "")
	heapProfile := fs.String("heapprofile", "", "")
	duration := fs.Duration("duration", 2*time.Minute, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctrl.SetLogger(zap.New(zap.UseDevMode(false)))
	f, err := os.Create(*cpuProfile)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	o := operator.Options{
		Namespace:          *ns,
		SingleuserSelector: operator.DefaultSelector(),
		Defaults:           billing.DefaultPrice,
		Billing:            billing.DefaultOptions,
		Workers:            *workers,
	}
	mgr, err := ctrl.NewManager(cfg, operator.ManagerOptions(o, operator.Process{MetricsAddr: *metricsAddr}))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctrl.SetupSignalHandler(), *duration)
	defer cancel()
	if err := operator.Setup(ctx, mgr, o); err != nil {
		return err
	}
	if *heapProfile != "" {
		// While the caches are still full.
		time.AfterFunc(*duration-2*time.Second, func() {
			runtime.GC()
			if h, err := os.Create(*heapProfile); err == nil {
				_ = pprof.WriteHeapProfile(h)
				_ = h.Close()
			}
		})
	}
	err = mgr.Start(ctx)
	pprof.StopCPUProfile()
	return err
}

// operatorBinary builds the operator binary (go build -o <tmp>/manager-pool .)
// once and returns its path.
func (b *bench) operatorBinary(ctx context.Context) (string, error) {
	if b.operatorBin != "" {
		return b.operatorBin, nil
	}
	bin := filepath.Join(b.tmp, "manager-pool")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = b.root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build -o %s .: %w\n%s", bin, err, out)
	}
	b.operatorBin = bin
	return bin, nil
}
