package webhooks

// The in-process certificate rotation (main.go, --cert-rotation) keeps the
// webhook's CA and serving certificate in a Secret in the operator's
// namespace and injects the CA into the two webhook configurations. It may
// touch those three objects only, by name (the flags' defaults here; the
// chart renders its own names): its caches list and watch them with a
// metadata.name field selector (internal/operator/certs.go), which RBAC
// resourceNames cover. No other Secret of the namespace is readable — in
// the hub's namespace that includes Z2JH's Secret "hub".

// +kubebuilder:rbac:groups="",namespace=system,resources=secrets,resourceNames=hubcredits-webhook-cert,verbs=get;list;watch;update
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,resourceNames=hubcredits-mutating,verbs=get;list;watch;update
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,resourceNames=hubcredits-validating,verbs=get;list;watch;update
