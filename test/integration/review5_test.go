package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// TestReview5SquatterTakesOverAnotherUsersTombstone (review5): the wallet
// of "alice.smith" is "wallet-alice-smith-<hash>", which is also the plain
// wallet name of the username "alice-smith-<hash>" (a valid GitHub login,
// say). Alice's wallet (500 credits) is deleted; the squatter, a member of
// a course whose template opens wallets at 10, spawns: the wallet created
// for them takes over Alice's tombstone (keyed by the account name only)
// and opens with Alice's 500 credits.
func TestReview5SquatterTakesOverAnotherUsersTombstone(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	const victim = "alice.smith"
	name := billing.WalletName(victim)
	squatter := strings.TrimPrefix(name, "wallet-")
	createAccount(t, testutil.MakeAccount(ns, name, victim).Cap(1000).InitialBalance(500).Obj())
	testutil.Eventually(t, 10*time.Second, claimed(t, ns, name))
	kubectl(t, ns, "", "delete", "creditaccount", name)
	if _, err := tombstone(t, ns, name); err != nil {
		t.Fatal(err)
	}

	tmpl := testutil.MakeTemplate(ns, "course", "course").Cap(1000).InitialBalance(10).Obj()
	if err := k8s.Create(context.Background(), tmpl); err != nil {
		t.Fatal(err)
	}
	p := testutil.MakeKubeSpawnerPod(ns, squatter, "").Annotation(hcv1.AnnotationGroups, `["course"]`).Obj()
	if err := createPod(p); err != nil {
		t.Fatalf("the squatter's spawn: %v", err)
	}
	defer forget(t, p)
	// The squatter's wallet, whatever its name once fixed.
	theirs := billing.WalletName(squatter)
	testutil.Eventually(t, 10*time.Second, claimed(t, ns, theirs))
	a := testutil.GetAccount(t, k8s, ns, theirs)
	if a.Status.ReopenedFrom != "" || a.Status.Balance > 10 {
		t.Fatalf("the squatter %q (template: 10 credits) got wallet %s with balance %d, reopened from %q: %q's credits",
			squatter, theirs, a.Status.Balance, a.Status.ReopenedFrom, victim)
	}
}

// TestReview5TemplateNameLongerThanALabelValue (review5): a template's name
// may be a DNS subdomain of up to 253 characters, but the created wallet
// carries it as the value of the label hubcredits.io/template, at most 63.
// Either the API refuses such a template, or its members get wallets; today
// the template is accepted and every member's first spawn fails at the
// wallet's create (and takes a token of --auto-create-per-minute each time).
func TestReview5TemplateNameLongerThanALabelValue(t *testing.T) {
	ns := newNamespace(t)
	tname := "physics-101-winter-term-2026-tutorial-group-seven-monday-morning"
	if len(tname) <= 63 {
		t.Fatalf("name %d characters", len(tname))
	}
	if err := k8s.Create(context.Background(), testutil.MakeTemplate(ns, tname, "physics-101").Obj()); err != nil {
		t.Logf("the template is refused: %v", err)
		return // refusing it at creation is fine
	}
	err := createPod(testutil.MakeKubeSpawnerPod(ns, "zoe", "").Annotation(hcv1.AnnotationGroups, `["physics-101"]`).Obj())
	if err != nil {
		t.Fatalf("template %q accepted, but its member's spawn fails: %v", tname, err)
	}
	a := &hcv1.CreditAccount{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "wallet-zoe"}, a); err != nil {
		t.Fatal(fmt.Errorf("wallet-zoe: %w", err))
	}
}
