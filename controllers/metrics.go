package controllers

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

var (
	stopsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hubcredits_servers_stopped_total",
		Help: "Servers stopped by hubcredits, by reason.",
	}, []string{"reason"})
	billingLag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hubcredits_billing_lag_seconds",
		Help:    "Time between a period's boundary and the write that charged it.",
		Buckets: []float64{.05, .1, .25, .5, 1, 2, 5, 10, 30, 60, 300},
	})
)

func init() {
	metrics.Registry.MustRegister(stopsTotal, billingLag)
}

var (
	balanceDesc = prometheus.NewDesc("hubcredits_account_balance",
		"Credits available in an account.", []string{"namespace", "account"}, nil)
	chargedDesc = prometheus.NewDesc("hubcredits_account_charged_credits",
		"Credits charged for servers since the account was opened (reservations included).", []string{"namespace", "account"}, nil)
	grantedDesc = prometheus.NewDesc("hubcredits_account_granted_credits",
		"Credits added by grants since the account was opened.", []string{"namespace", "account"}, nil)
	runningDesc = prometheus.NewDesc("hubcredits_account_running_servers",
		"Servers running on an account.", []string{"namespace", "account"}, nil)
)

// AccountCollector reports every account's balance and totals at scrape
// time, read from the informer cache (the way kube-state-metrics does):
// nothing is kept per account between scrapes, so a deleted account's
// series simply disappear and 10,000 accounts cost no memory. Only the
// leader reports, so sums over replicas are not doubled.
type AccountCollector struct {
	Reader  client.Reader
	Elected <-chan struct{}
}

var (
	collectorMu sync.Mutex
	registered  *AccountCollector
)

// registerAccountCollector registers c in controller-runtime's registry,
// replacing the collector of an earlier manager in the same process (tests).
func registerAccountCollector(c *AccountCollector) error {
	collectorMu.Lock()
	defer collectorMu.Unlock()
	if registered != nil {
		metrics.Registry.Unregister(registered)
	}
	if err := metrics.Registry.Register(c); err != nil {
		return err
	}
	registered = c
	return nil
}

// Describe implements prometheus.Collector.
func (c *AccountCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{balanceDesc, chargedDesc, grantedDesc, runningDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *AccountCollector) Collect(ch chan<- prometheus.Metric) {
	select {
	case <-c.Elected:
	default:
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var list hcv1.CreditAccountList
	// Read-only walk over the cache's own objects: no copy of 10,000 statuses per scrape.
	if err := c.Reader.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return
	}
	for i := range list.Items {
		a := &list.Items[i]
		for _, m := range []struct {
			d *prometheus.Desc
			v int64
		}{{balanceDesc, a.Status.Balance}, {chargedDesc, a.Status.TotalCharged},
			{grantedDesc, a.Status.TotalGranted}, {runningDesc, int64(a.Status.RunningServers)}} {
			ch <- prometheus.MustNewConstMetric(m.d, prometheus.GaugeValue, float64(m.v), a.Namespace, a.Name)
		}
	}
}
