package webhooks

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

func TestBillingPolicyValidator(t *testing.T) {
	cases := map[string]struct {
		policy *hcv1.BillingPolicy
		// wantErr are the parts of the error the admin must read: which
		// field, and the compiler's own words. Empty: accepted.
		wantErr []string
	}{
		"a flat price":  {policy: storedPolicy("flat").Value(10).Obj()},
		"free":          {policy: storedPolicy("free").Value(0).Obj()},
		"defaults only": {policy: storedPolicy("empty").Obj()},
		"a label selector": {
			policy: storedPolicy("gpu").Value(25).Selecting("hubcredits.io/policy", "gpu").Obj(),
		},
		"a match expression": {
			policy: storedPolicy("gpu").Value(25).Match("has(pod.spec.nodeSelector) && 'gpu' in pod.spec.nodeSelector").Obj(),
		},
		"a value expression with the quantity library": {
			policy: storedPolicy("gpu").ValueExpr("25 * quantity(pod.spec.containers[0].resources.requests['nvidia.com/gpu']).asInteger()").Obj(),
		},
		"a dyn value expression is checked when it runs": {
			policy: storedPolicy("dyn").ValueExpr("pod.metadata.labels.size == 'large' ? 20 : 10").Obj(),
		},
		"string extensions": {
			policy: storedPolicy("ext").Value(5).Match("pod.metadata.name.lowerAscii().startsWith('jupyter-')").Obj(),
		},
		"a syntax error": {
			policy:  storedPolicy("broken").Value(1).Match("pod.metadata.name ==").Obj(),
			wantErr: []string{`BillingPolicy.hubcredits.io "broken" is invalid`, "spec.matchExpression:", "Syntax error"},
		},
		"an undeclared variable": {
			policy:  storedPolicy("typo").ValueExpr("10 * gpus").Obj(),
			wantErr: []string{"spec.billingValueExpression:", "undeclared reference to 'gpus'"},
		},
		"an unknown function": {
			policy:  storedPolicy("fn").ValueExpr("gpus(pod)").Obj(),
			wantErr: []string{"spec.billingValueExpression:", "undeclared reference to 'gpus'"},
		},
		"a value expression that returns a string": {
			policy:  storedPolicy("str").ValueExpr("'ten'").Obj(),
			wantErr: []string{`spec.billingValueExpression: Invalid value: "'ten'": the expression returns string, but it must return int`},
		},
		"a match expression that returns an int": {
			policy:  storedPolicy("int").Value(1).Match("1 + 1").Obj(),
			wantErr: []string{`spec.matchExpression: Invalid value: "1 + 1": the expression returns int, but it must return bool`},
		},
		"both expressions wrong: both reported": {
			policy:  storedPolicy("both").Match("1").ValueExpr("true").Obj(),
			wantErr: []string{"spec.matchExpression:", "spec.billingValueExpression:"},
		},
		"an invalid label selector": {
			policy: func() *hcv1.BillingPolicy {
				p := storedPolicy("sel").Value(1).Obj()
				p.Spec.PodSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "size", Operator: metav1.LabelSelectorOpIn}}}
				return p
			}(),
			wantErr: []string{"spec.podSelector:"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			v := BillingPolicyValidator{}
			for op, validate := range map[string]func() error{
				"create": func() error { _, err := v.ValidateCreate(context.Background(), tc.policy); return err },
				"update": func() error {
					_, err := v.ValidateUpdate(context.Background(), storedPolicy(tc.policy.Name).Obj(), tc.policy)
					return err
				},
			} {
				err := validate()
				if len(tc.wantErr) == 0 {
					if err != nil {
						t.Errorf("%s refused a good policy: %v", op, err)
					}
					continue
				}
				if err == nil {
					t.Errorf("%s accepted a bad policy", op)
					continue
				}
				if !apierrors.IsInvalid(err) {
					t.Errorf("%s error %q is not an Invalid status", op, err)
				}
				for _, want := range tc.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("%s error %q does not say %q", op, err, want)
					}
				}
			}
		})
	}
}

func TestBillingPolicyValidatorAllowsAnyDelete(t *testing.T) {
	broken := storedPolicy("broken").Match("(").Obj()
	if w, err := (BillingPolicyValidator{}).ValidateDelete(context.Background(), broken); err != nil || len(w) != 0 {
		t.Fatalf("deleting a broken policy: warnings %v, error %v", w, err)
	}
}
