package billing

import (
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// Field indexes shared by the webhook and the controllers (registered once,
// in main.go, on the manager's cache).
const (
	// IndexAccountUsers indexes CreditAccounts by spec.users.
	IndexAccountUsers = "hubcredits.io/users"
	// IndexAccountProject indexes CreditAccounts by spec.project.
	IndexAccountProject = "hubcredits.io/project"
	// IndexPodAccount indexes singleuser pods by the accounts billed for them
	// (the pinned account and project annotations, or the account label).
	IndexPodAccount = "hubcredits.io/account"
	// IndexUnbilledPodUser indexes singleuser pods that name no account (the
	// webhook never saw them: failurePolicy Ignore while it was down) by
	// their JupyterHub user, so the user's wallet can adopt them.
	IndexUnbilledPodUser = "hubcredits.io/unbilled-user"
)

// AccountUsers is the IndexAccountUsers extractor.
func AccountUsers(o client.Object) []string {
	return o.(*hcv1.CreditAccount).Spec.Users
}

// AccountProject is the IndexAccountProject extractor.
func AccountProject(o client.Object) []string {
	if p := o.(*hcv1.CreditAccount).Spec.Project; p != "" {
		return []string{p}
	}
	return nil
}

// PodAccounts is the IndexPodAccount extractor.
func PodAccounts(o client.Object) []string {
	pod := o.(*corev1.Pod)
	var out []string
	if a := pod.Annotations[hcv1.AnnotationAccount]; a != "" {
		out = append(out, a)
	} else if a := pod.Labels[hcv1.LabelAccount]; a != "" {
		out = append(out, a)
	}
	if p := pod.Annotations[hcv1.AnnotationProject]; p != "" {
		out = append(out, p)
	}
	return out
}

// UnbilledPodUser is the IndexUnbilledPodUser extractor.
func UnbilledPodUser(o client.Object) []string {
	pod := o.(*corev1.Pod)
	if len(PodAccounts(pod)) > 0 {
		return nil
	}
	if u := pod.Annotations[hcv1.AnnotationUsername]; u != "" {
		return []string{u}
	}
	return nil
}
