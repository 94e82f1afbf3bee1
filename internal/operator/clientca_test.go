package operator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

// pki makes a CA and a certificate it signs, for usage.
func pki(t *testing.T, name string, usage x509.ExtKeyUsage) (caPEM []byte, cert tls.Certificate, certPEM, keyPEM []byte) {
	t.Helper()
	cr := &rotator.CertRotator{CAName: name + "-ca", CAOrganization: "test", DNSName: name, ExtKeyUsages: &[]x509.ExtKeyUsage{usage}}
	now := time.Now()
	ca, err := cr.CreateCACert(now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err = cr.CreateCertPEM(ca, now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return ca.CertPEM, cert, certPEM, keyPEM
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestWebhookClientCA: with --webhook-client-ca, a webhook request without
// the API server's client certificate is refused before any handler runs,
// as is one signed by another CA; the readiness check (no certificate)
// still passes.
func TestWebhookClientCA(t *testing.T) {
	dir := t.TempDir()
	servingCA, _, servingCert, servingKey := pki(t, "localhost", x509.ExtKeyUsageServerAuth)
	clientCA, clientCert, _, _ := pki(t, "kube-apiserver", x509.ExtKeyUsageClientAuth)
	_, strangerCert, _, _ := pki(t, "stranger", x509.ExtKeyUsageClientAuth)
	for name, data := range map[string][]byte{"tls.crt": servingCert, "tls.key": servingKey, "client-ca.crt": clientCA} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	port := freePort(t)
	srv, err := NewWebhookServer(webhook.Options{Host: "127.0.0.1", Port: port, CertDir: dir, TLSOpts: WebhookTLS(false)},
		filepath.Join(dir, "client-ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	srv.Register("/mutate-v1-pod", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "reviewed")
	}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = srv.Start(ctx) }()

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(servingCA)
	call := func(certs ...tls.Certificate) (int, error) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: roots, ServerName: "localhost", Certificates: certs, MinVersion: tls.VersionTLS12,
		}}}
		resp, err := c.Post("https://127.0.0.1:"+strconv.Itoa(port)+"/mutate-v1-pod", "application/json", nil)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		return resp.StatusCode, nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := call(clientCert)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the webhook server did not come up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, err := call(clientCert); err != nil || code != http.StatusOK {
		t.Errorf("with the API server's certificate: %d, %v; want 200", code, err)
	}
	if code, err := call(); err != nil || code != http.StatusForbidden {
		t.Errorf("without a certificate: %d, %v; want 403", code, err)
	}
	// Go's client offers a certificate only to a server that names its CA,
	// so this one arrives without: refused either way.
	if code, err := call(strangerCert); err == nil && code != http.StatusForbidden {
		t.Errorf("with a certificate of another CA: %d; want 403 or the handshake refused", code)
	}
	req, _ := http.NewRequest(http.MethodGet, "/readyz", nil)
	if err := srv.StartedChecker()(req); err != nil {
		t.Errorf("readiness check: %v", err)
	}
	if _, err := NewWebhookServer(webhook.Options{}, filepath.Join(dir, "tls.key")); err == nil {
		t.Error("a client CA file without a certificate was accepted")
	}
}
