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

// TestSquatterCannotTakeOverAnotherUsersTombstone: the wallet of
// "alice.smith" is "wallet-alice-smith-<hash>". A user who picks the
// username "alice-smith-<that hash>" (a valid GitHub login, say) must not
// get that name: Alice's wallet (500 credits) is deleted, the squatter, a
// member of a course whose template opens wallets at 10, spawns, and the
// wallet created for them must not take over Alice's tombstone (keyed by
// the account name) with her 500 credits.
func TestSquatterCannotTakeOverAnotherUsersTombstone(t *testing.T) {
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

// TestTemplateNameIsALabelValue: a template's name labels the wallets it
// creates (hubcredits.io/template), so it is at most 63 characters; a
// longer one is refused when it is created, not at its members' spawns.
func TestTemplateNameIsALabelValue(t *testing.T) {
	ns := newNamespace(t)
	tname := "physics-101-winter-term-2026-tutorial-group-seven-monday-morning"
	if len(tname) <= 63 {
		t.Fatalf("name %d characters", len(tname))
	}
	err := k8s.Create(context.Background(), testutil.MakeTemplate(ns, tname, "physics-101").Obj())
	if err == nil || !strings.Contains(err.Error(), "a template's name is at most 63 characters") {
		t.Fatalf("creating template %q: %v, want it refused", tname, err)
	}
	if err := k8s.Create(context.Background(), testutil.MakeTemplate(ns, tname[:63], "physics-101").Obj()); err != nil {
		t.Fatal(err)
	}
	if err := createPod(testutil.MakeKubeSpawnerPod(ns, "zoe", "").Annotation(hcv1.AnnotationGroups, `["physics-101"]`).Obj()); err != nil {
		t.Fatalf("a member's spawn: %v", err)
	}
	a := &hcv1.CreditAccount{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "wallet-zoe"}, a); err != nil {
		t.Fatal(fmt.Errorf("wallet-zoe: %w", err))
	}
	if a.Labels[hcv1.LabelTemplate] != tname[:63] {
		t.Errorf("wallet-zoe labelled %v", a.Labels)
	}
}
