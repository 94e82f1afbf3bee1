package webhooks

import (
	"context"
	"errors"
	"testing"

	"github.com/hubcredits/hubcredits/billing"
)

type fakeDirectory map[string]bool

func (d fakeDirectory) UserExists(_ context.Context, user string) (bool, error) {
	if user == "hub-down" {
		return false, errors.New("the Hub API answered 503")
	}
	return d[user], nil
}

func TestWalletGuard(t *testing.T) {
	tests := map[string]struct {
		guard *WalletGuard
		users []string
		// wantReasons: "" allowed, a denial reason, or "error".
		wantReasons []string
	}{
		"no guard": {
			users:       []string{"a", "b", "c"},
			wantReasons: []string{"", "", ""},
		},
		"rate only": {
			guard:       &WalletGuard{PerMinute: 2},
			users:       []string{"a", "b", "c"},
			wantReasons: []string{"", "", DenyWalletLimited},
		},
		"known users only, unknown ones never use up the rate": {
			guard:       &WalletGuard{PerMinute: 1, Users: fakeDirectory{"alice": true}},
			users:       []string{"mallory", "mallory2", "alice", "alice"},
			wantReasons: []string{DenyUnknownUser, DenyUnknownUser, "", DenyWalletLimited},
		},
		"the hub cannot answer": {
			guard:       &WalletGuard{Users: fakeDirectory{}},
			users:       []string{"hub-down"},
			wantReasons: []string{"error"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			for i, u := range tc.users {
				_, err := tc.guard.allow(context.Background(), u)
				got := ""
				var d *billing.Denial
				switch {
				case errors.As(err, &d):
					got = d.Reason
				case err != nil:
					got = "error"
				}
				if got != tc.wantReasons[i] {
					t.Errorf("wallet %d for %s: got %q, want %q (%v)", i, u, got, tc.wantReasons[i], err)
				}
			}
		})
	}
}
