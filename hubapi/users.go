package hubapi

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// UserExists asks the Hub whether it knows user (GET /users/{name}; the
// service's read:servers or list:users scope suffices). It answers from
// the status alone: 200 yes, 404 no, anything else an error.
func (c *Client) UserExists(ctx context.Context, user string) (bool, error) {
	token, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return false, fmt.Errorf("reading the Hub API token: %w", err)
	}
	u := strings.TrimRight(c.URL, "/") + "/users/" + url.PathEscape(user)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", "token "+strings.TrimSpace(string(token)))
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	// Never follow a redirect (a login page would answer 200 for anyone,
	// and the token would go along).
	noRedirect := *hc
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := noRedirect.Do(req)
	if err != nil {
		return false, fmt.Errorf("calling the Hub API: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	default:
		return false, fmt.Errorf("the Hub API answered %s", resp.Status)
	}
}
