package billing

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

// walletHash is the suffix WalletName gives a name it had to change.
func walletHash(user string) string {
	sum := sha256.Sum256([]byte(user))
	return hex.EncodeToString(sum[:8])
}

func TestWalletName(t *testing.T) {
	long := strings.Repeat("abcdefghij", 10) // 100 valid characters
	cases := map[string]struct {
		user string
		want string
	}{
		"a valid name is kept":           {user: "alice", want: "wallet-alice"},
		"digits and hyphens are valid":   {user: "user-42", want: "wallet-user-42"},
		"an email address":               {user: "alice@example.com", want: "wallet-alice-example-com-" + walletHash("alice@example.com")},
		"upper case gets a hash":         {user: "Alice", want: "wallet-alice-" + walletHash("Alice")},
		"a dot is not kept":              {user: "a.b", want: "wallet-a-b-" + walletHash("a.b")},
		"leading and trailing symbols":   {user: "_bob_", want: "wallet-bob-" + walletHash("_bob_")},
		"nothing valid at all":           {user: "@@@", want: "wallet--" + walletHash("@@@")},
		"non-ASCII":                      {user: "jürgen", want: "wallet-j-rgen-" + walletHash("jürgen")},
		"50 valid characters are kept":   {user: long[:50], want: "wallet-" + long[:50]},
		"51 valid characters get a hash": {user: long[:51], want: "wallet-" + long[:32] + "-" + walletHash(long[:51])},
		"100 characters are cut":         {user: long, want: "wallet-" + long[:32] + "-" + walletHash(long)},
		"a cut does not end in a hyphen": {user: strings.Repeat("a", 31) + "-.b", want: "wallet-" + strings.Repeat("a", 31) + "-" + walletHash(strings.Repeat("a", 31)+"-.b")},
		"a name ending like a hash":      {user: "alice-smith-63425827", want: "wallet-alice-smith-63425827-" + walletHash("alice-smith-63425827")},
		"a name ending like a new hash":  {user: "bob-0123456789abcdef", want: "wallet-bob-0123456789abcdef-" + walletHash("bob-0123456789abcdef")},
		"hex digits without a hyphen":    {user: "cafe0123", want: "wallet-cafe0123"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := WalletName(tc.user)
			if got != tc.want {
				t.Errorf("WalletName(%q) = %q, want %q", tc.user, got, tc.want)
			}
			if errs := validation.IsDNS1123Label(got); len(errs) > 0 {
				t.Errorf("WalletName(%q) = %q is not a valid name: %v", tc.user, got, errs)
			}
		})
	}
	// Names that slug alike stay apart.
	if WalletName("alice") == WalletName("Alice") || WalletName("a.b") == WalletName("a-b") {
		t.Error("two users share a wallet name")
	}
}
