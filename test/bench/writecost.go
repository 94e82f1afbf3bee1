package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

const nsWriteCost = "bench-writecost"

// writeCost measures what one write costs kube-apiserver, in CPU time,
// for the writes hubcredits makes (a CreditAccount status update, with
// ledgers of several lengths) next to the writes it is compared with (a
// pod create, the ResourceQuota status update that quota admission makes).
// Writes are sequential and the kinds interleaved in rounds, so the figures
// are ratios from one run on one API server.
func (b *bench) writeCost(ctx context.Context) error {
	c := b.cfg
	sc := "writecost"
	if b.apiserverPid == 0 {
		return fmt.Errorf("kube-apiserver's pid is unknown")
	}
	for _, ns := range []string{nsWriteCost, nsNoWebhook} {
		if err := b.namespace(ctx, ns); err != nil {
			return err
		}
	}
	type kind struct {
		name  string
		bytes int
		write func(i int) error
		cpu   time.Duration
		wall  time.Duration
	}
	var kinds []*kind
	for _, ledger := range []int{0, 3, 10, 20} {
		a := benchAccountWithLedger(fmt.Sprintf("ledger-%d", ledger), ledger)
		st := a.Status
		if err := b.c.Create(ctx, a); err != nil {
			return err
		}
		a.Status = st
		if err := b.c.Status().Update(ctx, a); err != nil {
			return err
		}
		raw, _ := json.Marshal(a)
		kinds = append(kinds, &kind{name: fmt.Sprintf("CreditAccount status update, %d ledger entries", ledger), bytes: len(raw),
			write: func(int) error {
				a.Status.Balance--
				return b.c.Status().Update(ctx, a)
			}})
	}
	hard := corev1.ResourceList{corev1.ResourcePods: resource.MustParse("1000000")}
	q, err := b.cs.CoreV1().ResourceQuotas(nsWriteCost).Create(ctx, &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Name: "pods"}, Spec: corev1.ResourceQuotaSpec{Hard: hard}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	q.Status = corev1.ResourceQuotaStatus{Hard: hard, Used: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("0")}}
	if q, err = b.cs.CoreV1().ResourceQuotas(nsWriteCost).UpdateStatus(ctx, q, metav1.UpdateOptions{}); err != nil {
		return err
	}
	raw, _ := json.Marshal(q)
	kinds = append(kinds, &kind{name: "ResourceQuota status update (what quota admission writes)", bytes: len(raw), write: func(i int) error {
		q.Status.Used[corev1.ResourcePods] = *resource.NewQuantity(int64(i+1), resource.DecimalSI)
		var err error
		q, err = b.cs.CoreV1().ResourceQuotas(nsWriteCost).UpdateStatus(ctx, q, metav1.UpdateOptions{})
		return err
	}})
	pod := kubespawnerPod(nsNoWebhook, "writecost", "")
	raw, _ = json.Marshal(pod)
	kinds = append(kinds, &kind{name: "Pod create, KubeSpawner-shaped (no webhook)", bytes: len(raw), write: func(i int) error {
		p := kubespawnerPod(nsNoWebhook, fmt.Sprintf("writecost-%d", i), "")
		_, err := b.cs.CoreV1().Pods(nsNoWebhook).Create(ctx, p, metav1.CreateOptions{})
		return err
	}})

	n := c.writes
	logf("bench: writecost: %d sequential writes of each of %d kinds, in 3 rounds (the first a warm-up)", n, len(kinds))
	seq := 0
	for round := range 3 {
		for _, k := range kinds {
			cpu0, t0 := cpuOf(b.apiserverPid), time.Now()
			for range n {
				seq++
				if err := k.write(seq); err != nil {
					return fmt.Errorf("writecost: %s: %w", k.name, err)
				}
			}
			if round > 0 {
				k.cpu += cpuOf(b.apiserverPid) - cpu0
				k.wall += time.Since(t0)
			}
		}
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(2*n) }
	podCPU := per(kinds[len(kinds)-1].cpu)
	var t strings.Builder
	fmt.Fprintf(&t, "%d sequential writes of each kind (after a warm-up round), rounds interleaved; CPU from /proc of kube-apiserver.\n\n", 2*n)
	fmt.Fprintf(&t, "| write | object JSON | kube-apiserver CPU per write | wall per write | CPU vs a pod create |\n|---|---|---|---|---|\n")
	for _, k := range kinds {
		fmt.Fprintf(&t, "| %s | %d B | %.2f ms | %.2f ms | %.2f |\n", k.name, k.bytes, per(k.cpu), per(k.wall), per(k.cpu)/podCPU)
		b.rep.add(sc, k.name+": kube-apiserver CPU per write", fmt.Sprintf("%.2f ms (%.2f× a pod create)", per(k.cpu), per(k.cpu)/podCPU), "", "")
	}
	b.rep.addRaw("writecost", t.String())
	if c.profile != "never" {
		// Where a CreditAccount status write's API-server CPU goes (issue 14,
		// P1): the wallet of one running server (3 ledger entries), and a
		// pool funding 300 servers.
		for _, p := range []struct {
			what string
			a    *hcv1.CreditAccount
		}{
			{"CreditAccount status update, a wallet with 3 ledger entries", nil},
			{"CreditAccount status update, a pool funding 300 servers", benchPool("pool-300", 300)},
		} {
			a := p.a
			if a == nil {
				a = benchAccountWithLedger("profile-3", 3)
			}
			st := a.Status
			if err := b.c.Create(ctx, a); err != nil {
				return err
			}
			a.Status = st
			if err := b.c.Status().Update(ctx, a); err != nil {
				return err
			}
			raw, _ := json.Marshal(a)
			logf("bench: writecost: profiling kube-apiserver under %s (%d B)", p.what, len(raw))
			body, err := b.profileAccountWrites(ctx, fmt.Sprintf("%s (%d B of JSON)", p.what, len(raw)), 15, func(int) error {
				a.Status.Balance--
				return b.c.Status().Update(ctx, a)
			})
			if err != nil {
				body = "Profiling failed: " + err.Error()
			}
			b.rep.profiles = append(b.rep.profiles, section{"kube-apiserver CPU per CreditAccount write, attributed (" + p.what + ", 15 s)", body})
		}
	}
	return nil
}

