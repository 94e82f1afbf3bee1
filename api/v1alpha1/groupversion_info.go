// Package v1alpha1 contains the hubcredits.io/v1alpha1 API: CreditAccount
// (a user's wallet or a project's shared pool) and BillingPolicy (the price
// of a JupyterHub user server).
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
	SchemeBuilder = &typesBuilder{}

	// AddToScheme adds the hubcredits types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// typesBuilder is controller-runtime's scheme.Builder on apimachinery
// alone, so the API types (and the billing core that imports them) do not
// pull in controller-runtime.
type typesBuilder struct{ runtime.SchemeBuilder }

// Register adds objects to the group version when the scheme is built.
func (b *typesBuilder) Register(objects ...runtime.Object) {
	b.SchemeBuilder.Register(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, objects...)
		metav1.AddToGroupVersion(s, GroupVersion)
		return nil
	})
}
