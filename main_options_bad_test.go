package main

import "testing"

// TestOptionsTheAPIRefusesOrMisreads: bad values are refused at start —
// those the API server would refuse in every wallet made from them
// (spec.grant.interval at most 8760h: each new user's spawn would fail at
// the wallet's create), those that would silently read as something else
// (an initial balance below -1 as "the cap", a negative grant as "no
// grant"), negative durations and counts, and a Hub API URL without its
// token (stops would silently delete pods instead).
func TestOptionsTheAPIRefusesOrMisreads(t *testing.T) {
	for name, args := range map[string][]string{
		"a grant interval over a year":     {"--auto-create-wallets", "--wallet-grant-interval=9000h"},
		"an initial balance below -1":      {"--auto-create-wallets", "--wallet-initial-balance=-5"},
		"a negative grant":                 {"--auto-create-wallets", "--wallet-grant-amount=-5"},
		"a negative reservation grace":     {"--reservation-grace=-1m"},
		"a negative stop retry":            {"--stop-retry=-1s"},
		"a negative number of low periods": {"--low-balance-periods=-3"},
		// Without the token file the URL is silently ignored: stops delete
		// pods, and wallets are created for names the hub does not know.
		"a Hub API URL without its token file": {"--hub-api-url=http://hub:8081/hub/api"},
	} {
		t.Run(name, func(t *testing.T) {
			f, _, err := parseFlags(args)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.options(); err == nil {
				t.Errorf("%v accepted", args)
			}
		})
	}
}
