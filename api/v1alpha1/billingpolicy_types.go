package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types and reasons of a BillingPolicy.
const (
	// ConditionAccepted is true when the policy's expressions compiled and the
	// policy is used to price servers.
	ConditionAccepted = "Accepted"
	// ConditionTied is true when another policy with the same priority
	// selects pods too; ties are broken by name (alphabetically first wins).
	ConditionTied = "Tied"

	ReasonValid        = "Valid"
	ReasonInvalidExpr  = "InvalidExpression"
	ReasonSamePriority = "SamePriority"
	ReasonNoTie        = "NoTie"
)

// The price of a server no policy selects, unless the operator is told
// otherwise (--default-billing-value, --default-billing-interval).
const (
	DefaultBillingValue    = int64(10)
	DefaultBillingInterval = 10 * time.Minute
)

// BillingPolicySpec is the price of the user servers it selects.
// +kubebuilder:validation:XValidation:rule="!(has(self.billingValue) && has(self.billingValueExpression))",message="set billingValue or billingValueExpression, not both"
type BillingPolicySpec struct {
	// podSelector selects the singleuser pods this policy prices, by label
	// (for example a label that a Z2JH profile sets through
	// kubespawner_override.extra_labels). Empty selects every singleuser pod.
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`

	// matchExpression optionally narrows the selection with a CEL expression
	// over `pod` (the Pod as submitted) and `groups` (the user's JupyterHub
	// groups, from the pod's annotation hubcredits.io/groups; empty without
	// it) that returns a bool, for example
	// `has(pod.spec.nodeSelector) && 'gpu' in pod.spec.nodeSelector` or
	// `'staff' in groups`.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	MatchExpression string `json:"matchExpression,omitempty"`

	// billingValue is the number of credits charged per billingInterval; 0
	// means free. When neither billingValue nor billingValueExpression is
	// set, the operator's default price applies (10 unless configured).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000000000000
	BillingValue *int64 `json:"billingValue,omitempty"`

	// billingValueExpression computes the credits per billingInterval with a
	// CEL expression over `pod` and `groups` (as in matchExpression) that
	// returns an int, for example
	// `25 * quantity(pod.spec.containers[0].resources.limits['nvidia.com/gpu']).asInteger()`.
	// It is checked when the policy is applied; a pod it cannot price is
	// denied with the reason.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	BillingValueExpression string `json:"billingValueExpression,omitempty"`

	// billingInterval is the length of one billing period, at least 1s.
	// +optional
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="billingInterval must be at least 1s"
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('8760h')",message="billingInterval must be at most 8760h (one year)"
	BillingInterval metav1.Duration `json:"billingInterval"`

	// priority orders policies that select the same pod: the highest wins,
	// and a tie goes to the name that sorts first (reported as the Tied
	// condition).
	// +optional
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=-1000000
	// +kubebuilder:validation:Maximum=1000000
	Priority int32 `json:"priority"`
}

// BillingPolicyStatus reports whether the policy is in use.
type BillingPolicyStatus struct {
	// observedGeneration is the spec generation the status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Accepted, Tied.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// BillingPolicy sets the price of JupyterHub user servers: billingValue
// credits every billingInterval, for the singleuser pods it selects.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=bp,categories=hubcredits
// +kubebuilder:printcolumn:name="Value",type=integer,JSONPath=`.spec.billingValue`
// +kubebuilder:printcolumn:name="Expression",type=string,JSONPath=`.spec.billingValueExpression`,priority=1
// +kubebuilder:printcolumn:name="Interval",type=string,JSONPath=`.spec.billingInterval`
// +kubebuilder:printcolumn:name="Priority",type=integer,JSONPath=`.spec.priority`
// +kubebuilder:printcolumn:name="Selector",type=string,JSONPath=`.spec.podSelector.matchLabels`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BillingPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the price.
	// +required
	Spec BillingPolicySpec `json:"spec"`
	// status is kept by the operator.
	// +optional
	Status BillingPolicyStatus `json:"status,omitempty"`
}

// BillingPolicyList is a list of BillingPolicies.
//
// +kubebuilder:object:root=true
type BillingPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BillingPolicy `json:"items"`
}

func init() {
	knownTypes = append(knownTypes, &BillingPolicy{}, &BillingPolicyList{})
}
