package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// MaxCredits bounds every amount of credits in the API (10^15). It keeps all
// ledger arithmetic (balances, caps, prices times periods) far from int64
// overflow, and is still far more than any hub will ever hand out.
const MaxCredits int64 = 1_000_000_000_000_000

// Condition types of a CreditAccount.
const (
	// ConditionReady is true when the account is valid and its ledger is being kept.
	ConditionReady = "Ready"
	// ConditionLow is true when the balance covers fewer than the configured
	// number of further periods of the account's running servers.
	ConditionLow = "Low"
	// ConditionExhausted is true when a server billed to the account had to be
	// stopped because the account could not pay (reason ServerStopped); it
	// stays true until credits are added. A spawn denied for lack of credits
	// is not recorded here: the user reads the denial, and the webhook
	// leaves a Warning Event NotEnoughCredits on the account and counts it
	// (hubcredits_admission_denials_total).
	ConditionExhausted = "Exhausted"
	// ConditionDeletionHeld is true while the account is being deleted but
	// servers it funds still run: the operator keeps its ledger (and its
	// finalizer) until they end, or until an admin sets the annotation
	// hubcredits.io/force-delete: "true". It is also true while its
	// tombstone cannot be written (the tombstone ConfigMap is missing, not
	// accessible, or full): the account is released once it is.
	ConditionDeletionHeld = "DeletionHeld"
)

// Condition reasons of a CreditAccount.
const (
	ReasonLedgerOpen        = "LedgerOpen"
	ReasonProjectNotFound   = "ProjectNotFound"
	ReasonProjectChain      = "ProjectIsNotAPool"
	ReasonBalanceLow        = "BalanceLow"
	ReasonBalanceSufficient = "BalanceSufficient"
	ReasonServerStopped     = "ServerStopped"
	ReasonCreditsAvailable  = "CreditsAvailable"
	ReasonServersRunning    = "ServersRunning"
	// ReasonTombstoneStoreFull: the tombstone ConfigMap has no room for
	// the account's tombstone (an admin prunes old ones).
	ReasonTombstoneStoreFull = "TombstoneStoreFull"
	// ReasonTombstoneStoreMissing: the tombstone ConfigMap does not exist
	// and the operator may not create it.
	ReasonTombstoneStoreMissing = "TombstoneStoreMissing"
	// ReasonTombstoneStoreForbidden: the operator may not read or update
	// the tombstone ConfigMap (its name and the Role's resourceNames
	// differ).
	ReasonTombstoneStoreForbidden = "TombstoneStoreForbidden"
)

// MaxRetiredTopUps bounds the ids of applied top-ups and adjustments that
// were removed from the spec and are remembered so that re-adding one never
// applies it again (status.retiredTopUps). A change of the spec that would
// retire more is refused; the status list holds up to MaxRetiredTopUps plus
// the 256 + 256 of spec.topUps and spec.adjustments (the ids a re-created
// account takes over from its tombstone).
const MaxRetiredTopUps = 512

// MaxRememberedTopUps bounds status.retiredTopUps (its MaxItems): the ids
// retired by spec changes and those a re-created account takes over from
// its tombstone. A tombstone carries at most as many ids, and a re-created
// account takes over only as many as fit.
const MaxRememberedTopUps = 1024

// Grant replenishes an account on a fixed schedule.
type Grant struct {
	// amount is the number of credits added every interval, up to spec.cap.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000000000
	Amount int64 `json:"amount"`

	// interval is the time between two grants, at least 1s (for example "5m").
	// Grants follow a fixed schedule anchored at the account's creation, so
	// they never drift, and the schedule keeps running while the balance
	// sits at the cap.
	// +required
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="grant.interval must be at least 1s"
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('8760h')",message="grant.interval must be at most 8760h (one year)"
	Interval metav1.Duration `json:"interval"`
}

