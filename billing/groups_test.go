package billing

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

func TestResolveWalletInGroups(t *testing.T) {
	accounts := []*hcv1.CreditAccount{
		openAccount("alice").Users("alice").Obj(),
		openAccount("physics-101").Groups("physics-101").Obj(),
		openAccount("chem-201").Groups("chem-201", "chem-tutors").Obj(),
		openAccount("mixed").Users("tutor").Groups("staff").Obj(),
	}
	cases := map[string]struct {
		user   string
		groups []string
		label  string
		// wantWallet is the name of the account, "" for none.
		wantWallet string
		wantReason string
	}{
		"a group member without a wallet: the course pool": {
			user: "bob", groups: []string{"physics-101"}, wantWallet: "physics-101",
		},
		"a group member with a wallet: the wallet (listed by name wins)": {
			user: "alice", groups: []string{"physics-101"}, wantWallet: "alice",
		},
		"the profile's label sends a member's server to the pool": {
			user: "alice", groups: []string{"physics-101"}, label: "physics-101", wantWallet: "physics-101",
		},
		"the label names a pool of a group the user is not in": {
			user: "bob", groups: []string{"chem-201"}, label: "physics-101", wantReason: DenyNotMember,
		},
		"no groups: a group pool is nobody's": {user: "bob", wantWallet: ""},
		"a group nobody lists: no account, so the caller may create one": {
			user: "bob", groups: []string{"history"}, wantWallet: "",
		},
		"an account listing two of the user's groups is one candidate": {
			user: "bob", groups: []string{"chem-201", "chem-tutors"}, wantWallet: "chem-201",
		},
		"two pools through two groups, no label: ambiguous": {
			user: "bob", groups: []string{"physics-101", "chem-201"}, wantReason: DenyAmbiguous,
		},
		"listed by name and by group in one account": {
			user: "tutor", groups: []string{"staff"}, wantWallet: "mixed",
		},
		"group names are case-sensitive": {user: "bob", groups: []string{"Physics-101"}, wantWallet: ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := ResolveWalletInGroups(tc.user, tc.groups, tc.label, accounts)
			var denial *Denial
			if tc.wantReason != "" {
				if !errors.As(err, &denial) || denial.Reason != tc.wantReason {
					t.Fatalf("got %v, %v; want a %s denial", got, err, tc.wantReason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			gotName := ""
			if got != nil {
				gotName = got.Name
			}
			if gotName != tc.wantWallet {
				t.Errorf("wallet %q, want %q", gotName, tc.wantWallet)
			}
		})
	}
}

func TestPodGroups(t *testing.T) {
	many := make([]string, MaxGroups+1)
	for i := range many {
		many[i] = fmt.Sprintf("%q", fmt.Sprintf("g%d", i))
	}
	cases := map[string]struct {
		annotations map[string]string
		want        []string
		wantDenial  bool
	}{
		"no annotation: no groups":             {},
		"an empty list":                        {annotations: map[string]string{hcv1.AnnotationGroups: `[]`}, want: []string{}},
		"groups with any character":            {annotations: map[string]string{hcv1.AnnotationGroups: `["physics-101","Staff Room","a,b"]`}, want: []string{"physics-101", "Staff Room", "a,b"}},
		"not JSON":                             {annotations: map[string]string{hcv1.AnnotationGroups: `physics-101,staff`}, wantDenial: true},
		"not a list of strings":                {annotations: map[string]string{hcv1.AnnotationGroups: `[1,2]`}, wantDenial: true},
		"an empty name":                        {annotations: map[string]string{hcv1.AnnotationGroups: `["a",""]`}, wantDenial: true},
		"a name too long":                      {annotations: map[string]string{hcv1.AnnotationGroups: `["` + strings.Repeat("g", MaxGroupLength+1) + `"]`}, wantDenial: true},
		"255 non-ASCII characters (510 bytes)": {annotations: map[string]string{hcv1.AnnotationGroups: `["` + strings.Repeat("ф", MaxGroupLength) + `"]`}, want: []string{strings.Repeat("ф", MaxGroupLength)}},
		"256 non-ASCII characters":             {annotations: map[string]string{hcv1.AnnotationGroups: `["` + strings.Repeat("ф", MaxGroupLength+1) + `"]`}, wantDenial: true},
		"too many groups":                      {annotations: map[string]string{hcv1.AnnotationGroups: "[" + strings.Join(many, ",") + "]"}, wantDenial: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := PodGroups(tc.annotations)
			var denial *Denial
			if tc.wantDenial {
				if !errors.As(err, &denial) || denial.Reason != DenyInvalidGroups || denial.Message != InvalidGroupsMessage() {
					t.Fatalf("got %v, %v; want the InvalidGroups denial", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("groups (-want +got):\n%s", d)
			}
		})
	}
}

// TestRecordableNames: a username or server name longer than a
// UsageRecord holds (counted in characters, as the API server counts) is
// a NameTooLong denial; the bounds are the UsageRecord CRD's.
func TestRecordableNames(t *testing.T) {
	cases := map[string]struct {
		user, server string
		want         string // the denial's message, "" none
	}{
		"short names":                           {user: "alice", server: "gpu"},
		"255 characters each":                   {user: strings.Repeat("a", 255), server: strings.Repeat("s", 255)},
		"255 non-ASCII characters (bytes more)": {user: strings.Repeat("ф", 255), server: strings.Repeat("ф", 255)},
		"a username of 256":                     {user: strings.Repeat("a", 256), want: NameTooLongMessage("username", 256, MaxUserLength)},
		"a server name of 300 non-ASCII":        {user: "alice", server: strings.Repeat("ф", 300), want: NameTooLongMessage("server name", 300, MaxServerNameLength)},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := RecordableNames(tc.user, tc.server)
			var denial *Denial
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("denied: %v", err)
			case tc.want != "" && (!errors.As(err, &denial) || denial.Reason != DenyNameTooLong || denial.Message != tc.want):
				t.Fatalf("got %v, want the NameTooLong denial %q", err, tc.want)
			}
		})
	}
}

// TestRecordableNamesMatchTheUsageRecordCRD: the webhook's bounds are
// those of the UsageRecord CRD's user and serverName (maxLength).
func TestRecordableNamesMatchTheUsageRecordCRD(t *testing.T) {
	raw, err := os.ReadFile("../config/crd/bases/hubcredits.io_usagerecords.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Schema struct {
					OpenAPIV3Schema struct {
						Properties map[string]struct {
							MaxLength *int `json:"maxLength"`
						} `json:"properties"`
					} `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		t.Fatal(err)
	}
	if len(crd.Spec.Versions) != 1 {
		t.Fatalf("%d versions", len(crd.Spec.Versions))
	}
	props := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties
	for field, want := range map[string]int{"user": MaxUserLength, "serverName": MaxServerNameLength} {
		if got := props[field].MaxLength; got == nil || *got != want {
			t.Errorf("UsageRecord %s: maxLength %v, billing's bound %d", field, got, want)
		}
	}
}
