package hubapi

import (
	"context"
	"net/http"
	"testing"
)

func TestUserExists(t *testing.T) {
	tests := map[string]struct {
		status  int
		want    bool
		wantErr bool
	}{
		"known":        {status: http.StatusOK, want: true},
		"unknown":      {status: http.StatusNotFound, want: false},
		"forbidden":    {status: http.StatusForbidden, wantErr: true},
		"login page":   {status: http.StatusFound, wantErr: true},
		"hub in error": {status: http.StatusInternalServerError, wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			hub := newFakeHub(t, tc.status)
			c := &Client{URL: hub.URL + "/hub/api", TokenFile: tokenFile(t, token+"\n")}
			got, err := c.UserExists(context.Background(), "bob@example.org")
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("UserExists = %v, %v; want %v (error: %v)", got, err, tc.want, tc.wantErr)
			}
			want := request{http.MethodGet, "/hub/api/users/bob@example.org", "token " + token}
			if r := hub.requests(); len(r) != 1 || r[0] != want {
				t.Fatalf("the hub saw %+v, want %+v", r, want)
			}
		})
	}
}