// TopUp is a one-off addition of credits.
// +kubebuilder:validation:XValidation:rule="self.amount == oldSelf.amount",message="the amount of a top-up cannot change once listed: add a new top-up with a new id instead"
type TopUp struct {
	// id names the top-up; each id is applied exactly once, ever, even if the
	// entry is removed and added again.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`
	ID string `json:"id"`

	// amount is the number of credits to add. A top-up may take the balance
	// above spec.cap. It cannot change once listed (the ledger records the
	// amount applied).
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000000000
	Amount int64 `json:"amount"`

	// reason says why the credits were added (shown in the account's ledger).
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Reason string `json:"reason,omitempty"`
}

// Adjustment is a one-off correction of the balance by an admin, up or
// down. It shares the ids of top-ups: an id names one movement, applied
// exactly once, ever.
// +kubebuilder:validation:XValidation:rule="self.amount == oldSelf.amount",message="the amount of an adjustment cannot change once listed: add a new adjustment with a new id instead"
type Adjustment struct {
	// id names the adjustment; each id is applied exactly once, ever, even
	// if the entry is removed and added again. Top-ups and adjustments
	// share ids: an id may name one or the other, not both.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`
	ID string `json:"id"`

	// amount is the signed number of credits to add (negative: to take
	// away). A negative adjustment never takes the balance below 0: the
	// ledger records the amount really taken. Credits already reserved or
	// charged for running servers are not taken back; a server whose next
	// period the lowered balance cannot pay is stopped at that boundary.
	// +required
	// +kubebuilder:validation:Minimum=-1000000000000000
	// +kubebuilder:validation:Maximum=1000000000000000
	// +kubebuilder:validation:XValidation:rule="self != 0",message="an adjustment must not be 0"
	Amount int64 `json:"amount"`

	// reason says why the balance was corrected (shown in the account's
	// ledger).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Reason string `json:"reason"`
}

// CreditAccountSpec is what the admin sets: who may spend, and how the
// account is replenished.
// +kubebuilder:validation:XValidation:rule="!has(self.initialBalance) || self.initialBalance <= self.cap",message="initialBalance must not exceed cap"
// +kubebuilder:validation:XValidation:rule="!has(self.grant) || self.grant.amount <= self.cap",message="grant.amount must not exceed cap"
// +kubebuilder:validation:XValidation:rule="!has(self.adjustments) || !has(self.topUps) || self.adjustments.all(a, !self.topUps.exists(t, t.id == a.id))",message="an id names either a top-up or an adjustment, not both",fieldPath=".adjustments"
// +kubebuilder:validation:XValidation:rule="!has(self.adjustments) || !has(oldSelf.topUps) || self.adjustments.all(a, !oldSelf.topUps.exists(t, t.id == a.id))",message="a top-up's id cannot be listed again as an adjustment: add an adjustment with a new id instead",fieldPath=".adjustments"
// +kubebuilder:validation:XValidation:rule="!has(self.topUps) || !has(oldSelf.adjustments) || self.topUps.all(t, !oldSelf.adjustments.exists(a, a.id == t.id))",message="an adjustment's id cannot be listed again as a top-up: add a top-up with a new id instead",fieldPath=".topUps"
type CreditAccountSpec struct {
	// users are the raw JupyterHub usernames (as in the pod annotation
	// hub.jupyter.org/username) allowed to spend from this account. A personal
	// wallet lists one user; a project pool may list many.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=1000
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=255
	Users []string `json:"users,omitempty"`

	// groups are JupyterHub group names whose members may spend from this
	// account, besides the users listed (a pool for a whole course). The
	// hub puts a user's groups on the pod at spawn (the annotation
	// hubcredits.io/groups); an account that lists the user by name is
	// preferred to one the user reaches only through a group.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=255
	Groups []string `json:"groups,omitempty"`

	// cap is the highest balance that grants can reach (top-ups may exceed it).
	// +optional
	// +kubebuilder:default=100
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000000000000
	Cap int64 `json:"cap"`

	// initialBalance is the balance of a new account. Defaults to cap: new
	// wallets start full, as in jupyterhub-credit-service.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000000000000
	InitialBalance *int64 `json:"initialBalance,omitempty"`

	// grant replenishes the account: amount credits every interval, up to
	// cap. Without it the balance only changes through charges and top-ups.
	// +optional
	Grant *Grant `json:"grant,omitempty"`

	// project optionally names another CreditAccount in the same namespace, a
	// project pool, that pays first; this account pays the rest. The pool
	// itself must not name a project.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Project string `json:"project,omitempty"`

	// topUps are one-off additions; each id is applied exactly once.
	// +optional
	// +listType=map
	// +listMapKey=id
	// +kubebuilder:validation:MaxItems=256
	TopUps []TopUp `json:"topUps,omitempty"`

	// adjustments are one-off corrections of the balance, up or down (never
	// below 0); each id is applied exactly once, ever.
	// +optional
	// +listType=map
	// +listMapKey=id
	// +kubebuilder:validation:MaxItems=256
	Adjustments []Adjustment `json:"adjustments,omitempty"`
}

