package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// TestInvalidObjectsRefused applies invalid objects as raw JSON (as kubectl
// would, with strict field validation) and expects the API server to refuse
// each with a message a person understands.
func TestInvalidObjectsRefused(t *testing.T) {
	ns := newNamespace(t)
	cases := map[string]struct {
		kind    string // creditaccounts, creditaccounttemplates or billingpolicies
		spec    string
		wantMsg string
	}{
		"negative cap": {
			kind: "creditaccounts", spec: `{"users":["a"],"cap":-1}`,
			wantMsg: "spec.cap: Invalid value: -1: spec.cap in body should be greater than or equal to 0",
		},
		"initial balance above cap": {
			kind: "creditaccounts", spec: `{"users":["a"],"cap":10,"initialBalance":20}`,
			wantMsg: "initialBalance must not exceed cap",
		},
		"zero grant interval": {
			kind: "creditaccounts", spec: `{"users":["a"],"grant":{"amount":5,"interval":"0s"}}`,
			wantMsg: "grant.interval must be at least 1s",
		},
		"grant larger than int64": {
			kind: "creditaccounts", spec: `{"users":["a"],"grant":{"amount":99999999999999999999,"interval":"5m"}}`,
			wantMsg: "amount",
		},
		"grant above the credit limit": {
			kind: "creditaccounts", spec: `{"users":["a"],"cap":2000000000000000,"grant":{"amount":2000000000000000,"interval":"5m"}}`,
			wantMsg: "should be less than or equal to 1000000000000000",
		},
		"unknown field": {
			kind: "creditaccounts", spec: `{"users":["a"],"capp":10}`,
			wantMsg: `unknown field "spec.capp"`,
		},
		"duplicate top-up id": {
			kind: "creditaccounts", spec: `{"users":["a"],"topUps":[{"id":"x","amount":1},{"id":"x","amount":2}]}`,
			wantMsg: `Duplicate value: {"id":"x"}`,
		},
		"project is itself": {
			kind: "creditaccounts", spec: `{"users":["a"],"project":"NAME"}`,
			wantMsg: "spec.project must name another account, not this one",
		},
		"zero billing interval": {
			kind: "billingpolicies", spec: `{"billingValue":1,"billingInterval":"0s"}`,
			wantMsg: "billingInterval must be at least 1s",
		},
		"sub-second billing interval": {
			kind: "billingpolicies", spec: `{"billingValue":1,"billingInterval":"500ms"}`,
			wantMsg: "billingInterval must be at least 1s",
		},
		"negative billing value": {
			kind: "billingpolicies", spec: `{"billingValue":-5}`,
			wantMsg: "spec.billingValue in body should be greater than or equal to 0",
		},
		"value and expression": {
			kind: "billingpolicies", spec: `{"billingValue":5,"billingValueExpression":"5"}`,
			wantMsg: "set billingValue or billingValueExpression, not both",
		},
		"bad CEL": {
			kind: "billingpolicies", spec: `{"billingValueExpression":"pod.spec +"}`,
			wantMsg: `spec.billingValueExpression: Invalid value: "pod.spec +": ERROR: <input>:1:11: Syntax error`,
		},
		"CEL that returns a string": {
			kind: "billingpolicies", spec: `{"billingValueExpression":"'ten'"}`,
			wantMsg: "the expression returns string, but it must return int",
		},
		"match expression that returns an int": {
			kind: "billingpolicies", spec: `{"matchExpression":"1"}`,
			wantMsg: `spec.matchExpression: Invalid value: "1": the expression returns int, but it must return bool`,
		},
		"cap above the credit limit": {
			kind: "creditaccounts", spec: `{"users":["a"],"cap":2000000000000000}`,
			wantMsg: "spec.cap: Invalid value: 2000000000000000: spec.cap in body should be less than or equal to 1000000000000000",
		},
		"negative initial balance": {
			kind: "creditaccounts", spec: `{"users":["a"],"initialBalance":-5}`,
			wantMsg: "spec.initialBalance in body should be greater than or equal to 0",
		},
		"zero grant amount": {
			kind: "creditaccounts", spec: `{"users":["a"],"grant":{"amount":0,"interval":"5m"}}`,
			wantMsg: "spec.grant.amount in body should be greater than or equal to 1",
		},
		"sub-second grant interval": {
			kind: "creditaccounts", spec: `{"users":["a"],"grant":{"amount":1,"interval":"500ms"}}`,
			wantMsg: "grant.interval must be at least 1s",
		},
		"grant interval above a year": {
			kind: "creditaccounts", spec: `{"users":["a"],"grant":{"amount":1,"interval":"9000h"}}`,
			wantMsg: "grant.interval must be at most 8760h (one year)",
		},
		"grant without interval": {
			kind: "creditaccounts", spec: `{"users":["a"],"grant":{"amount":1}}`,
			wantMsg: "spec.grant.interval: Required value",
		},
		"grant above the cap": {
			kind: "creditaccounts", spec: `{"users":["a"],"cap":10,"grant":{"amount":20,"interval":"5m"}}`,
			wantMsg: "grant.amount must not exceed cap",
		},
		"zero top-up": {
			kind: "creditaccounts", spec: `{"users":["a"],"topUps":[{"id":"x","amount":0}]}`,
			wantMsg: "spec.topUps[0].amount in body should be greater than or equal to 1",
		},
		"negative top-up": {
			kind: "creditaccounts", spec: `{"users":["a"],"topUps":[{"id":"x","amount":-10}]}`,
			wantMsg: "spec.topUps[0].amount in body should be greater than or equal to 1",
		},
		"top-up id with spaces": {
			kind: "creditaccounts", spec: `{"users":["a"],"topUps":[{"id":"bad id!","amount":1}]}`,
			wantMsg: "spec.topUps[0].id in body should match",
		},
		"top-up id too long": {
			kind: "creditaccounts", spec: `{"users":["a"],"topUps":[{"id":"` + strings.Repeat("x", 64) + `","amount":1}]}`,
			wantMsg: "spec.topUps[0].id: Too long: may not be more than 63",
		},
		"top-up reason too long": {
			kind: "creditaccounts", spec: `{"users":["a"],"topUps":[{"id":"x","amount":1,"reason":"` + strings.Repeat("r", 257) + `"}]}`,
			wantMsg: "spec.topUps[0].reason: Too long: may not be more than 256",
		},
		"zero adjustment": {
			kind: "creditaccounts", spec: `{"users":["a"],"adjustments":[{"id":"x","amount":0,"reason":"r"}]}`,
			wantMsg: "spec.adjustments[0].amount: Invalid value: 0: an adjustment must not be 0",
		},
		"adjustment without a reason": {
			kind: "creditaccounts", spec: `{"users":["a"],"adjustments":[{"id":"x","amount":-5}]}`,
			wantMsg: "spec.adjustments[0].reason: Required value",
		},
		"adjustment below the credit limit": {
			kind: "creditaccounts", spec: `{"users":["a"],"adjustments":[{"id":"x","amount":-1000000000000001,"reason":"r"}]}`,
			wantMsg: "spec.adjustments[0].amount in body should be greater than or equal to -1000000000000000",
		},
		"duplicate adjustment id": {
			kind: "creditaccounts", spec: `{"users":["a"],"adjustments":[{"id":"x","amount":1,"reason":"r"},{"id":"x","amount":-1,"reason":"r"}]}`,
			wantMsg: `Duplicate value: {"id":"x"}`,
		},
		"an id that names a top-up and an adjustment": {
			kind: "creditaccounts", spec: `{"users":["a"],"topUps":[{"id":"x","amount":5}],"adjustments":[{"id":"x","amount":-5,"reason":"r"}]}`,
			wantMsg: "spec.adjustments: Invalid value: an id names either a top-up or an adjustment, not both",
		},
		"empty group name": {
			kind: "creditaccounts", spec: `{"groups":[""]}`,
			wantMsg: "spec.groups[0] in body should be at least 1 chars long",
		},
		"duplicate group": {
			kind: "creditaccounts", spec: `{"groups":["physics","physics"]}`,
			wantMsg: `spec.groups[1]: Duplicate value: "physics"`,
		},
		"empty username": {
			kind: "creditaccounts", spec: `{"users":[""]}`,
			wantMsg: "spec.users[0] in body should be at least 1 chars long",
		},
		"duplicate user": {
			kind: "creditaccounts", spec: `{"users":["a","a"]}`,
			wantMsg: `spec.users[1]: Duplicate value: "a"`,
		},
		"more users than the limit": {
			kind: "creditaccounts", spec: `{"users":[` + manyUsers(1001) + `]}`,
			wantMsg: "spec.users: Too many: 1001: must have at most 1000 items",
		},
		"project name that is no object name": {
			kind: "creditaccounts", spec: `{"users":["a"],"project":"Bad_Name"}`,
			wantMsg: "spec.project in body should match",
		},
		"billing value above the credit limit": {
			kind: "billingpolicies", spec: `{"billingValue":1000000000000001}`,
			wantMsg: "spec.billingValue in body should be less than or equal to 1000000000000000",
		},
		"billing interval above a year": {
			kind: "billingpolicies", spec: `{"billingValue":1,"billingInterval":"9000h"}`,
			wantMsg: "billingInterval must be at most 8760h (one year)",
		},
		"priority out of range": {
			kind: "billingpolicies", spec: `{"billingValue":1,"priority":2000000}`,
			wantMsg: "spec.priority in body should be less than or equal to 1000000",
		},
		"expression too long": {
			kind: "billingpolicies", spec: `{"billingValueExpression":"` + strings.Repeat("1+", 1100) + `1"}`,
			wantMsg: "spec.billingValueExpression: Too long: may not be more than 2048",
		},
		"CEL that returns a bool": {
			kind: "billingpolicies", spec: `{"billingValueExpression":"has(pod.spec)"}`,
			wantMsg: "the expression returns bool, but it must return int",
		},
		"CEL calling an unknown function": {
			kind: "billingpolicies", spec: `{"billingValueExpression":"gpus(pod)"}`,
			wantMsg: "undeclared reference to 'gpus'",
		},
		"unknown policy field": {
			kind: "billingpolicies", spec: `{"billingValu":5}`,
			wantMsg: `unknown field "spec.billingValu"`,
		},
		"a template for no group": {
			kind: "creditaccounttemplates", spec: `{"cap":10}`,
			wantMsg: "spec.groups: Required value",
		},
		"a template for an empty list of groups": {
			kind: "creditaccounttemplates", spec: `{"groups":[],"cap":10}`,
			wantMsg: "spec.groups: Invalid value: 0: spec.groups in body should have at least 1 items",
		},
		"a template's empty group": {
			kind: "creditaccounttemplates", spec: `{"groups":[""]}`,
			wantMsg: "spec.groups[0]: Invalid value: \"\": spec.groups[0] in body should be at least 1 chars long",
		},
		"a template's duplicate group": {
			kind: "creditaccounttemplates", spec: `{"groups":["physics","physics"]}`,
			wantMsg: `spec.groups[1]: Duplicate value: "physics"`,
		},
		"a template's initial balance above its cap": {
			kind: "creditaccounttemplates", spec: `{"groups":["g"],"cap":10,"initialBalance":20}`,
			wantMsg: "initialBalance must not exceed cap",
		},
		"a template's grant above its cap": {
			kind: "creditaccounttemplates", spec: `{"groups":["g"],"cap":10,"grant":{"amount":20,"interval":"5m"}}`,
			wantMsg: "grant.amount must not exceed cap",
		},
		"a template's grant too often": {
			kind: "creditaccounttemplates", spec: `{"groups":["g"],"grant":{"amount":1,"interval":"500ms"}}`,
			wantMsg: "grant.interval must be at least 1s",
		},
		"a template's bad project name": {
			kind: "creditaccounttemplates", spec: `{"groups":["g"],"project":"Bad_Name"}`,
			wantMsg: "spec.project in body should match",
		},
		"a template's unknown field": {
			kind: "creditaccounttemplates", spec: `{"groups":["g"],"users":["a"]}`,
			wantMsg: `unknown field "spec.users"`,
		},
		"bad label selector": {
			kind: "billingpolicies", spec: `{"podSelector":{"matchExpressions":[{"key":"a","operator":"Bogus"}]}}`,
			wantMsg: "spec.podSelector",
		},
	}
	i := 0
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			i++
			obj := fmt.Sprintf("bad-%d", i)
			kind := map[string]string{"creditaccounts": "CreditAccount", "billingpolicies": "BillingPolicy", "creditaccounttemplates": "CreditAccountTemplate"}[tc.kind]
			body := fmt.Sprintf(`{"apiVersion":"hubcredits.io/v1alpha1","kind":%q,"metadata":{"name":%q},"spec":%s}`,
				kind, obj, strings.ReplaceAll(tc.spec, "NAME", obj))
			err := clientset.RESTClient().Post().
				AbsPath("/apis/hubcredits.io/v1alpha1/namespaces", ns, tc.kind).
				Param("fieldValidation", "Strict").
				SetHeader("Content-Type", "application/json").
				Body([]byte(body)).Do(context.Background()).Error()
			if err == nil {
				t.Fatalf("the API server accepted %s", body)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("refused with %q, want a message containing %q", err.Error(), tc.wantMsg)
			}
		})
	}
}

