package webhooks

import (
	"context"
	"errors"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
)

// +kubebuilder:webhook:path=/validate-hubcredits-io-v1alpha1-billingpolicy,mutating=false,failurePolicy=fail,sideEffects=None,groups=hubcredits.io,resources=billingpolicies,verbs=create;update,versions=v1alpha1,name=billingpolicies.hubcredits.io,admissionReviewVersions=v1,timeoutSeconds=5

// BillingPolicyValidator refuses policies whose CEL expressions do not
// compile, with the compiler's message: the one check a CRD rule cannot do.
type BillingPolicyValidator struct{}

var _ admission.Validator[*hcv1.BillingPolicy] = BillingPolicyValidator{}

// ValidateCreate implements admission.Validator.
func (BillingPolicyValidator) ValidateCreate(_ context.Context, p *hcv1.BillingPolicy) (admission.Warnings, error) {
	return validatePolicy(p)
}

// ValidateUpdate implements admission.Validator.
func (BillingPolicyValidator) ValidateUpdate(_ context.Context, _, p *hcv1.BillingPolicy) (admission.Warnings, error) {
	return validatePolicy(p)
}

// ValidateDelete implements admission.Validator.
func (BillingPolicyValidator) ValidateDelete(context.Context, *hcv1.BillingPolicy) (admission.Warnings, error) {
	return nil, nil
}

var billingPolicyKind = hcv1.GroupVersion.WithKind("BillingPolicy").GroupKind()

// validatePolicy refuses a policy that does not compile, as an Invalid
// error with one cause per field (as the API server reports its own checks).
func validatePolicy(p *hcv1.BillingPolicy) (admission.Warnings, error) {
	_, err := billing.Compile(p)
	if err == nil {
		return nil, nil
	}
	var errs field.ErrorList
	for _, e := range unjoin(err) {
		var fe *billing.FieldError
		if errors.As(e, &fe) {
			errs = append(errs, field.Invalid(fe.Field, fe.Value, fe.Err.Error()))
		} else {
			errs = append(errs, field.Invalid(field.NewPath("spec"), field.OmitValueType{}, e.Error()))
		}
	}
	return nil, apierrors.NewInvalid(billingPolicyKind, p.Name, errs)
}

// unjoin returns the errors joined in err (errors.Join), or err alone.
func unjoin(err error) []error {
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		return joined.Unwrap()
	}
	return []error{err}
}

// SetupBillingPolicyWebhook registers the validator with the manager.
func SetupBillingPolicyWebhook(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &hcv1.BillingPolicy{}).WithValidator(BillingPolicyValidator{}).Complete()
}

// SetupPodWebhook registers the pod webhook with the manager.
func SetupPodWebhook(mgr ctrl.Manager, h *PodAdmitter) {
	if h.Decoder == nil {
		h.Decoder = admission.NewDecoder(mgr.GetScheme())
	}
	mgr.GetWebhookServer().Register(PodWebhookPath, &admission.Webhook{Handler: h, RecoverPanic: ptrTrue()})
}

func ptrTrue() *bool { t := true; return &t }

var _ runtime.Object = &hcv1.BillingPolicy{}
