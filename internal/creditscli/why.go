package creditscli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/kubespawner"
)

// WhyResult is the answer of `kubectl credits why` (printed with -o
// json|yaml as it is).
type WhyResult struct {
	Namespace  string `json:"namespace"`
	User       string `json:"user"`
	ServerName string `json:"serverName,omitempty"`
	// AskedAs is who made the dry run (--as, or the kubeconfig's user).
	AskedAs string `json:"askedAs,omitempty"`
	// Admitted says whether the webhook admitted the dry run.
	Admitted bool `json:"admitted"`
	// Reason is the webhook's denial reason (as in
	// hubcredits_admission_decisions_total), when denied.
	Reason string `json:"reason,omitempty"`
	// Message is the sentence the user would read, when denied.
	Message string `json:"message,omitempty"`
	// Price is what the server would cost, when admitted.
	Price *PriceView `json:"price,omitempty"`
	// Wallet and Project are who would pay (the project pool first).
	Wallet  *Payer `json:"wallet,omitempty"`
	Project *Payer `json:"project,omitempty"`
	// Periods is how many periods the balances pay today (grants and
	// other servers not counted); nil for a free server.
	Periods *int64 `json:"periods,omitempty"`
}

// PriceView is a price as pinned on the pod.
type PriceView struct {
	Value    int64  `json:"value"`
	Interval string `json:"interval"`
	Policy   string `json:"policy,omitempty"`

	every time.Duration
}

// Payer is an account that would pay, and its balance (nil when the
// account does not exist yet: the webhook would create it from the
// operator's wallet template).
type Payer struct {
	Name    string `json:"name"`
	Balance *int64 `json:"balance,omitempty"`
}

type whyOptions struct {
	user          string
	groups        []string
	serverName    string
	profileLabels string
	output        string
}