// benchPool is a project pool as the operator leaves it while it funds n
// running servers of its members (one entry each).
func benchPool(name string, n int) *hcv1.CreditAccount {
	a := benchAccountWithLedger(name, 3)
	e := a.Status.Servers[0]
	a.Status.Servers = nil
	for i := range n {
		s := e
		s.ID = fmt.Sprintf("0b7e2c1a-5d4f-4e8a-9c3b-%012d", i)
		s.Pod = "jupyter-" + user(i)
		s.PodUID = types.UID(fmt.Sprintf("6a5b4c3d-2e1f-4a9b-8c7d-%012d", i))
		s.User, s.Wallet = user(i), name
		a.Status.Servers = append(a.Status.Servers, s)
	}
	a.Status.RunningServers = int32(n)
	return a
}

// benchAccountWithLedger is a wallet as the operator leaves it while one
// server runs, with the given number of ledger entries.
func benchAccountWithLedger(name string, ledger int) *hcv1.CreditAccount {
	now := metav1.Now()
	a := testutil.MakeAccount(nsWriteCost, name, name).Cap(1_000_000).InitialBalance(1_000_000).Obj()
	pod := "jupyter-" + name
	a.Status = hcv1.CreditAccountStatus{OpenedAt: &now, GrantedThrough: &now, Balance: 1_000_000, RunningServers: 1,
		Servers: []hcv1.ServerCharge{{ID: "0b7e2c1a-5d4f-4e8a-9c3b-2f1d6e7a8b9c", Pod: pod, PodUID: "6a5b4c3d-2e1f-4a9b-8c7d-6e5f4a3b2c1d",
			User: name, Wallet: name, Policy: "default", BillingValue: 10, BillingInterval: metav1.Duration{Duration: time.Minute},
			ReservedAt: now, StartedAt: &now, PeriodsPaid: 3, Paid: 30, PaidThrough: &now}},
		TotalCharged: 30,
		Conditions: []metav1.Condition{
			{Type: hcv1.ConditionReady, Status: metav1.ConditionTrue, Reason: hcv1.ReasonLedgerOpen, Message: "The ledger is kept.", LastTransitionTime: now},
			{Type: hcv1.ConditionLow, Status: metav1.ConditionFalse, Reason: hcv1.ReasonBalanceSufficient, Message: "The balance covers the running servers for the next periods.", LastTransitionTime: now},
			{Type: hcv1.ConditionExhausted, Status: metav1.ConditionFalse, Reason: hcv1.ReasonCreditsAvailable, Message: "Credits are available.", LastTransitionTime: now},
		},
	}
	for i := range ledger {
		a.Status.Ledger = append(a.Status.Ledger, hcv1.LedgerEntry{Time: now, Kind: hcv1.LedgerCharge, Amount: -10,
			Balance: int64(1_000_000 - 10*i), Subject: pod, Message: "1 period(s) of " + pod})
	}
	return a
}

