package creditscli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
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

// Movement is what top-up and adjust did (printed with -o json|yaml).
type Movement struct {
	// Kind is TopUp or Adjust.
	Kind      string `json:"kind"`
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
	// AppliedAmount is what an adjustment really moved, as the ledger
	// recorded it (a negative one never takes the balance below 0); unset
	// when the ledger no longer shows it.
	AppliedAmount *int64 `json:"appliedAmount,omitempty"`
}

type movementOptions struct {
	adjust bool
	id     string
	reason string
	wait   time.Duration
	output string
}

// kind is the ledger kind of the movement.
func (o *movementOptions) kind() hcv1.LedgerEntryKind {
	if o.adjust {
		return hcv1.LedgerAdjust
	}
	return hcv1.LedgerTopUp
}

const movementLong = "%s adds an entry to the account's spec.%s under a new id (kc-<UTC date>-<time>-<6 random hex " +
	"digits>, printed first) and waits for the operator to apply it. The operator applies each id exactly " +
	"once, ever (top-ups and adjustments share ids). The write carries the account's resourceVersion and is " +
	"retried from a fresh read when another writer got there first; a retry that finds its id already " +
	"recorded does not add it again. To repeat a command safely (say, after a lost connection), give the id " +
	"it printed with --id: an id already recorded with the same amount is not added twice."

const adjustLong = "\n\nAn adjustment may be negative: it never takes the balance below 0 (the ledger records what was " +
	"really taken). Credits already reserved or charged for running servers are not taken back; a running " +
	"server whose next period the lowered balance cannot pay is stopped at that period's boundary."

func newTopUpCommand(k *kube, streams genericiooptions.IOStreams) *cobra.Command {
	return newMovementCommand(k, streams, false)
}

func newAdjustCommand(k *kube, streams genericiooptions.IOStreams) *cobra.Command {
	return newMovementCommand(k, streams, true)
}

func newMovementCommand(k *kube, streams genericiooptions.IOStreams, adjust bool) *cobra.Command {
	o := &movementOptions{adjust: adjust}
	cmd := &cobra.Command{
		Use:   "top-up ACCOUNT AMOUNT --reason TEXT",
		Short: "Add credits to an account, exactly once",
		Long:  fmt.Sprintf(movementLong, "top-up", "topUps"),
		Example: "  kubectl credits top-up alice 50 --reason \"extra for the thesis\" -n jhub\n" +
			"  kubectl credits top-up alice 50 --reason \"extra for the thesis\" --id kc-20261127-061500-3f9a1c",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(o.output, outputTable, outputJSON, outputYAML); err != nil {
				return err
			}
			amount, err := parseAmount(args[1], o.adjust)
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
			return o.run(cmd.Context(), k, streams, args[0], amount)
		},
	}
	if adjust {
		cmd.Use = "adjust ACCOUNT ±AMOUNT --reason TEXT"
		cmd.Short = "Correct an account's balance up or down (never below 0), exactly once"
		cmd.Long = fmt.Sprintf(movementLong, "adjust", "adjustments") + adjustLong
		cmd.Example = "  kubectl credits adjust alice -30 --reason \"double grant on 2026-11-02\" -n jhub\n" +
			"  kubectl credits adjust alice +10 --reason \"refund for the outage\""
	}
	cmd.Flags().StringVar(&o.reason, "reason", "", "Why (required; shown in the account's ledger).")
	cmd.Flags().StringVar(&o.id, "id", "", "The id (default: a new one, kc-<date>-<time>-<random>).")
	cmd.Flags().DurationVar(&o.wait, "wait", 30*time.Second, "How long to wait for the operator to apply it (0: do not wait).")
	addOutputFlag(cmd, &o.output, outputTable, outputJSON, outputYAML)
	return cmd
}

