package creditscli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
)

// maxEvents is how many of an account's Events status shows, newest last.
const maxEvents = 10

// AccountStatus is what `kubectl credits status` shows of one account
// (and prints with -o json|yaml).
type AccountStatus struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Users     []string `json:"users,omitempty"`
	// Groups are the JupyterHub groups whose members may spend from it.
	Groups  []string `json:"groups,omitempty"`
	Project string   `json:"project,omitempty"`
	Balance int64    `json:"balance"`
	Cap     int64    `json:"cap"`
	Opened  bool     `json:"opened"`
	// RunningServers is status.runningServers (kubectl get ca's Running).
	RunningServers int32 `json:"runningServers"`
	// Grant is the schedule, and the next grant (amount up to the cap).
	Grant  *GrantStatus `json:"grant,omitempty"`
	Totals Totals       `json:"totals"`
	// Servers are the servers the account pays for (or co-funds) that
	// have not ended: in its status.servers and on its LedgerPages.
	Servers    []hcv1.ServerCharge `json:"servers,omitempty"`
	Conditions []metav1.Condition  `json:"conditions,omitempty"`
	Ledger     []hcv1.LedgerEntry  `json:"ledger,omitempty"`
	// Events are the account's most recent Events (denials, stops,
	// refused edits), newest last.
	Events []Event `json:"events,omitempty"`
}

// GrantStatus is an account's grant schedule.
type GrantStatus struct {
	Amount     int64     `json:"amount"`
	Interval   string    `json:"interval"`
	NextAt     time.Time `json:"nextAt"`
	NextAmount int64     `json:"nextAmount"`
}

// Totals are the account's counters since it was opened.
type Totals struct {
	Charged  int64 `json:"charged"`
	Refunded int64 `json:"refunded"`
	Granted  int64 `json:"granted"`
	ToppedUp int64 `json:"toppedUp"`
	// Adjusted is the net of the adjustments applied.
	Adjusted int64 `json:"adjusted"`
}

// Event is one Event on an account.
type Event struct {
	Type    string    `json:"type"`
	Reason  string    `json:"reason"`
	Message string    `json:"message"`
	Count   int32     `json:"count,omitempty"`
	Last    time.Time `json:"last"`
}

type statusOptions struct {
	user   string
	groups []string
	output string
}

func newStatusCommand(k *kube, streams genericiooptions.IOStreams) *cobra.Command {
	o := &statusOptions{}
	cmd := &cobra.Command{
		Use:   "status [ACCOUNT | --user USER]",
		Short: "Show accounts: balance, cap, grants, running servers, conditions, ledger and Events",
		Long: "Without arguments, one line per account of the namespace. With an account name, or --user " +
			"(every account that lists the user), the account in full: balance, cap, grant schedule, the " +
			"servers it pays for with their prices and paid-through times, conditions, the last ledger " +
			"movements and the account's recent Events. With --groups, the user's JupyterHub groups: when no " +
			"account lists the user, the accounts that list one of the groups (as admission picks the payer), " +
			"and when none does either, the CreditAccountTemplate their first spawn creates a wallet from.",
		Example: "  kubectl credits status -n jhub\n  kubectl credits status alice -n jhub\n  kubectl credits status --user alice -o yaml\n" +
			"  kubectl credits status --user zoe --groups physics-101,staff -n jhub",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(o.output, outputTable, outputJSON, outputYAML); err != nil {
				return err
			}
			if len(args) == 1 && o.user != "" {
				return errors.New("give an account or --user, not both")
			}
			if len(o.groups) > 0 && o.user == "" {
				return errors.New("--groups needs --user")
			}
			return o.run(cmd.Context(), k, streams.Out, args)
		},
	}
	cmd.Flags().StringVar(&o.user, "user", "", "Show every account that lists this JupyterHub user.")
	cmd.Flags().StringSliceVar(&o.groups, "groups", nil, "With --user: the user's JupyterHub groups (e.g. physics-101,staff), for the accounts and CreditAccountTemplates that admit members of a group.")
	addOutputFlag(cmd, &o.output, outputTable, outputJSON, outputYAML)
	return cmd
}

