// Command bench measures hubcredits on the local control plane (kube-apiserver
// and etcd from bin/k8s) and writes docs/benchmarks.md. Every figure is a
// ratio measured within one run, or a count; nothing is a timed pass/fail
// test.
//
//	go run ./test/bench -scenario=all                      # full sizes (40-50 min on 2 cores)
//	go run ./test/bench -scenario=all -quick -out=/tmp/b.md # small sizes (~8 min)
//
// Scenarios (comma-separated, or all):
//
//	admission   pod CREATE latency and throughput: no webhook / ResourceQuota / hubcredits (interleaved)
//	contention  200 concurrent spawns on one account (balance for 50), 1,000 spawns on 1,000 accounts
//	handler     the Go benchmark of PodAdmitter.Handle against controller-runtime's allow-all validator
//	pool        a spawn storm of 16 clients on ONE project pool toward 10,000 servers (members by name
//	            and by group), then one billing boundary: spawn rate, pool object size, exactly once
//	billing     10,000 running servers: catch-up after an outage, then billing lag, CPU, RSS and
//	            writes per charge, then the same with 50,000 unrelated pods in the namespace
//
// The billing controllers run in a separate process: the operator binary
// (go build -o <tmp>/manager .), so its CPU and RSS are its own. When a
// billing target is missed (or with -profile=always), the harness re-runs
// the same controllers in a child process of its own with runtime/pprof
// (-role=operator) and summarises the CPU profile.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap/zapcore"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/localcp"
	"github.com/hubcredits/hubcredits/internal/operator"
)

// config is the command line.
type config struct {
	scenarios string
	quick     bool
	out       string
	profile   string
	logLevel  string

	// admission
	pods    int
	workers int
	// contention
	race        int
	raceAffords int
	spread      int
	raceWorkers int
	// handler
	benchCount int
	benchTime  string
	// billing
	servers      int
	perAccount   int
	interval     time.Duration
	intervals    int
	outage       time.Duration
	unrelated    int
	createWorker int
	opWorkers    int
	lateLimit    time.Duration
	profileFor   time.Duration
	moreWorkers  int
	writes       int
	memLimit     string
	opEnv        []string
	catchupOnly  bool
	catchupLimit time.Duration
	// pool
	poolServers  int
	poolClients  int
	poolNamed    int
	poolInterval time.Duration
	poolLimit    time.Duration
	poolMinRate  float64
}

