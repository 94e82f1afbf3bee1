package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Per-server billing state out of an account's status (docs/benchmarks.md,
// "P6 design"): an account keeps at most MaxInlineServers entries in
// status.servers; the entries of a pool with more servers live on its
// LedgerPages, MaxPageServers each. Money moves on the account, entries on
// the page: a transaction on a page is committed by the account's status
// write (its balance moved and a PageTransfer recorded in status.pending)
// and applied by the page's status write (status.seq moves on).

// MaxInlineServers bounds the entries an account keeps in status.servers
// once it uses pages ("page 0" of its ledger).
const MaxInlineServers = 64

// MaxPageServers bounds the entries of one LedgerPage (status.servers'
// MaxItems).
const MaxPageServers = 64

// MaxPages bounds an account's pages (status.pages): 256 pages of 64 are
// 16,384 servers, and status.pagedDue (one line per page) stays ~15 KB.
const MaxPages = 256

// MaxPendingTransfers bounds status.pending: at most one transfer per page,
// and at most this many pages in flight at once.
const MaxPendingTransfers = 8

// MaxTransferDeltas bounds the entries one transfer changes (a whole page).
const MaxTransferDeltas = MaxPageServers

// MaxReserveBatch bounds the reservations one transfer adds: a new entry
// is carried whole (~500 bytes), a change of one in ~120, so that
// status.pending stays within ~100 KB: 7 transfers of 16 new entries and
// one move of 64 (one move at a time), or 8 charges of 64 changes.
const MaxReserveBatch = 16

// LedgerPageSpec names the account whose ledger the page continues.
type LedgerPageSpec struct {
	// account is the CreditAccount (in the page's namespace) whose server
	// entries the page holds.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.account cannot change"
	Account string `json:"account"`
}

// LedgerPageStatus is the page's part of the account's ledger, kept by the
// operator and the webhook.
type LedgerPageStatus struct {
	// seq is the sequence number of the last transaction applied to the
	// page (0 for a new page). A transaction recorded in the account's
	// status.pending with seq = this seq + 1 is committed and not applied
	// yet; with seq ≤ this seq it was applied.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Seq int64 `json:"seq,omitempty"`

	// servers are the entries of user servers billed to the account, as in
	// the account's own status.servers.
	// +optional
	// +listType=map
	// +listMapKey=id
	// +kubebuilder:validation:MaxItems=64
	Servers []ServerCharge `json:"servers,omitempty"`
}

// LedgerPage holds up to 64 server entries of a CreditAccount whose
// status.servers is full (a pool for a course): its name is
// <account>-<n>, n ≥ 1, and the account owns it. Only the operator and
// the webhook write it; the account's status.pending says which of its
// transactions are committed and not applied yet.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=lp,categories=hubcredits
// +kubebuilder:printcolumn:name="Account",type=string,JSONPath=`.spec.account`
// +kubebuilder:printcolumn:name="Seq",type=integer,JSONPath=`.status.seq`,description="Last transaction applied"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type LedgerPage struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec names the account.
	// +required
	Spec LedgerPageSpec `json:"spec"`
	// status holds the entries.
	// +optional
	Status LedgerPageStatus `json:"status,omitempty"`
}

// LedgerPageList is a list of LedgerPages.
//
// +kubebuilder:object:root=true
type LedgerPageList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []LedgerPage `json:"items"`
}

// PageTransferKind says what a transaction on a page did.
// +kubebuilder:validation:Enum=Reserve;Settle;Move
type PageTransferKind string

// Page transfer kinds.
const (
	// TransferReserve adds the entries of reservations (the webhook).
	TransferReserve PageTransferKind = "Reserve"
	// TransferSettle charges, refunds, stops and ends the page's servers
	// (the billing controller).
	TransferSettle PageTransferKind = "Settle"
	// TransferMove moves entries from the account's status.servers to the
	// page (splitting an account that held more than 64); no credits move.
	TransferMove PageTransferKind = "Move"
)

// PageTransfer is a transaction on one LedgerPage that the account has
// committed (its credits moved) and the page may not show yet.
type PageTransfer struct {
	// page is the page's number n (its name is <account>-<n>).
	// +required
	// +kubebuilder:validation:Minimum=1
	Page int32 `json:"page"`
	// seq is the page's status.seq once the transfer is applied.
	// +required
	// +kubebuilder:validation:Minimum=1
	Seq int64 `json:"seq"`
	// kind says what the transaction did.
	// +required
	Kind PageTransferKind `json:"kind"`
	// amount is the signed change of the account's balance the transaction
	// made (negative: credits paid for the page's servers).
	// +optional
	// +kubebuilder:validation:Minimum=-1000000000000000
	// +kubebuilder:validation:Maximum=1000000000000000
	Amount int64 `json:"amount,omitempty"`
	// periods counts the periods charged (negative: refunded).
	// +optional
	Periods int64 `json:"periods,omitempty"`
	// entries are the page's entries the transaction adds, changes or
	// removes.
	// +optional
	// +listType=map
	// +listMapKey=id
	// +kubebuilder:validation:MaxItems=64
	Entries []PageDelta `json:"entries,omitempty"`
}

// PageDelta is one entry of a page after a transaction: a new entry
// (add), a removed one (remove), or the fields a transaction changes.
type PageDelta struct {
	// id is the entry's reservation id.
	// +required
	// +kubebuilder:validation:MinLength=1
	ID string `json:"id"`
	// add is the whole new entry (a reservation, or an entry moved from
	// the account's status.servers).
	// +optional
	Add *ServerCharge `json:"add,omitempty"`
	// remove drops the entry (its reservation was returned, or its server
	// ended and was settled).
	// +optional
	Remove bool `json:"remove,omitempty"`
	// periodsPaid, paid and projectPaid are the entry's counts after the
	// transaction.
	// +optional
	PeriodsPaid int64 `json:"periodsPaid,omitempty"`
	// +optional
	Paid int64 `json:"paid,omitempty"`
	// +optional
	ProjectPaid int64 `json:"projectPaid,omitempty"`
	// podUID, startedAt, paidThrough, stopRequestedAt and endedAt are set
	// when the transaction set them (they are never cleared).
	// +optional
	PodUID types.UID `json:"podUID,omitempty"`
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
	// +optional
	PaidThrough *metav1.Time `json:"paidThrough,omitempty"`
	// +optional
	StopRequestedAt *metav1.Time `json:"stopRequestedAt,omitempty"`
	// +optional
	EndedAt *metav1.Time `json:"endedAt,omitempty"`
	// shares are the entry's recorded runs after the transaction, when it
	// has any.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	Shares []PeriodShare `json:"shares,omitempty"`
}

func init() {
	knownTypes = append(knownTypes, &LedgerPage{}, &LedgerPageList{})
}