func (o *statusOptions) run(ctx context.Context, k *kube, out io.Writer, args []string) error {
	c, err := k.client()
	if err != nil {
		return err
	}
	ns, err := k.namespace()
	if err != nil {
		return err
	}
	now := time.Now()
	var accounts []hcv1.CreditAccount
	detailed := true
	switch {
	case len(args) == 1:
		a := hcv1.CreditAccount{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: args[0]}, &a); err != nil {
			return err
		}
		accounts = append(accounts, a)
	default:
		var list hcv1.CreditAccountList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		if o.user == "" {
			accounts, detailed = list.Items, false
			break
		}
		for i := range list.Items {
			if billing.Lists(&list.Items[i], o.user) {
				accounts = append(accounts, list.Items[i])
			}
		}
		if len(accounts) == 0 { // as admission: groups count only then
			for i := range list.Items {
				if billing.ListsGroup(&list.Items[i], o.groups) {
					accounts = append(accounts, list.Items[i])
				}
			}
		}
		if len(accounts) == 0 {
			return o.noAccount(ctx, c, ns)
		}
	}
	views := make([]AccountStatus, 0, len(accounts))
	var pages []hcv1.LedgerPage
	for i := range accounts {
		var events []corev1.Event
		if detailed {
			if events, err = accountEvents(ctx, c, &accounts[i]); err != nil {
				return err
			}
			if pages, err = ledgerPages(ctx, c, &accounts[i], pages); err != nil {
				return err
			}
		}
		v, err := accountStatus(&accounts[i], pages, events, now)
		if err != nil {
			return err
		}
		views = append(views, v)
	}
	if o.output != outputTable {
		return printStructured(out, o.output, map[string]any{"items": views})
	}
	if !detailed {
		if len(views) == 0 {
			_, err := fmt.Fprintf(out, "No credit accounts in namespace %s.\n", ns)
			return err
		}
		return printAccountTable(out, views, now)
	}
	for i, v := range views {
		if i > 0 {
			fmt.Fprintln(out)
		}
		if err := printAccountStatus(out, v, now); err != nil {
			return err
		}
	}
	return nil
}

// noAccount is the error of --user for a user no account lists (nor, with
// --groups, one of their groups): with --groups, it names the
// CreditAccountTemplate the user's first spawn creates a wallet from, if
// one applies (billing.SelectTemplate, as the webhook picks it).
func (o *statusOptions) noAccount(ctx context.Context, c client.Client, ns string) error {
	if len(o.groups) == 0 {
		return fmt.Errorf("no credit account in namespace %s lists user %q", ns, o.user)
	}
	msg := fmt.Sprintf("no credit account in namespace %s lists user %q or one of the groups %s", ns, o.user, strings.Join(o.groups, ","))
	var list hcv1.CreditAccountTemplateList
	if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return fmt.Errorf("%s (and the CreditAccountTemplates cannot be read: %w)", msg, err)
	}
	templates := make([]*hcv1.CreditAccountTemplate, len(list.Items))
	for i := range list.Items {
		templates[i] = &list.Items[i]
	}
	t := billing.SelectTemplate(o.groups, templates)
	if t == nil {
		return fmt.Errorf("%s, and no CreditAccountTemplate lists one of the groups: a spawn is denied, unless the operator runs with --auto-create-wallets", msg)
	}
	return fmt.Errorf("%s; the first spawn creates the wallet %s from the CreditAccountTemplate %s (%s)", msg, billing.WalletName(o.user), t.Name, templateText(t))
}

// templateText is what a template's wallet gets: cap, initial balance,
// grant and project.
func templateText(t *hcv1.CreditAccountTemplate) string {
	parts := []string{fmt.Sprintf("cap %d", t.Spec.Cap)}
	if t.Spec.InitialBalance != nil {
		parts = append(parts, fmt.Sprintf("initial balance %d", *t.Spec.InitialBalance))
	}
	if g := t.Spec.Grant; g != nil {
		parts = append(parts, fmt.Sprintf("+%d every %s", g.Amount, billing.FormatDuration(g.Interval.Duration)))
	}
	if t.Spec.Project != "" {
		parts = append(parts, "project "+t.Spec.Project+" pays first")
	}
	return strings.Join(parts, ", ")
}