func manyUsers(n int) string {
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("%q", fmt.Sprintf("user-%d", i))
	}
	return strings.Join(users, ",")
}

// TestProjectCycleIsAConditionNotACrash: what only a controller can see —
// a pool that names a project itself, and a missing pool — is reported on
// the account, and spawns billed to it are denied with the reason.
func TestProjectCycleIsAConditionNotACrash(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createAccount(t, testutil.MakeAccount(ns, "a", "alice").Project("b").Obj())
	createAccount(t, testutil.MakeAccount(ns, "b").Project("a").Obj())
	createAccount(t, testutil.MakeAccount(ns, "c", "carol").Project("ghost").Obj())
	for name, reason := range map[string]string{"a": hcv1.ReasonProjectChain, "c": hcv1.ReasonProjectNotFound} {
		testutil.Eventually(t, 10*time.Second, func() error {
			c := meta.FindStatusCondition(testutil.GetAccount(t, k8s, ns, name).Status.Conditions, hcv1.ConditionReady)
			if c == nil || c.Status != metav1.ConditionFalse || c.Reason != reason {
				return fmt.Errorf("account %s Ready condition %+v, want False/%s", name, c, reason)
			}
			return nil
		})
	}
	err := createPod(testutil.MakeKubeSpawnerPod(ns, "carol", "").Obj())
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `Credit account "c" is funded by project "ghost", which does not exist`) {
		t.Fatalf("got %v", err)
	}
}

