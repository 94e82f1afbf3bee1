package billing

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// Which ledger holds a pod, and which pods need adopting. A server entry is
// bound to its pod: before the pod is seen, by the reservation id the
// webhook pinned on it (or, for an adopted pod, by the id made from its
// UID); once seen, by the pod's UID. What the pod's annotations and labels
// say about accounts later plays no part: an edit of them (kubectl
// annotate, while the pod guard was down or before it existed) never takes
// a running server off the ledger that admitted it, and never gives it a
// second one.

// PodUIDKey is the key a ledger holds a bound pod by.
func PodUIDKey(uid types.UID) string { return "uid:" + string(uid) }

// LedgerKeys are the keys under which account a holds servers: every
// entry's id (a reservation id or an adopted id) and, once bound, its pod's
// UID. A pool's shares of other wallets' servers count: they are held.
// So do the entries its pending page transfers carry (pages.go): a moved
// entry lives only there until its page shows it, and a pod bound by a
// transfer is held under its UID before the page is written.
func LedgerKeys(a *hcv1.CreditAccount) []string {
	keys := entryKeys(nil, a.Status.Servers)
	for _, t := range a.Status.Pending {
		for _, d := range t.Entries {
			switch {
			case d.Add != nil:
				keys = entryKeys(keys, []hcv1.ServerCharge{*d.Add})
			case d.PodUID != "":
				keys = append(keys, PodUIDKey(d.PodUID))
			}
		}
	}
	return keys
}

// PodKeys are the keys under which a ledger would hold the pod with uid and
// reservation ("" for none).
func PodKeys(uid types.UID, reservation string) []string {
	keys := []string{AdoptedID(uid), PodUIDKey(uid)}
	if reservation != "" {
		keys = append(keys, reservation)
	}
	return keys
}

// Holds reports whether account a holds a server under any of keys.
func Holds(a *hcv1.CreditAccount, keys []string) bool {
	for _, e := range a.Status.Servers {
		for _, k := range keys {
			if e.ID == k || (e.PodUID != "" && PodUIDKey(e.PodUID) == k) {
				return true
			}
		}
	}
	return false
}

// Adoptable reports whether pod is a server that no ledger holds and that
// has not ended: a pod the webhook never saw (failurePolicy Ignore, or
// labelled singleuser after its creation), or one whose reservation was
// returned while the pod was out of the controller's sight (its singleuser
// label removed for a moment, a watch that lagged past the reservation
// grace). held reports whether any ledger holds one of the keys. A
// reservation id the pod carries does not make it held: only a ledger does.
func Adoptable(pod *corev1.Pod, held func(keys []string) bool) bool {
	if ObservePod(pod).Ended() {
		return false
	}
	return !held(PodKeys(pod.UID, pod.Annotations[hcv1.AnnotationReservation]))
}

// Adoption decides whether wallet may pay for pod, a server no ledger
// holds, with admission's own rule: the pod names its JupyterHub user, and
// wallet, as the account the pod names, lists that user (ResolveWallet).
// The account a pod names (its hubcredits.io/account annotation or label)
// can be set by anyone who may label pods, so it is a request, never a
// proof of membership. It returns the pod to adopt at price, and the
// *Denial admission would have given when wallet may not pay (the pod is
// returned then too, for the caller to report).
//
// Admission also checks who created the pod (--allowed-creators); adoption
// cannot: the API server does not record the authenticated creator on the
// pod (managedFields name a client-chosen field manager, not an identity).
func Adoption(pod *corev1.Pod, wallet *hcv1.CreditAccount, price Price) (Unreserved, error) {
	u := Unreserved{Pod: pod.Name, UID: pod.UID, User: pod.Annotations[hcv1.AnnotationUsername],
		ServerName: pod.Annotations[hcv1.AnnotationServerName], Price: price,
		Reservation: pod.Annotations[hcv1.AnnotationReservation]}
	if u.User == "" {
		return u, &Denial{Reason: DenyMissingUser, Message: MissingUserMessage()}
	}
	_, err := ResolveWallet(u.User, wallet.Name, []*hcv1.CreditAccount{wallet})
	return u, err
}

// EntryPods finds, among pods, the pod of each of wallet's own server
// entries, by the entry's binding (see above), keyed by entry id. The
// caller passes the pods billed to wallet and the pods named like its
// entries, wherever their annotations point now.
func EntryPods(wallet *hcv1.CreditAccount, pods []*corev1.Pod) map[string]*corev1.Pod {
	return entryPods(wallet.Name, wallet.Status.Servers, pods)
}

// entryPods is EntryPods over entries held by account.
func entryPods(account string, entries []hcv1.ServerCharge, pods []*corev1.Pod) map[string]*corev1.Pod {
	byUID := make(map[types.UID]*corev1.Pod, len(pods))
	byID := make(map[string]*corev1.Pod, 2*len(pods))
	for _, p := range pods {
		byUID[p.UID] = p
		if r := p.Annotations[hcv1.AnnotationReservation]; r != "" {
			byID[r] = p
		}
		byID[AdoptedID(p.UID)] = p
	}
	out := make(map[string]*corev1.Pod, len(entries))
	for _, e := range entries {
		if e.Wallet != account {
			continue
		}
		var p *corev1.Pod
		if e.PodUID != "" {
			p = byUID[e.PodUID]
		} else {
			p = byID[e.ID]
		}
		if p != nil {
			out[e.ID] = p
		}
	}
	return out
}
