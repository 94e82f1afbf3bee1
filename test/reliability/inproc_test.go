package reliability

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/localcp"
	"github.com/hubcredits/hubcredits/internal/operator"
)

// The operator binary takes no flag for the page limits (users keep the
// API's 64 a page); to put most of a small pool's servers on pages, the
// tests of LedgerPages run the operator in process with small
// operator.Options.PageLimits, as TestMain runs the webhook, and "kill"
// it with a fault interceptor on its client: at a chosen write (before it
// reaches the API server, or after it was applied, its answer lost) the
// process dies — that write and every later one fail, as nothing a killed
// process sends arrives — and the manager is stopped and replaced by a
// new one. What a SIGKILL can leave behind is exactly that: the writes
// before the kill applied, those after it not, the one in flight either.

// writeKind is what a crash point waits for.
type writeKind string

const (
	writeAny     writeKind = "any write"
	writeAccount writeKind = "account status write"
	// writeCommit is an account status write that holds page transfers
	// (status.pending): a page transaction's commit point.
	writeCommit writeKind = "commit of page transfers"
	writePage   writeKind = "page write" // after a commit
	writeNow    writeKind = "now"
)

// fault is what happens at a crash point.
type fault string

const (
	// faultKill: the process dies (that write and every later one fail).
	faultKill fault = "killed"
	// faultLose: the write is applied, its answer lost (a timeout); the
	// process goes on.
	faultLose fault = "answer lost"
	// faultRestartAPI: kube-apiserver is killed with the write in flight
	// (before it reached etcd, or after) and restarted; the process gets
	// an error and goes on against the new API server.
	faultRestartAPI fault = "kube-apiserver restarted"
)

// crashPoint is where an armed fault strikes: at the process's next write
// of kind, before the write is sent or after it was applied.
type crashPoint struct {
	kind  writeKind
	after bool
	fault fault
}

func (p crashPoint) String() string {
	f := p.fault
	if f == "" {
		f = faultKill
	}
	if p.kind == writeNow {
		return string(f) + " at once"
	}
	if p.after {
		return string(f) + " after the " + string(p.kind) + " was applied"
	}
	return string(f) + " before the " + string(p.kind)
}

var errKilled = errors.New("connection reset: the process was killed (test)")

// errLost is a write's answer lost after it was applied.
var errLost = errors.New("the request timed out: its answer was lost (test)")

// faults decides the fate of one process's writes.
type faults struct {
	dead  atomic.Bool
	armed atomic.Pointer[crashPoint]
	hit   chan crashPoint // the points struck
	once  sync.Once
	// restartAPI restarts kube-apiserver (faultRestartAPI).
	restartAPI func()
}

func newFaults() *faults { return &faults{hit: make(chan crashPoint, 16)} }

func (f *faults) die(p crashPoint) {
	f.once.Do(func() {
		f.dead.Store(true)
		f.struck(p)
	})
}

func (f *faults) struck(p crashPoint) {
	select {
	case f.hit <- p:
	default:
	}
}

// kindOf reports whether a write is of kind k.
func kindOf(obj client.Object, status bool, k writeKind) bool {
	switch o := obj.(type) {
	case *hcv1.CreditAccount:
		return status && (k == writeAccount || k == writeCommit && len(o.Status.Pending) > 0)
	case *hcv1.LedgerPage:
		return k == writePage
	}
	return false
}

// write runs do unless the process is dead, or strikes the armed fault
// around it.
func (f *faults) write(obj client.Object, status bool, do func() error) error {
	if f.dead.Load() {
		return errKilled
	}
	p := f.armed.Load()
	if p == nil || !(p.kind == writeAny || kindOf(obj, status, p.kind)) || !f.armed.CompareAndSwap(p, nil) {
		return do()
	}
	if p.after {
		if err := do(); err != nil {
			// Not applied: nothing to strike after; arm again.
			f.armed.CompareAndSwap(nil, p)
			return err
		}
	}
	switch p.fault {
	case faultLose:
		if !p.after {
			return do()
		}
		f.struck(*p)
		return errLost
	case faultRestartAPI:
		f.restartAPI()
		f.struck(*p)
		return errKilled
	default:
		f.die(*p)
		return errKilled
	}
}

func (f *faults) funcs() interceptor.Funcs {
	return interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			return f.write(obj, false, func() error { return c.Create(ctx, obj, opts...) })
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			return f.write(obj, false, func() error { return c.Update(ctx, obj, opts...) })
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			return f.write(obj, false, func() error { return c.Patch(ctx, obj, patch, opts...) })
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			return f.write(obj, false, func() error { return c.Delete(ctx, obj, opts...) })
		},
		DeleteAllOf: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteAllOfOption) error {
			return f.write(obj, false, func() error { return c.DeleteAllOf(ctx, obj, opts...) })
		},
		SubResourceCreate: func(ctx context.Context, c client.Client, sub string, obj, subObj client.Object, opts ...client.SubResourceCreateOption) error {
			return f.write(obj, false, func() error { return c.SubResource(sub).Create(ctx, obj, subObj, opts...) })
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			return f.write(obj, sub == "status", func() error { return c.SubResource(sub).Update(ctx, obj, opts...) })
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			return f.write(obj, sub == "status", func() error { return c.SubResource(sub).Patch(ctx, obj, patch, opts...) })
		},
	}
}

