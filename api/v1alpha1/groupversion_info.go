// Package v1alpha1 contains the hubcredits.io/v1alpha1 API: CreditAccount
// (a user's wallet or a project's shared pool) and BillingPolicy (the price
// of a JupyterHub user server).
//
// +kubebuilder:object:generate=true
// +groupName=hubcredits.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of the hubcredits API.
	GroupVersion = schema.GroupVersion{Group: "hubcredits.io", Version: "v1alpha1"}

	// SchemeBuilder registers the hubcredits types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the hubcredits types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