// LedgerEntryKind says what moved credits.
// +kubebuilder:validation:Enum=Opened;Reserve;Charge;Refund;Grant;TopUp;Adjust;Stop;Settle
type LedgerEntryKind string

// Ledger entry kinds.
const (
	LedgerOpened  LedgerEntryKind = "Opened"
	LedgerReserve LedgerEntryKind = "Reserve"
	LedgerCharge  LedgerEntryKind = "Charge"
	LedgerRefund  LedgerEntryKind = "Refund"
	LedgerGrant   LedgerEntryKind = "Grant"
	LedgerTopUp   LedgerEntryKind = "TopUp"
	LedgerAdjust  LedgerEntryKind = "Adjust"
	LedgerStop    LedgerEntryKind = "Stop"
	LedgerSettle  LedgerEntryKind = "Settle"
)

// LedgerEntry records one movement of credits.
type LedgerEntry struct {
	// time is when the movement was written.
	Time metav1.Time `json:"time"`
	// kind says what moved the credits.
	Kind LedgerEntryKind `json:"kind"`
	// amount is the signed change of the balance.
	Amount int64 `json:"amount"`
	// balance is the balance after the movement.
	Balance int64 `json:"balance"`
	// subject is the pod (or top-up or adjustment id) the movement is
	// about, if any.
	// +optional
	Subject string `json:"subject,omitempty"`
	// message is a short human-readable explanation.
	// +optional
	Message string `json:"message,omitempty"`
	// count is how many movements in a row this entry sums, when more than
	// one: the billing periods of one server charged one after the other,
	// or consecutive grants. A long session keeps one line in the ledger
	// instead of filling it period by period.
	// +optional
	Count int64 `json:"count,omitempty"`
}