// inProc is one in-process operator (webhook-only, or controllers only)
// whose writes go through faults, restarted after each crash.
type inProc struct {
	t       *testing.T
	e       *localcp.Env
	o       operator.Options
	webhook bool // serve admission on the control plane's webhook port

	mu      sync.Mutex
	f       *faults
	cancel  context.CancelFunc
	done    chan struct{}
	starts  int
	logOnce sync.Once
	log     io.Writer
}

func startInProc(t *testing.T, e *localcp.Env, o operator.Options, webhook bool) *inProc {
	t.Helper()
	p := &inProc{t: t, e: e, o: o, webhook: webhook}
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *inProc) start() {
	p.t.Helper()
	f := newFaults()
	f.restartAPI = func() {
		if err := p.e.RestartAPIServer(context.Background(), time.Duration(rand.IntN(1500))*time.Millisecond); err != nil {
			p.t.Errorf("restarting kube-apiserver: %v", err)
		}
	}
	proc := operator.Process{SeveralManagers: true}
	o := p.o
	if p.webhook {
		w := p.e.WebhookInstallOptions
		proc.WebhookServer = webhook.NewServer(webhook.Options{Host: w.LocalServingHost, Port: w.LocalServingPort,
			CertDir: w.LocalServingCertDir, TLSOpts: operator.WebhookTLS(false)})
		o.Webhooks, o.DisableControllers = true, true
	}
	mo := operator.ManagerOptions(o, proc)
	mo.Logger = zap.New(zap.WriteTo(p.logFile()), zap.UseDevMode(false))
	mo.NewClient = func(cfg *rest.Config, co client.Options) (client.Client, error) {
		c, err := client.NewWithWatch(cfg, co)
		if err != nil {
			return nil, err
		}
		return interceptor.NewClient(c, f.funcs()), nil
	}
	var mgr ctrl.Manager
	var err error
	// The previous webhook server may hold the port a moment longer.
	for range 50 {
		if mgr, err = ctrl.NewManager(rest.CopyConfig(p.e.Config), mo); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	must(p.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	if err := operator.Setup(ctx, mgr, o); err != nil {
		cancel()
		p.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = mgr.Start(ctx)
	}()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		cancel()
		p.t.Fatal("the in-process operator's cache did not sync")
	}
	p.mu.Lock()
	p.f, p.cancel, p.done = f, cancel, done
	p.starts++
	p.mu.Unlock()
}

// stop stops the manager (its writes fail from now on) and waits for it.
func (p *inProc) stop() {
	p.mu.Lock()
	f, cancel, done := p.f, p.cancel, p.done
	p.cancel = nil
	p.mu.Unlock()
	if cancel == nil {
		return
	}
	f.die(crashPoint{kind: writeNow})
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		p.t.Error("the in-process operator did not stop in 30s")
	}
}

// crash arms point and waits up to wait for the process to die there (at
// once when it does not write meanwhile); it is then stopped, kept down
// for down and started again. It returns where the process died.
func (p *inProc) crash(point crashPoint, wait, down time.Duration) crashPoint {
	p.mu.Lock()
	f := p.f
	p.mu.Unlock()
	if point.kind == writeNow {
		f.die(point)
	} else {
		f.armed.Store(&point)
	}
	var got crashPoint
	select {
	case got = <-f.hit:
	case <-time.After(wait):
		f.die(crashPoint{kind: writeNow})
		got = <-f.hit
	}
	p.stop()
	time.Sleep(down)
	p.start()
	return got
}

// strike arms a fault that does not kill the process (faultLose,
// faultRestartAPI) and waits up to wait for it to strike; it returns
// whether it did (else it is disarmed).
func (p *inProc) strike(point crashPoint, wait time.Duration) bool {
	p.mu.Lock()
	f := p.f
	p.mu.Unlock()
	f.armed.Store(&point)
	select {
	case <-f.hit:
		return true
	case <-time.After(wait):
		if f.armed.CompareAndSwap(&point, nil) {
			return false
		}
		<-f.hit // struck meanwhile
		return true
	}
}

// logFile is the process's log: in HUBCREDITS_KEEP_LOGS when set.
func (p *inProc) logFile() io.Writer {
	p.logOnce.Do(func() {
		dir := os.Getenv("HUBCREDITS_KEEP_LOGS")
		if dir == "" {
			dir = p.t.TempDir()
		}
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("inproc-%s-%s-%d.log", strings.ReplaceAll(p.t.Name(), "/", "_"), p, time.Now().UnixNano())),
			os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		must(p.t, err)
		p.t.Cleanup(func() { _ = f.Close() })
		p.log = f
	})
	return p.log
}

func (p *inProc) String() string {
	if p.webhook {
		return "webhook"
	}
	return "controller"
}

// crashTally counts the points processes died at.
type crashTally map[string]int

func (c crashTally) add(who fmt.Stringer, at crashPoint) { c[who.String()+" "+at.String()]++ }
