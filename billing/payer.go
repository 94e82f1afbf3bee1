package billing

import (
	"encoding/json"
	"slices"
	"sort"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/types"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// Denial is a decision not to admit a server, with the sentence the user
// reads.
type Denial struct {
	Reason  string
	Message string
	// Account is the CreditAccount the server would have been paid from,
	// when admission got as far as finding (or being told) one; AccountUID
	// is its UID when it exists. The admin finds the denial on it.
	Account    string
	AccountUID types.UID
}

// denialOn is a Denial about the account a.
func denialOn(a *hcv1.CreditAccount, reason, msg string) *Denial {
	return &Denial{Reason: reason, Message: msg, Account: a.Name, AccountUID: a.UID}
}

// NotEnoughDenial refuses a server that the wallet (and its pool) cannot
// pay; it is about the wallet.
func NotEnoughDenial(price Price, wallet, pool *hcv1.CreditAccount, now time.Time) *Denial {
	return denialOn(wallet, DenyNotEnough, NotEnoughMessage(price, wallet, pool, now))
}

func (d *Denial) Error() string { return d.Message }

// Reasons of a denial (metric labels and Event reasons).
const (
	DenyNotEnough      = "NotEnoughCredits"
	DenyNoAccount      = "NoAccount"
	DenyNotMember      = "NotMember"
	DenyAccountMissing = "AccountMissing"
	DenyAmbiguous      = "AmbiguousAccount"
	DenyMissingUser    = "MissingUsername"
	DenyPriceError     = "PriceError"
	// DenyProjectMissing is the label of every CheckProject problem (a
	// missing pool, or a pool that names a project itself); the account's
	// Ready condition tells the two apart.
	DenyProjectMissing = "ProjectMissing"
	DenyForbidden      = "Forbidden"
	// DenyInvalidGroups: the pod's hubcredits.io/groups annotation cannot
	// be read.
	DenyInvalidGroups = "InvalidGroups"
	// DenyNameTooLong: the pod's username or server name is longer than a
	// UsageRecord can hold (RecordableNames).
	DenyNameTooLong = "NameTooLong"
)

// Limits of the names a server's UsageRecord holds (its user and
// serverName, hcv1.UsageRecord): characters (Unicode code points), as the
// API server counts a string's maxLength. spec.users' and spec.groups'
// items have the same bound, but a user who reaches a pool through a group
// is listed nowhere, so the pod's names are checked themselves.
const (
	MaxUserLength       = 255
	MaxServerNameLength = 255
)

// RecordableNames checks that a server of user named serverName (the pod's
// AnnotationUsername and AnnotationServerName) can be recorded when it
// ends: a name longer than the UsageRecord API accepts is a Denial, given
// at admission, because a server admitted with it could be charged but
// never recorded.
func RecordableNames(user, serverName string) error {
	if n := utf8.RuneCountInString(user); n > MaxUserLength {
		return &Denial{Reason: DenyNameTooLong, Message: NameTooLongMessage("username", n, MaxUserLength)}
	}
	if n := utf8.RuneCountInString(serverName); n > MaxServerNameLength {
		return &Denial{Reason: DenyNameTooLong, Message: NameTooLongMessage("server name", n, MaxServerNameLength)}
	}
	return nil
}

// Lists reports whether the account lists the user by name.
func Lists(a *hcv1.CreditAccount, user string) bool {
	return slices.Contains(a.Spec.Users, user)
}

// ListsGroup reports whether the account lists one of groups
// (spec.groups).
func ListsGroup(a *hcv1.CreditAccount, groups []string) bool {
	return slices.ContainsFunc(groups, func(g string) bool { return slices.Contains(a.Spec.Groups, g) })
}

// IsMember reports whether user, in groups, may spend from the account: it
// lists the user, or one of the user's groups.
func IsMember(a *hcv1.CreditAccount, user string, groups []string) bool {
	return Lists(a, user) || ListsGroup(a, groups)
}

// Limits of the groups a pod may carry (AnnotationGroups): those of
// spec.groups' items. Lengths count characters (Unicode code points), as
// the API server counts a string's maxLength.
const (
	MaxGroups      = 256
	MaxGroupLength = 255
)

// PodGroups reads the user's JupyterHub groups from the pod's annotation
// hubcredits.io/groups (a JSON list of names); none without it. A value
// that is not such a list, or holds more than MaxGroups names or a name
// empty or longer than MaxGroupLength characters, is a Denial: the hub's glue is
// broken, and guessing would bill the wrong account.
func PodGroups(annotations map[string]string) ([]string, error) {
	raw, ok := annotations[hcv1.AnnotationGroups]
	if !ok {
		return nil, nil
	}
	var groups []string
	bad := json.Unmarshal([]byte(raw), &groups) != nil || len(groups) > MaxGroups ||
		slices.ContainsFunc(groups, func(g string) bool { return g == "" || utf8.RuneCountInString(g) > MaxGroupLength })
	if bad {
		return nil, &Denial{Reason: DenyInvalidGroups, Message: InvalidGroupsMessage()}
	}
	return groups, nil
}

// ResolveWallet picks the account that pays for a server of user: the one
// named by the pod's account label (which must list the user), else the one
// account that lists the user (a pool that funds the user's wallet does not
// count as a second candidate). It returns (nil, nil) when no account lists
// the user, so the caller may create a wallet.
func ResolveWallet(user, labelAccount string, accounts []*hcv1.CreditAccount) (*hcv1.CreditAccount, error) {
	return ResolveWalletInGroups(user, nil, labelAccount, accounts)
}

// ResolveWalletInGroups is ResolveWallet for a user in JupyterHub groups:
// the account the label names may list the user or one of the groups;
// without a label, the accounts that list the user by name are the
// candidates, and only when there is none those that list one of the
// groups (a student's own wallet is preferred to the course pool; a
// profile label sends a server to the pool).
func ResolveWalletInGroups(user string, groups []string, labelAccount string, accounts []*hcv1.CreditAccount) (*hcv1.CreditAccount, error) {
	if labelAccount != "" {
		for _, a := range accounts {
			if a.Name == labelAccount {
				if !IsMember(a, user, groups) {
					return nil, denialOn(a, DenyNotMember, NotMemberMessage(user, labelAccount))
				}
				return a, nil
			}
		}
		return nil, &Denial{Reason: DenyAccountMissing, Message: AccountMissingMessage(labelAccount), Account: labelAccount}
	}
	found := candidatesFor(user, groups, accounts)
	pools := map[string]bool{}
	for _, a := range found {
		if a.Spec.Project != "" {
			pools[a.Spec.Project] = true
		}
	}
	if len(found) > 1 && len(pools) > 0 {
		// A wallet and the pool that funds it both list the user: the
		// wallet is the one to bill (the pool pays first through it).
		wallets := found[:0:0]
		for _, a := range found {
			if !pools[a.Name] {
				wallets = append(wallets, a)
			}
		}
		if len(wallets) > 0 { // a cycle of pools leaves none: stay ambiguous
			found = wallets
		}
	}
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return found[0], nil
	}
	names := make([]string, 0, len(found))
	for _, a := range found {
		names = append(names, a.Name)
	}
	sort.Strings(names)
	return nil, &Denial{Reason: DenyAmbiguous, Message: AmbiguousMessage(user, names)}
}

