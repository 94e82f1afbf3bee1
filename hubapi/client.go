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
	path := "/users/" + url.PathEscape(user)
	if server == "" {
		path += "/server"
	} else {
		path += "/servers/" + url.PathEscape(server)
	}
	status, err := c.call(ctx, http.MethodDelete, path)
	if err != nil {
		return err
	}
	switch status {
	case http.StatusNoContent, http.StatusAccepted, http.StatusOK:
		return nil
	case http.StatusNotFound, http.StatusBadRequest:
		return ErrNotRunning
	default:
		return fmt.Errorf("the Hub API answered %d %s", status, http.StatusText(status))
	}
}

// maxBody bounds what is read (and discarded) of an answer's body.
const maxBody = 64 << 10

// defaultTimeout bounds a call when no HTTP client is configured.
const defaultTimeout = 10 * time.Second

// call sends one request to the Hub API with the service token and returns
// the answer's status. The body is read and discarded (nothing in it is
// needed, and it may be large). A redirect is never followed: it would
// turn a DELETE into a GET of a login page (a 200 that stops nothing, or
// says yes for anyone) and send the token elsewhere.
func (c *Client) call(ctx context.Context, method, path string) (int, error) {
	token, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return 0, fmt.Errorf("reading the Hub API token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.URL, "/")+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "token "+strings.TrimSpace(string(token)))
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: defaultTimeout}
	}
	noRedirect := *hc
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := noRedirect.Do(req)
	if err != nil {
		return 0, fmt.Errorf("calling the Hub API: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	return resp.StatusCode, nil
}
