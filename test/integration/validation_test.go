package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// TestInvalidObjectsRefused applies invalid objects as raw JSON (as kubectl
// would, with strict field validation) and expects the API server to refuse
// each with a message a person understands.
func TestInvalidObjectsRefused(t *testing.T) {
	ns := newNamespace(t)
	cases := map[string]struct {
		kind    string // creditaccounts or billingpolicies
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
			wantMsg: "spec.billingValueExpression: ERROR: <input>:1:11: Syntax error",
		},
		"CEL that returns a string": {
			kind: "billingpolicies", spec: `{"billingValueExpression":"'ten'"}`,
			wantMsg: "the expression returns string, but it must return int",
		},
		"match expression that returns an int": {
			kind: "billingpolicies", spec: `{"matchExpression":"1"}`,
			wantMsg: "spec.matchExpression: the expression returns int, but it must return bool",
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
			kind := map[string]string{"creditaccounts": "CreditAccount", "billingpolicies": "BillingPolicy"}[tc.kind]
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