// ServerCharge is the ledger of one user server billed to this account,
// keyed by the reservation made when the pod was admitted.
type ServerCharge struct {
	// id is the reservation id: the UID of the admission request that
	// admitted the pod (the pod's annotation hubcredits.io/reservation).
	ID string `json:"id"`
	// pod is the name of the pod in the account's namespace.
	Pod string `json:"pod"`
	// podUID is the UID of the pod, once the controller has seen it.
	// +optional
	PodUID types.UID `json:"podUID,omitempty"`
	// user is the JupyterHub user who owns the server.
	User string `json:"user"`
	// serverName is the JupyterHub server name ("" for the default server).
	// +optional
	ServerName string `json:"serverName,omitempty"`
	// wallet is the account the server is billed to. It differs from this
	// account's name only when this account is a project pool paying first.
	Wallet string `json:"wallet"`
	// policy is the BillingPolicy that priced the server ("" for the
	// operator's default price).
	// +optional
	Policy string `json:"policy,omitempty"`
	// billingValue is the price pinned at admission: credits per period.
	BillingValue int64 `json:"billingValue"`
	// billingInterval is the length of one period, pinned at admission.
	BillingInterval metav1.Duration `json:"billingInterval"`
	// reservedAt is when the first period was reserved at admission.
	ReservedAt metav1.Time `json:"reservedAt"`
	// startedAt is when the server's clock started (its container started
	// running); unset while the pod is pending.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
	// periodsPaid counts the periods this account has paid for the server,
	// the reserved first period included.
	PeriodsPaid int64 `json:"periodsPaid"`
	// paid is everything this account has paid for the server.
	Paid int64 `json:"paid"`
	// project is the pool that pays first for this server, if any (recorded
	// on the wallet's entry at admission).
	// +optional
	Project string `json:"project,omitempty"`
	// projectPaid is what the project pool paid for this server, as
	// confirmed by the wallet (recorded on the wallet's entry).
	// +optional
	ProjectPaid int64 `json:"projectPaid,omitempty"`
	// paidThrough is the end of the last paid period, once the server runs.
	// +optional
	PaidThrough *metav1.Time `json:"paidThrough,omitempty"`
	// stopRequestedAt is set when the operator asked for the server to be
	// stopped because its next period could not be paid.
	// +optional
	StopRequestedAt *metav1.Time `json:"stopRequestedAt,omitempty"`
	// endedAt is set when the server ended and its last period was charged;
	// the entry is removed (pool first, then this account) on the next pass,
	// so a lost write can never charge the pool twice.
	// +optional
	EndedAt *metav1.Time `json:"endedAt,omitempty"`
	// shares says who paid the server's most recent periods when it was not
	// the pool first (the pool ran dry and was topped up later): runs of
	// consecutive periods, oldest first, each with the pool's share of every
	// period in the run. The periods before the runs were paid pool first.
	// A refund of periods charged after the server's end returns each period
	// to whoever paid it. Recorded on the wallet's entry.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	Shares []PeriodShare `json:"shares,omitempty"`
}

// PeriodShare is a run of consecutive periods of a server in which the
// project pool paid the same share of each period (the wallet the rest).
type PeriodShare struct {
	// periods is the number of consecutive periods in the run.
	// +kubebuilder:validation:Minimum=1
	Periods int64 `json:"periods"`
	// pool is what the project pool paid of each period of the run.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000000000000
	Pool int64 `json:"pool"`
}

// AppliedAmount is what one applied top-up or adjustment really moved.
type AppliedAmount struct {
	// id is the top-up's or adjustment's id.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	ID string `json:"id"`
	// kind is TopUp or Adjust.
	// +required
	Kind LedgerEntryKind `json:"kind"`
	// amount is the signed number of credits it really moved.
	// +required
	// +kubebuilder:validation:Minimum=-1000000000000000
	// +kubebuilder:validation:Maximum=1000000000000000
	Amount int64 `json:"amount"`
}

// PageDue is when the next charge of a page's servers is due.
type PageDue struct {
	// page is the page's number n (its name is <account>-<n>).
	// +required
	// +kubebuilder:validation:Minimum=1
	Page int32 `json:"page"`
	// at is the earliest paidThrough of the page's running servers that
	// are not free.
	// +required
	At metav1.MicroTime `json:"at"`
}