// accountEvents lists the Events about account a.
func accountEvents(ctx context.Context, c client.Client, a *hcv1.CreditAccount) ([]corev1.Event, error) {
	var list corev1.EventList
	sel := fields.SelectorFromSet(fields.Set{
		"involvedObject.kind": "CreditAccount",
		"involvedObject.name": a.Name,
	})
	if err := c.List(ctx, &list, client.InNamespace(a.Namespace), client.MatchingFieldsSelector{Selector: sel}); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// ledgerPages lists the namespace's LedgerPages once the first account
// that has pages needs them (listed is what an earlier call returned).
func ledgerPages(ctx context.Context, c client.Client, a *hcv1.CreditAccount, listed []hcv1.LedgerPage) ([]hcv1.LedgerPage, error) {
	if (a.Status.Pages == 0 && len(a.Status.Pending) == 0) || listed != nil {
		return listed, nil
	}
	var list hcv1.LedgerPageList
	if err := c.List(ctx, &list, client.InNamespace(a.Namespace)); err != nil {
		return nil, fmt.Errorf("account %s keeps the entries of %d server(s) on its LedgerPages, which cannot be read: %w",
			a.Name, a.Status.PagedServers, err)
	}
	if list.Items == nil {
		list.Items = []hcv1.LedgerPage{}
	}
	return list.Items, nil
}

// accountStatus is the view of account a with its LedgerPages (those of
// pages that are a's: billing.PageEntries) and its Events.
func accountStatus(a *hcv1.CreditAccount, pages []hcv1.LedgerPage, events []corev1.Event, now time.Time) (AccountStatus, error) {
	v := AccountStatus{
		Namespace: a.Namespace, Name: a.Name, Users: a.Spec.Users, Groups: a.Spec.Groups, Project: a.Spec.Project,
		Balance: a.Status.Balance, Cap: a.Spec.Cap, Opened: a.Status.OpenedAt != nil,
		RunningServers: a.Status.RunningServers,
		Totals: Totals{
			Charged: a.Status.TotalCharged, Refunded: a.Status.TotalRefunded,
			Granted: a.Status.TotalGranted, ToppedUp: a.Status.TotalToppedUp,
			Adjusted: a.Status.TotalAdjusted,
		},
		Conditions: a.Status.Conditions,
		Ledger:     a.Status.Ledger,
	}
	if at, amount, ok := billing.NextGrant(a, now); ok {
		v.Grant = &GrantStatus{
			Amount: a.Spec.Grant.Amount, Interval: billing.FormatDuration(a.Spec.Grant.Interval.Duration),
			NextAt: at.UTC(), NextAmount: amount,
		}
	}
	own := map[int32]*hcv1.LedgerPage{}
	for i := range pages {
		if n, err := billing.PageNumber(a.Name, &pages[i]); err == nil {
			own[n] = &pages[i]
		}
	}
	paged, err := billing.PageEntries(a, own)
	if err != nil {
		return v, fmt.Errorf("account %s: its LedgerPages: %w", a.Name, err)
	}
	for _, s := range slices.Concat(a.Status.Servers, paged) {
		if s.EndedAt == nil {
			v.Servers = append(v.Servers, s)
		}
	}
	v.Events = recentEvents(events, maxEvents)
	return v, nil
}

// recentEvents are the n most recent events, oldest first.
func recentEvents(events []corev1.Event, n int) []Event {
	out := make([]Event, 0, len(events))
	for _, e := range events {
		out = append(out, Event{Type: e.Type, Reason: e.Reason, Message: e.Message, Count: e.Count, Last: eventTime(e)})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Last.Before(out[j].Last) })
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

// eventTime is when an Event last happened, whichever API wrote it.
func eventTime(e corev1.Event) time.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

// printAccountTable prints one line per account, kubectl get's way.
func printAccountTable(out io.Writer, views []AccountStatus, now time.Time) error {
	w := printers.GetNewTabWriter(out)
	fmt.Fprintln(w, "NAME\tUSERS\tBALANCE\tCAP\tGRANT\tPROJECT\tRUNNING\tCONDITIONS")
	for _, v := range views {
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\t%d\t%s\n", v.Name, usersText(v.Users), v.Balance, v.Cap,
			grantText(v.Grant, now, false), orNone(v.Project), v.RunningServers, conditionsText(v.Conditions))
	}
	return w.Flush()
}

