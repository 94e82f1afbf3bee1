package webhooks

import (
	"context"
	"errors"
	"net/http"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
)

// The result label of hubcredits_admission_decisions_total.
const (
	resultAdmitted = "admitted"
	resultDenied   = "denied"
	resultError    = "error"
)

// The reason label of an admitted pod or an error. A denial's reason is its
// billing.Deny* constant; shadow mode prefixes a denial's reason with
// reasonShadow.
const (
	reasonNotPodCreate  = "NotPodCreate"
	reasonNotSingleuser = "NotSingleuser"
	reasonFree          = "Free"
	reasonFreeNoAccount = "FreeNoAccount"
	reasonDryRun        = "DryRun"
	reasonReserved      = "Reserved"
	reasonShadow        = "Shadow"

	reasonDecode   = "Decode"
	reasonTimeout  = "Timeout"
	reasonInternal = "Internal"
)

// verdict is the answer to one admission request and the labels it is
// counted under.
type verdict struct {
	resp   admission.Response
	result string
	reason string
	// denied describes a denied spawn (not a dry run) for the admin: the
	// Event and the denial counter (DenialReporter).
	denied *deniedSpawn
	// account is the account a denial is about, when known (fail).
	account    string
	accountUID types.UID
}

// allow admits a pod the webhook has nothing to add to.
func allow(msg, reason string) verdict {
	return verdict{resp: admission.Allowed(msg), result: resultAdmitted, reason: reason}
}

// admitted admits a pod with resp (the price pinned by patch).
func admitted(resp admission.Response, reason string) verdict {
	return verdict{resp: resp, result: resultAdmitted, reason: reason}
}

// deny refuses a pod with msg, the reason carried in the Status's details
// (hcv1.DenialReasonCause) for the tools that ask in a dry run.
func deny(reason, msg string) verdict {
	resp := admission.Denied(msg)
	resp.Result.Details = &metav1.StatusDetails{Causes: []metav1.StatusCause{{
		Type: hcv1.DenialReasonCause, Message: reason,
	}}}
	return verdict{resp: resp, result: resultDenied, reason: reason}
}

func errored(code int32, reason string, err error) verdict {
	return verdict{resp: admission.Errored(code, err), result: resultError, reason: reason}
}

// fail turns an error into a denial (for a Denial) or an internal error.
func fail(err error) verdict {
	var denial *billing.Denial
	if errors.As(err, &denial) {
		v := deny(denial.Reason, denial.Message)
		v.account, v.accountUID = denial.Account, denial.AccountUID
		return v
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return errored(http.StatusServiceUnavailable, reasonTimeout, errors.New("hubcredits could not reserve credits in time; please try again"))
	}
	return errored(http.StatusInternalServerError, reasonInternal, errors.New("hubcredits could not reserve credits: "+err.Error()))
}

// shadowed is what shadow mode makes of a denial: the pod goes ahead
// unreserved, and the controller bills what it can.
func (v verdict) shadowed() verdict {
	return allow("shadow mode: "+v.resp.Result.Message, reasonShadow+v.reason)
}
