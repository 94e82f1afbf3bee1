// Package v1alpha1 contains the hubcredits.io/v1alpha1 API: CreditAccount
// (a user's wallet or a project's shared pool), CreditAccountTemplate (the
// wallet the members of JupyterHub groups get on their first spawn),
// BillingPolicy (the price of a JupyterHub user server) and UsageRecord
// (the record of one ended server).
//
// +kubebuilder:object:generate=true
// +groupName=hubcredits.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of the hubcredits API.
	GroupVersion = schema.GroupVersion{Group: "hubcredits.io", Version: "v1alpha1"}

	// SchemeBuilder registers the hubcredits types with a runtime.Scheme.
	// (apimachinery's builder rather than controller-runtime's deprecated
	// scheme.Builder: the API package needs no controller-runtime.)
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the hubcredits types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme

	// knownTypes are the types registered by AddToScheme; each
	// *_types.go file adds its own in an init function.
	knownTypes []runtime.Object
)

// addKnownTypes does what controller-runtime's scheme.Builder did: the
// types under GroupVersion, plus the meta/v1 types (ListOptions, ...) for it.
func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, knownTypes...)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
