package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/hubcredits/hubcredits/internal/testutil"
)

// FuzzAdmissionReview feeds arbitrary bodies to the pod webhook's HTTP
// handler (as the API server would, or an attacker on the network): it must
// answer, never panic, and never echo the planted token.
func FuzzAdmissionReview(f *testing.F) {
	pod, _ := json.Marshal(testutil.MakeKubeSpawnerPod(testNS, "alice", "").Obj())
	review := func(raw []byte) []byte {
		b, _ := json.Marshal(map[string]any{
			"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
			"request": map[string]any{
				"uid": "u1", "kind": map[string]string{"group": "", "version": "v1", "kind": "Pod"},
				"resource":  map[string]string{"group": "", "version": "v1", "resource": "pods"},
				"operation": "CREATE", "namespace": "jhub", "object": json.RawMessage(raw),
				"userInfo": map[string]any{"username": "system:serviceaccount:jhub:hub"},
			},
		})
		return b
	}
	f.Add(review(pod))
	f.Add(review([]byte(`{"metadata":{"labels":{"component":"singleuser-server"},"annotations":{"hub.jupyter.org/username":""}}}`)))
	f.Add(review([]byte(`{"metadata":{"labels":{"component":"singleuser-server"},"annotations":{"hub.jupyter.org/username":"alice","hubcredits.io/reservation":"x"}}}`)))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null}`))
	f.Add([]byte(`not json`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		env := newWebhookEnv(openAccount("alice", "alice").Balance(100).Obj())
		wh := &admission.Webhook{Handler: env.h}
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, PodWebhookPath, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		wh.ServeHTTP(rec, req.WithContext(context.Background()))
		if rec.Code == 0 {
			t.Fatal("no answer")
		}
		if strings.Contains(rec.Body.String(), plantedToken) {
			t.Fatalf("the answer echoes the token: %s", rec.Body.String())
		}
	})
}
