package webhooks

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/hubcredits/hubcredits/billing"
)

// Reasons of the denials the wallet guard makes (metric labels).
const (
	DenyUnknownUser   = "UnknownUser"
	DenyWalletLimited = "WalletCreationLimited"
)

// UserDirectory says whether JupyterHub knows a user (hubapi.Client).
type UserDirectory interface {
	UserExists(ctx context.Context, user string) (bool, error)
}

// WalletGuard bounds what --auto-create-wallets lets an admission review
// create. A review is only as trustworthy as whoever reached the webhook
// port: one forged with a made-up username would otherwise create a
// CreditAccount per request. A wallet is created only for a user the hub
// knows (when a Hub API is configured), and at most PerMinute wallets a
// minute per replica (a burst of PerMinute, refilled evenly); a spawn over
// the limit is denied with a message to retry, and its user gets the
// wallet on a later spawn.
type WalletGuard struct {
	// Users, when set, must know the user.
	Users UserDirectory
	// PerMinute limits creations (0: no limit).
	PerMinute int

	once    sync.Once
	limiter *rate.Limiter
	// returned counts tokens given back by creates that made no wallet
	// (spent before the limiter's), at most a burst with the limiter's.
	mu       sync.Mutex
	returned int
}

// allow returns nil and a release when a wallet may be created for user
// now, else a Denial (or the error of asking the hub). The caller calls
// release when the create made no wallet (the name was taken, the API
// refused it): a create that makes nothing must not spend the budget of
// the next new users.
func (g *WalletGuard) allow(ctx context.Context, user string) (release func(), err error) {
	release = func() {}
	if g == nil {
		return release, nil
	}
	if g.Users != nil {
		known, err := g.Users.UserExists(ctx, user)
		if err != nil {
			return release, err
		}
		if !known {
			return release, &billing.Denial{Reason: DenyUnknownUser,
				Message: "JupyterHub does not know the user " + user + ", so no credit account is created for them; ask an administrator."}
		}
	}
	if g.PerMinute <= 0 {
		return release, nil
	}
	g.once.Do(func() {
		g.limiter = rate.NewLimiter(rate.Every(time.Minute/time.Duration(g.PerMinute)), g.PerMinute)
	})
	if !g.take() {
		return release, &billing.Denial{Reason: DenyWalletLimited,
			Message: "Too many new credit accounts are being created right now; please try again in a minute."}
	}
	var once sync.Once
	return func() { once.Do(g.giveBack) }, nil
}

// take spends a returned token, else one of the limiter's.
func (g *WalletGuard) take() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.returned > 0 {
		g.returned--
		return true
	}
	return g.limiter.Allow()
}

// giveBack returns a token; the returned ones and the limiter's together
// never exceed a burst.
func (g *WalletGuard) giveBack() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if float64(g.returned)+g.limiter.Tokens()+1 <= float64(g.PerMinute) {
		g.returned++
	}
}