// TestRunawayExpressionIsStopped: an expression whose cost explodes on a pod
// cannot be told apart at apply time (pods are dynamic), so it is stopped by
// the cost limit when it runs: the spawn is denied at once, not timed out.
func TestRunawayExpressionIsStopped(t *testing.T) {
	ns := newNamespace(t)
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Obj())
	p := testutil.MakePolicy(ns, "runaway").Value(0).Every(time.Minute).Obj()
	p.Spec.BillingValue = nil
	l := "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]"
	p.Spec.BillingValueExpression = l + ".map(a, " + l + ".map(b, " + l + ".map(c, " + l + ".map(d, " + l + ".map(e, a+b+c+d+e))))).size()"
	createPolicy(t, p)
	// Our sentence (not the API server's "context deadline exceeded") proves
	// the cost limit stopped it within the webhook's 2s timeout.
	err := createPod(testutil.MakeKubeSpawnerPod(ns, "alice", "").Obj())
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `Cannot price this server: billing policy "runaway" failed on it`) {
		t.Fatalf("got %v", err)
	}
}

// TestOneOffAmountsCannotChange: the API refuses a changed amount of a
// top-up, as of an adjustment, and an id moved from one list to the
// other with another amount and sign: otherwise the spec would show
// movements that never happened (a top-up of 5000 where 50 were added, an
// adjustment of -1000 never taken). Found by the adversarial review.
func TestOneOffAmountsCannotChange(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	createAccount(t, testutil.MakeAccount(ns, "alice", "alice").Cap(100).TopUp("t", 50).TopUp("u", 10).Obj())
	testutil.Eventually(t, 10*time.Second, func() error {
		if b := testutil.GetAccount(t, k8s, ns, "alice").Status.Balance; b != 160 {
			return fmt.Errorf("balance %d", b)
		}
		return nil
	})
	t.Run("a top-up's amount", func(t *testing.T) {
		a := testutil.GetAccount(t, k8s, ns, "alice")
		a.Spec.TopUps[0].Amount = 5000
		if err := k8s.Update(context.Background(), a); err == nil {
			t.Errorf("the amount of the applied top-up t changed from 50 to 5000; the balance stays %d", a.Status.Balance)
		}
	})
	t.Run("a top-up's reason may change", func(t *testing.T) {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			a := testutil.GetAccount(t, k8s, ns, "alice")
			a.Spec.TopUps[0].Reason = "welcome"
			return k8s.Update(context.Background(), a)
		})
		if err != nil {
			t.Errorf("changing a top-up's reason was refused: %v", err)
		}
	})
	t.Run("an applied top-up id listed again as an adjustment", func(t *testing.T) {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			a := testutil.GetAccount(t, k8s, ns, "alice")
			a.Spec.TopUps = slices.DeleteFunc(a.Spec.TopUps, func(x hcv1.TopUp) bool { return x.ID == "u" })
			a.Spec.Adjustments = append(a.Spec.Adjustments, hcv1.Adjustment{ID: "u", Amount: -1000, Reason: "moved"})
			return k8s.Update(context.Background(), a)
		})
		if err == nil {
			a := testutil.GetAccount(t, k8s, ns, "alice")
			t.Errorf("top-up u (+10, applied) is now listed as an adjustment of -1000 that is never applied (balance %d, totalAdjusted %d)",
				a.Status.Balance, a.Status.TotalAdjusted)
		} else {
			t.Logf("refused: %v", err)
		}
	})
}