func (o *movementOptions) run(ctx context.Context, k *kube, streams genericiooptions.IOStreams, account string, amount int64) error {
	c, err := k.client()
	if err != nil {
		return err
	}
	ns, err := k.namespace()
	if err != nil {
		return err
	}
	m := Movement{Kind: string(o.kind()), Namespace: ns, Account: account, ID: o.id, Amount: amount, Reason: o.reason}
	if o.output == outputTable {
		fmt.Fprintf(streams.Out, "%s %s: %s to account %s in namespace %s.\n", movementName(m.Kind), m.ID, signed(amount), account, ns)
	}
	key := client.ObjectKey{Namespace: ns, Name: account}
	add := func(a *hcv1.CreditAccount) (*appendOp, error) {
		if o.adjust {
			j := hcv1.Adjustment{ID: o.id, Amount: amount, Reason: o.reason}
			changed, err := addAdjustment(a, j)
			return appendTo("adjustments", len(a.Spec.Adjustments), j, changed, err)
		}
		t := hcv1.TopUp{ID: o.id, Amount: amount, Reason: o.reason}
		changed, err := addTopUp(a, t)
		return appendTo("topUps", len(a.Spec.TopUps), t, changed, err)
	}
	if m.Recorded, err = recordOnce(ctx, c, key, add); err != nil {
		var r refusal
		if errors.As(err, &r) {
			return err
		}
		// The write may have landed before the connection broke: the id
		// makes trying again safe.
		return fmt.Errorf("%s; it may or may not have been recorded: run the same command again with --id %s, which never adds it twice",
			strings.TrimSuffix(sentence(err), "."), o.id)
	}
	if o.wait > 0 {
		var a *hcv1.CreditAccount
		if a, err = waitApplied(ctx, c, key, o.id, o.wait); err != nil {
			return err
		}
		if a != nil {
			m.Applied, m.Balance = true, a.Status.Balance
			m.AppliedAmount = ledgerAmount(a, o.kind(), o.id)
		}
	}
	if o.output != outputTable {
		return printStructured(streams.Out, o.output, m)
	}
	return printMovement(streams.Out, m, o.wait)
}

// movementName is "Top-up" or "Adjustment".
func movementName(kind string) string {
	if kind == string(hcv1.LedgerAdjust) {
		return "Adjustment"
	}
	return "Top-up"
}

// ledgerAmount is the amount the ledger recorded for movement id, or nil
// when the ledger (its last entries) no longer shows it.
func ledgerAmount(a *hcv1.CreditAccount, kind hcv1.LedgerEntryKind, id string) *int64 {
	for _, e := range a.Status.Ledger {
		if e.Kind == kind && e.Subject == id {
			n := e.Amount
			return &n
		}
	}
	return nil
}

// appendOp appends one entry to a list of the account's spec.
type appendOp struct {
	// field is the list: topUps or adjustments.
	field string
	// first says the list was empty (absent) before.
	first bool
	value any
}

// appendTo is the appendOp for value, just appended by an add function
// that reported changed (n is the list's length after it), or nil.
func appendTo(field string, n int, value any, changed bool, err error) (*appendOp, error) {
	if err != nil || !changed {
		return nil, err
	}
	return &appendOp{field: field, first: n == 1, value: value}, nil
}

// patch is a JSON patch that appends the entry to the account read at
// resourceVersion rv, and only to it: the resourceVersion in the patch is
// a precondition (a write since makes it fail with a conflict), and
// nothing else of the object is sent, so fields this plugin does not know
// (a newer API) are kept.
func (op *appendOp) patch(rv string) (client.Patch, error) {
	ops := []map[string]any{{"op": "replace", "path": "/metadata/resourceVersion", "value": rv}}
	if op.first {
		ops = append(ops, map[string]any{"op": "add", "path": "/spec/" + op.field, "value": []any{op.value}})
	} else {
		ops = append(ops, map[string]any{"op": "add", "path": "/spec/" + op.field + "/-", "value": op.value})
	}
	b, err := json.Marshal(ops)
	if err != nil {
		return nil, err
	}
	return client.RawPatch(types.JSONPatchType, b), nil
}

// recordOnce appends the entry add makes to the account, retrying from a
// fresh read when the write lost to a newer one (or its outcome is
// unknown): add sees the entry already there after a write that did land,
// so nothing is added twice. It reports whether it wrote.
func recordOnce(ctx context.Context, c client.Client, key client.ObjectKey, add func(*hcv1.CreditAccount) (*appendOp, error)) (bool, error) {
	wrote := false
	// sent: an earlier attempt's outcome is unknown (a timeout, a lost
	// response): if the entry is there now, this command wrote it.
	sent := false
	err := retry.OnError(writeBackoff, retriable, func() error {
		a := &hcv1.CreditAccount{}
		if err := c.Get(ctx, key, a); err != nil {
			return err
		}
		op, err := add(a)
		if err != nil {
			return refusal{err}
		}
		if op == nil {
			wrote = sent
			return nil
		}
		p, err := op.patch(a.ResourceVersion)
		if err != nil {
			return refusal{err}
		}
		if err := c.Patch(ctx, a, p); err != nil {
			if !apierrors.IsConflict(err) {
				sent = true
			}
			return err
		}
		wrote = true
		return nil
	})
	if apierrors.IsNotFound(err) {
		return false, refusal{fmt.Errorf("credit account %q not found in namespace %s", key.Name, key.Namespace)}
	}
	return wrote, err
}

// refusal is an error that leaves the account as it was, for sure: an id
// already used, a full list, an account that does not exist.
type refusal struct{ error }

