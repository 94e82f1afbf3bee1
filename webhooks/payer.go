package webhooks

import (
	"context"
	"errors"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/indexer"
)

// The webhook finds the payer in the cache (live when the cache shows none)
// and creates a wallet for a user who has none, from the template of one of
// the user's groups or when configured to.
// +kubebuilder:rbac:groups=hubcredits.io,namespace=system,resources=creditaccounts,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=hubcredits.io,namespace=system,resources=creditaccounttemplates,verbs=get;list;watch

// wallet finds (or creates) the account that pays for the user's server.
// groups are the user's JupyterHub groups, as the hub put them on the pod.
func (h *PodAdmitter) wallet(ctx context.Context, ns, user string, groups []string, label string, dryRun bool) (*hcv1.CreditAccount, error) {
	candidates, err := h.candidates(ctx, h.Reader, true, ns, user, groups, label)
	if err != nil {
		return nil, err
	}
	w, err := billing.ResolveWalletInGroups(user, groups, label, candidates)
	if err == nil && w == nil || errors.As(err, new(*billing.Denial)) && len(candidates) == 0 {
		// Nothing in the cache: the account may have been created a moment
		// ago. Ask the API server before denying (only on this rare path).
		if candidates, err = h.candidates(ctx, h.Reserver.APIReader, false, ns, user, groups, label); err != nil {
			return nil, err
		}
		w, err = billing.ResolveWalletInGroups(user, groups, label, candidates)
	}
	if err != nil || w != nil {
		return w, err
	}
	tmpl, err := h.walletTemplate(ctx, ns, groups)
	if err != nil {
		return nil, err
	}
	if tmpl == nil {
		return nil, &billing.Denial{Reason: billing.DenyNoAccount, Message: billing.NoAccountMessage(user)}
	}
	return h.createWallet(ctx, ns, user, tmpl, dryRun)
}

// walletTemplate is the template a user in groups without an account gets
// a wallet from: the CreditAccountTemplate billing.SelectTemplate picks
// (from the cache, live when the cache shows none for the groups: it may
// have been created a moment ago), else the operator's AutoCreate; nil
// when neither applies.
func (h *PodAdmitter) walletTemplate(ctx context.Context, ns string, groups []string) (*WalletTemplate, error) {
	if len(groups) == 0 || h.NoTemplates {
		return h.AutoCreate, nil
	}
	t, err := selectTemplate(ctx, h.Reader, ns, groups)
	if err == nil && t == nil {
		t, err = selectTemplate(ctx, h.Reserver.APIReader, ns, groups)
	}
	if err != nil {
		return nil, err
	}
	if t == nil {
		return h.AutoCreate, nil
	}
	return &WalletTemplate{
		Name:           t.Name,
		Cap:            t.Spec.Cap,
		InitialBalance: t.Spec.InitialBalance,
		Grant:          t.Spec.Grant,
		Project:        t.Spec.Project,
	}, nil
}

// selectTemplate lists the namespace's templates from r and picks the
// one for groups (billing.SelectTemplate). Without the
// CreditAccountTemplate API (its CRD not applied, or deleted) there is
// none.
func selectTemplate(ctx context.Context, r client.Reader, ns string, groups []string) (*hcv1.CreditAccountTemplate, error) {
	var list hcv1.CreditAccountTemplateList
	err := r.List(ctx, &list, client.InNamespace(ns))
	if meta.IsNoMatchError(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	templates := make([]*hcv1.CreditAccountTemplate, len(list.Items))
	for i := range list.Items {
		templates[i] = &list.Items[i]
	}
	return billing.SelectTemplate(groups, templates), nil
}

// candidates are the accounts that could pay for user's server: the one the
// label names, or those that list the user or one of groups. indexed says
// r is the cache, which has the users and groups indexes (the API server
// does not).
func (h *PodAdmitter) candidates(ctx context.Context, r client.Reader, indexed bool, ns, user string, groups []string, label string) ([]*hcv1.CreditAccount, error) {
	if label != "" {
		named := &hcv1.CreditAccount{}
		err := r.Get(ctx, key(ns, label), named)
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return []*hcv1.CreditAccount{named}, nil
	}
	if !indexed {
		var list hcv1.CreditAccountList
		if err := r.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return nil, err
		}
		return members(list.Items, user, groups, nil), nil
	}
	var list hcv1.CreditAccountList
	if err := r.List(ctx, &list, client.InNamespace(ns), client.MatchingFields{indexer.AccountUsersKey: user}); err != nil {
		return nil, err
	}
	out := members(list.Items, user, nil, nil)
	if len(out) > 0 {
		return out, nil // listed by name: groups are not looked at
	}
	seen := map[string]bool{}
	for _, g := range groups {
		var byGroup hcv1.CreditAccountList
		if err := r.List(ctx, &byGroup, client.InNamespace(ns), client.MatchingFields{indexer.AccountGroupsKey: g}); err != nil {
			return nil, err
		}
		out = append(out, members(byGroup.Items, user, groups, seen)...)
	}
	return out, nil
}

