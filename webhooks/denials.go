package webhooks

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
)

// DenialEventSource is the Event source of denials: its own component, so
// the Event correlator's per-object spam filter (a burst of 25, then one
// every 5 minutes, keyed by source and object) spends a separate budget
// from the controllers' Events on the same account (CreditsExhausted,
// CreditsLow are never crowded out by a storm of denied spawns).
const DenialEventSource = "hubcredits-admission"

// Bounds of the Events for denials, per replica, over all objects: the
// correlator limits Events per object, and a forged review (see
// WalletGuard) can name a new object each time.
const (
	denialEventsPerSecond = 1
	denialEventsBurst     = 50
	// maxEventMessage is what the API server keeps of an Event's message.
	maxEventMessage = 1024
)

// deniedSpawn is what the admin is told about a denied spawn: which pod,
// for whom, in which namespace. Never the pod's spec (it carries the
// user's Hub API token).
type deniedSpawn struct {
	namespace, pod, user string
}

// DenialReporter makes denials findable by an admin: a Warning Event for
// each denied spawn, with the denial's reason (NotEnoughCredits, NoAccount,
// NotMember, ...) and the sentence the user read, and
// hubcredits_admission_denials_total{reason}. The Event is on the
// CreditAccount the server would have been paid from; without one, on the
// user's would-be wallet (NoAccount: the account --auto-create-wallets
// would create), else on the refused pod (by name: it was never created).
//
// It never adds latency to admission: Recorder is client-go's EventRecorder,
// which hands the Event to a queue (1,000 deep, dropping when full) and
// returns; the broadcaster's own goroutine correlates (aggregates similar
// Events, rate-limits per object) and writes them.
type DenialReporter struct {
	// Recorder writes the Events (nil: the counter only).
	Recorder record.EventRecorder

	once    sync.Once
	limiter *rate.Limiter
}

// report counts a denied spawn and records its Event.
func (r *DenialReporter) report(v verdict, now time.Time) {
	denials.WithLabelValues(v.reason).Inc()
	if r == nil || r.Recorder == nil {
		return
	}
	r.once.Do(func() {
		r.limiter = rate.NewLimiter(rate.Every(time.Second/denialEventsPerSecond), denialEventsBurst)
	})
	if !r.limiter.AllowN(now, 1) {
		droppedDenialEvents.Inc()
		return
	}
	d := v.denied
	msg := "Spawn of " + d.pod
	if d.user != "" {
		msg += " for " + d.user
	}
	msg += " denied: " + v.resp.Result.Message
	if len(msg) > maxEventMessage {
		msg = msg[:maxEventMessage]
	}
	r.Recorder.Event(denialSubject(v), corev1.EventTypeWarning, v.reason, msg)
}

// denialSubject is the object a denial's Event is about.
func denialSubject(v verdict) *corev1.ObjectReference {
	d := v.denied
	account := v.account
	if account == "" && v.reason == billing.DenyNoAccount && d.user != "" {
		account = billing.WalletName(d.user)
	}
	if account != "" {
		return &corev1.ObjectReference{
			APIVersion: hcv1.GroupVersion.String(), Kind: "CreditAccount",
			Namespace: d.namespace, Name: account, UID: v.accountUID,
		}
	}
	return &corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: d.namespace, Name: d.pod}
}

// podName is the pod's name, or its generateName prefix when the API server
// has not named it yet.
func podName(p *corev1.Pod) string {
	if p.Name != "" {
		return p.Name
	}
	return p.GenerateName
}
