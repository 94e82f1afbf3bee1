package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/hubcredits/hubcredits/internal/localcp"
	"github.com/hubcredits/hubcredits/internal/operator"
)

// TestCertRotation starts the operator binary's run() with no certificate
// at all: it must create a CA and serving certificate, inject the CA into
// both webhook configurations, and serve the webhook with that certificate.
// The test plays the kubelet's part of mounting the Secret.
func TestCertRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the local control plane")
	}
	env, err := localcp.Start(localcp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := client.New(env.Config, client.Options{Scheme: operator.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	const ns = "hubcredits-system"
	must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	must(t, c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hubcredits-webhook-cert"}}))
	root, err := localcp.Root()
	must(t, err)
	muts, vals, err := localcp.WebhookConfigs(root, "", []string{ns})
	must(t, err)
	for _, m := range muts {
		for i := range m.Webhooks {
			m.Webhooks[i].ClientConfig = admissionv1.WebhookClientConfig{Service: &admissionv1.ServiceReference{
				Namespace: ns, Name: "hubcredits-webhook", Path: m.Webhooks[i].ClientConfig.Service.Path}}
			// Nothing could answer through a Service here: do not block pods.
			m.Webhooks[i].FailurePolicy = ptr.To(admissionv1.Ignore)
		}
		must(t, c.Create(ctx, m))
	}
	for _, v := range vals {
		for i := range v.Webhooks {
			v.Webhooks[i].ClientConfig = admissionv1.WebhookClientConfig{Service: &admissionv1.ServiceReference{
				Namespace: ns, Name: "hubcredits-webhook", Path: v.Webhooks[i].ClientConfig.Service.Path}}
			v.Webhooks[i].FailurePolicy = ptr.To(admissionv1.Ignore)
		}
		must(t, c.Create(ctx, v))
	}

	kc, err := env.AdminKubeconfig()
	must(t, err)
	kcPath := filepath.Join(t.TempDir(), "kubeconfig")
	must(t, os.WriteFile(kcPath, kc, 0o600))
	t.Setenv("KUBECONFIG", kcPath)
	certDir := t.TempDir()
	port := freePort(t)
	f, _, err := parseFlags([]string{
		"--cert-rotation", "--operator-namespace", ns, "--webhook-cert-dir", certDir,
		"--webhook-port", strconv.Itoa(port), "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
		"--namespace", "jhub",
	})
	must(t, err)
	done := make(chan error, 1)
	go func() { done <- run(ctx, f, false) }()

	// The kubelet's part: mount the Secret's keys as files.
	var secret corev1.Secret
	waitFor(t, 30*time.Second, func() error {
		if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "hubcredits-webhook-cert"}, &secret); err != nil {
			return err
		}
		if len(secret.Data["tls.crt"]) == 0 || len(secret.Data["ca.crt"]) == 0 {
			return fmt.Errorf("the operator has not written the certificates yet")
		}
		for _, k := range []string{"tls.crt", "tls.key", "ca.crt"} {
			if err := os.WriteFile(filepath.Join(certDir, k), secret.Data[k], 0o600); err != nil {
				return err
			}
		}
		return nil
	})
	// The CA is injected into both configurations.
	waitFor(t, 30*time.Second, func() error {
		var m admissionv1.MutatingWebhookConfiguration
		var v admissionv1.ValidatingWebhookConfiguration
		if err := c.Get(ctx, types.NamespacedName{Name: "hubcredits-mutating"}, &m); err != nil {
			return err
		}
		if err := c.Get(ctx, types.NamespacedName{Name: "hubcredits-validating"}, &v); err != nil {
			return err
		}
		if string(m.Webhooks[0].ClientConfig.CABundle) != string(secret.Data["ca.crt"]) ||
			string(v.Webhooks[0].ClientConfig.CABundle) != string(secret.Data["ca.crt"]) {
			return fmt.Errorf("caBundle not injected yet")
		}
		return nil
	})
	// The webhook serves with the rotated certificate, for the Service's name.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(secret.Data["ca.crt"])
	waitFor(t, 30*time.Second, func() error {
		conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), &tls.Config{
			RootCAs: pool, ServerName: "hubcredits-webhook." + ns + ".svc", MinVersion: tls.VersionTLS12,
			NextProtos: []string{"h2", "http/1.1"},
		})
		if err != nil {
			return err
		}
		defer conn.Close()
		if p := conn.ConnectionState().NegotiatedProtocol; p == "h2" {
			return fmt.Errorf("HTTP/2 is on by default")
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("operator: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the operator did not stop")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
