package hubapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// UserExists asks the Hub whether it knows user (GET /users/{name}; the
// service's read:users:name or read:servers scope suffices, list:users
// does not). It answers from the status alone: 200 yes, 404 no, anything
// else an error.
func (c *Client) UserExists(ctx context.Context, user string) (bool, error) {
	status, err := c.call(ctx, http.MethodGet, "/users/"+url.PathEscape(user))
	if err != nil {
		return false, err
	}
	switch status {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	default:
		return false, fmt.Errorf("the Hub API answered %d %s", status, http.StatusText(status))
	}
}