func newWhyCommand(k *kube, streams genericiooptions.IOStreams) *cobra.Command {
	o := &whyOptions{}
	cmd := &cobra.Command{
		Use:   "why --user USER [--groups G,...] [--server-name NAME] [--profile-labels k=v,...]",
		Short: "Ask the webhook what a spawn by a user would cost, and whether it would be admitted",
		Long: "why creates, as a server-side dry run (dryRun=All: nothing is stored, no credits move), a pod " +
			"shaped like the one KubeSpawner creates for the user, so the API server sends it through the real " +
			"hubcredits webhook and the answer is the one a real spawn would get now.\n\n" +
			"The webhook prices only pods created by the hub when the operator runs with --allowed-creators " +
			"(the chart's billing.allowedCreators), and the dry runs of the users of --dry-run-identities " +
			"(billing.dryRunIdentities): be one of those, with a Role that may create pods and read the " +
			"CreditAccounts; an admin may instead ask as the hub with --as system:serviceaccount:<hub namespace>:hub " +
			"(impersonating the hub is all of the hub's access). Only the dry run is sent as --as; the accounts " +
			"are read as you.\n\n" +
			"Exit status: 0 when the spawn would be admitted and priced, 1 otherwise (like kubectl auth can-i).",
		Example: "  kubectl credits why --user alice -n jhub --as system:serviceaccount:jhub:hub\n" +
			"  kubectl credits why --user alice --profile-labels hubcredits.io/account=physics,gpu=a100 -o yaml",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(o.output, outputTable, outputJSON, outputYAML); err != nil {
				return err
			}
			if o.user == "" {
				return errors.New("--user is required: the JupyterHub user whose spawn to ask about")
			}
			labels, err := parseLabels(o.profileLabels)
			if err != nil {
				return err
			}
			r, err := o.run(cmd.Context(), k, labels)
			if err != nil {
				return err
			}
			if o.output != outputTable {
				err = printStructured(streams.Out, o.output, r)
			} else {
				err = printWhy(streams.Out, r)
			}
			if err == nil && (!r.Admitted || r.Price == nil) {
				return exitError{code: 1}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&o.user, "user", "", "The JupyterHub username (as in the pod annotation hub.jupyter.org/username).")
	cmd.Flags().StringSliceVar(&o.groups, "groups", nil, "The user's JupyterHub groups, as the hub's glue puts them on the pod (hubcredits.io/groups), e.g. physics-101,staff.")
	cmd.Flags().StringVar(&o.serverName, "server-name", "", "The named server (\"\" for the default server).")
	cmd.Flags().StringVar(&o.profileLabels, "profile-labels", "", "Labels the spawn's profile adds to the pod (kubespawner_override.extra_labels), e.g. hubcredits.io/account=physics,gpu=a100.")
	addOutputFlag(cmd, &o.output, outputTable, outputJSON, outputYAML)
	return cmd
}

func (o *whyOptions) run(ctx context.Context, k *kube, labels map[string]string) (*WhyResult, error) {
	c, actor, err := k.clients()
	if err != nil {
		return nil, err
	}
	ns, err := k.namespace()
	if err != nil {
		return nil, err
	}
	r := &WhyResult{Namespace: ns, User: o.user, ServerName: o.serverName, AskedAs: askedAs(ctx, actor)}
	pod := spawnPod(ns, o.user, o.serverName, labels)
	if len(o.groups) > 0 {
		data, err := json.Marshal(o.groups)
		if err != nil {
			return nil, err
		}
		pod.Annotations[hcv1.AnnotationGroups] = string(data)
	}
	err = actor.Create(ctx, pod, client.DryRunAll)
	if reason, msg, denied := denial(err); denied {
		if reason == billing.DenyForbidden {
			return nil, notTheHub(r.AskedAs, ns)
		}
		r.Reason, r.Message = reason, msg
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	r.Admitted = true
	price, ok := billing.PinnedPrice(pod.Annotations)
	if !ok {
		// Admitted, but nobody priced it: the webhook did not see the pod,
		// or shadow mode let through a spawn it would have denied.
		return r, nil
	}
	r.Price = &PriceView{Value: price.Value, Interval: billing.FormatDuration(price.Interval), Policy: price.Policy, every: price.Interval}
	if r.Wallet, err = payer(ctx, c, ns, pod.Annotations[hcv1.AnnotationAccount]); err != nil {
		return nil, err
	}
	if r.Project, err = payer(ctx, c, ns, pod.Annotations[hcv1.AnnotationProject]); err != nil {
		return nil, err
	}
	r.Periods = periodsPaid(price.Value, r.Wallet, r.Project)
	return r, nil
}

// askedAs is who the API server takes the caller for ("" if it cannot
// tell): the name the webhook compares with its allowed creators.
func askedAs(ctx context.Context, c client.Client) string {
	review := &authenticationv1.SelfSubjectReview{}
	if err := c.Create(ctx, review); err != nil {
		return ""
	}
	return review.Status.UserInfo.Username
}

// notTheHub is the error of a dry run the webhook refused because the
// caller is not an allowed creator.
func notTheHub(who, ns string) error {
	if who == "" {
		who = "your user"
	}
	return fmt.Errorf("the webhook prices only pods created by the hub (the operator's --allowed-creators) and the dry runs of its --dry-run-identities, and refused %s; "+
		"have your admin list you in the chart's billing.dryRunIdentities, or (an admin) ask as the hub with --as system:serviceaccount:%s:hub, "+
		"which needs the permission to impersonate that ServiceAccount: all of the hub's access", who, ns)
}

// payer reads account name ("" gives nil).
func payer(ctx context.Context, c client.Client, ns, name string) (*Payer, error) {
	if name == "" {
		return nil, nil
	}
	a := &hcv1.CreditAccount{}
	err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, a)
	if apierrors.IsNotFound(err) {
		return &Payer{Name: name}, nil
	}
	if err != nil {
		return nil, err
	}
	balance := a.Status.Balance
	return &Payer{Name: name, Balance: &balance}, nil
}

// periodsPaid is how many periods of value the wallet and its project
// pool pay together (the pool first, then the wallet), or nil for a free
// server or a wallet not created yet.
func periodsPaid(value int64, wallet, project *Payer) *int64 {
	if value <= 0 || wallet == nil || wallet.Balance == nil {
		return nil
	}
	total := *wallet.Balance
	if project != nil && project.Balance != nil {
		total += max(*project.Balance, 0)
	}
	n := max(total, 0) / value
	return &n
}

// denial returns the reason and sentence of a webhook's denial, and
// whether err is one.
func denial(err error) (reason, message string, ok bool) {
	var status apierrors.APIStatus
	if err == nil || !errors.As(err, &status) {
		return "", "", false
	}
	s := status.Status()
	if s.Details == nil {
		return "", "", false
	}
	for _, c := range s.Details.Causes {
		if c.Type == hcv1.DenialReasonCause {
			msg := s.Message
			if _, after, found := strings.Cut(msg, "denied the request: "); found {
				msg = after
			}
			return c.Message, msg, true
		}
	}
	return "", "", false
}

// spawnPod is the pod KubeSpawner would create for user's server (without
// a Hub token), with the profile's labels, named by the API server (a
// dry run must not collide with the user's running server).
func spawnPod(ns, user, server string, profileLabels map[string]string) *corev1.Pod {
	pod := kubespawner.Pod(ns, user, server, "")
	for _, c := range pod.Spec.Containers {
		for i := range c.Env {
			if strings.HasSuffix(c.Env[i].Name, "_TOKEN") {
				c.Env[i].Value = "dry-run"
			}
		}
	}
	pod.GenerateName = podNamePrefix(pod.Name)
	pod.Name = ""
	// KubeSpawner escapes the username in labels; an unescaped one would be
	// refused by validation after the webhook answered.
	for _, k := range []string{"hub.jupyter.org/username", "hub.jupyter.org/servername"} {
		if len(validation.IsValidLabelValue(pod.Labels[k])) > 0 {
			pod.Labels[k] = "dry-run"
		}
	}
	for k, v := range profileLabels {
		pod.Labels[k] = v
	}
	return pod
}

// podNamePrefix is a valid generateName from a pod name.
func podNamePrefix(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteRune('-')
		}
	}
	s := strings.Trim(b.String(), "-")
	if len(s) > 40 {
		s = strings.Trim(s[:40], "-")
	}
	return s + "-dry-run-"
}

