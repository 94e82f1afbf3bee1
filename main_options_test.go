package main

import (
	"strings"
	"testing"
)

// TestWalletCreationOptions: the creation limit applies to every created
// wallet, CreditAccountTemplates' included, so it is passed on without
// --auto-create-wallets too; a negative limit is refused.
func TestWalletCreationOptions(t *testing.T) {
	cases := map[string]struct {
		args          []string
		wantAuto      bool
		wantPerMinute int
		wantErr       string
	}{
		"defaults: templates only, 10 a minute":  {wantPerMinute: 10},
		"no limit":                               {args: []string{"--auto-create-per-minute=0"}},
		"the operator's template as well":        {args: []string{"--auto-create-wallets", "--auto-create-per-minute=3"}, wantAuto: true, wantPerMinute: 3},
		"a negative limit":                       {args: []string{"--auto-create-per-minute=-1"}, wantErr: "--auto-create-per-minute must be >= 0"},
		"an invalid template is refused as ever": {args: []string{"--auto-create-wallets", "--wallet-cap=10", "--wallet-initial-balance=20"}, wantErr: "the wallet template is invalid"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f, _, err := parseFlags(tc.args)
			if err != nil {
				t.Fatal(err)
			}
			o, err := f.options()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (o.AutoCreate != nil) != tc.wantAuto || o.AutoCreatePerMinute != tc.wantPerMinute {
				t.Errorf("AutoCreate %v, AutoCreatePerMinute %d; want set=%v, %d", o.AutoCreate, o.AutoCreatePerMinute, tc.wantAuto, tc.wantPerMinute)
			}
		})
	}
}
