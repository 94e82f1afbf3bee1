package billing

import (
	"slices"
	"testing"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

func TestSelectTemplate(t *testing.T) {
	tmpl := func(name string, groups ...string) *hcv1.CreditAccountTemplate {
		return testutil.MakeTemplate("jhub", name, groups...).Obj()
	}
	physics := tmpl("physics", "physics-101", "physics-102")
	staff := tmpl("staff", "staff")
	aStaff := tmpl("a-staff", "staff")
	chem := tmpl("chem", "chem-201")
	cases := map[string]struct {
		groups    []string
		templates []*hcv1.CreditAccountTemplate
		want      string // "" for none
	}{
		"no groups: no template":                      {templates: []*hcv1.CreditAccountTemplate{physics, staff}},
		"no templates":                                {groups: []string{"physics-101"}},
		"a group no template lists":                   {groups: []string{"history"}, templates: []*hcv1.CreditAccountTemplate{physics, staff}},
		"one template lists the group":                {groups: []string{"physics-102"}, templates: []*hcv1.CreditAccountTemplate{physics, staff}, want: "physics"},
		"the other groups do not matter":              {groups: []string{"history", "staff"}, templates: []*hcv1.CreditAccountTemplate{physics, staff}, want: "staff"},
		"two templates, one group: the name first":    {groups: []string{"staff"}, templates: []*hcv1.CreditAccountTemplate{staff, aStaff}, want: "a-staff"},
		"two templates, two groups: the name first":   {groups: []string{"staff", "physics-101"}, templates: []*hcv1.CreditAccountTemplate{staff, physics}, want: "physics"},
		"the order of the groups does not matter":     {groups: []string{"physics-101", "staff"}, templates: []*hcv1.CreditAccountTemplate{staff, physics}, want: "physics"},
		"a template listing two of the user's groups": {groups: []string{"physics-101", "physics-102"}, templates: []*hcv1.CreditAccountTemplate{chem, physics}, want: "physics"},
		"group names are case-sensitive":              {groups: []string{"Staff"}, templates: []*hcv1.CreditAccountTemplate{staff}},
		"names sort by bytes, not by letters":         {groups: []string{"staff"}, templates: []*hcv1.CreditAccountTemplate{tmpl("b", "staff"), tmpl("a-z", "staff"), tmpl("a0", "staff")}, want: "a-z"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := SelectTemplate(tc.groups, tc.templates)
			gotName := ""
			if got != nil {
				gotName = got.Name
			}
			if gotName != tc.want {
				t.Fatalf("SelectTemplate(%v) = %q, want %q", tc.groups, gotName, tc.want)
			}
			// Never random: the order the cache lists templates in does
			// not change the choice.
			reversed := slices.Clone(tc.templates)
			slices.Reverse(reversed)
			if again := SelectTemplate(tc.groups, reversed); again != got {
				t.Errorf("reversed order picks %v, want %v", again, got)
			}
		})
	}
}
