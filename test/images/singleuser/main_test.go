package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tc := range []struct {
		name      string
		args      []string
		env       map[string]string
		addr, pfx string
		wantErr   bool
	}{
		{name: "defaults", addr: "0.0.0.0:8888", pfx: "/"},
		{name: "service url", env: map[string]string{"JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:9999/user/ann/", "JUPYTERHUB_SERVICE_PREFIX": "/user/ann/"}, addr: "0.0.0.0:9999", pfx: "/user/ann/"},
		{name: "kubespawner args win", args: []string{"jupyterhub-singleuser", "--ip=10.0.0.1", "--port", "8890", "--debug"}, env: map[string]string{"JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:9999/"}, addr: "10.0.0.1:8890", pfx: "/"},
		{name: "prefix without slashes", env: map[string]string{"JUPYTERHUB_SERVICE_PREFIX": "user/bo"}, addr: "0.0.0.0:8888", pfx: "/user/bo/"},
		{name: "bad url", env: map[string]string{"JUPYTERHUB_SERVICE_URL": "http://[::1"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parse(tc.args, env(tc.env))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && (c.addr != tc.addr || c.prefix != tc.pfx) {
				t.Fatalf("got %s %s, want %s %s", c.addr, c.prefix, tc.addr, tc.pfx)
			}
		})
	}
}

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(handler(config{prefix: "/user/ann/", user: "ann<"}, time.Now()))
	defer srv.Close()
	for path, want := range map[string]string{
		"/user/ann/":           "Stub single-user server of ann&lt;",
		"/user/ann/api":        `"version":"2.14.0"`,
		"/user/ann/api/status": `"started":`,
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %d %q, want 200 containing %q", path, resp.StatusCode, body, want)
		}
		if v := resp.Header.Get("X-JupyterHub-Version"); v != hubVersion {
			t.Errorf("GET %s: X-JupyterHub-Version %q, want %q", path, v, hubVersion)
		}
	}
	resp, err := http.Get(srv.URL + "/user/bob/")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("another user's prefix: %d, want 404", resp.StatusCode)
	}
}