// candidatesFor are the accounts that list user by name, or when none
// does, those that list one of groups.
func candidatesFor(user string, groups []string, accounts []*hcv1.CreditAccount) []*hcv1.CreditAccount {
	var named, grouped []*hcv1.CreditAccount
	for _, a := range accounts {
		switch {
		case Lists(a, user):
			named = append(named, a)
		case ListsGroup(a, groups):
			grouped = append(grouped, a)
		}
	}
	if len(named) > 0 {
		return named
	}
	return grouped
}

// ResolveProject returns the pool that pays first for wallet, or nil. A
// missing pool, or a pool that itself names a project, is a Denial (see
// CheckProject).
func ResolveProject(wallet *hcv1.CreditAccount, get func(name string) *hcv1.CreditAccount) (*hcv1.CreditAccount, error) {
	if wallet.Spec.Project == "" {
		return nil, nil
	}
	pool := get(wallet.Spec.Project)
	if problem := CheckProject(wallet, pool); problem != nil {
		return nil, denialOn(wallet, DenyProjectMissing, problem.Message)
	}
	return pool, nil
}

// ProjectProblem says why a wallet's project pool cannot pay. Reason is the
// reason of the account's Ready=False condition; Message is the sentence
// both the condition and a denied spawn show.
type ProjectProblem struct {
	Reason  string
	Message string
}

// CheckProject reports what is wrong with the project pool of wallet, or
// nil when the wallet names no project or its pool can pay. pool is the
// account wallet.spec.project names (nil when it does not exist). Pools are
// one level deep: a pool that names a project itself cannot pay. Admission
// denies a spawn for the problem; the controller sets Ready=False with it.
func CheckProject(wallet, pool *hcv1.CreditAccount) *ProjectProblem {
	switch {
	case wallet.Spec.Project == "":
		return nil
	case pool == nil:
		return &ProjectProblem{Reason: hcv1.ReasonProjectNotFound, Message: ProjectMissingMessage(wallet.Name, wallet.Spec.Project)}
	case pool.Spec.Project != "":
		return &ProjectProblem{Reason: hcv1.ReasonProjectChain, Message: ProjectChainMessage(wallet.Name, pool.Name)}
	}
	return nil
}
