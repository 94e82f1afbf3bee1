package billing

import (
	"slices"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// TemplateLists reports whether the template applies to a member of
// groups: it lists one of them (spec.groups).
func TemplateLists(t *hcv1.CreditAccountTemplate, groups []string) bool {
	return slices.ContainsFunc(groups, func(g string) bool { return slices.Contains(t.Spec.Groups, g) })
}

// SelectTemplate picks the CreditAccountTemplate a user in groups gets
// their wallet from, when no account lists the user or one of the groups:
// among the templates that list one of the groups, the one whose name
// sorts first (byte order, as kubectl sorts names). The order of the
// groups and of templates does not matter, so every replica, and every
// retry of a spawn, picks the same one. nil when none applies (the
// operator's --auto-create-wallets template, if any, is the fallback).
func SelectTemplate(groups []string, templates []*hcv1.CreditAccountTemplate) *hcv1.CreditAccountTemplate {
	var best *hcv1.CreditAccountTemplate
	for _, t := range templates {
		if TemplateLists(t, groups) && (best == nil || t.Name < best.Name) {
			best = t
		}
	}
	return best
}
