package operator

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestNameScopedLists: cert-controller's cache lists and watches the
// certificate Secret and the webhook configurations through this wrapper;
// RBAC resourceNames cover those requests only with the name selector.
func TestNameScopedLists(t *testing.T) {
	wrap := NameScopedLists(map[string]string{
		"/api/v1/namespaces/jhub/secrets":                                     "hubcredits-webhook-cert",
		"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations": "hubcredits-jhub-mutating",
	})
	tests := map[string]struct {
		method, url string
		wantQuery   string
	}{
		"list of the namespace's Secrets": {
			method: http.MethodGet, url: "https://api/api/v1/namespaces/jhub/secrets?limit=500",
			wantQuery: "fieldSelector=metadata.name%3Dhubcredits-webhook-cert&limit=500",
		},
		"watch, behind a proxy path, with a selector already": {
			method: http.MethodGet, url: "https://rancher/k8s/clusters/c-1/api/v1/namespaces/jhub/secrets?watch=true&fieldSelector=type%3DOpaque",
			wantQuery: "fieldSelector=type%3DOpaque%2Cmetadata.name%3Dhubcredits-webhook-cert&watch=true",
		},
		"webhook configurations": {
			method: http.MethodGet, url: "https://api/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations?watch=1",
			wantQuery: "fieldSelector=metadata.name%3Dhubcredits-jhub-mutating&watch=1",
		},
		"a get by name is left alone": {
			method: http.MethodGet, url: "https://api/api/v1/namespaces/jhub/secrets/hub",
			wantQuery: "",
		},
		"another namespace is left alone": {
			method: http.MethodGet, url: "https://api/api/v1/namespaces/other/secrets",
			wantQuery: "",
		},
		"an update is left alone": {
			method: http.MethodPut, url: "https://api/api/v1/namespaces/jhub/secrets",
			wantQuery: "",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var got string
			rt := wrap(roundTripperFunc(func(r *http.Request) (*http.Response, error) {
				got = r.URL.RawQuery
				return httptest.NewRecorder().Result(), nil
			}))
			req := httptest.NewRequest(tc.method, tc.url, nil)
			want := tc.wantQuery
			if want == "" {
				want = req.URL.RawQuery
			}
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if got != want {
				t.Errorf("query %q, want %q", got, want)
			}
		})
	}
}
