package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CreditAccountTemplateSpec is the wallet a member of one of the groups
// gets on their first spawn. Its fields mean what they mean on a
// CreditAccount, with the same bounds.
// +kubebuilder:validation:XValidation:rule="!has(self.initialBalance) || self.initialBalance <= self.cap",message="initialBalance must not exceed cap"
// +kubebuilder:validation:XValidation:rule="!has(self.grant) || self.grant.amount <= self.cap",message="grant.amount must not exceed cap"
type CreditAccountTemplateSpec struct {
	// groups are the JupyterHub groups (as in the pod annotation
	// hubcredits.io/groups) whose members get a wallet from this template
	// on their first spawn, when no account lists them or one of their
	// groups. A user in the groups of several templates gets the wallet of
	// the template whose name sorts first.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=255
	Groups []string `json:"groups"`

	// cap is the created wallet's spec.cap.
	// +optional
	// +kubebuilder:default=100
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000000000000
	Cap int64 `json:"cap"`

	// initialBalance is the created wallet's spec.initialBalance (unset:
	// the wallet starts full, at cap).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000000000000
	InitialBalance *int64 `json:"initialBalance,omitempty"`

	// grant is the created wallet's spec.grant (unset: no grant).
	// +optional
	Grant *Grant `json:"grant,omitempty"`

	// project is the created wallet's spec.project: the project pool, a
	// CreditAccount in the same namespace, that pays first for the
	// wallet's servers.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Project string `json:"project,omitempty"`
}

// CreditAccountTemplate creates a wallet for each member of some
// JupyterHub groups on their first spawn: the CreditAccount
// wallet-<user>, with the template's cap, initial balance, grant and
// project. It is used only for a user no account lists, by name or by
// group; changing or deleting it leaves the wallets it created as they are.
// Its name is at most 63 characters (a label value on those wallets).
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=cat,categories=hubcredits
// +kubebuilder:printcolumn:name="Groups",type=string,JSONPath=`.spec.groups`
// +kubebuilder:printcolumn:name="Cap",type=integer,JSONPath=`.spec.cap`
// +kubebuilder:printcolumn:name="Grant",type=integer,JSONPath=`.spec.grant.amount`
// +kubebuilder:printcolumn:name="Every",type=string,JSONPath=`.spec.grant.interval`
// +kubebuilder:printcolumn:name="Project",type=string,JSONPath=`.spec.project`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="a template's name is at most 63 characters: it is the value of the label hubcredits.io/template on the wallets it creates"
type CreditAccountTemplate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is set by the admin.
	// +required
	Spec CreditAccountTemplateSpec `json:"spec"`
}

// CreditAccountTemplateList is a list of CreditAccountTemplates.
//
// +kubebuilder:object:root=true
type CreditAccountTemplateList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CreditAccountTemplate `json:"items"`
}

func init() {
	knownTypes = append(knownTypes, &CreditAccountTemplate{}, &CreditAccountTemplateList{})
}
