// Package scheme builds the runtime.Scheme hubcredits uses: the built-in
// Kubernetes types and hubcredits.io/v1alpha1.
package scheme

import (
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// New returns a scheme with the built-in types and hubcredits' types.
func New() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = hcv1.AddToScheme(s)
	return s
}