// CreditAccountStatus is the account's ledger, kept by the operator.
type CreditAccountStatus struct {
	// openedAt is when the operator opened the ledger (set the initial
	// balance). Unset on a new account.
	// +optional
	OpenedAt *metav1.Time `json:"openedAt,omitempty"`

	// balance is the number of credits available.
	// +optional
	Balance int64 `json:"balance"`

	// grantedThrough is the time of the last grant slot accounted for; the
	// next grant is due at grantedThrough + spec.grant.interval.
	// +optional
	GrantedThrough *metav1.Time `json:"grantedThrough,omitempty"`

	// appliedTopUps are the ids of the applied top-ups and adjustments that
	// spec.topUps and spec.adjustments still list. Top-ups and adjustments share
	// this bookkeeping: an id is applied once, whichever list names it.
	// Every write retires the ids the spec no longer lists first, so this
	// list never holds more than the spec's 256 + 256.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=512
	// +kubebuilder:validation:items:MaxLength=63
	AppliedTopUps []string `json:"appliedTopUps,omitempty"`

	// retiredTopUps are the ids of applied top-ups and adjustments since
	// removed from the spec, sorted: re-adding one never applies it again.
	// At most 512 are retired by spec changes (a change that would retire
	// more is refused); a re-created account takes over from its tombstone as
	// many as fit in 1024 (MaxRememberedTopUps), and stays editable then: a change that removes no
	// entry from spec.topUps or spec.adjustments is always allowed.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:MaxLength=63
	RetiredTopUps []string `json:"retiredTopUps,omitempty"`

	// appliedAmounts record what each top-up and adjustment this account
	// applied really moved (an adjustment may be clamped, a movement
	// saturates at the API's bound), while the account may still take over
	// the tombstone of a deleted account of the same name: from its
	// opening (possibly by a spawn, before the operator has seen it) until
	// the operator has claimed it (added its finalizer) or reopened it.
	// Taking over a tombstone takes back exactly what this account applied
	// of the deleted account's ids. Emptied once the account is claimed.
	// Every id is one of appliedTopUps or retiredTopUps.
	// +optional
	// +listType=map
	// +listMapKey=id
	// +kubebuilder:validation:MaxItems=1536
	AppliedAmounts []AppliedAmount `json:"appliedAmounts,omitempty"`

	// reopenedFrom is the UID of the deleted account whose tombstone this
	// account took its balance and applied top-ups from, once it did.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	ReopenedFrom string `json:"reopenedFrom,omitempty"`

	// servers are the user servers billed to (or co-funded by) this account.
	// +optional
	// +listType=map
	// +listMapKey=id
	Servers []ServerCharge `json:"servers,omitempty"`

	// pages is the number of LedgerPages (<account>-1 .. <account>-<pages>)
	// that continue status.servers once it holds 64 entries (a pool for a
	// course). 0: the account keeps every entry in status.servers.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=256
	Pages int32 `json:"pages,omitempty"`

	// pagedServers is the number of server entries on the account's pages,
	// those of status.pending not applied yet included.
	// +optional
	// +kubebuilder:validation:Minimum=0
	PagedServers int32 `json:"pagedServers,omitempty"`

	// pagedPaid is what the account has paid for the servers on its pages
	// (the sum of their entries' paid, status.pending's not applied yet
	// included).
	// +optional
	// +kubebuilder:validation:Minimum=0
	PagedPaid int64 `json:"pagedPaid,omitempty"`

	// pagedRunning is the number of servers on the account's pages that
	// run (started, no stop requested, not ended), status.pending's not
	// applied yet included. runningServers counts them with those of
	// status.servers.
	// +optional
	// +kubebuilder:validation:Minimum=0
	PagedRunning int32 `json:"pagedRunning,omitempty"`

	// pagedCost is what the servers of pagedRunning cost per period
	// together (the sum of their billingValue).
	// +optional
	// +kubebuilder:validation:Minimum=0
	PagedCost int64 `json:"pagedCost,omitempty"`

	// pagedStopping is the number of servers on the account's pages whose
	// stop was requested and that have not ended yet.
	// +optional
	// +kubebuilder:validation:Minimum=0
	PagedStopping int32 `json:"pagedStopping,omitempty"`

	// pagedDue holds, for each page with a running server that is not
	// free, the earliest boundary up to which its servers are paid (the
	// next charge of the page is due then), rounded up to microseconds;
	// status.pending's not applied yet included. Each page transaction
	// sets its page's; nothing else changes them.
	// +optional
	// +listType=map
	// +listMapKey=page
	// +kubebuilder:validation:MaxItems=256
	PagedDue []PageDue `json:"pagedDue,omitempty"`

	// pending are the transactions on pages that this account committed
	// (their credits moved here) and that the page may not show yet: at
	// most one per page. Whoever reads the account next applies each to its
	// page (when the page's status.seq is one behind) and then drops it.
	// +optional
	// +listType=map
	// +listMapKey=page
	// +kubebuilder:validation:MaxItems=8
	Pending []PageTransfer `json:"pending,omitempty"`

	// runningServers is the number of servers currently running on this account.
	// +optional
	RunningServers int32 `json:"runningServers"`

	// totalCharged counts all credits charged for servers (reservations included).
	// +optional
	TotalCharged int64 `json:"totalCharged"`
	// totalRefunded counts credits given back: reservations of servers that
	// never ran, and periods charged after a server had already ended (seen
	// late, e.g. while the API server restarted).
	// +optional
	TotalRefunded int64 `json:"totalRefunded"`
	// totalGranted counts credits added by grants.
	// +optional
	TotalGranted int64 `json:"totalGranted"`
	// totalToppedUp counts credits added by top-ups.
	// +optional
	TotalToppedUp int64 `json:"totalToppedUp"`
	// totalAdjusted is the net of the adjustments applied (negative when
	// they took away more than they added), as really applied: a negative
	// adjustment counts only what the balance could give.
	// +optional
	TotalAdjusted int64 `json:"totalAdjusted,omitempty"`

	// ledger holds the most recent movements, newest last (at most 10;
	// consecutive charges of one server and consecutive grants are merged
	// into one entry). Events on the account and its pods tell the rest.
	// +optional
	Ledger []LedgerEntry `json:"ledger,omitempty"`

	// observedGeneration is the spec generation the status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready, Low, Exhausted, DeletionHeld.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// CreditAccount is a wallet of credits that JupyterHub users spend by running
// servers: a user's personal wallet, or a project's pool that members share.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ca,categories=hubcredits
// +kubebuilder:printcolumn:name="Users",type=string,JSONPath=`.spec.users`
// +kubebuilder:printcolumn:name="Groups",type=string,JSONPath=`.spec.groups`,priority=1
// +kubebuilder:printcolumn:name="Balance",type=integer,JSONPath=`.status.balance`
// +kubebuilder:printcolumn:name="Cap",type=integer,JSONPath=`.spec.cap`
// +kubebuilder:printcolumn:name="Running",type=integer,JSONPath=`.status.runningServers`,description="Servers running on this account"
// +kubebuilder:printcolumn:name="Project",type=string,JSONPath=`.spec.project`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Low",type=string,JSONPath=`.status.conditions[?(@.type=="Low")].status`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="!has(self.spec.project) || self.spec.project != self.metadata.name",message="spec.project must name another account, not this one"
// +kubebuilder:validation:XValidation:rule="oldSelf.spec == self.spec || !has(self.status) || ((has(self.status.retiredTopUps) ? size(self.status.retiredTopUps) : 0) <= 512 ? (has(self.status.retiredTopUps) ? size(self.status.retiredTopUps) : 0) + (has(self.status.appliedTopUps) ? self.status.appliedTopUps.filter(id, (!has(self.spec.topUps) || !self.spec.topUps.exists(t, t.id == id)) && (!has(self.spec.adjustments) || !self.spec.adjustments.exists(j, j.id == id))).size() : 0) <= 512 : ((!has(oldSelf.spec.topUps) || oldSelf.spec.topUps.all(t, ((has(self.spec.topUps) && self.spec.topUps.exists(u, u.id == t.id)) || (has(self.spec.adjustments) && self.spec.adjustments.exists(u, u.id == t.id))))) && (!has(oldSelf.spec.adjustments) || oldSelf.spec.adjustments.all(j, ((has(self.spec.topUps) && self.spec.topUps.exists(u, u.id == j.id)) || (has(self.spec.adjustments) && self.spec.adjustments.exists(u, u.id == j.id)))))))",message="this change would remove too many applied top-ups or adjustments from the spec: an account remembers at most 512 removed ids (so that none is ever applied twice); keep old entries in spec.topUps and spec.adjustments instead of removing them (a change that removes no entry is always allowed)",fieldPath=".spec.topUps"
type CreditAccount struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is set by the admin.
	// +required
	Spec CreditAccountSpec `json:"spec"`
	// status is the ledger kept by the operator.
	// +optional
	Status CreditAccountStatus `json:"status,omitempty"`
}

// CreditAccountList is a list of CreditAccounts.
//
// +kubebuilder:object:root=true
type CreditAccountList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CreditAccount `json:"items"`
}

func init() {
	knownTypes = append(knownTypes, &CreditAccount{}, &CreditAccountList{})
}