func parseConfig(args []string) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&c.scenarios, "scenario", "all", "Scenarios to run: all, or a comma-separated list of writecost, admission, contention, handler, billing, pool.")
	fs.BoolVar(&c.quick, "quick", false, "Small sizes for a quick run (flags set explicitly still win).")
	fs.StringVar(&c.out, "out", "docs/benchmarks.md", "Markdown report to write (relative to the repository root); '' writes none.")
	fs.StringVar(&c.profile, "profile", "auto", "CPU profile of the billing controllers: auto (when a billing target is missed), always, never.")
	fs.StringVar(&c.logLevel, "log-level", "error", "Log level of the in-process webhook manager.")
	fs.IntVar(&c.writes, "writes", 500, "writecost: sequential writes of each kind per round (two measured rounds).")
	fs.IntVar(&c.pods, "pods", 2000, "admission: pod creates per variant (three variants).")
	fs.IntVar(&c.workers, "workers", 8, "admission: concurrent clients.")
	fs.IntVar(&c.race, "race", 200, "contention: concurrent spawns against one account.")
	fs.IntVar(&c.raceAffords, "race-affords", 50, "contention: how many of them the account can pay for.")
	fs.IntVar(&c.spread, "spread", 1000, "contention: spawns across as many accounts.")
	fs.IntVar(&c.raceWorkers, "race-workers", 200, "contention: concurrency of the spread spawns.")
	fs.IntVar(&c.benchCount, "bench-count", 5, "handler: go test -count.")
	fs.StringVar(&c.benchTime, "bench-time", "1s", "handler: go test -benchtime.")
	fs.IntVar(&c.servers, "servers", 10000, "billing: running servers.")
	fs.IntVar(&c.perAccount, "per-account", 1, "billing: servers per account (1: a wallet per user, as Z2JH's default server).")
	fs.DurationVar(&c.interval, "interval", 60*time.Second, "billing: billing interval.")
	fs.IntVar(&c.intervals, "intervals", 3, "billing: intervals per measurement window (at least 3 for the target).")
	fs.DurationVar(&c.outage, "outage", time.Hour, "billing: how long the operator was (simulated) down before it starts.")
	fs.IntVar(&c.unrelated, "unrelated", 50000, "billing: unrelated pods (no singleuser label) added for the second window.")
	fs.IntVar(&c.createWorker, "create-workers", 32, "billing: concurrency of the setup creates.")
	fs.IntVar(&c.opWorkers, "operator-workers", 0, "billing: --workers of the operator (0: its default).")
	fs.DurationVar(&c.lateLimit, "late-limit", 60*time.Second, "billing: how long after a window to wait for its last charges.")
	fs.IntVar(&c.moreWorkers, "more-workers", 0, "billing: a further window with the operator restarted with --workers=N (0: none).")
	fs.StringVar(&c.memLimit, "memory-limit", "180MiB", "billing: a third window with the operator restarted with GOMEMLIMIT=this (what it sets itself in a container with a 200Mi memory limit); '' for none.")
	fs.DurationVar(&c.catchupLimit, "catchup-limit", 5*time.Minute, "billing: give up waiting for the catch-up after this long (the target is 60 s).")
	fs.BoolVar(&c.catchupOnly, "catchup-only", false, "billing: stop after the catch-up (no windows, no unrelated pods).")
	fs.DurationVar(&c.profileFor, "profile-for", 0, "billing: length of the profiled run (0: two intervals).")
	fs.IntVar(&c.poolServers, "pool-servers", 10000, "pool: servers to spawn on one project pool.")
	fs.IntVar(&c.poolClients, "pool-clients", 16, "pool: concurrent clients of the spawn storm.")
	fs.IntVar(&c.poolNamed, "pool-named", 1000, "pool: members listed by name in spec.users (at most 1000); the others are members by group.")
	fs.DurationVar(&c.poolInterval, "pool-interval", 2*time.Minute, "pool: billing interval (the boundary after the storm comes one interval after the servers run).")
	fs.DurationVar(&c.poolLimit, "pool-limit", 15*time.Minute, "pool: stop the storm after this long.")
	fs.Float64Var(&c.poolMinRate, "pool-min-rate", 2, "pool: stop the storm when fewer spawns per second than this were admitted over 30 s.")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.quick {
		quick := map[string]func(){
			"pods":          func() { c.pods = 300 },
			"writes":        func() { c.writes = 100 },
			"spread":        func() { c.spread = 200 },
			"servers":       func() { c.servers = 200 },
			"interval":      func() { c.interval = 20 * time.Second },
			"outage":        func() { c.outage = 20 * time.Minute },
			"unrelated":     func() { c.unrelated = 2000 },
			"bench-time":    func() { c.benchTime = "300ms" },
			"pool-servers":  func() { c.poolServers = 300 },
			"pool-named":    func() { c.poolNamed = 100 },
			"pool-interval": func() { c.poolInterval = 20 * time.Second },
			"pool-limit":    func() { c.poolLimit = 3 * time.Minute },
			"bench-count": func() {
				c.benchCount = 3
			},
		}
		for name, f := range quick {
			if !set[name] {
				f()
			}
		}
	}
	if c.scenarios == "all" {
		c.scenarios = "writecost,admission,contention,handler,billing,pool"
	}
	for _, s := range strings.Split(c.scenarios, ",") {
		switch s {
		case "writecost", "admission", "contention", "handler", "billing", "pool":
		default:
			return nil, fmt.Errorf("unknown scenario %q", s)
		}
	}
	if c.perAccount < 1 || c.servers%c.perAccount != 0 {
		return nil, fmt.Errorf("-servers must be a multiple of -per-account")
	}
	if c.poolNamed > 1000 || c.poolClients < 1 || c.poolInterval < 10*time.Second || c.poolInterval%time.Second != 0 {
		return nil, fmt.Errorf("-pool-named must be at most 1000 (spec.users), -pool-clients at least 1, -pool-interval whole seconds of at least 10s")
	}
	if c.interval < 2*time.Second || c.interval%time.Second != 0 {
		return nil, fmt.Errorf("-interval must be whole seconds, at least 2s")
	}
	return c, nil
}

