package rbac

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/kubespawner"
	"github.com/hubcredits/hubcredits/internal/operator"
	"github.com/hubcredits/hubcredits/internal/testutil"
	"github.com/hubcredits/hubcredits/webhooks"
)

// forger calls the webhook port directly, as a process that reached it
// (a user's server, without the NetworkPolicy) could: AdmissionReviews it
// makes up, claiming to come from the hub's ServiceAccount, for pods that
// are never created.
type forger struct {
	t    *testing.T
	url  string
	http *http.Client
	n    int
}

func newForger(t *testing.T) *forger {
	w := env.WebhookInstallOptions
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(w.LocalServingCAData)
	return &forger{t: t, url: "https://" + w.LocalServingHost + ":" + strconv.Itoa(w.LocalServingPort) + webhooks.PodWebhookPath,
		http: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}}
}

// review sends a forged review for user's server and returns whether it
// was allowed, and the denial's reason text.
func (f *forger) review(ns, user string) (bool, string) {
	f.t.Helper()
	resp, err := f.http.Post(f.url, "application/json", bytes.NewReader(f.body(ns, user)))
	if err != nil {
		f.t.Fatalf("calling the webhook port: %v", err)
	}
	defer resp.Body.Close()
	out := &admissionv1.AdmissionReview{}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil || out.Response == nil {
		f.t.Fatalf("webhook answer (%s): %v", resp.Status, err)
	}
	msg := ""
	if out.Response.Result != nil {
		msg = out.Response.Result.Message
	}
	return out.Response.Allowed, msg
}

// status sends a forged review and returns the HTTP status only.
func (f *forger) status(ns, user string) int {
	f.t.Helper()
	resp, err := f.http.Post(f.url, "application/json", bytes.NewReader(f.body(ns, user)))
	if err != nil {
		f.t.Fatalf("calling the webhook port: %v", err)
	}
	defer resp.Body.Close()
	return resp.StatusCode
}

// body is a forged AdmissionReview for the creation of user's server.
func (f *forger) body(ns, user string) []byte {
	f.t.Helper()
	f.n++
	pod := kubespawner.Pod(ns, user, "", "forged")
	raw, err := json.Marshal(pod)
	if err != nil {
		f.t.Fatal(err)
	}
	body, err := json.Marshal(&admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID(fmt.Sprintf("forged-%d-%d", time.Now().UnixNano(), f.n)),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: ns, Name: pod.Name, Operation: admissionv1.Create,
			UserInfo: authenticationv1.UserInfo{Username: "system:serviceaccount:" + ns + ":hub"},
			Object:   runtime.RawExtension{Raw: raw},
		},
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return body
}