// parseLabels parses "k=v,k2=v2" into valid labels.
func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--profile-labels: %q is not key=value", kv)
		}
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return nil, fmt.Errorf("--profile-labels: %q is not a label key: %s", k, errs[0])
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return nil, fmt.Errorf("--profile-labels: %q is not a label value: %s", v, errs[0])
		}
		out[k] = v
	}
	return out, nil
}

// printWhy prints the answer, kubectl describe's way.
func printWhy(out io.Writer, r *WhyResult) error {
	w := printers.GetNewTabWriter(out)
	server := "default server"
	if r.ServerName != "" {
		server = "server " + r.ServerName
	}
	fmt.Fprintf(w, "Spawn:\t%s of user %s in namespace %s\n", server, r.User, r.Namespace)
	if r.AskedAs != "" {
		fmt.Fprintf(w, "Asked as:\t%s (server-side dry run: nothing stored, no credits moved)\n", r.AskedAs)
	}
	switch {
	case !r.Admitted:
		fmt.Fprintf(w, "Verdict:\tDENIED (%s)\n", r.Reason)
		fmt.Fprintf(w, "Why:\t%s\n", r.Message)
	case r.Price == nil:
		fmt.Fprintf(w, "Verdict:\tadmitted, but not priced by hubcredits\n")
		fmt.Fprintf(w, "Why:\tno price was pinned on the pod: the webhook does not serve this namespace or pod, or it is down with failurePolicy Ignore, or shadow mode let through a spawn it would deny.\n")
	default:
		fmt.Fprintf(w, "Verdict:\tadmitted\n")
		fmt.Fprintf(w, "Price:\t%s\n", priceText(r.Price))
		fmt.Fprintf(w, "Paid by:\t%s\n", payersText(r.Wallet, r.Project))
		if r.Periods != nil {
			fmt.Fprintf(w, "Runway:\t%s\n", runwayText(*r.Periods, r.Price))
		}
	}
	return w.Flush()
}

// priceText is `10 credits every 10m (policy "gpu")`.
func priceText(p *PriceView) string {
	s := billing.PriceText(billing.Price{Value: p.Value, Interval: p.every})
	if p.Policy == "" {
		return s + " (the operator's default price: no BillingPolicy matched)"
	}
	return s + fmt.Sprintf(" (policy %s)", p.Policy)
}

// payersText is "project physics (1995 left), then account alice (95 left)".
func payersText(wallet, project *Payer) string {
	if wallet == nil {
		return "nobody (a free server without an account)"
	}
	s := "account " + payerText(wallet)
	if project != nil {
		s = "project " + payerText(project) + " first, then " + s
	}
	return s
}

func payerText(p *Payer) string {
	if p.Balance == nil {
		return p.Name + " (created at the spawn from the operator's wallet template)"
	}
	return fmt.Sprintf("%s (%d left)", p.Name, *p.Balance)
}

// runwayText is "9 periods (1h30m) at today's balances, ...".
func runwayText(periods int64, p *PriceView) string {
	unit := "periods"
	if periods == 1 {
		unit = "period"
	}
	long := "more than a year"
	if p.every > 0 && periods <= int64(365*24*time.Hour/p.every) {
		long = billing.FormatDuration(p.every * time.Duration(periods))
	}
	return fmt.Sprintf("%d %s (%s) at today's balances, before grants and other servers", periods, unit, long)
}