func (c *config) has(s string) bool {
	for _, x := range strings.Split(c.scenarios, ",") {
		if x == s {
			return true
		}
	}
	return false
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-role=operator" {
		if err := runOperator(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench operator:", err)
			os.Exit(1)
		}
		return
	}
	c, err := parseConfig(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, c)
	cancel() // before os.Exit, which runs no deferred call
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// bench holds what every scenario uses.
type bench struct {
	cfg        *config
	root       string
	tmp        string
	env        *localcp.Env
	rest       *rest.Config // admin, no client-side rate limit
	c          client.Client
	cs         *kubernetes.Clientset
	kubeconfig string
	rep        *report
	// webhookCache is the webhook manager's cache (accounts must be in it
	// before a spawn can be admitted).
	webhookCache client.Reader
	stopWebhook  func()
	// operatorBin is the operator binary, once built (operatorBinary).
	operatorBin string
	// The control plane's processes, for their CPU time (0 if not found).
	apiserverPid, etcdPid int
}

// cpuSnapshot is the CPU time of the control plane and this process.
type cpuSnapshot struct {
	at                       time.Time
	apiserver, etcd, harness time.Duration
}

func (b *bench) cpu() cpuSnapshot {
	return cpuSnapshot{at: time.Now(), apiserver: cpuOf(b.apiserverPid), etcd: cpuOf(b.etcdPid), harness: cpuOf(os.Getpid())}
}

// cores returns the cores used between two snapshots, as text.
func (s cpuSnapshot) coresSince(o cpuSnapshot) string {
	w := s.at.Sub(o.at).Seconds()
	return fmt.Sprintf("kube-apiserver %.0f%%, etcd %.0f%%, harness %.0f%% of a core",
		100*(s.apiserver-o.apiserver).Seconds()/w, 100*(s.etcd-o.etcd).Seconds()/w, 100*(s.harness-o.harness).Seconds()/w)
}

// Namespaces the pod webhook never sees (variants a and b of admission).
const (
	nsNoWebhook = "bench-adm-a"
	nsQuota     = "bench-adm-b"
	nsWebhook   = "bench-adm-c"
	nsRace      = "bench-race"
	nsSpread    = "bench-spread"
	nsBilling   = "bench-billing"
)

