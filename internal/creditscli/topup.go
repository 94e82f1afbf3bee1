package creditscli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// maxReason is the longest reason the API keeps (spec.topUps[].reason).
const maxReason = 256

// maxTopUps is the most entries spec.topUps may hold.
const maxTopUps = 256

// idPattern is the API's pattern for top-up ids (63 characters at most).
var idPattern = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)

// Movement is what top-up printed (and prints with -o json|yaml).
type Movement struct {
	Namespace string `json:"namespace"`
	Account   string `json:"account"`
	ID        string `json:"id"`
	Amount    int64  `json:"amount"`
	Reason    string `json:"reason"`
	// Recorded is false when the id was already in the spec with the
	// same amount (a repeated command): nothing was written.
	Recorded bool `json:"recorded"`
	// Applied says whether the operator applied it within --wait; Balance
	// is the balance it left.
	Applied bool  `json:"applied"`
	Balance int64 `json:"balance,omitempty"`
}

type topUpOptions struct {
	id     string
	reason string
	wait   time.Duration
	output string
}

func newTopUpCommand(k *kube, streams genericiooptions.IOStreams) *cobra.Command {
	o := &topUpOptions{}
	cmd := &cobra.Command{
		Use:   "top-up ACCOUNT AMOUNT --reason TEXT",
		Short: "Add credits to an account, exactly once",
		Long: "top-up adds an entry to the account's spec.topUps under a new id (kc-<UTC date>-<time>-<6 random hex " +
			"digits>, printed first) and waits for the operator to apply it. The operator applies each id exactly " +
			"once, ever. The write carries the account's resourceVersion and is retried from a fresh read when " +
			"another writer got there first; a retry that finds its id already recorded does not add it again. " +
			"To repeat a command safely (say, after a lost connection), give the id it printed with --id: an id " +
			"already recorded with the same amount is not added twice.",
		Example: "  kubectl credits top-up alice 50 --reason \"extra for the thesis\" -n jhub\n" +
			"  kubectl credits top-up alice 50 --reason \"extra for the thesis\" --id kc-20261127-061500-3f9a1c",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(o.output, outputTable, outputJSON, outputYAML); err != nil {
				return err
			}
			amount, err := parseTopUpAmount(args[1])
			if err != nil {
				return err
			}
			if err := checkReason(o.reason); err != nil {
				return err
			}
			if o.id == "" {
				if o.id, err = newID(time.Now()); err != nil {
					return err
				}
			} else if err := checkID(o.id); err != nil {
				return err
			}
			return o.run(cmd.Context(), k, streams, args[0], hcv1.TopUp{ID: o.id, Amount: amount, Reason: o.reason})
		},
	}
	cmd.Flags().StringVar(&o.reason, "reason", "", "Why the credits are added (required; shown in the account's ledger).")
	cmd.Flags().StringVar(&o.id, "id", "", "The top-up's id (default: a new one, kc-<date>-<time>-<random>).")
	cmd.Flags().DurationVar(&o.wait, "wait", 30*time.Second, "How long to wait for the operator to apply it (0: do not wait).")
	addOutputFlag(cmd, &o.output, outputTable, outputJSON, outputYAML)
	return cmd
}

func (o *topUpOptions) run(ctx context.Context, k *kube, streams genericiooptions.IOStreams, account string, t hcv1.TopUp) error {
	c, err := k.client()
	if err != nil {
		return err
	}
	ns, err := k.namespace()
	if err != nil {
		return err
	}
	m := Movement{Namespace: ns, Account: account, ID: t.ID, Amount: t.Amount, Reason: t.Reason}
	if o.output == outputTable {
		fmt.Fprintf(streams.Out, "Top-up %s: +%d to account %s in namespace %s.\n", t.ID, t.Amount, account, ns)
	}
	key := client.ObjectKey{Namespace: ns, Name: account}
	m.Recorded, err = recordOnce(ctx, c, key, func(a *hcv1.CreditAccount) (bool, error) { return addTopUp(a, t) })
	if err != nil {
		return err
	}
	if o.wait > 0 {
		m.Applied, m.Balance, err = waitApplied(ctx, c, key, t.ID, o.wait)
		if err != nil {
			return err
		}
	}
	if o.output != outputTable {
		return printStructured(streams.Out, o.output, m)
	}
	return printMovement(streams.Out, m, o.wait)
}

// recordOnce changes the account with add and writes it, retrying from a
// fresh read when the write lost to a newer one (or its outcome is
// unknown): add sees the entry already there after a write that did land,
// so nothing is added twice. It reports whether it wrote.
func recordOnce(ctx context.Context, c client.Client, key client.ObjectKey, add func(*hcv1.CreditAccount) (bool, error)) (bool, error) {
	wrote := false
	err := retry.OnError(writeBackoff, retriable, func() error {
		a := &hcv1.CreditAccount{}
		if err := c.Get(ctx, key, a); err != nil {
			return err
		}
		changed, err := add(a)
		if err != nil || !changed {
			return err
		}
		// Update carries the resourceVersion just read: a concurrent write
		// makes it fail with a conflict instead of being overwritten.
		if err := c.Update(ctx, a); err != nil {
			return err
		}
		wrote = true
		return nil
	})
	if apierrors.IsNotFound(err) {
		return false, fmt.Errorf("credit account %q not found in namespace %s", key.Name, key.Namespace)
	}
	return wrote, err
}

