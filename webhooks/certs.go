package webhooks

// The in-process certificate rotation (main.go, --cert-rotation) keeps the
// webhook's CA and serving certificate in a Secret in the operator's
// namespace and injects the CA into the two webhook configurations.

// +kubebuilder:rbac:groups="",namespace=system,resources=secrets,verbs=get;list;watch;update
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations;validatingwebhookconfigurations,verbs=get;list;watch;update
