package billing

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// Usage records: the durable history of ended servers. A wallet's entry
// whose end is committed (endedAt set and written) is final: it holds
// everything the server cost, per payer. The operator writes the server's
// UsageRecord from it before the entry is dropped (Settle keeps an entry
// whose record is not written yet, Options.AwaitingRecord), and names the
// record after the reservation, so a retry or a run after a crash writes
// the same object: exactly one record per ended server.

// maxRecordNamePod bounds the pod-name part of a record's name (the hash
// keeps the name unique; the pod name makes it readable).
const maxRecordNamePod = 40

// UsageRecordName is the name of the record of the server with reservation
// id and pod: "<pod>-<16 hex digits of sha256(id)>". The same server always
// gets the same name; two servers get the same name only if 64 bits of
// their ids' hashes collide.
func UsageRecordName(id, pod string) string {
	sum := sha256.Sum256([]byte(id))
	prefix := strings.TrimRight(pod[:min(len(pod), maxRecordNamePod)], "-.")
	if prefix == "" {
		prefix = "server"
	}
	return prefix + "-" + hex.EncodeToString(sum[:8])
}

// NeedsUsageRecord reports whether entry, as stored on wallet, is a
// server whose billing ended on this wallet: its record is due before the
// entry may be dropped. A pool's record of a wallet's server is not (the
// wallet's entry records both payers), and a reservation whose server never
// ran is refunded and dropped without one.
func NeedsUsageRecord(wallet *hcv1.CreditAccount, entry *hcv1.ServerCharge) bool {
	return entry.EndedAt != nil && entry.Wallet == wallet.Name
}

// UsageOf is the record of an ended server from its wallet's entry
// (NeedsUsageRecord), in the wallet's namespace.
func UsageOf(wallet *hcv1.CreditAccount, entry *hcv1.ServerCharge) *hcv1.UsageRecord {
	start := entry.ReservedAt
	if entry.StartedAt != nil {
		start = *entry.StartedAt
	}
	end := start
	if entry.EndedAt != nil && entry.EndedAt.After(start.Time) {
		end = *entry.EndedAt
	}
	r := &hcv1.UsageRecord{
		ObjectMeta:  metav1.ObjectMeta{Namespace: wallet.Namespace, Name: UsageRecordName(entry.ID, entry.Pod)},
		Reservation: entry.ID, User: entry.User, Server: entry.Pod, ServerName: entry.ServerName,
		Account: entry.Wallet, Project: entry.Project, Policy: entry.Policy,
		Price: hcv1.UsagePrice{Value: entry.BillingValue, IntervalSeconds: max(1, int64(entry.BillingInterval.Duration/time.Second))},
		Start: start, End: end, Periods: entry.PeriodsPaid,
		Total: addSat(entry.Paid, entry.ProjectPaid),
	}
	if entry.Project != "" {
		r.Payers = append(r.Payers, hcv1.UsagePayer{Account: entry.Project, Credits: entry.ProjectPaid})
	}
	r.Payers = append(r.Payers, hcv1.UsagePayer{Account: entry.Wallet, Credits: entry.Paid})
	return r
}

// UsageExpired reports whether a record is older than the retention (0
// keeps records for ever): its end lies more than retention before now.
func UsageExpired(r *hcv1.UsageRecord, now time.Time, retention time.Duration) bool {
	return retention > 0 && now.Sub(r.End.Time) > retention
}
