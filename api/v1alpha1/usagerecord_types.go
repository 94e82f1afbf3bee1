package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// UsagePrice is the price a server was billed at, pinned at admission.
type UsagePrice struct {
	// value is the number of credits per period.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000000000000
	Value int64 `json:"value"`
	// intervalSeconds is the length of one period in seconds.
	// +required
	// +kubebuilder:validation:Minimum=1
	IntervalSeconds int64 `json:"intervalSeconds"`
}

// UsagePayer is what one account paid for a server.
type UsagePayer struct {
	// account is the CreditAccount that paid (in the record's namespace).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Account string `json:"account"`
	// credits is what it paid, net of refunds.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000000000000
	Credits int64 `json:"credits"`
}

// UsageRecord is the durable record of one user server whose billing
// ended: who ran it, at what price, for how long, and who paid how much.
// The operator writes exactly one per ended server, in the namespace of
// the account that paid for it, named after the server's reservation, and
// deletes it once it is older than --usage-retention. It has no spec and
// no status: every field is written once and cannot be changed.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=ur,categories=hubcredits
// +kubebuilder:printcolumn:name="User",type=string,JSONPath=`.user`
// +kubebuilder:printcolumn:name="Server",type=string,JSONPath=`.server`
// +kubebuilder:printcolumn:name="Account",type=string,JSONPath=`.account`
// +kubebuilder:printcolumn:name="Policy",type=string,JSONPath=`.policy`,priority=1
// +kubebuilder:printcolumn:name="Periods",type=integer,JSONPath=`.periods`
// +kubebuilder:printcolumn:name="Total",type=integer,JSONPath=`.total`,description="Credits paid for the server, by every payer"
// +kubebuilder:printcolumn:name="Start",type=string,format=date-time,JSONPath=`.start`
// +kubebuilder:printcolumn:name="End",type=string,format=date-time,JSONPath=`.end`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.end >= self.start",message="end must not be before start"
type UsageRecord struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// reservation is the id of the server's reservation (the pod's
	// annotation hubcredits.io/reservation; "pod-<uid>" for a pod the
	// operator adopted). The record's name is derived from it.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a usage record cannot be changed"
	Reservation string `json:"reservation"`

	// user is the JupyterHub user who ran the server.
	// +required
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a usage record cannot be changed"
	User string `json:"user"`

	// server is the name of the server's pod.
	// +required
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a usage record cannot be changed"
	Server string `json:"server"`

	// serverName is the JupyterHub server name ("" for the default server).
	// +required
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a usage record cannot be changed"
	ServerName string `json:"serverName"`

	// account is the CreditAccount the server was billed to (its wallet).
	// +required
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a usage record cannot be changed"
	Account string `json:"account"`

	// project is the project pool that paid first ("" without one).
	// +required
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a usage record cannot be changed"
	Project string `json:"project"`

	// policy is the BillingPolicy that priced the server ("" for the
	// operator's default price).
	// +required
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a usage record cannot be changed"
	Policy string `json:"policy"`

	// price is what one period cost.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a usage record cannot be changed"
	Price UsagePrice `json:"price"`

	// start is when the server's clock started (its container started
	// running).
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a usage record cannot be changed"
	Start metav1.Time `json:"start"`

	// end is when billing saw the server end and charged its last period
	// (its pod's deletion or end, or later when the operator was down then).
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a usage record cannot be changed"
	End metav1.Time `json:"end"`

	// periods is the number of periods paid, the reserved first one
	// included.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a usage record cannot be changed"
	Periods int64 `json:"periods"`

	// payers says who paid how much: the project pool (when one paid
	// first), then the wallet.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a usage record cannot be changed"
	Payers []UsagePayer `json:"payers"`

	// total is everything paid for the server, by every payer.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000000000000
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a usage record cannot be changed"
	Total int64 `json:"total"`
}

// UsageRecordList is a list of UsageRecords.
//
// +kubebuilder:object:root=true
type UsageRecordList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []UsageRecord `json:"items"`
}

func init() {
	knownTypes = append(knownTypes, &UsageRecord{}, &UsageRecordList{})
}
