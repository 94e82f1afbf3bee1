package billing

import (
	"strings"
	"testing"
)

// TestWalletNameHashedNamesCannotBeSquatted: a hashed wallet name
// "wallet-<slug>-<hash>" must never be the plain wallet name of a valid
// username "<slug>-<hash>": otherwise anyone who may pick a username (a GitHub
// login may be "alice-smith-1a2b3c4d") computes the hash of a victim's
// name (sha256, no secret) and gets the victim's wallet name: the
// victim's first spawn is then denied (NoAccount) for ever, or, when the
// victim's wallet was deleted, the squatter's wallet takes over the
// victim's tombstone (balance and top-ups), which is keyed by name only.
func TestWalletNameHashedNamesCannotBeSquatted(t *testing.T) {
	for _, victim := range []string{"alice.smith", "Alice", "bob@uni.edu", "j_doe"} {
		squatter := strings.TrimPrefix(WalletName(victim), "wallet-")
		if squatter == victim {
			continue
		}
		if got := WalletName(squatter); got == WalletName(victim) {
			t.Errorf("users %q and %q share the wallet name %s", victim, squatter, got)
		}
	}
}
