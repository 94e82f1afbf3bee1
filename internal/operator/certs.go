package operator

import (
	"errors"
	"net/http"
	"strings"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// CertRotation names what the in-process certificate rotation touches:
// the Secret with the CA and serving certificate, and the two webhook
// configurations it injects the CA into.
type CertRotation struct {
	// Namespace of the operator: its Secret and its webhook Service.
	Namespace      string
	SecretName     string
	ServiceName    string
	MutatingName   string
	ValidatingName string
	// CertDir is where the Secret is mounted (the webhook server's CertDir).
	CertDir string
	// ControllerName names the rotation's controller ("" is
	// cert-controller's default); unique per process.
	ControllerName string
}

// Check refuses a rotation that lacks where to keep the certificate.
func (c CertRotation) Check() error {
	if c.Namespace == "" {
		return errors.New("--cert-rotation needs --operator-namespace (or POD_NAMESPACE)")
	}
	if c.CertDir == "" {
		return errors.New("--cert-rotation needs --webhook-cert-dir (where the Secret is mounted)")
	}
	return nil
}

// AddCertRotation sets up in-process certificate rotation (as Gatekeeper
// and Kueue do): a self-signed CA and serving certificate in a Secret, the
// CA injected into the webhook configurations. It returns a channel closed
// once the serving certificate is on disk.
//
// cert-controller (v0.16) builds its own cache, without options: it would
// list and watch every Secret of the namespace and every webhook
// configuration of the cluster, which needs RBAC on all of them — in the
// hub's namespace, Z2JH's Secret "hub" among them. It is therefore given a
// rest.Config whose list and watch requests for those three collections
// carry a metadata.name field selector: the API server then authorizes them
// as requests for that one name, which RBAC resourceNames cover
// (config/rbac/role.yaml). Its writes go through the manager's client, by
// name.
func AddCertRotation(mgr manager.Manager, c CertRotation) (<-chan struct{}, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(mgr.GetConfig())
	cfg.Wrap(NameScopedLists(map[string]string{
		"/api/v1/namespaces/" + c.Namespace + "/secrets":                        c.SecretName,
		"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations":   c.MutatingName,
		"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations": c.ValidatingName,
	}))
	ready := make(chan struct{})
	svc := c.ServiceName + "." + c.Namespace + ".svc"
	err := rotator.AddRotator(configOverride{Manager: mgr, cfg: cfg}, &rotator.CertRotator{
		SecretKey:      types.NamespacedName{Namespace: c.Namespace, Name: c.SecretName},
		CertDir:        c.CertDir,
		CAName:         "hubcredits-ca",
		CAOrganization: "hubcredits",
		DNSName:        svc,
		ExtraDNSNames:  []string{svc + ".cluster.local", c.ServiceName + "." + c.Namespace},
		IsReady:        ready,
		Webhooks: []rotator.WebhookInfo{
			{Name: c.MutatingName, Type: rotator.Mutating},
			{Name: c.ValidatingName, Type: rotator.Validating},
		},
		// Every replica serves the webhook, so every replica needs the files.
		RequireLeaderElection: false,
		ControllerName:        c.ControllerName,
	})
	return ready, err
}

// configOverride is the manager as cert-controller sees it: GetConfig (used
// only for its cache) returns the name-scoped config.
type configOverride struct {
	manager.Manager
	cfg *rest.Config
}

func (m configOverride) GetConfig() *rest.Config { return m.cfg }

// NameScopedLists returns a transport wrapper that adds a metadata.name
// field selector to list and watch requests (GET on a collection) whose
// path ends with one of the given collection paths, so that a cache built
// on it sees, and needs RBAC for, that one object only.
func NameScopedLists(byCollection map[string]string) func(http.RoundTripper) http.RoundTripper {
	return func(next http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			if req.Method != http.MethodGet {
				return next.RoundTrip(req)
			}
			for collection, name := range byCollection {
				if !strings.HasSuffix(strings.TrimSuffix(req.URL.Path, "/"), collection) {
					continue
				}
				req = req.Clone(req.Context())
				q := req.URL.Query()
				sel := "metadata.name=" + name
				if fs := q.Get("fieldSelector"); fs != "" {
					sel = fs + "," + sel
				}
				q.Set("fieldSelector", sel)
				req.URL.RawQuery = q.Encode()
				break
			}
			return next.RoundTrip(req)
		})
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
