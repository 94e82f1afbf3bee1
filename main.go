// Command manager runs hubcredits: credit-based accounting of JupyterHub
// user servers on Kubernetes, against the current cluster (in-cluster or a
// kubeconfig). It is only the operator: the local control plane of
// `make dev` lives in cmd/hubcredits-dev, which starts this binary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/controllers"
	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/webhooks"
)

// flags are the operator's command line.
type flags struct {
	metricsAddr, probeAddr string
	leaderElect            bool
	leaderElectionNS       string
	leaseDuration          time.Duration
	renewDeadline          time.Duration
	retryPeriod            time.Duration
	webhookHost            string
	webhookPort            int
	webhookCertDir         string
	webhookClientCA        string
	enableHTTP2            bool
	enableWebhooks         bool

	namespace        string
	selector         string
	defaultValue     int64
	defaultInterval  time.Duration
	orphanGrace      time.Duration
	stopRetry        time.Duration
	lowPeriods       int64
	autoCreate       bool
	autoCreateRate   int
	walletCap        int64
	walletInitial    int64
	walletGrant      int64
	walletGrantEvery time.Duration
	hubURL           string
	hubTokenFile     string
	creators         string
	dryRunIDs        string
	shadow           bool
	freeNeedsAccount bool
	workers          int
	unbillablePods   string
	tombstones       string
	usageRetention   time.Duration
	ledgerPages      bool

	certRotation      bool
	podNamespace      string
	webhookSecret     string
	webhookService    string
	mutatingWebhook   string
	validatingWebhook string
}

