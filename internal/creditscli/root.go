// Package creditscli is `kubectl credits`, the admin's kubectl plugin for
// hubcredits: an account's status, why a spawn would be admitted or
// denied (a server-side dry run through the real webhook), top-ups
// applied exactly once, and usage. It reads the user's kubeconfig the way
// kubectl does (k8s.io/cli-runtime), so --kubeconfig, --context, -n and
// --as work as in kubectl.
//
// Each command keeps its API calls in its run function and its
// arithmetic and formatting in plain functions (tested by tables).
package creditscli

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/hubcredits/hubcredits/internal/scheme"
)

// StdStreams are the process's standard streams.
func StdStreams() genericiooptions.IOStreams {
	return genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
}

// exitError ends the command with a status but no further message: what
// the command printed already says it (why's denial, like kubectl auth
// can-i's "no").
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// Run runs `kubectl credits` with args and returns the exit status: 0, or
// 1 with one sentence on stderr.
func Run(args []string, streams genericiooptions.IOStreams) int {
	cmd := NewCommand(streams)
	cmd.SetArgs(negativeLast(args))
	err := cmd.Execute()
	if err == nil {
		return 0
	}
	var exit exitError
	if errors.As(err, &exit) {
		return exit.code
	}
	fmt.Fprintln(streams.ErrOut, "error: "+sentence(err))
	return 1
}

// NewCommand is the root command with its subcommands.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	flags := genericclioptions.NewConfigFlags(true)
	// --user names the JupyterHub user here (status, why); the kubeconfig
	// user is chosen with --context.
	flags.AuthInfoName = nil
	root := &cobra.Command{
		Use:   "kubectl-credits",
		Short: "Inspect and manage hubcredits accounts",
		Long: "kubectl credits shows hubcredits accounts, asks the webhook whether a spawn would be admitted, " +
			"tops up or adjusts accounts exactly once, and adds up the usage of ended servers. It uses your kubeconfig like kubectl.",
		Annotations: map[string]string{
			cobra.CommandDisplayNameAnnotation: "kubectl credits",
		},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	flags.AddFlags(root.PersistentFlags())
	k := &kube{flags: flags}
	root.AddCommand(
		newStatusCommand(k, streams),
		newWhyCommand(k, streams),
		newTopUpCommand(k, streams),
		newAdjustCommand(k, streams),
		newUsageCommand(k, streams),
	)
	return root
}

// kube builds clients from the kubeconfig flags.
type kube struct {
	flags *genericclioptions.ConfigFlags
}

// config is the REST config (impersonation included).
func (k *kube) config() (*rest.Config, error) {
	cfg, err := k.flags.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = "kubectl-credits"
	return cfg, nil
}

// client is a controller-runtime client that knows hubcredits' types, as
// --as (if given).
func (k *kube) client() (client.Client, error) {
	cfg, err := k.config()
	if err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: scheme.New()})
}

// clients are a client as the kubeconfig's own user, for reads, and one
// as --as (the same when --as is not given), for why's dry run: the hub's
// ServiceAccount may create pods but not read accounts. Both share the
// reader's discovery, so a refused impersonation fails on the request
// that needs it, with the API server's sentence.
func (k *kube) clients() (reader, actor client.Client, err error) {
	cfg, err := k.config()
	if err != nil {
		return nil, nil, err
	}
	own := rest.CopyConfig(cfg)
	own.Impersonate = rest.ImpersonationConfig{}
	if reader, err = client.New(own, client.Options{Scheme: scheme.New()}); err != nil {
		return nil, nil, err
	}
	if cfg.Impersonate.UserName == "" && len(cfg.Impersonate.Groups) == 0 {
		return reader, reader, nil
	}
	actor, err = client.New(cfg, client.Options{Scheme: scheme.New(), Mapper: reader.RESTMapper()})
	return reader, actor, err
}

// namespace is -n, else the kubeconfig context's namespace, else "default".
func (k *kube) namespace() (string, error) {
	ns, _, err := k.flags.ToRawKubeConfigLoader().Namespace()
	return ns, err
}

// sentence is err as one sentence for a person: the API server's message
// without Go's wrapping, ending with a full stop.
func sentence(err error) string {
	var status apierrors.APIStatus
	msg := err.Error()
	if errors.As(err, &status) && status.Status().Message != "" {
		msg = status.Status().Message
	}
	msg = strings.TrimSpace(strings.ReplaceAll(msg, "\n", " "))
	if msg == "" {
		return "unknown error."
	}
	if !strings.HasSuffix(msg, ".") {
		msg += "."
	}
	return msg
}

// negativeLast moves a negative number that is not a flag's value ("-5"
// in `adjust alice -5 --reason x`) behind "--", so that it is read as an
// argument instead of as flags. AMOUNT is the last argument of the
// commands that take one, so the order of the arguments stays.
func negativeLast(args []string) []string {
	out := make([]string, 0, len(args)+2)
	var moved []string
	for i, a := range args {
		if a == "--" {
			out = append(out, args[i:]...)
			break
		}
		prev := ""
		if i > 0 {
			prev = args[i-1]
		}
		flagValue := strings.HasPrefix(prev, "-") && !strings.Contains(prev, "=")
		if negativeNumber(a) && !flagValue {
			moved = append(moved, a)
			continue
		}
		out = append(out, a)
	}
	if len(moved) == 0 {
		return out
	}
	if !slices.Contains(out, "--") {
		out = append(out, "--")
	}
	return append(out, moved...)
}

// negativeNumber is "-" followed by digits.
func negativeNumber(s string) bool {
	if len(s) < 2 || s[0] != '-' {
		return false
	}
	for _, r := range s[1:] {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
