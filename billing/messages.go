package billing

import (
	"fmt"
	"strings"
	"time"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// The sentences in this file reach people: JupyterHub users read denials in
// the "Spawn failed" message, admins read Events. Keep them one sentence,
// with the numbers, and free of Go error chains.

// FormatDuration prints a duration the short way people write it: 10m, 1h30m,
// 45s, 2h.
func FormatDuration(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	d = d.Round(time.Second)
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// roundWait rounds a wait up to what a person would say: whole minutes
// from a minute on, whole seconds below.
func roundWait(d time.Duration) time.Duration {
	unit := time.Second
	if d >= time.Minute {
		unit = time.Minute
	}
	if r := d % unit; r != 0 {
		d += unit - r
	}
	return d
}

// PriceText is "10 credits every 10m" (or "free").
func PriceText(p Price) string {
	if p.Value == 0 {
		return "free"
	}
	unit := "credits"
	if p.Value == 1 {
		unit = "credit"
	}
	return fmt.Sprintf("%d %s every %s", p.Value, unit, FormatDuration(p.Interval))
}

// holdings is `account "alice" has 4 (next +5 in 3m)`.
func holdings(kind string, a *hcv1.CreditAccount, now time.Time) string {
	s := fmt.Sprintf("%s %q has %d", kind, a.Name, a.Status.Balance)
	if at, amount, ok := NextGrant(a, now); ok && amount > 0 {
		s += fmt.Sprintf(" (next +%d in %s)", amount, FormatDuration(roundWait(at.Sub(now))))
	}
	return s
}

// NotEnoughMessage is the denial for a spawn the accounts cannot pay.
func NotEnoughMessage(p Price, wallet, project *hcv1.CreditAccount, now time.Time) string {
	who := holdings("account", wallet, now)
	if project != nil {
		who = holdings("project", project, now) + " and " + who
	}
	return fmt.Sprintf("Not enough credits to start this server: it costs %s, and %s.", PriceText(p), who)
}

// NoAccountMessage is the denial for a user without a wallet.
func NoAccountMessage(user string) string {
	return fmt.Sprintf("No credit account for user %q — ask your hub admin.", user)
}

// NotMemberMessage is the denial for a pod labelled with an account that does
// not list its user.
func NotMemberMessage(user, account string) string {
	return fmt.Sprintf("User %q may not spend from credit account %q (it does not list them) — ask your hub admin.", user, account)
}

// InvalidGroupsMessage is the denial for a pod whose groups annotation
// (hubcredits.io/groups, put there by the hub) cannot be read.
func InvalidGroupsMessage() string {
	return "This server's pod carries a hubcredits.io/groups annotation that is not a list of JupyterHub group names, so hubcredits cannot tell who pays for it — ask your hub admin."
}

// NameTooLongMessage is the denial for a pod whose username or server name
// (what) is n characters long, over limit. It does not quote the name.
func NameTooLongMessage(what string, n, limit int) string {
	return fmt.Sprintf("This server's JupyterHub %s is %d characters long; hubcredits can record at most %d, so it cannot bill this server — ask your hub admin.", what, n, limit)
}

// AccountMissingMessage is the denial for a pod labelled with an account that
// does not exist.
func AccountMissingMessage(account string) string {
	return fmt.Sprintf("Credit account %q, chosen by this server's profile, does not exist — ask your hub admin.", account)
}

// AmbiguousMessage is the denial for a user listed in several accounts when
// the pod does not name one.
func AmbiguousMessage(user string, accounts []string) string {
	return fmt.Sprintf("User %q is in several credit accounts (%s) and this server's profile names none — ask your hub admin to set the label %s.",
		user, strings.Join(accounts, ", "), hcv1.LabelAccount)
}

// MissingUserMessage is the denial for a singleuser pod without the username
// annotation.
func MissingUserMessage() string {
	return fmt.Sprintf("This server's pod has no %s annotation, so hubcredits cannot tell who pays for it.", hcv1.AnnotationUsername)
}

// PriceErrorMessage is the denial for a pod a policy could not price. It
// names the policy but never quotes the evaluation error, which may contain
// values from the pod (such as the user's token).
func PriceErrorMessage(policy string) string {
	return fmt.Sprintf("Cannot price this server: billing policy %q failed on it — ask your hub admin.", policy)
}

// ProjectMissingMessage is the denial for a wallet whose project pool does
// not exist.
func ProjectMissingMessage(wallet, project string) string {
	return fmt.Sprintf("Credit account %q is funded by project %q, which does not exist — ask your hub admin.", wallet, project)
}

// ReservedMessage is the pod Event that tells the user the price while the
// server starts.
func ReservedMessage(p Price, wallet, project *hcv1.CreditAccount) string {
	if p.Value == 0 {
		return fmt.Sprintf("This server is free, billed to account %s.", wallet.Name)
	}
	if project != nil {
		return fmt.Sprintf("This server costs %s, paid from project %s (%d left), then account %s (%d left).",
			PriceText(p), project.Name, project.Status.Balance, wallet.Name, wallet.Status.Balance)
	}
	return fmt.Sprintf("This server costs %s, paid from account %s (%d left).", PriceText(p), wallet.Name, wallet.Status.Balance)
}

// StopMessage says why a server was stopped.
func StopMessage(p Price, wallet, project *hcv1.CreditAccount) string {
	have := fmt.Sprintf("account %s has %d credits", wallet.Name, wallet.Status.Balance)
	if project != nil {
		have = fmt.Sprintf("project %s has %d and %s", project.Name, project.Status.Balance, have)
	}
	return fmt.Sprintf("Stopped: %s, the next %s costs %d.", have, FormatDuration(p.Interval), p.Value)
}

// ProjectChainMessage is the denial for a wallet whose project pool names a
// project itself (pools are one level deep).
func ProjectChainMessage(wallet, project string) string {
	return fmt.Sprintf("Credit account %q is funded by %q, which is not a project pool (it names a project itself) — ask your hub admin.", wallet, project)
}

// ReadoptedMessage is the Event of a pod billed again after its reservation
// was returned while the pod was out of sight.
func ReadoptedMessage(reservation string, price Price, account string) string {
	return fmt.Sprintf("No account held this server's reservation %s any more (it was returned while the pod was out of sight); it costs %s again, billed to account %s from now.",
		reservation, PriceText(price), account)
}

// HeldTwiceMessage is the Event of a reservation held twice in one
// account's ledger: the later entry (on page) is returned.
func HeldTwiceMessage(reservation, page string, paid int64) string {
	return fmt.Sprintf("Reservation %s was held twice by this account's ledger; its entry on %s is returned (%d credits), the other bills the server.",
		reservation, page, paid)
}

// UnbillableMessage is the Event of a pod that no account may pay for:
// what admission would have said, and what the operator does about it.
func UnbillableMessage(denial string, stopped bool) string {
	if stopped {
		return "Nobody may pay for this server, so it is stopped: " + denial
	}
	return "Nobody may pay for this server; it runs unbilled: " + denial
}

// AccountEditIgnoredMessage is the Event of a billed pod whose account
// annotation was edited after admission: the edit moves nothing.
func AccountEditIgnoredMessage(named, account string) string {
	return fmt.Sprintf("This server now names account %s, but account %s admitted it and keeps billing it; to move a server, stop it and start it again.", named, account)
}