func parseFlags(args []string) (*flags, *zap.Options, error) {
	f := &flags{}
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage:
  manager [flags]   run hubcredits against the current cluster (kubeconfig or in-cluster)
  (a local control plane for development: make dev, cmd/hubcredits-dev)

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint (0 disables it).")
	fs.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz probes.")
	fs.BoolVar(&f.leaderElect, "leader-elect", false, "Elect a leader for the billing controllers (the webhook serves on every replica).")
	fs.StringVar(&f.leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader election lease (default: the pod's namespace).")
	fs.DurationVar(&f.leaseDuration, "leader-elect-lease-duration", 15*time.Second, "How long a replica waits after the leader stops renewing before it takes over (the failover window).")
	fs.DurationVar(&f.renewDeadline, "leader-elect-renew-deadline", 10*time.Second, "How long the leader tries to renew before it gives up the lease.")
	fs.DurationVar(&f.retryPeriod, "leader-elect-retry-period", 2*time.Second, "How often replicas try to acquire or renew the lease.")
	fs.StringVar(&f.webhookHost, "webhook-host", "", "Address the webhook server listens on ('' listens on every address).")
	fs.IntVar(&f.webhookPort, "webhook-port", 9443, "Port of the webhook server.")
	fs.StringVar(&f.webhookCertDir, "webhook-cert-dir", "", "Directory with the webhook's tls.crt and tls.key.")
	fs.StringVar(&f.webhookClientCA, "webhook-client-ca", "", "PEM file of the CA that signs the API server's webhook client certificate; when set, webhook requests without such a certificate are refused (needs webhook client credentials in the API server's admission configuration).")
	fs.BoolVar(&f.enableHTTP2, "enable-http2", false, "Serve webhooks over HTTP/2 (off: Rapid Reset, CVE-2023-44487).")
	fs.BoolVar(&f.enableWebhooks, "enable-webhooks", true, "Serve the admission webhooks.")
	fs.StringVar(&f.namespace, "namespace", "", "The hub's namespace to watch ('' watches all namespaces).")
	fs.StringVar(&f.selector, "singleuser-selector", hcv1.ComponentLabel+"="+hcv1.SingleuserComponent, "Label selector of the JupyterHub user pods.")
	fs.Int64Var(&f.defaultValue, "default-billing-value", billing.DefaultPrice.Value, "Credits per period of a server no BillingPolicy selects.")
	fs.DurationVar(&f.defaultInterval, "default-billing-interval", billing.DefaultPrice.Interval, "Period of a server no BillingPolicy selects.")
	fs.DurationVar(&f.orphanGrace, "reservation-grace", billing.DefaultOptions.OrphanGrace, "How long a reservation waits for its pod before it is refunded.")
	fs.DurationVar(&f.stopRetry, "stop-retry", billing.DefaultOptions.StopRetry, "How often a stop that did not take effect is repeated.")
	fs.Int64Var(&f.lowPeriods, "low-balance-periods", billing.DefaultOptions.LowPeriods, "Low condition when the balance covers fewer than this many periods of the running servers.")
	fs.BoolVar(&f.autoCreate, "auto-create-wallets", false, "Create a wallet for a user without one whose groups no CreditAccountTemplate lists (else their spawn is denied).")
	fs.IntVar(&f.autoCreateRate, "auto-create-per-minute", 10, "At most this many wallets created per minute and replica, by --auto-create-wallets and CreditAccountTemplates together (0: no limit); with a Hub API, only for users the hub knows.")
	fs.Int64Var(&f.walletCap, "wallet-cap", 100, "Cap of a created wallet.")
	fs.Int64Var(&f.walletInitial, "wallet-initial-balance", -1, "Initial balance of a created wallet (-1: the cap).")
	fs.Int64Var(&f.walletGrant, "wallet-grant-amount", 5, "Grant of a created wallet (0: none).")
	fs.DurationVar(&f.walletGrantEvery, "wallet-grant-interval", 5*time.Minute, "Grant interval of a created wallet.")
	fs.StringVar(&f.hubURL, "hub-api-url", "", "JupyterHub API URL used to stop servers (e.g. http://hub:8081/hub/api); '' deletes pods instead.")
	fs.StringVar(&f.hubTokenFile, "hub-api-token-file", "", "File holding the Hub API token (mounted from a Secret; never pass the token itself).")
	fs.StringVar(&f.creators, "allowed-creators", "", "Comma-separated users allowed to create billed pods, e.g. system:serviceaccount:jhub:hub ('' allows any).")
	fs.StringVar(&f.dryRunIDs, "dry-run-identities", "", "Comma-separated users, besides --allowed-creators, whose server-side dry runs of a billed pod the webhook answers (kubectl credits why without impersonating the hub); their real pods are denied like anyone's.")
	fs.BoolVar(&f.freeNeedsAccount, "free-servers-need-account", false, "Deny a free server (price 0) whose user has no CreditAccount, like a priced one (default: admit it without a payer; there is nothing to bill).")
	fs.BoolVar(&f.shadow, "shadow", false, "Never deny a spawn or stop a server, but bill as usual: credits are reserved and charged for real.")
	fs.StringVar(&f.unbillablePods, "unbillable-pods", controllers.UnbillableReport, "What to do with a singleuser pod no account may pay for (its user is not in the account it names): report (an Event and a metric; it runs unbilled) or stop (also delete the pod).")
	fs.IntVar(&f.workers, "workers", 16, "Concurrent account reconciles (mostly waiting on API writes).")
	fs.DurationVar(&f.usageRetention, "usage-retention", operator.DefaultUsageRetention, "How long the UsageRecord of an ended server is kept before it is deleted (0: kept for ever).")
	fs.BoolVar(&f.ledgerPages, "ledger-pages", true, "Put the servers an account pays for alone (a pool for a course) on its LedgerPages once the account holds 64 entries in its status, so that a pool of thousands of servers stays small and cheap to write. false keeps every new reservation in the status (the billing controllers still move the entries beyond 64 to pages).")
	fs.StringVar(&f.tombstones, "tombstone-configmap", controllers.DefaultTombstoneConfigMap, "ConfigMap, in the hub's namespace, that keeps the tombstones of deleted accounts (the Role grants get and update of it by name; the install creates it).")
	fs.BoolVar(&f.certRotation, "cert-rotation", false, "Generate and rotate the webhook's CA and serving certificate in-process (no cert-manager needed).")
	fs.StringVar(&f.podNamespace, "operator-namespace", os.Getenv("POD_NAMESPACE"), "Namespace of the operator (its Secret and Service).")
	fs.StringVar(&f.webhookSecret, "webhook-secret-name", "hubcredits-webhook-cert", "cert-rotation: Secret that holds the certificates.")
	fs.StringVar(&f.webhookService, "webhook-service-name", "hubcredits-webhook", "cert-rotation: Service of the webhook (the certificate's DNS name).")
	fs.StringVar(&f.mutatingWebhook, "mutating-webhook-name", "hubcredits-mutating", "cert-rotation: MutatingWebhookConfiguration to inject the CA into.")
	fs.StringVar(&f.validatingWebhook, "validating-webhook-name", "hubcredits-validating", "cert-rotation: ValidatingWebhookConfiguration to inject the CA into.")
	config.RegisterFlags(fs) // --kubeconfig
	zo := &zap.Options{Development: false}
	zo.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	return f, zo, nil
}

func (f *flags) options() (operator.Options, error) {
	sel, err := labels.Parse(f.selector)
	if err != nil {
		return operator.Options{}, fmt.Errorf("--singleuser-selector: %w", err)
	}
	if f.unbillablePods != controllers.UnbillableReport && f.unbillablePods != controllers.UnbillableStop {
		return operator.Options{}, fmt.Errorf("--unbillable-pods must be %q or %q", controllers.UnbillableReport, controllers.UnbillableStop)
	}
	if f.certRotation && f.enableWebhooks {
		if err := f.certRotationConfig().Check(); err != nil {
			return operator.Options{}, err
		}
	}
	if f.usageRetention < 0 {
		return operator.Options{}, fmt.Errorf("--usage-retention must be >= 0 (0 keeps usage records for ever)")
	}
	if f.defaultValue < 0 || f.defaultInterval < time.Second {
		return operator.Options{}, fmt.Errorf("--default-billing-value must be >= 0 and --default-billing-interval >= 1s")
	}
	if f.orphanGrace < 0 || f.stopRetry < 0 || f.lowPeriods < 0 {
		return operator.Options{}, fmt.Errorf("--reservation-grace, --stop-retry and --low-balance-periods must be >= 0")
	}
	if f.hubURL != "" && f.hubTokenFile == "" {
		return operator.Options{}, fmt.Errorf("--hub-api-url needs --hub-api-token-file (the Hub API token, mounted from a Secret)")
	}
	o := operator.Options{
		Namespace:          f.namespace,
		SingleuserSelector: sel,
		Defaults:           billing.Defaults{Value: f.defaultValue, Interval: f.defaultInterval},
		Billing:            billing.Options{OrphanGrace: f.orphanGrace, StopRetry: f.stopRetry, LowPeriods: f.lowPeriods},
		Shadow:             f.shadow,
		FreeNeedsAccount:   f.freeNeedsAccount,
		HubURL:             f.hubURL,
		HubTokenFile:       f.hubTokenFile,
		Workers:            f.workers,
		Webhooks:           f.enableWebhooks,
		UnbillablePods:     f.unbillablePods,
		TombstoneConfigMap: f.tombstones,
		UsageRetention:     f.usageRetention,
		InlineOnly:         !f.ledgerPages,
	}
	if f.creators != "" {
		o.Creators = strings.Split(f.creators, ",")
	}
	if f.dryRunIDs != "" {
		o.DryRunIdentities = strings.Split(f.dryRunIDs, ",")
	}
	if f.autoCreate {
		if f.walletCap < 0 || f.walletCap > hcv1.MaxCredits || f.walletInitial < -1 || f.walletInitial > f.walletCap || f.walletGrant < 0 ||
			(f.walletGrant > 0 && (f.walletGrant > f.walletCap || f.walletGrantEvery < time.Second || f.walletGrantEvery > 8760*time.Hour)) {
			return operator.Options{}, fmt.Errorf("the wallet template is invalid: need 0 <= --wallet-initial-balance (or -1: the cap) <= --wallet-cap <= %d, and 0 <= --wallet-grant-amount <= --wallet-cap with 1s <= --wallet-grant-interval <= 8760h", hcv1.MaxCredits)
		}
		t := &webhooks.WalletTemplate{Cap: f.walletCap}
		if f.walletInitial >= 0 {
			v := f.walletInitial
			t.InitialBalance = &v
		}
		if f.walletGrant > 0 {
			t.Grant = &hcv1.Grant{Amount: f.walletGrant}
			t.Grant.Interval.Duration = f.walletGrantEvery
		}
		o.AutoCreate = t
	}
	if f.autoCreateRate < 0 {
		return operator.Options{}, fmt.Errorf("--auto-create-per-minute must be >= 0 (0: no limit)")
	}
	o.AutoCreatePerMinute = f.autoCreateRate
	return o, nil
}

// version is the release this binary was built as (set by
// hack/build-image.sh with -X main.version=<the chart's appVersion>); the
// commit is in the binary's build info either way.
var version = "dev"

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "dev" {
		fmt.Fprintln(os.Stderr, "hubcredits: `manager dev` is now its own command: make dev (bin/hubcredits-dev)")
		os.Exit(2)
	}
	f, zo, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		os.Exit(2)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(zo)))
	// In a container with a memory limit, the garbage collector keeps the
	// heap under 90 % of it (GOMEMLIMIT) rather than let the pod be killed;
	// GOMEMLIMIT or AUTOMEMLIMIT in the environment take precedence.
	_, _ = memlimit.Set(memlimit.WithLogger(slog.New(logr.ToSlogHandler(ctrl.Log.WithName("memlimit")))))
	// Bad values are refused before anything starts (or is logged).
	o, err := f.options()
	if err != nil {
		fmt.Fprintln(os.Stderr, "hubcredits:", err)
		os.Exit(1)
	}
	ctrl.Log.Info("Starting hubcredits", "version", version)
	if err := run(ctrl.SetupSignalHandler(), f, o); err != nil {
		fmt.Fprintln(os.Stderr, "hubcredits:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, f *flags, o operator.Options) error {
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	webhookOpts := webhook.Options{Host: f.webhookHost, Port: f.webhookPort, CertDir: f.webhookCertDir, TLSOpts: operator.WebhookTLS(f.enableHTTP2)}
	webhookServer, err := operator.NewWebhookServer(webhookOpts, f.webhookClientCA)
	if err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, operator.ManagerOptions(o, operator.Process{
		MetricsAddr: f.metricsAddr, ProbeAddr: f.probeAddr,
		LeaderElection: f.leaderElect, LeaderElectionNamespace: f.leaderElectionNS,
		LeaseDuration: &f.leaseDuration, RenewDeadline: &f.renewDeadline, RetryPeriod: &f.retryPeriod,
		WebhookServer: webhookServer,
	}))
	if err != nil {
		return err
	}
	ready := func(*http.Request) error { return nil }
	if f.enableWebhooks {
		certsReady, err := rotateCerts(mgr, f)
		if err != nil {
			return err
		}
		o.CertsReady = certsReady
		ready = func(r *http.Request) error {
			if certsReady != nil {
				select {
				case <-certsReady:
				default:
					return errors.New("webhook certificates not ready yet")
				}
			}
			return mgr.GetWebhookServer().StartedChecker()(r)
		}
	}
	if err := operator.Setup(ctx, mgr, o); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", ready); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// rotateCerts sets up the in-process certificate rotation
// (operator.AddCertRotation). It returns a channel closed once the serving
// certificate is on disk, or nil without rotation.
func rotateCerts(mgr ctrl.Manager, f *flags) (<-chan struct{}, error) {
	if !f.certRotation {
		return nil, nil
	}
	return operator.AddCertRotation(mgr, f.certRotationConfig())
}

// certRotationConfig is the in-process rotation the flags ask for.
func (f *flags) certRotationConfig() operator.CertRotation {
	return operator.CertRotation{
		Namespace:      f.podNamespace,
		SecretName:     f.webhookSecret,
		ServiceName:    f.webhookService,
		MutatingName:   f.mutatingWebhook,
		ValidatingName: f.validatingWebhook,
		CertDir:        f.webhookCertDir,
	}
}
