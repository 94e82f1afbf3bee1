package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

var (
	balance = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "hubcredits_account_balance",
		Help: "Credits available in an account.",
	}, []string{"namespace", "account"})
	charged = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "hubcredits_account_charged_credits",
		Help: "Credits charged for servers since the account was opened (reservations included).",
	}, []string{"namespace", "account"})
	granted = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "hubcredits_account_granted_credits",
		Help: "Credits added by grants since the account was opened.",
	}, []string{"namespace", "account"})
	running = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "hubcredits_account_running_servers",
		Help: "Servers running on an account.",
	}, []string{"namespace", "account"})
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
	metrics.Registry.MustRegister(balance, charged, granted, running, stopsTotal, billingLag)
}

func recordAccount(a *hcv1.CreditAccount) {
	balance.WithLabelValues(a.Namespace, a.Name).Set(float64(a.Status.Balance))
	charged.WithLabelValues(a.Namespace, a.Name).Set(float64(a.Status.TotalCharged))
	granted.WithLabelValues(a.Namespace, a.Name).Set(float64(a.Status.TotalGranted))
	running.WithLabelValues(a.Namespace, a.Name).Set(float64(a.Status.RunningServers))
}

func forgetAccount(ns, name string) {
	for _, v := range []*prometheus.GaugeVec{balance, charged, granted, running} {
		v.DeleteLabelValues(ns, name)
	}
}
