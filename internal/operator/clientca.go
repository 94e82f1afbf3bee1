package operator

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

var webhookUnauthenticated = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "hubcredits_webhook_unauthenticated_requests_total",
	Help: "Webhook requests refused because they carried no client certificate signed by --webhook-client-ca.",
})

func init() {
	metrics.Registry.MustRegister(webhookUnauthenticated)
}

// NewWebhookServer returns the webhook server. With clientCAFile, every
// webhook request must present a client certificate signed by that CA:
// the one the API server presents when its admission configuration gives
// it webhook client credentials (kubeConfigFile in
// --admission-control-config-file). Requests without one get 403 and are
// counted in hubcredits_webhook_unauthenticated_requests_total.
//
// The TLS handshake itself only verifies a certificate that is given
// (VerifyClientCertIfGiven): controller-runtime's readiness check dials the
// port without one. The handlers refuse what the handshake let through.
// The CA file is read once, at start.
func NewWebhookServer(o webhook.Options, clientCAFile string) (webhook.Server, error) {
	if clientCAFile == "" {
		return webhook.NewServer(o), nil
	}
	pem, err := os.ReadFile(clientCAFile)
	if err != nil {
		return nil, fmt.Errorf("--webhook-client-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--webhook-client-ca: no PEM certificate in %s", clientCAFile)
	}
	o.TLSOpts = append(append([]func(*tls.Config){}, o.TLSOpts...), func(c *tls.Config) {
		c.ClientCAs = pool
		c.ClientAuth = tls.VerifyClientCertIfGiven
	})
	return clientCertServer{Server: webhook.NewServer(o)}, nil
}

// clientCertServer registers every webhook behind a client certificate check.
type clientCertServer struct{ webhook.Server }

func (s clientCertServer) Register(path string, hook http.Handler) {
	s.Server.Register(path, RequireClientCert(hook))
}

// RequireClientCert refuses requests whose TLS connection carried no
// verified client certificate.
func RequireClientCert(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			webhookUnauthenticated.Inc()
			http.Error(w, "a client certificate signed by the webhook client CA is required", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}