// apiCategory is a part of kube-apiserver's work, recognised by the
// functions on a sample's stack.
type apiCategory struct {
	name  string
	funcs []string // substrings of a frame's function name
}

// apiCategories are the parts of a CreditAccount write that the issue asks
// about. They overlap (JSON decoding inside schema coercion counts in
// both): each is the share of samples with such a frame on the stack, as
// pprof -cum counts.
var apiCategories = []apiCategory{
	{"status update handler (StatusREST.Update, all below it)", []string{"customresource.(*StatusREST).Update"}},
	{"CEL validation rules (x-kubernetes-validations)", []string{"apiextensions-apiserver/pkg/apiserver/schema/cel.", "github.com/google/cel-go/"}},
	{"OpenAPI schema validation (incl. ratcheting)", []string{"kube-openapi/pkg/validation/", "apiextensions-apiserver/pkg/apiserver/validation."}},
	{"  of which ratcheting's correlation of old and new list items", []string{"cel/common.(*CorrelatedObject)"}},
	{"schema coercion, pruning, defaulting", []string{"unstructuredSchemaCoercer", "apiserver/schema/pruning", "apiserver/schema/defaulting", "apiserver/schema/objectmeta"}},
	{"managed fields (field manager, structured-merge-diff)", []string{"/fieldmanager", "structured-merge-diff"}},
	{"JSON decode and encode", []string{"encoding/json.", "sigs.k8s.io/json", "json-iterator"}},
	{"conversion (unstructured converter, versioning codec)", []string{"runtime.(*unstructuredConverter)", "runtime.DefaultUnstructuredConverter", "serializer/versioning.(*codec)"}},
	{"deep copies of unstructured objects", []string{"runtime.DeepCopyJSONValue", "(*Unstructured).DeepCopy"}},
	{"etcd client (gRPC)", []string{"go.etcd.io/etcd/client", "google.golang.org/grpc"}},
	{"watch cache and watchers (dispatch, encoding for watchers)", []string{"storage/cacher.(*Cacher).dispatchEvent", "storage/cacher.(*Cacher).processEvent", "storage/cacher.(*cacheWatcher)", "handlers.(*WatchServer)", "handlers.serveWatch"}},
	{"authentication, authorization, TLS", []string{"filters.withAuthentication", "filters.WithAuthorization", "crypto/tls."}},
	{"garbage collection in the background", []string{"runtime.gcBgMarkWorker"}},
	{"garbage collection assists (allocating goroutines)", []string{"runtime.gcAssistAlloc"}},
}