// members are the accounts of items that user, in groups, is a member of
// (billing.IsMember); seen, when set, leaves out the accounts an earlier
// call returned (an account that lists two of the groups).
func members(items []hcv1.CreditAccount, user string, groups []string, seen map[string]bool) []*hcv1.CreditAccount {
	var out []*hcv1.CreditAccount
	for i := range items {
		a := &items[i]
		if !billing.IsMember(a, user, groups) {
			continue
		}
		if seen != nil {
			if seen[a.Name] {
				continue
			}
			seen[a.Name] = true
		}
		out = append(out, a)
	}
	return out
}

// project returns the pool that pays first for wallet, or nil.
func (h *PodAdmitter) project(ctx context.Context, ns string, wallet *hcv1.CreditAccount) (*hcv1.CreditAccount, error) {
	return billing.ResolveProject(wallet, func(name string) *hcv1.CreditAccount {
		pool := &hcv1.CreditAccount{}
		err := h.Reader.Get(ctx, key(ns, name), pool)
		if apierrors.IsNotFound(err) {
			err = h.Reserver.APIReader.Get(ctx, key(ns, name), pool) // created a moment ago?
		}
		if err != nil {
			return nil
		}
		return pool
	})
}

// createWallet creates the user's wallet, billing.WalletName(user), from
// tmpl (in a dry run, only in memory). The name is the user's, whatever
// the template, so concurrent spawns of a new user (on any replica) create
// one wallet: the API server refuses every create but the first, and the
// others pay from the wallet it made.
func (h *PodAdmitter) createWallet(ctx context.Context, ns, user string, tmpl *WalletTemplate, dryRun bool) (*hcv1.CreditAccount, error) {
	wallet := &hcv1.CreditAccount{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   ns,
			Name:        billing.WalletName(user),
			Labels:      map[string]string{hcv1.LabelAutoCreated: "true"},
			Annotations: map[string]string{hcv1.AnnotationUsername: user},
		},
		Spec: hcv1.CreditAccountSpec{
			Users: []string{user},
			Cap:   tmpl.Cap,
			// Copies: the create decodes the API server's answer into
			// them, and the template is shared by concurrent spawns.
			InitialBalance: copyInt64(tmpl.InitialBalance),
			Grant:          tmpl.Grant.DeepCopy(),
			Project:        tmpl.Project,
		},
	}
	if tmpl.Name != "" {
		wallet.Labels[hcv1.LabelTemplate] = tmpl.Name
	}
	if dryRun {
		return wallet, nil
	}
	release, err := h.NewWallets.allow(ctx, user)
	if err != nil {
		var denial *billing.Denial
		if errors.As(err, &denial) && denial.Reason == DenyWalletLimited {
			// A concurrent spawn of the same user may have spent the
			// budget on this very wallet: pay from it if it is there.
			if existing, gerr := h.existingWallet(ctx, wallet, user); gerr == nil {
				return existing, nil
			}
		}
		return nil, err
	}
	err = h.Reserver.Client.Create(ctx, wallet)
	if err != nil {
		release() // no wallet was made: the token goes back
	}
	if apierrors.IsAlreadyExists(err) {
		return h.existingWallet(ctx, wallet, user)
	}
	if err != nil {
		return nil, err
	}
	return wallet, nil
}

// existingWallet reads the account named like wallet from the API server:
// the user's, when it lists them (a concurrent spawn created it); another
// user's account of that name is no account for user.
func (h *PodAdmitter) existingWallet(ctx context.Context, wallet *hcv1.CreditAccount, user string) (*hcv1.CreditAccount, error) {
	existing := &hcv1.CreditAccount{}
	if err := h.Reserver.APIReader.Get(ctx, client.ObjectKeyFromObject(wallet), existing); err != nil {
		return nil, err
	}
	if !billing.Lists(existing, user) {
		return nil, &billing.Denial{Reason: billing.DenyNoAccount, Message: billing.NoAccountMessage(user)}
	}
	return existing, nil
}

func copyInt64(p *int64) *int64 {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
