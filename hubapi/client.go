// Package hubapi stops JupyterHub servers through the Hub's REST API, the
// way jupyterhub-idle-culler does.
package hubapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Client talks to the Hub API (e.g. http://hub:8081/hub/api) with a service
// token that holds the delete:servers scope.
type Client struct {
	// URL is the Hub API base URL, ending in /hub/api.
	URL string
	// TokenFile holds the token (mounted from a Secret); it is read on every
	// call so a rotated token is picked up.
	TokenFile string
	HTTP      *http.Client
}

// ErrNotRunning says that the Hub does not know the server as running.
var ErrNotRunning = errors.New("the hub reports no such running server")

// StopServer asks the Hub to stop a user's server ("" is the default
// server). The Hub removes the proxy route, stops the spawner (which deletes
// the pod) and forgets the server's token. A nil error (200, 202 or 204)
// means the Hub accepted the stop, not that the pod is gone: the caller
// checks, and deletes the pod itself after a few such answers
// (controllers.Stopper).
func (c *Client) StopServer(ctx context.Context, user, server string) error {
	token, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return fmt.Errorf("reading the Hub API token: %w", err)
	}
	u := strings.TrimRight(c.URL, "/") + "/users/" + url.PathEscape(user)
	if server == "" {
		u += "/server"
	} else {
		u += "/servers/" + url.PathEscape(server)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "token "+strings.TrimSpace(string(token)))
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	// Never follow a redirect: it would turn the DELETE into a GET of a
	// login page (a 200 that stops nothing) and send the token elsewhere.
	noRedirect := *hc
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	hc = &noRedirect
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("calling the Hub API: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusAccepted, http.StatusOK:
		return nil
	case http.StatusNotFound, http.StatusBadRequest:
		return ErrNotRunning
	default:
		return fmt.Errorf("the Hub API answered %s", resp.Status)
	}
}
