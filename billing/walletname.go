package billing

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
)

const (
	// maxPlainWalletSlug keeps "wallet-<user>" within 63 characters, so
	// the name is also a valid label value (the pod's account label names
	// a wallet).
	maxPlainWalletSlug = 50
	// maxHashedWalletSlug leaves room for "wallet-", "-" and 8 hex digits
	// of hash within those 63.
	maxHashedWalletSlug = 40
)

var invalidName = regexp.MustCompile(`[^a-z0-9-]+`)

// WalletName is the name of the wallet created for user: "wallet-<user>"
// when the name is a valid object name, else a slug with a hash.
func WalletName(user string) string {
	slug := strings.Trim(invalidName.ReplaceAllString(strings.ToLower(user), "-"), "-")
	if slug == user && len(slug) <= maxPlainWalletSlug && slug != "" {
		return "wallet-" + slug
	}
	sum := sha256.Sum256([]byte(user))
	if len(slug) > maxHashedWalletSlug {
		slug = strings.Trim(slug[:maxHashedWalletSlug], "-")
	}
	return "wallet-" + slug + "-" + hex.EncodeToString(sum[:4])
}