// writeBackoff spaces the retries of a write: the operator writes an
// account's status at every charge and grant, and each status write also
// moves the resourceVersion a spec write must match.
var writeBackoff = wait.Backoff{Steps: 12, Duration: 20 * time.Millisecond, Factor: 1.5, Jitter: 0.5, Cap: 2 * time.Second}

// retriable errors leave the account as it was or in a state the next
// read shows: the write is tried again from a fresh read.
func retriable(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		apierrors.IsTooManyRequests(err) || apierrors.IsServiceUnavailable(err)
}

// addTopUp adds t to the account's spec.topUps. It reports false when t is
// already there (the same id and amount), and refuses an id used before
// for another amount or already applied and removed.
func addTopUp(a *hcv1.CreditAccount, t hcv1.TopUp) (bool, error) {
	for _, have := range a.Spec.TopUps {
		if have.ID != t.ID {
			continue
		}
		if have.Amount != t.Amount {
			return false, fmt.Errorf("top-up id %s is already used on account %s for %d credits; choose another id", t.ID, a.Name, have.Amount)
		}
		return false, nil
	}
	if slices.Contains(a.Status.RetiredTopUps, t.ID) || slices.Contains(a.Status.AppliedTopUps, t.ID) {
		return false, fmt.Errorf("top-up id %s was applied to account %s before and is never applied again; choose another id", t.ID, a.Name)
	}
	if len(a.Spec.TopUps) >= maxTopUps {
		return false, fmt.Errorf("account %s already lists %d top-ups, the most it can hold; remove old applied ones from spec.topUps first (their ids stay remembered)", a.Name, maxTopUps)
	}
	a.Spec.TopUps = append(a.Spec.TopUps, t)
	return true, nil
}

// waitApplied waits until the operator applied top-up id, and returns the
// balance it left. It reports false, without error, when the wait ran
// out: the top-up is recorded and will be applied.
func waitApplied(ctx context.Context, c client.Client, key client.ObjectKey, id string, timeout time.Duration) (bool, int64, error) {
	var balance int64
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		a := &hcv1.CreditAccount{}
		if err := c.Get(ctx, key, a); err != nil {
			return false, err
		}
		balance = a.Status.Balance
		return slices.Contains(a.Status.AppliedTopUps, id) || slices.Contains(a.Status.RetiredTopUps, id), nil
	})
	if wait.Interrupted(err) {
		return false, 0, nil
	}
	return err == nil, balance, err
}

// printMovement says what happened.
func printMovement(out io.Writer, m Movement, waited time.Duration) error {
	var err error
	if !m.Recorded {
		_, err = fmt.Fprintf(out, "Already recorded (the same id and amount): nothing added.\n")
		if err != nil {
			return err
		}
	}
	switch {
	case m.Applied:
		_, err = fmt.Fprintf(out, "Applied: account %s now has %d credits.\n", m.Account, m.Balance)
	case waited > 0:
		_, err = fmt.Fprintf(out, "Recorded, not applied within %s: the operator applies it when it next runs (is it up?); do not run the command again without --id %s.\n", waited, m.ID)
	default:
		_, err = fmt.Fprintf(out, "Recorded: the operator applies it on its next pass.\n")
	}
	return err
}

// newID is a top-up id that no other command makes: the UTC time to the
// second and 24 random bits, e.g. kc-20261127-061500-3f9a1c.
func newID(now time.Time) (string, error) {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "kc-" + now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b), nil
}

// checkID refuses an id the API would refuse.
func checkID(id string) error {
	if len(id) > 63 || !idPattern.MatchString(id) {
		return fmt.Errorf("--id %q is not a valid id: up to 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", id)
	}
	return nil
}

// checkReason requires a reason the API keeps.
func checkReason(r string) error {
	switch {
	case r == "":
		return errors.New("--reason is required: it is kept in the account's ledger")
	case len(r) > maxReason:
		return fmt.Errorf("--reason is %d characters long; the API keeps at most %d", len(r), maxReason)
	}
	return nil
}

// parseTopUpAmount is a positive number of credits.
func parseTopUpAmount(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case err != nil:
		return 0, fmt.Errorf("AMOUNT %q is not a whole number of credits", s)
	case n <= 0:
		return 0, fmt.Errorf("a top-up adds credits: AMOUNT must be at least 1 (to take credits away, use adjust)")
	case n > hcv1.MaxCredits:
		return 0, fmt.Errorf("AMOUNT %d is more than the API allows (%d)", n, hcv1.MaxCredits)
	}
	return n, nil
}
