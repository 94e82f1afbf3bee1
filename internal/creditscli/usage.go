package creditscli

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
)

// Usage keys: what usage groups the records by (--by).
const (
	keyNamespace = "namespace"
	keyUser      = "user"
	keyAccount   = "account"
	keyPolicy    = "policy"
	keyProject   = "project"
	keyPayer     = "payer"
)

var usageKeys = []string{keyNamespace, keyUser, keyAccount, keyPolicy, keyProject, keyPayer}

// Usage is what `kubectl credits usage` prints with -o json|yaml.
type Usage struct {
	// Since is the start of the window: records of servers that ended at
	// or after it count.
	Since time.Time `json:"since"`
	// By are the keys of the rows.
	By    []string   `json:"by"`
	Rows  []UsageRow `json:"rows"`
	Total UsageRow   `json:"total"`
}

// UsageRow is the usage of one group of records.
type UsageRow struct {
	// Keys are the group's values, by key (user, account, ...).
	Keys map[string]string `json:"keys,omitempty"`
	// Servers is the number of server sessions.
	Servers int64 `json:"servers"`
	// Periods is the number of billing periods paid.
	Periods int64 `json:"periods"`
	// Seconds is the servers' run time.
	Seconds int64 `json:"seconds"`
	// Credits is what was paid: by every payer, or by the row's payer
	// when grouped by payer.
	Credits int64 `json:"credits"`
}

type usageOptions struct {
	since         string
	account       string
	user          string
	by            string
	output        string
	allNamespaces bool
}

func newUsageCommand(k *kube, streams genericiooptions.IOStreams) *cobra.Command {
	o := &usageOptions{}
	cmd := &cobra.Command{
		Use:   "usage [--since 30d] [--account A] [--user U] [--by user,account,policy] [-o table|csv|json|yaml]",
		Short: "Credits used per user, account and policy, from the UsageRecords of ended servers",
		Long: "usage adds up the UsageRecords the operator writes when a server's billing ends (one per server, " +
			"kept for --usage-retention, 90 days by default): server sessions, periods, run time and credits, " +
			"grouped by --by (any of " + strings.Join(usageKeys, ", ") + "). Grouped by payer, each server's " +
			"credits are split between the accounts that paid them (a project pool first, then the wallet); " +
			"otherwise a row counts everything its servers cost. Servers still running are not counted " +
			"(kubectl credits status shows them).",
		Example: "  kubectl credits usage -n jhub --since 30d\n" +
			"  kubectl credits usage -n jhub --account physics --by payer\n" +
			"  kubectl credits usage -n jhub --user alice --by policy -o csv",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(o.output, outputTable, outputCSV, outputJSON, outputYAML); err != nil {
				return err
			}
			window, err := parseSince(o.since)
			if err != nil {
				return err
			}
			by, err := parseBy(o.by)
			if err != nil {
				return err
			}
			if o.allNamespaces && !slices.Contains(by, keyNamespace) {
				by = append([]string{keyNamespace}, by...)
			}
			records, err := o.list(cmd.Context(), k)
			if err != nil {
				return err
			}
			u := summarize(records, usageFilter{since: time.Now().Add(-window), account: o.account, user: o.user}, by)
			switch o.output {
			case outputTable:
				return printUsageTable(streams.Out, u)
			case outputCSV:
				return printUsageCSV(streams.Out, u)
			}
			return printStructured(streams.Out, o.output, u)
		},
	}
	cmd.Flags().StringVar(&o.since, "since", "30d", "Count servers that ended within this window (e.g. 30d, 12h, 90m).")
	cmd.Flags().StringVar(&o.account, "account", "", "Only servers billed to or paid by this account (a wallet, or a project pool).")
	cmd.Flags().StringVar(&o.user, "user", "", "Only servers of this JupyterHub user.")
	cmd.Flags().StringVar(&o.by, "by", "user,account,policy", "Group by these keys: "+strings.Join(usageKeys, ", ")+".")
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "Every namespace (adds the namespace key).")
	addOutputFlag(cmd, &o.output, outputTable, outputCSV, outputJSON, outputYAML)
	return cmd
}

// list reads the UsageRecords of the namespace (or of all).
func (o *usageOptions) list(ctx context.Context, k *kube) ([]hcv1.UsageRecord, error) {
	c, err := k.client()
	if err != nil {
		return nil, err
	}
	var opts []client.ListOption
	if !o.allNamespaces {
		ns, err := k.namespace()
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.InNamespace(ns))
	}
	var out []hcv1.UsageRecord
	var list hcv1.UsageRecordList
	for {
		if err := c.List(ctx, &list, append(opts, client.Limit(500), client.Continue(list.Continue))...); err != nil {
			return nil, err
		}
		out = append(out, list.Items...)
		if list.Continue == "" {
			return out, nil
		}
	}
}

// usageFilter selects records.
type usageFilter struct {
	since         time.Time
	account, user string
}

// keep says whether the filter selects record r.
func (f usageFilter) keep(r *hcv1.UsageRecord) bool {
	if r.End.Time.Before(f.since) || f.user != "" && r.User != f.user {
		return false
	}
	if f.account == "" || r.Account == f.account || r.Project == f.account {
		return true
	}
	return slices.ContainsFunc(r.Payers, func(p hcv1.UsagePayer) bool { return p.Account == f.account })
}

