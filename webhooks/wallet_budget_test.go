package webhooks

import (
	"context"
	"testing"

	"github.com/hubcredits/hubcredits/internal/testutil"
)

// TestFailedCreatesDoNotSpendOthersBudget: the creation
// token is taken before the create, and given back when the create makes no
// wallet. mallory's wallet name is held by an account that does not list
// her (a squatted or admin-made "wallet-mallory"): each of her spawns takes
// a token and is denied NoAccount; three spawns (a script restarting her
// server) use up a budget of 3, and carol, a new member of the course, is
// denied WalletCreationLimited although no wallet was created.
func TestFailedCreatesDoNotSpendOthersBudget(t *testing.T) {
	env := newWebhookEnv(physicsTemplate().Obj(), testutil.MakeAccount(testNS, "wallet-mallory", "someone-else").Obj())
	env.h.NewWallets = &WalletGuard{PerMinute: 3}
	for range 3 {
		resp := env.h.Handle(context.Background(), makeRequest(t, groupPod("mallory", `["physics-101"]`).Obj()).Obj())
		if resp.Allowed || denialReason(resp) != "NoAccount" {
			t.Fatalf("mallory: allowed %v, %q", resp.Allowed, denialReason(resp))
		}
	}
	resp := env.h.Handle(context.Background(), makeRequest(t, groupPod("carol", `["physics-101"]`).Obj()).Obj())
	if !resp.Allowed {
		t.Errorf("carol, the first new user this minute: denied %s (%s)", denialReason(resp), message(resp))
	}
}