func run(ctx context.Context, c *config) error {
	level, err := zapcore.ParseLevel(c.logLevel)
	if err != nil {
		return err
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(level)))
	root, err := localcp.Root()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "hubcredits-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	b := &bench{cfg: c, root: root, tmp: tmp, rep: newReport(c, os.Args)}
	b.rep.machine = machineInfo()
	logf("bench: %s", b.rep.machine.oneLine())

	if c.has("handler") {
		// First, before the control plane runs: the Go benchmark is CPU-bound.
		if err := b.handler(ctx); err != nil {
			b.rep.fail("handler", err)
		}
	}
	if c.has("admission") || c.has("contention") || c.has("billing") || c.has("writecost") || c.has("pool") {
		if err := b.startControlPlane(ctx); err != nil {
			if b.stopWebhook != nil {
				b.stopWebhook()
			}
			if b.env != nil {
				_ = b.env.Stop()
			}
			return err
		}
		defer func() {
			// The webhook manager first: envtest removes its certificates.
			b.stopWebhook()
			_ = b.env.Stop()
		}()
		steps := []struct {
			name string
			fn   func(context.Context) error
		}{
			{"writecost", b.writeCost},
			{"admission", b.admission},
			{"contention", b.contention},
			{"pool", b.pool},
			{"billing", b.billing},
		}
		for _, s := range steps {
			if !c.has(s.name) || ctx.Err() != nil {
				continue
			}
			logf("bench: scenario %s", s.name)
			if err := s.fn(ctx); err != nil {
				b.rep.fail(s.name, err)
				logf("bench: scenario %s failed: %v", s.name, err)
			}
		}
	}
	b.rep.machine.loadEnd = loadAvg()
	b.rep.finished = time.Now()
	fmt.Println(b.rep.table())
	if c.out != "" {
		path := c.out
		if !filepath.IsAbs(path) {
			path = filepath.Join(root, path)
		}
		if err := b.rep.write(path); err != nil {
			return err
		}
		logf("bench: wrote %s", path)
	}
	return ctx.Err()
}

// startControlPlane starts kube-apiserver and etcd with the webhook
// configurations (variants a and b excluded by namespace) and a
// webhook-only manager in this process, as the integration tests do.
func (b *bench) startControlPlane(ctx context.Context) error {
	logf("bench: starting kube-apiserver and etcd")
	env, err := localcp.Start(localcp.Options{Root: b.root, Webhooks: true, ExcludeNamespaces: []string{nsNoWebhook, nsQuota}})
	if err != nil {
		return err
	}
	b.env = env
	b.rest = rest.CopyConfig(env.Config)
	b.rest.QPS, b.rest.Burst = -1, 0 // as ctrl.GetConfig: no client-side rate limit
	if b.c, err = client.New(b.rest, client.Options{Scheme: operator.Scheme()}); err != nil {
		return err
	}
	if b.cs, err = kubernetes.NewForConfig(b.rest); err != nil {
		return err
	}
	kc, err := env.AdminKubeconfig()
	if err != nil {
		return err
	}
	if u, err := url.Parse(env.Config.Host); err == nil {
		b.apiserverPid, _ = localcp.FindProcess("kube-apiserver", "--secure-port="+u.Port())
	}
	if e := env.ControlPlane.Etcd; e != nil && e.URL != nil {
		b.etcdPid, _ = localcp.FindProcess("etcd", "--listen-client-urls="+e.URL.String())
	}
	logf("bench: kube-apiserver pid %d, etcd pid %d", b.apiserverPid, b.etcdPid)
	b.kubeconfig = filepath.Join(b.tmp, "kubeconfig")
	if err := os.WriteFile(b.kubeconfig, kc, 0o600); err != nil {
		return err
	}

	w := env.WebhookInstallOptions
	mgr, err := ctrl.NewManager(b.rest, operator.ManagerOptions(operator.Options{}, operator.Process{
		WebhookServer: webhook.NewServer(webhook.Options{
			Host: w.LocalServingHost, Port: w.LocalServingPort, CertDir: w.LocalServingCertDir,
			TLSOpts: operator.WebhookTLS(false),
		}),
	}))
	if err != nil {
		return err
	}
	if err := operator.Setup(ctx, mgr, operator.Options{Webhooks: true, DisableControllers: true, Defaults: billing.DefaultPrice}); err != nil {
		return err
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	b.stopWebhook = func() { cancel(); <-done }
	go func() {
		defer close(done)
		if err := mgr.Start(mctx); err != nil {
			logf("bench: webhook manager: %v", err)
		}
	}()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return fmt.Errorf("the webhook manager's cache did not sync")
	}
	b.webhookCache = mgr.GetCache()
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}