func (r refusal) Unwrap() error { return r.error }

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
// (top-ups and adjustments share ids).
func addTopUp(a *hcv1.CreditAccount, t hcv1.TopUp) (bool, error) {
	for _, have := range a.Spec.TopUps {
		if have.ID == t.ID {
			return false, sameOrRefuse(a, t.ID, have.Amount, t.Amount)
		}
	}
	if err := idFree(a, t.ID); err != nil {
		return false, err
	}
	if len(a.Spec.TopUps) >= maxTopUps {
		return false, fmt.Errorf("account %s already lists %d top-ups, the most it can hold; remove old applied ones from spec.topUps first (their ids stay remembered)", a.Name, maxTopUps)
	}
	a.Spec.TopUps = append(a.Spec.TopUps, t)
	return true, nil
}

// addAdjustment adds j to the account's spec.adjustments, as addTopUp
// does top-ups.
func addAdjustment(a *hcv1.CreditAccount, j hcv1.Adjustment) (bool, error) {
	for _, have := range a.Spec.Adjustments {
		if have.ID == j.ID {
			return false, sameOrRefuse(a, j.ID, have.Amount, j.Amount)
		}
	}
	if err := idFree(a, j.ID); err != nil {
		return false, err
	}
	if len(a.Spec.Adjustments) >= maxTopUps {
		return false, fmt.Errorf("account %s already lists %d adjustments, the most it can hold; remove old applied ones from spec.adjustments first (their ids stay remembered)", a.Name, maxTopUps)
	}
	a.Spec.Adjustments = append(a.Spec.Adjustments, j)
	return true, nil
}

// sameOrRefuse accepts an id found already listed with the same amount (a
// repeated command: nothing to write) and refuses it for another amount.
func sameOrRefuse(a *hcv1.CreditAccount, id string, have, want int64) error {
	if have != want {
		return fmt.Errorf("id %s is already used on account %s for %s credits; choose another id", id, a.Name, signed(have))
	}
	return nil
}

// idFree refuses an id that the other list holds, or that was applied
// and removed since.
func idFree(a *hcv1.CreditAccount, id string) error {
	for _, t := range a.Spec.TopUps {
		if t.ID == id {
			return fmt.Errorf("id %s already names a top-up of account %s; choose another id", id, a.Name)
		}
	}
	for _, j := range a.Spec.Adjustments {
		if j.ID == id {
			return fmt.Errorf("id %s already names an adjustment of account %s; choose another id", id, a.Name)
		}
	}
	if slices.Contains(a.Status.RetiredTopUps, id) || slices.Contains(a.Status.AppliedTopUps, id) {
		return fmt.Errorf("id %s was applied to account %s before and is never applied again; choose another id", id, a.Name)
	}
	return nil
}

// waitApplied waits until the operator applied movement id, and returns
// the account it left. It returns nil, without error, when the wait ran
// out: the movement is recorded and will be applied.
func waitApplied(ctx context.Context, c client.Client, key client.ObjectKey, id string, timeout time.Duration) (*hcv1.CreditAccount, error) {
	var applied *hcv1.CreditAccount
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		a := &hcv1.CreditAccount{}
		if err := c.Get(ctx, key, a); err != nil {
			return false, err
		}
		if slices.Contains(a.Status.AppliedTopUps, id) || slices.Contains(a.Status.RetiredTopUps, id) {
			applied = a
			return true, nil
		}
		return false, nil
	})
	if wait.Interrupted(err) {
		return nil, nil
	}
	return applied, err
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
	case m.Applied && m.AppliedAmount != nil && *m.AppliedAmount != m.Amount:
		_, err = fmt.Fprintf(out, "Applied %s of %s (the balance never goes below 0): account %s now has %d credits.\n",
			signed(*m.AppliedAmount), signed(m.Amount), m.Account, m.Balance)
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

// parseAmount is a number of credits: positive for a top-up, signed and
// not 0 for an adjustment.
func parseAmount(s string, adjust bool) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case err != nil:
		return 0, fmt.Errorf("AMOUNT %q is not a whole number of credits", s)
	case n == 0 && adjust:
		return 0, errors.New("an adjustment of 0 changes nothing: AMOUNT must not be 0")
	case n <= 0 && !adjust:
		return 0, errors.New("a top-up adds credits: AMOUNT must be at least 1 (to take credits away, use adjust)")
	case n > hcv1.MaxCredits || n < -hcv1.MaxCredits:
		return 0, fmt.Errorf("AMOUNT %d is beyond what the API allows (±%d)", n, hcv1.MaxCredits)
	}
	return n, nil
}