// printAccountStatus prints one account in full, kubectl describe's way.
func printAccountStatus(out io.Writer, v AccountStatus, now time.Time) error {
	w := printers.GetNewTabWriter(out)
	fmt.Fprintf(w, "Account:\t%s\n", v.Name)
	fmt.Fprintf(w, "Namespace:\t%s\n", v.Namespace)
	fmt.Fprintf(w, "Users:\t%s\n", usersText(v.Users))
	if len(v.Groups) > 0 {
		fmt.Fprintf(w, "Groups:\t%s\n", strings.Join(v.Groups, ","))
	}
	if v.Project != "" {
		fmt.Fprintf(w, "Project:\t%s (pays first)\n", v.Project)
	}
	balance := fmt.Sprintf("%d", v.Balance)
	if !v.Opened {
		balance += " (not opened yet: is the operator running?)"
	}
	fmt.Fprintf(w, "Balance:\t%s\n", balance)
	fmt.Fprintf(w, "Cap:\t%d\n", v.Cap)
	fmt.Fprintf(w, "Grant:\t%s\n", grantText(v.Grant, now, true))
	fmt.Fprintf(w, "Totals:\tcharged %d, refunded %d, granted %d, topped up %d, adjusted %s\n",
		v.Totals.Charged, v.Totals.Refunded, v.Totals.Granted, v.Totals.ToppedUp, signed(v.Totals.Adjusted))
	if err := w.Flush(); err != nil {
		return err
	}
	section(out, "Servers", len(v.Servers))
	if len(v.Servers) > 0 {
		w = printers.GetNewTabWriter(out)
		fmt.Fprintln(w, "  USER\tSERVER\tPOD\tPOLICY\tPRICE\tSTATE\tPAID THROUGH\tPERIODS\tPAID")
		for _, s := range v.Servers {
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", s.User, orNone(s.ServerName), s.Pod, orNone(s.Policy),
				billing.PriceText(billing.Price{Value: s.BillingValue, Interval: s.BillingInterval.Duration}),
				serverState(s, v.Name, now), paidThrough(s.PaidThrough, now), s.PeriodsPaid, paidText(s, v.Name))
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	section(out, "Conditions", len(v.Conditions))
	if len(v.Conditions) > 0 {
		w = printers.GetNewTabWriter(out)
		fmt.Fprintln(w, "  TYPE\tSTATUS\tREASON\tAGE\tMESSAGE")
		for _, c := range v.Conditions {
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", c.Type, c.Status, c.Reason, age(c.LastTransitionTime.Time, now), c.Message)
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	section(out, "Ledger (newest last)", len(v.Ledger))
	if len(v.Ledger) > 0 {
		w = printers.GetNewTabWriter(out)
		fmt.Fprintln(w, "  AGE\tKIND\tAMOUNT\tBALANCE\tSUBJECT\tMESSAGE")
		for _, e := range v.Ledger {
			fmt.Fprintf(w, "  %s\t%s\t%s\t%d\t%s\t%s\n", age(e.Time.Time, now), ledgerKind(e), signed(e.Amount), e.Balance, orNone(e.Subject), e.Message)
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	section(out, "Events (newest last)", len(v.Events))
	if len(v.Events) > 0 {
		w = printers.GetNewTabWriter(out)
		fmt.Fprintln(w, "  TYPE\tREASON\tAGE\tCOUNT\tMESSAGE")
		for _, e := range v.Events {
			fmt.Fprintf(w, "  %s\t%s\t%s\t%d\t%s\n", e.Type, e.Reason, age(e.Last, now), max(e.Count, 1), e.Message)
		}
		return w.Flush()
	}
	return nil
}

// section prints a section's title, "<none>" when it is empty.
func section(out io.Writer, title string, n int) {
	if n == 0 {
		fmt.Fprintf(out, "%s:  <none>\n", title)
		return
	}
	fmt.Fprintf(out, "%s:\n", title)
}

// usersText lists users, or "<none>" (a pool may list none).
func usersText(users []string) string {
	return orNone(strings.Join(users, ","))
}

// grantText is "+5 every 1h (next +5 in 12m)", "+5 every 1h" (long=false
// leaves the next grant out), or "<none>".
func grantText(g *GrantStatus, now time.Time, long bool) string {
	if g == nil {
		return "<none>"
	}
	s := fmt.Sprintf("+%d every %s", g.Amount, g.Interval)
	if !long {
		return s
	}
	in := billing.FormatDuration(g.NextAt.Sub(now).Round(time.Second))
	if g.NextAmount == 0 {
		return s + fmt.Sprintf(" (next in %s adds nothing: the balance is at the cap)", in)
	}
	return s + fmt.Sprintf(" (next +%d in %s, at %s)", g.NextAmount, in, g.NextAt.UTC().Format(time.RFC3339))
}

// conditionsText lists the conditions that are true, kubectl get's way
// ("Ready,Low").
func conditionsText(conds []metav1.Condition) string {
	var on []string
	for _, c := range conds {
		if c.Status == metav1.ConditionTrue {
			on = append(on, c.Type)
		}
	}
	return orNone(strings.Join(on, ","))
}

// serverState is Pending (reserved, not started), Running for how long,
// or Stopping once a stop was asked for. A pool's entry for a wallet's
// server does not follow the clock: the wallet's entry does.
func serverState(s hcv1.ServerCharge, account string, now time.Time) string {
	switch {
	case s.Wallet != account && s.StartedAt == nil && s.StopRequestedAt == nil:
		return "see wallet " + s.Wallet
	case s.StopRequestedAt != nil:
		return "Stopping (" + age(s.StopRequestedAt.Time, now) + ")"
	case s.StartedAt == nil:
		return "Pending (" + age(s.ReservedAt.Time, now) + ")"
	}
	return "Running (" + age(s.StartedAt.Time, now) + ")"
}

// paidThrough is "in 7m (05:40:00Z)", or "<none>" before the server runs.
func paidThrough(t *metav1.Time, now time.Time) string {
	if t == nil {
		return "<none>"
	}
	at := t.UTC().Format("15:04:05Z")
	if t.After(now) {
		return "in " + billing.FormatDuration(t.Sub(now).Round(time.Second)) + " (" + at + ")"
	}
	return billing.FormatDuration(now.Sub(t.Time).Round(time.Second)) + " ago (" + at + ")"
}

// paidText is what account paid for the server, and who else did: a
// wallet's entry records the pool's part, a pool's entry names the
// wallet.
func paidText(s hcv1.ServerCharge, account string) string {
	switch {
	case s.Wallet != account:
		return fmt.Sprintf("%d (for wallet %s)", s.Paid, s.Wallet)
	case s.Project != "":
		return fmt.Sprintf("%d (+%d by %s)", s.Paid, s.ProjectPaid, s.Project)
	}
	return fmt.Sprintf("%d", s.Paid)
}

// ledgerKind is the entry's kind, "Charge x6" when it sums several.
func ledgerKind(e hcv1.LedgerEntry) string {
	if e.Count > 1 {
		return fmt.Sprintf("%s x%d", e.Kind, e.Count)
	}
	return string(e.Kind)
}

// signed is n with its sign ("+10", "-5", "0").
func signed(n int64) string {
	if n > 0 {
		return fmt.Sprintf("+%d", n)
	}
	return fmt.Sprintf("%d", n)
}
