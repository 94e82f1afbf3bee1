package hubapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/util/diff"
)

const token = "hubtoken-PLANTED-7f3a9c"

// request is what the fake hub saw.
type request struct {
	Method, Path, Authorization string
}

// fakeHub is a JupyterHub API answering every request with status (and
// echoing the token in its body, as a careless proxy might).
type fakeHub struct {
	*httptest.Server
	mu   sync.Mutex
	seen []request
}

func newFakeHub(t *testing.T, status int) *fakeHub {
	t.Helper()
	h := &fakeHub{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.seen = append(h.seen, request{r.Method, r.URL.EscapedPath(), r.Header.Get("Authorization")})
		h.mu.Unlock()
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"status": ` + http.StatusText(status) + `, "auth": "` + r.Header.Get("Authorization") + `"}`))
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *fakeHub) requests() []request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]request(nil), h.seen...)
}

// tokenFile writes content to a file as a mounted Secret would.
func tokenFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStopServerPaths(t *testing.T) {
	cases := map[string]struct {
		user, server string
		wantPath     string
	}{
		"the default server":             {user: "alice", wantPath: "/hub/api/users/alice/server"},
		"a named server":                 {user: "alice", server: "gpu", wantPath: "/hub/api/users/alice/servers/gpu"},
		"an email address":               {user: "alice@example.com", wantPath: "/hub/api/users/alice@example.com/server"},
		"a slash cannot change the path": {user: "../admin", server: "x/y", wantPath: "/hub/api/users/..%2Fadmin/servers/x%2Fy"},
		"spaces and non-ASCII":           {user: "jürgen müller", wantPath: "/hub/api/users/j%C3%BCrgen%20m%C3%BCller/server"},
		"a query cannot be smuggled in":  {user: "bob?admin=1#x", wantPath: "/hub/api/users/bob%3Fadmin=1%23x/server"},
		"a server name with a percent":   {user: "bob", server: "100%", wantPath: "/hub/api/users/bob/servers/100%25"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			hub := newFakeHub(t, http.StatusNoContent)
			c := &Client{URL: hub.URL + "/hub/api", TokenFile: tokenFile(t, token+"\n")}

			if err := c.StopServer(context.Background(), tc.user, tc.server); err != nil {
				t.Fatal(err)
			}

			want := []request{{Method: http.MethodDelete, Path: tc.wantPath, Authorization: "token " + token}}
			if d := cmpDiff(want, hub.requests()); d != "" {
				t.Errorf("requests (-want +got):\n%s", d)
			}
		})
	}
}

func TestStopServerURLAndToken(t *testing.T) {
	cases := map[string]struct {
		base      string // appended to the server's URL
		tokenFile string
		wantPath  string
		wantAuth  string
	}{
		"a trailing newline is trimmed":    {base: "/hub/api", tokenFile: token + "\n", wantPath: "/hub/api/users/alice/server", wantAuth: "token " + token},
		"CRLF and spaces are trimmed":      {base: "/hub/api", tokenFile: "  " + token + "\r\n", wantPath: "/hub/api/users/alice/server", wantAuth: "token " + token},
		"a base URL with a trailing slash": {base: "/hub/api/", tokenFile: token, wantPath: "/hub/api/users/alice/server", wantAuth: "token " + token},
		"a base URL with trailing slashes": {base: "/hub/api//", tokenFile: token, wantPath: "/hub/api/users/alice/server", wantAuth: "token " + token},
		"a hub under a prefix":             {base: "/jupyter/hub/api", tokenFile: token, wantPath: "/jupyter/hub/api/users/alice/server", wantAuth: "token " + token},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			hub := newFakeHub(t, http.StatusNoContent)
			c := &Client{URL: hub.URL + tc.base, TokenFile: tokenFile(t, tc.tokenFile)}

			if err := c.StopServer(context.Background(), "alice", ""); err != nil {
				t.Fatal(err)
			}

			want := []request{{Method: http.MethodDelete, Path: tc.wantPath, Authorization: tc.wantAuth}}
			if d := cmpDiff(want, hub.requests()); d != "" {
				t.Errorf("requests (-want +got):\n%s", d)
			}
		})
	}
}

func TestStopServerReadsARotatedToken(t *testing.T) {
	hub := newFakeHub(t, http.StatusNoContent)
	path := tokenFile(t, "first\n")
	c := &Client{URL: hub.URL + "/hub/api", TokenFile: path}
	if err := c.StopServer(context.Background(), "alice", ""); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("second\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.StopServer(context.Background(), "alice", ""); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range hub.requests() {
		got = append(got, r.Authorization)
	}
	if strings.Join(got, ",") != "token first,token second" {
		t.Errorf("Authorization headers %q, want the token of the moment", got)
	}
}

func TestStopServerAnswers(t *testing.T) {
	cases := map[string]struct {
		status         int
		wantNotRunning bool
		wantErr        string // "" for success
	}{
		"204: stopped":                   {status: http.StatusNoContent},
		"202: stopping":                  {status: http.StatusAccepted},
		"200":                            {status: http.StatusOK},
		"400: the server is not running": {status: http.StatusBadRequest, wantNotRunning: true, wantErr: ErrNotRunning.Error()},
		"404: no such user or server":    {status: http.StatusNotFound, wantNotRunning: true, wantErr: ErrNotRunning.Error()},
		"403: the token lacks the scope": {status: http.StatusForbidden, wantErr: "the Hub API answered 403 Forbidden"},
		"500":                            {status: http.StatusInternalServerError, wantErr: "the Hub API answered 500 Internal Server Error"},
		"503":                            {status: http.StatusServiceUnavailable, wantErr: "the Hub API answered 503 Service Unavailable"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			hub := newFakeHub(t, tc.status)
			c := &Client{URL: hub.URL + "/hub/api", TokenFile: tokenFile(t, token+"\n")}

			err := c.StopServer(context.Background(), "alice", "")

			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("error %v, want success", err)
				}
				return
			}
			if err == nil || err.Error() != tc.wantErr {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if got := errors.Is(err, ErrNotRunning); got != tc.wantNotRunning {
				t.Errorf("errors.Is(err, ErrNotRunning) = %v, want %v", got, tc.wantNotRunning)
			}
			if strings.Contains(err.Error(), token) {
				t.Errorf("the error carries the token: %v", err)
			}
		})
	}
}

func TestStopServerFailuresDoNotCarryTheToken(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	cases := map[string]struct {
		client func(t *testing.T) *Client
	}{
		"no token file": {
			client: func(t *testing.T) *Client {
				return &Client{URL: "http://hub/hub/api", TokenFile: filepath.Join(t.TempDir(), "missing")}
			},
		},
		"the hub is down": {
			client: func(t *testing.T) *Client {
				return &Client{URL: closed.URL + "/hub/api", TokenFile: tokenFile(t, token)}
			},
		},
		"a malformed URL": {
			client: func(t *testing.T) *Client {
				return &Client{URL: "http://hub:notaport/hub/api", TokenFile: tokenFile(t, token)}
			},
		},
		"a token with a newline inside": {
			client: func(t *testing.T) *Client {
				hub := newFakeHub(t, http.StatusNoContent)
				return &Client{URL: hub.URL + "/hub/api", TokenFile: tokenFile(t, token+"\n"+token+"\n")}
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := tc.client(t).StopServer(context.Background(), "alice", "")

			if err == nil {
				t.Fatal("no error")
			}
			if errors.Is(err, ErrNotRunning) {
				t.Errorf("error %v must not read as 'not running' (the pod would be left running)", err)
			}
			if strings.Contains(err.Error(), token) {
				t.Errorf("the error carries the token: %v", err)
			}
		})
	}
}

func TestStopServerHonoursTheContext(t *testing.T) {
	hub := newFakeHub(t, http.StatusNoContent)
	c := &Client{URL: hub.URL + "/hub/api", TokenFile: tokenFile(t, token)}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	err := c.StopServer(ctx, "alice", "")

	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if n := len(hub.requests()); n != 0 {
		t.Errorf("%d requests sent after the context ended", n)
	}
}

// A hub URL that answers a DELETE with a redirect (a wrong base URL, or a
// proxy sending http to https) is followed by net/http as a GET; the
// login or home page then answers 200, which StopServer takes for
// "stopped". The controller neither deletes the pod nor charges the
// server, so it runs on for free.
func TestStopServerDoesNotTakeARedirectForAStop(t *testing.T) {
	var mu sync.Mutex
	var seen []request
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, request{r.Method, r.URL.EscapedPath(), r.Header.Get("Authorization")})
		mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/users/") {
			http.Redirect(w, r, "/hub/login?next="+r.URL.Path, http.StatusFound)
			return
		}
		_, _ = w.Write([]byte("<html>Sign in</html>"))
	}))
	defer hub.Close()
	c := &Client{URL: hub.URL, TokenFile: tokenFile(t, token)} // "/hub/api" forgotten

	err := c.StopServer(context.Background(), "alice", "")

	if err == nil {
		t.Fatalf("a redirect to the login page was taken for a stop; requests %v", seen)
	}
}

// cmpDiff stands in for cmp.Diff (go-cmp is not required by go.mod):
// a unified diff of the JSON (-want +got), or "".
func cmpDiff(want, got any) string {
	if reflect.DeepEqual(want, got) {
		return ""
	}
	return diff.Diff(want, got)
}
