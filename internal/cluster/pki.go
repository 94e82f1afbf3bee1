package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certValidity is long enough for any test run and short enough that a
// forgotten state directory is worthless soon.
const certValidity = 7 * 24 * time.Hour

// pair is a certificate and its key.
type pair struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// leaf describes a certificate the CA issues.
type leaf struct {
	file   string // pki/<file>.crt and .key
	cn     string
	orgs   []string
	ips    []net.IP
	dns    []string
	server bool
	client bool
}

// writePKI creates the cluster's one CA, every serving and client
// certificate of the components, and the service-account signing key under
// dir. One CA is enough for a throw-away single-node cluster.
func writePKI(dir string, nodeIP net.IP, nodeName string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := newCA()
	if err != nil {
		return err
	}
	if err := writePair(dir, "ca", ca); err != nil {
		return err
	}
	leaves := []leaf{
		{file: "apiserver", cn: "kube-apiserver", server: true,
			ips: []net.IP{nodeIP, net.ParseIP(apiServiceIP), net.ParseIP("127.0.0.1")},
			dns: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"}},
		{file: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true},
		{file: "admin", cn: "kubernetes-admin", orgs: []string{"system:masters"}, client: true},
		{file: "controller-manager", cn: "system:kube-controller-manager", client: true},
		{file: "scheduler", cn: "system:kube-scheduler", client: true},
		{file: "kube-proxy", cn: "system:kube-proxy", client: true},
		// kube-router's network policy controller: ClusterRole
		// kube-router (Up), read-only.
		{file: "kube-router", cn: kubeRouterUser, client: true},
		{file: "kubelet-client", cn: "system:node:" + nodeName, orgs: []string{"system:nodes"}, client: true},
		{file: "kubelet", cn: nodeName, server: true, ips: []net.IP{nodeIP}, dns: []string{nodeName}},
	}
	for _, l := range leaves {
		p, err := ca.issue(l)
		if err != nil {
			return fmt.Errorf("certificate %s: %w", l.file, err)
		}
		if err := writePair(dir, l.file, p); err != nil {
			return err
		}
	}
	// The service-account token signer (RSA: what every client expects).
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, "sa.pub"), "PUBLIC KEY", pub); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, "sa.key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(sa))
}

func newKey() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
}

func newCA() (pair, error) {
	return sign(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "hubcredits-cluster-ca"},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, pair{})
}

func (ca pair) issue(l leaf) (pair, error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: l.cn, Organization: l.orgs},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		IPAddresses: l.ips,
		DNSNames:    l.dns,
	}
	if l.server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if l.client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	return sign(tmpl, ca)
}

// sign makes a new key and a certificate of tmpl for it, valid for
// certValidity, signed by parent (self-signed when parent has no
// certificate).
func sign(tmpl *x509.Certificate, parent pair) (pair, error) {
	key, err := newKey()
	if err != nil {
		return pair{}, err
	}
	if tmpl.SerialNumber, err = serial(); err != nil {
		return pair{}, err
	}
	now := time.Now()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(certValidity)
	issuer, signer := parent.cert, parent.key
	if issuer == nil {
		issuer, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		return pair{}, err
	}
	cert, err := x509.ParseCertificate(der)
	return pair{cert: cert, key: key}, err
}

func writePair(dir, name string, p pair) error {
	if err := writePEM(filepath.Join(dir, name+".crt"), "CERTIFICATE", p.cert.Raw); err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(p.key)
	if err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, name+".key"), "PRIVATE KEY", der)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