// attributeProfile splits a CPU profile's samples into apiCategories with
// go tool pprof -traces (the toolchain's pprof, no library): each category's
// share of all samples, inclusive.
func (b *bench) attributeProfile(ctx context.Context, path string) (total time.Duration, shares []time.Duration, err error) {
	cmd := exec.CommandContext(ctx, "go", "tool", "pprof", "-traces", path)
	cmd.Dir = b.root
	out, err := cmd.Output()
	if err != nil {
		return 0, nil, fmt.Errorf("go tool pprof -traces: %w", err)
	}
	shares = make([]time.Duration, len(apiCategories))
	for _, block := range strings.Split(string(out), "-----------+-------------------------------------------------------") {
		lines := strings.Split(strings.TrimSpace(block), "\n")
		if len(lines) == 0 {
			continue
		}
		fields := strings.Fields(lines[0])
		if len(fields) < 2 {
			continue
		}
		v, perr := time.ParseDuration(fields[0])
		if perr != nil {
			continue // the header
		}
		total += v
		stack := strings.Join(lines, "\n")
		for i, c := range apiCategories {
			for _, f := range c.funcs {
				if strings.Contains(stack, f) {
					shares[i] += v
					break
				}
			}
		}
	}
	if total == 0 {
		return 0, nil, fmt.Errorf("no samples in %s", path)
	}
	return total, shares, nil
}

// profileAccountWrites takes kube-apiserver's CPU profile (its
// /debug/pprof/profile, admin credentials) while write runs sequentially
// for the profile's length, and attributes it.
func (b *bench) profileAccountWrites(ctx context.Context, what string, seconds int, write func(i int) error) (string, error) {
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	var n atomic.Int64
	done := make(chan error, 1)
	go func() {
		var err error
		for i := 0; pctx.Err() == nil; i++ {
			if err = write(i); err != nil && pctx.Err() == nil {
				break
			}
			n.Add(1)
			err = nil
		}
		done <- err
	}()
	cpu0 := cpuOf(b.apiserverPid)
	raw, err := b.cs.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", fmt.Sprint(seconds)).DoRaw(ctx)
	cpu1 := cpuOf(b.apiserverPid)
	stop()
	if werr := <-done; werr != nil {
		return "", werr
	}
	if err != nil {
		return "", fmt.Errorf("kube-apiserver's /debug/pprof/profile: %w", err)
	}
	path := filepath.Join(b.tmp, "apiserver-writecost.pprof")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		return "", err
	}
	total, shares, err := b.attributeProfile(ctx, path)
	if err != nil {
		return "", err
	}
	writes := n.Load()
	var t strings.Builder
	fmt.Fprintf(&t, "%s: %d sequential writes in %d s, kube-apiserver CPU %.2f ms per write (/proc); profile samples %.1f s. "+
		"Shares are inclusive (a sample counts in every category on its stack), of all kube-apiserver samples:\n\n",
		what, writes, seconds, float64((cpu1-cpu0).Microseconds())/1000/float64(max(writes, 1)), total.Seconds())
	fmt.Fprintf(&t, "| part | share of kube-apiserver CPU | per write |\n|---|---|---|\n")
	for i, c := range apiCategories {
		fmt.Fprintf(&t, "| %s | %.1f%% | %.2f ms |\n", c.name, 100*float64(shares[i])/float64(total),
			float64(shares[i].Microseconds())/1000/float64(max(writes, 1)))
	}
	fmt.Fprintf(&t, "\n`go tool pprof -top -cum -nodecount=45`, focused on the handler (`-focus=StatusREST`):\n\n```\n%s\n```\n",
		strings.TrimSpace(b.pprofTop(ctx, "-top", "-cum", "-nodecount=45", "-focus=StatusREST", path)))
	return t.String(), nil
}