// summarize adds up the records f selects, grouped by the keys by. Rows
// are sorted by credits, the largest first.
func summarize(records []hcv1.UsageRecord, f usageFilter, by []string) Usage {
	u := Usage{Since: f.since.UTC().Truncate(time.Second), By: by, Rows: []UsageRow{}}
	rows := map[string]*UsageRow{}
	add := func(keys map[string]string, r *hcv1.UsageRecord, credits int64) {
		id := groupID(keys, by)
		row := rows[id]
		if row == nil {
			row = &UsageRow{Keys: keys}
			rows[id] = row
		}
		row.Servers++
		row.Periods += r.Periods
		row.Seconds += int64(r.End.Sub(r.Start.Time).Seconds())
		row.Credits += credits
	}
	for i := range records {
		r := &records[i]
		if !f.keep(r) {
			continue
		}
		u.Total.Servers++
		u.Total.Periods += r.Periods
		u.Total.Seconds += int64(r.End.Sub(r.Start.Time).Seconds())
		if !slices.Contains(by, keyPayer) {
			u.Total.Credits += r.Total
			add(recordKeys(r, by, ""), r, r.Total)
			continue
		}
		for _, p := range r.Payers {
			if f.account != "" && p.Account != f.account && r.Account != f.account {
				continue // another account's share of a pool's server
			}
			u.Total.Credits += p.Credits
			add(recordKeys(r, by, p.Account), r, p.Credits)
		}
	}
	for _, row := range rows {
		u.Rows = append(u.Rows, *row)
	}
	sort.Slice(u.Rows, func(i, j int) bool {
		if u.Rows[i].Credits != u.Rows[j].Credits {
			return u.Rows[i].Credits > u.Rows[j].Credits
		}
		return groupID(u.Rows[i].Keys, by) < groupID(u.Rows[j].Keys, by)
	})
	return u
}

// recordKeys are the values of record r for the keys by.
func recordKeys(r *hcv1.UsageRecord, by []string, payer string) map[string]string {
	keys := make(map[string]string, len(by))
	for _, k := range by {
		switch k {
		case keyNamespace:
			keys[k] = r.Namespace
		case keyUser:
			keys[k] = r.User
		case keyAccount:
			keys[k] = r.Account
		case keyPolicy:
			keys[k] = r.Policy
		case keyProject:
			keys[k] = r.Project
		case keyPayer:
			keys[k] = payer
		}
	}
	return keys
}

// groupID is the row's identity: its key values in the order of by.
func groupID(keys map[string]string, by []string) string {
	var b strings.Builder
	for _, k := range by {
		b.WriteString(keys[k])
		b.WriteByte(0)
	}
	return b.String()
}

// parseSince is a window: a Go duration, or whole days and weeks (30d,
// 2w), as kubectl's ages read.
func parseSince(s string) (time.Duration, error) {
	bad := fmt.Errorf("--since %q is not a duration (e.g. 30d, 2w, 12h, 90m)", s)
	if s == "" {
		return 0, bad
	}
	var d time.Duration
	var err error
	switch unit := s[len(s)-1]; unit {
	case 'd', 'w':
		n, perr := strconv.Atoi(s[:len(s)-1])
		if perr != nil || n < 0 {
			return 0, bad
		}
		d = time.Duration(n) * 24 * time.Hour
		if unit == 'w' {
			d *= 7
		}
	default:
		if d, err = time.ParseDuration(s); err != nil {
			return 0, bad
		}
	}
	if d <= 0 {
		return 0, errors.New("--since must be longer than 0")
	}
	return d, nil
}

// parseBy is a list of usage keys.
func parseBy(s string) ([]string, error) {
	var by []string
	for _, k := range strings.Split(s, ",") {
		k = strings.TrimSpace(k)
		if !slices.Contains(usageKeys, k) {
			return nil, fmt.Errorf("--by %q: %q is not one of %s", s, k, strings.Join(usageKeys, ", "))
		}
		if !slices.Contains(by, k) {
			by = append(by, k)
		}
	}
	return by, nil
}

// printUsageTable prints the rows and a total, kubectl get's way.
func printUsageTable(out io.Writer, u Usage) error {
	if len(u.Rows) == 0 {
		_, err := fmt.Fprintf(out, "No server ended since %s.\n", u.Since.Format(time.RFC3339))
		return err
	}
	w := printers.GetNewTabWriter(out)
	header := make([]string, 0, len(u.By)+4)
	for _, k := range u.By {
		header = append(header, strings.ToUpper(k))
	}
	fmt.Fprintln(w, strings.Join(append(header, "SERVERS", "PERIODS", "RUN TIME", "CREDITS"), "\t"))
	line := func(cells []string, r UsageRow) {
		fmt.Fprintln(w, strings.Join(append(cells, strconv.FormatInt(r.Servers, 10), strconv.FormatInt(r.Periods, 10),
			billing.FormatDuration(time.Duration(r.Seconds)*time.Second), strconv.FormatInt(r.Credits, 10)), "\t"))
	}
	for _, r := range u.Rows {
		cells := make([]string, 0, len(u.By))
		for _, k := range u.By {
			cells = append(cells, orNone(r.Keys[k]))
		}
		line(cells, r)
	}
	total := make([]string, len(u.By))
	total[0] = "TOTAL"
	line(total, u.Total)
	return w.Flush()
}

// printUsageCSV prints the rows as CSV with a header (no total line:
// spreadsheets add it up).
func printUsageCSV(out io.Writer, u Usage) error {
	w := csv.NewWriter(out)
	header := append(slices.Clone(u.By), "servers", "periods", "seconds", "credits")
	if err := w.Write(header); err != nil {
		return err
	}
	for _, r := range u.Rows {
		rec := make([]string, 0, len(header))
		for _, k := range u.By {
			rec = append(rec, r.Keys[k])
		}
		rec = append(rec, strconv.FormatInt(r.Servers, 10), strconv.FormatInt(r.Periods, 10),
			strconv.FormatInt(r.Seconds, 10), strconv.FormatInt(r.Credits, 10))
		if err := w.Write(rec); err != nil {
			return err
		}
	}
	w.Flush()
	return w.Error()
}
