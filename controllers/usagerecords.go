package controllers

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
)

// The operator writes a UsageRecord per ended server and deletes those
// older than the retention. It never reads them through the cache (no
// watch: the records are not kept in memory); the collector lists them
// live, a page at a time.
// +kubebuilder:rbac:groups=hubcredits.io,namespace=system,resources=usagerecords,verbs=create;list;delete

// The results of hubcredits_usage_records_total.
const (
	usageWritten   = "written"
	usageExisted   = "existed"
	usageFailed    = "failed"
	usageNoAPI     = "unavailable"
	usageInvalid   = "invalid"
	usageCollected = "collected"
)

// usageRetry is how soon an account whose usage record could not be
// written is looked at again.
const usageRetry = 10 * time.Second

var usageRecords = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "hubcredits_usage_records_total",
	Help: "UsageRecords by result: written, existed (written before: a retry or a run after a crash), failed (retried; the server's entry is kept until written), unavailable (no UsageRecord API: the record is lost), invalid (the API's schema refuses the record, e.g. a name too long: the record is lost), collected (deleted after the retention).",
}, []string{"result"})

var usageWriteSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
	Name:    "hubcredits_usage_record_write_seconds",
	Help:    "Time to write one UsageRecord (a create call, made in the reconcile that drops the ended server's entry).",
	Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2},
})

func init() {
	metrics.Registry.MustRegister(usageRecords, usageWriteSeconds)
	for _, r := range []string{usageWritten, usageExisted, usageFailed, usageNoAPI, usageInvalid, usageCollected} {
		usageRecords.WithLabelValues(r)
	}
}

// recordUsage writes the UsageRecord of each server whose end the wallet,
// as read, has committed (billing.NeedsUsageRecord), inline or on its
// pages (pageEntries, as the pages show them), before the settle that
// drops its entry; recorded holds (and gets) the ids whose record exists,
// not written again. It returns the ids whose record is not written:
// Settle and SettlePage keep their entries, and the account is looked at
// again in usageRetry.
// The record's name comes from the reservation, so a write that already
// happened (a retry, another replica, a run before a crash) answers
// AlreadyExists, which is success. Without the UsageRecord API (its CRD
// not installed: an upgrade that skipped it) the record is lost rather
// than the ledger kept growing; that is counted and logged. So is a record
// the API's schema refuses (schemaInvalid: a username or server name
// longer than the API holds, from a pod admitted before the webhook
// checked them, or never seen by it): retrying cannot help, and keeping the
// entry would hold the account's deletion for ever.
func (r *CreditAccountReconciler) recordUsage(ctx context.Context, wallet *hcv1.CreditAccount, pageEntries []hcv1.ServerCharge,
	recorded map[string]bool) map[string]bool {
	awaiting := map[string]bool{}
	entries := slices.Concat(wallet.Status.Servers, pageEntries)
	for i := range entries {
		e := &entries[i]
		if recorded[e.ID] || !billing.NeedsUsageRecord(wallet, e) {
			continue
		}
		rec := billing.UsageOf(wallet, e)
		start := r.Clock.Now()
		err := r.Client.Create(ctx, rec)
		usageWriteSeconds.Observe(r.Clock.Since(start).Seconds())
		switch {
		case err == nil:
			usageRecords.WithLabelValues(usageWritten).Inc()
		case apierrors.IsAlreadyExists(err):
			usageRecords.WithLabelValues(usageExisted).Inc()
		case meta.IsNoMatchError(err) || apierrors.IsNotFound(err):
			usageRecords.WithLabelValues(usageNoAPI).Inc()
			log.FromContext(ctx).Error(err, "No UsageRecord API: the record of an ended server is lost (install the UsageRecord CRD)",
				"account", klog.KObj(wallet), "server", e.Pod, "reservation", e.ID)
		case schemaInvalid(err):
			usageRecords.WithLabelValues(usageInvalid).Inc()
			log.FromContext(ctx).Error(err, "The API refuses the usage record of an ended server; the record is lost",
				"account", klog.KObj(wallet), "server", e.Pod, "reservation", e.ID)
		default:
			usageRecords.WithLabelValues(usageFailed).Inc()
			log.FromContext(ctx).Info("Could not write a usage record; the server's entry is kept until it is written",
				"account", klog.KObj(wallet), "server", e.Pod, "error", err.Error())
			awaiting[e.ID] = true
			continue
		}
		recorded[e.ID] = true
	}
	return awaiting
}

// schemaInvalid reports whether err is the API server refusing an object's
// own fields (422 Invalid with causes that name a field: the CRD's schema
// or its CEL rules). An admission policy's denial is Invalid too, by
// default, but names no field; it may be lifted, so it is retried.
func schemaInvalid(err error) bool {
	if !apierrors.IsInvalid(err) {
		return false
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		return false
	}
	causes := status.Status().Details.Causes
	return len(causes) > 0 && !slices.ContainsFunc(causes, func(c metav1.StatusCause) bool { return c.Field == "" })
}

// UsageCollector deletes the UsageRecords older than Retention (0: keeps
// them for ever), on the leader, every Every, listing them live a page at
// a time.
type UsageCollector struct {
	Client client.Client
	// Reader lists the records (the API reader: they are not cached).
	Reader client.Reader
	Clock  clock.Clock
	// Namespace is the hub's namespace ("" all namespaces).
	Namespace string
	Retention time.Duration
	// Every is the time between two passes (0: UsageCollectEvery).
	Every time.Duration
}

// UsageCollectEvery is how often expired records are looked for: a record
// lives at most this much longer than the retention.
func UsageCollectEvery(retention time.Duration) time.Duration {
	return min(time.Hour, max(retention/4, time.Second))
}

// usagePage is how many records one list call returns.
const usagePage = 500

var (
	_ manager.Runnable               = (*UsageCollector)(nil)
	_ manager.LeaderElectionRunnable = (*UsageCollector)(nil)
)

// NeedLeaderElection implements manager.LeaderElectionRunnable: only the
// leader deletes.
func (c *UsageCollector) NeedLeaderElection() bool { return true }

// Start implements manager.Runnable.
func (c *UsageCollector) Start(ctx context.Context) error {
	if c.Retention <= 0 {
		return nil
	}
	every := c.Every
	if every <= 0 {
		every = UsageCollectEvery(c.Retention)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := c.Collect(ctx); err != nil && ctx.Err() == nil {
			log.FromContext(ctx).Info("Collecting expired usage records failed; retrying at the next pass", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Collect deletes the records older than the retention, once.
func (c *UsageCollector) Collect(ctx context.Context) error {
	now := c.Clock.Now()
	cont := ""
	for {
		var list hcv1.UsageRecordList
		opts := []client.ListOption{client.Limit(usagePage), client.Continue(cont)}
		if c.Namespace != "" {
			opts = append(opts, client.InNamespace(c.Namespace))
		}
		if err := c.Reader.List(ctx, &list, opts...); err != nil {
			return err
		}
		for i := range list.Items {
			rec := &list.Items[i]
			if !billing.UsageExpired(rec, now, c.Retention) {
				continue
			}
			err := c.Client.Delete(ctx, rec, client.Preconditions{UID: &rec.UID})
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				return err
			}
			if err == nil {
				usageRecords.WithLabelValues(usageCollected).Inc()
			}
		}
		if cont = list.Continue; cont == "" {
			return nil
		}
	}
}
