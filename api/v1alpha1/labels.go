package v1alpha1

// Labels and annotations that hubcredits reads from and writes on pods.
const (
	// LabelAccount on a pod names the CreditAccount that pays for it. Z2JH
	// profiles set it through kubespawner_override.extra_labels.
	LabelAccount = "hubcredits.io/account"

	// AnnotationUsername is KubeSpawner's annotation with the raw JupyterHub
	// username (labels may hold a hash of it).
	AnnotationUsername = "hub.jupyter.org/username"
	// AnnotationServerName is KubeSpawner's annotation with the raw server
	// name; absent for the default server.
	AnnotationServerName = "hub.jupyter.org/servername"
	// AnnotationGroups is the JSON list of the user's JupyterHub groups,
	// put on the pod by the hub at spawn (["physics-101","staff"]). The
	// webhook reads it like the username: from a pod whose creator passed
	// --allowed-creators (the hub).
	AnnotationGroups = "hubcredits.io/groups"

	// The price pinned on an admitted pod, so later policy edits never change
	// what a running server costs.
	AnnotationAccount         = "hubcredits.io/account"
	AnnotationProject         = "hubcredits.io/project"
	AnnotationBillingValue    = "hubcredits.io/billing-value"
	AnnotationBillingInterval = "hubcredits.io/billing-interval"
	AnnotationPolicy          = "hubcredits.io/policy"
	// AnnotationReservation holds the id of the reservation that paid the
	// first period (the admission request UID).
	AnnotationReservation = "hubcredits.io/reservation"

	// DenialReasonCause is the type of the cause the pod webhook puts in
	// the Status of a denial (details.causes[].type); its message is the
	// denial's reason (NotEnoughCredits, NoAccount, Forbidden, ...), the
	// same as the reason label of hubcredits_admission_decisions_total.
	// The API server hands a webhook's Status to the caller as it is, so a
	// tool (kubectl credits why) can tell a denial's kind without parsing
	// the sentence.
	DenialReasonCause = "hubcredits.io/denial-reason"

	// ComponentLabel / SingleuserComponent select KubeSpawner's user pods.
	ComponentLabel      = "component"
	SingleuserComponent = "singleuser-server"
)

// What the operator keeps on CreditAccounts, and what an admin sets on them.
const (
	// FinalizerLedger is on every CreditAccount the operator keeps: an
	// account is removed only once no server it funds runs any more (or an
	// admin forces it), and its balance and applied top-ups are written to
	// a tombstone first. Every LedgerPage carries it too, until its
	// account is released: a page holds the only copy of its entries, and
	// a foreground deletion of the account deletes the pages first.
	FinalizerLedger = "hubcredits.io/ledger"
	// AnnotationForceDelete set to "true" on an account being deleted
	// releases it although servers it funds still run: its own servers are
	// stopped, and a pool's share of its wallets' servers is from then on
	// paid by the wallets.
	AnnotationForceDelete = "hubcredits.io/force-delete"
	// LabelAutoCreated "true" on a CreditAccount says the webhook created
	// it on its user's first spawn (from a CreditAccountTemplate or the
	// operator's --auto-create-wallets template).
	LabelAutoCreated = "hubcredits.io/auto-created"
	// LabelTemplate on an auto-created CreditAccount names the
	// CreditAccountTemplate it was created from.
	LabelTemplate = "hubcredits.io/template"
)
