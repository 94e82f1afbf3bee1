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
	// maxHashedWalletSlug leaves room for "wallet-", "-" and 16 hex digits
	// of hash within those 63.
	maxHashedWalletSlug = 32
	// walletHashBytes is the hash in a hashed name: 64 bits, so that no
	// one finds, by trying names, another username with the same wallet
	// name (32 bits are within reach of a laptop).
	walletHashBytes = 8
)

var (
	invalidName = regexp.MustCompile(`[^a-z0-9-]+`)
	// hashLike is the end of a hashed wallet name (this one's, and the
	// 8 hex digits of names made before): a username ending so is hashed
	// too, so that no plain name is ever also some other user's hashed name.
	hashLike = regexp.MustCompile(`-[0-9a-f]{8}$|-[0-9a-f]{16}$`)
)

// WalletName is the name of the wallet created for user: "wallet-<user>"
// when the username is a valid object name that does not end like a hash,
// else "wallet-<slug>-<16 hex digits of sha256(user)>". Two users never
// share a name: plain names are distinct, a plain name never ends like a
// hashed one, and hashed names differ in their 64-bit hash.
func WalletName(user string) string {
	slug := strings.Trim(invalidName.ReplaceAllString(strings.ToLower(user), "-"), "-")
	if slug == user && len(slug) <= maxPlainWalletSlug && slug != "" && !hashLike.MatchString(user) {
		return "wallet-" + slug
	}
	sum := sha256.Sum256([]byte(user))
	if len(slug) > maxHashedWalletSlug {
		slug = strings.Trim(slug[:maxHashedWalletSlug], "-")
	}
	// An empty slug gives "wallet--<hash>": no plain name starts so.
	return "wallet-" + slug + "-" + hex.EncodeToString(sum[:walletHashBytes])
}