// TestForgedReviewsAreBounded: a caller that reaches the webhook port with
// forged reviews can hold a known user's balance reserved for the
// reservation grace, no longer; creates no account for a user the hub does
// not know; creates at most wallets.autoCreatePerMinute wallets a minute;
// and shows in hubcredits_reservations_orphaned_total.
func TestForgedReviewsAreBounded(t *testing.T) {
	hub := newNamespace(t, "jhub")
	const grace = 3 * time.Second
	ctx := context.Background()
	objs := render(t, hub)
	apply(t, objs, rbacKinds...)
	apply(t, objs, "Secret")

	// The hub knows frank, carol, dave and erin; not mallory.
	hubAPI := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch strings.TrimPrefix(r.URL.Path, "/hub/api/users/") {
		case "frank", "carol", "dave", "erin":
			_, _ = w.Write([]byte(`{"name": "known"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer hubAPI.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("hub-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	frank := &hcv1.CreditAccount{ObjectMeta: metav1.ObjectMeta{Namespace: hub, Name: "frank"},
		Spec: hcv1.CreditAccountSpec{Users: []string{"frank"}, Cap: 100, InitialBalance: ptr.To[int64](30)}}
	if err := k8s.Create(ctx, frank); err != nil {
		t.Fatal(err)
	}
	ensureMutatingConfigs(t, objs, hub)

	startOperator(t, tokenConfig(t, serviceAccount{hub, "hubcredits"}), hub, operator.CertRotation{
		Namespace: hub, SecretName: "hubcredits-webhook-cert", ServiceName: "hubcredits-webhook",
		MutatingName: "hubcredits-" + hub + "-mutating", ValidatingName: "hubcredits-" + hub + "-validating",
		CertDir: t.TempDir(), ControllerName: "cert-rotator-" + hub,
	}, operator.Options{
		Namespace:           hub,
		Defaults:            billing.Defaults{Value: 10, Interval: time.Minute},
		Billing:             billing.Options{OrphanGrace: grace, StopRetry: 5 * time.Second, LowPeriods: 2},
		Workers:             2,
		Webhooks:            true,
		Creators:            []string{"system:serviceaccount:" + hub + ":hub"}, // forged too: no help here
		HubURL:              hubAPI.URL + "/hub/api",
		HubTokenFile:        tokenFile,
		AutoCreate:          &webhooks.WalletTemplate{Cap: 20},
		AutoCreatePerMinute: 2,
	}, "") // no --webhook-client-ca: the port is reachable (no NetworkPolicy here)
	eventually(t, 30*time.Second, func() error { return balance(ctx, hub, "frank", 30) })
	orphanedBefore := testutil.Counter(t, "hubcredits_reservations_orphaned_total", nil)
	f := newForger(t)
	eventually(t, 30*time.Second, func() error { // the webhook server is up
		resp, err := f.http.Get(f.url)
		if err != nil {
			return err
		}
		return resp.Body.Close()
	})

	// frank (30 credits, 10 a period): three forged reviews reserve all of
	// it, the next ones are denied like a real spawn would be.
	var allowed int
	for range 5 {
		if ok, _ := f.review(hub, "frank"); ok {
			allowed++
		}
	}
	if allowed != 3 {
		t.Errorf("forged reviews against frank's 30 credits: %d reserved, want 3", allowed)
	}
	// Unknown users: no account, whatever the review claims.
	for i := range 3 {
		if ok, msg := f.review(hub, fmt.Sprintf("mallory-%d", i)); ok || !strings.Contains(msg, "does not know") {
			t.Errorf("forged review for an unknown user: allowed=%v %q", ok, msg)
		}
	}
	// Known users without a wallet: at most 2 wallets this minute.
	for _, u := range []string{"carol", "dave", "erin"} {
		ok, msg := f.review(hub, u)
		if u == "erin" {
			if ok || !strings.Contains(msg, "try again in a minute") {
				t.Errorf("third new wallet within a minute: allowed=%v %q", ok, msg)
			}
		} else if !ok {
			t.Errorf("new wallet for %s: denied %q", u, msg)
		}
	}
	var accounts hcv1.CreditAccountList
	if err := k8s.List(ctx, &accounts, client.InNamespace(hub)); err != nil {
		t.Fatal(err)
	}
	for _, a := range accounts.Items {
		if strings.HasPrefix(a.Name, "wallet-mallory") || a.Name == billing.WalletName("erin") {
			t.Errorf("account %s was created by a forged review", a.Name)
		}
	}

	// Every forged reservation is returned after the grace, and counted.
	start := time.Now()
	eventually(t, grace+30*time.Second, func() error {
		for name, want := range map[string]int64{"frank": 30, billing.WalletName("carol"): 20, billing.WalletName("dave"): 20} {
			if err := balance(ctx, hub, name, want); err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("forged reservations returned %s after the last review (grace %s)", time.Since(start).Round(100*time.Millisecond), grace)
	if got := testutil.Counter(t, "hubcredits_reservations_orphaned_total", nil) - orphanedBefore; got != 5 {
		t.Errorf("hubcredits_reservations_orphaned_total grew by %v, want 5 (3 of frank, carol, dave)", got)
	}
	if got := testutil.Counter(t, "hubcredits_admission_decisions_total", map[string]string{"reason": webhooks.DenyUnknownUser}); got < 3 {
		t.Errorf("denials for unknown users counted %v, want >= 3", got)
	}
}
