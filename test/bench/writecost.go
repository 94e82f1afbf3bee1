package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
	return nil
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
