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
		"a flat price":  {policy: makePolicy("flat").value(10).obj()},
		"free":          {policy: makePolicy("free").value(0).obj()},
		"defaults only": {policy: makePolicy("empty").obj()},
		"a label selector": {
			policy: makePolicy("gpu").value(25).selecting("hubcredits.io/policy", "gpu").obj(),
		},
		"a match expression": {
			policy: makePolicy("gpu").value(25).matchExpr("has(pod.spec.nodeSelector) && 'gpu' in pod.spec.nodeSelector").obj(),
		},
		"a value expression with the quantity library": {
			policy: makePolicy("gpu").valueExpr("25 * quantity(pod.spec.containers[0].resources.requests['nvidia.com/gpu']).asInteger()").obj(),
		},
		"a dyn value expression is checked when it runs": {
			policy: makePolicy("dyn").valueExpr("pod.metadata.labels.size == 'large' ? 20 : 10").obj(),
		},
		"string extensions": {
			policy: makePolicy("ext").value(5).matchExpr("pod.metadata.name.lowerAscii().startsWith('jupyter-')").obj(),
		},
		"a syntax error": {
			policy:  makePolicy("broken").value(1).matchExpr("pod.metadata.name ==").obj(),
			wantErr: []string{`BillingPolicy.hubcredits.io "broken" is invalid`, "spec.matchExpression:", "Syntax error"},
		},
		"an undeclared variable": {
			policy:  makePolicy("typo").valueExpr("10 * gpus").obj(),
			wantErr: []string{"spec.billingValueExpression:", "undeclared reference to 'gpus'"},
		},
		"an unknown function": {
			policy:  makePolicy("fn").valueExpr("gpus(pod)").obj(),
			wantErr: []string{"spec.billingValueExpression:", "undeclared reference to 'gpus'"},
		},
		"a value expression that returns a string": {
			policy:  makePolicy("str").valueExpr("'ten'").obj(),
			wantErr: []string{`spec.billingValueExpression: Invalid value: "'ten'": the expression returns string, but it must return int`},
		},
		"a match expression that returns an int": {
			policy:  makePolicy("int").value(1).matchExpr("1 + 1").obj(),
			wantErr: []string{`spec.matchExpression: Invalid value: "1 + 1": the expression returns int, but it must return bool`},
		},
		"both expressions wrong: both reported": {
			policy:  makePolicy("both").matchExpr("1").valueExpr("true").obj(),
			wantErr: []string{"spec.matchExpression:", "spec.billingValueExpression:"},
		},
		"an invalid label selector": {
			policy: func() *hcv1.BillingPolicy {
				p := makePolicy("sel").value(1).obj()
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
					_, err := v.ValidateUpdate(context.Background(), makePolicy(tc.policy.Name).obj(), tc.policy)
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
	broken := makePolicy("broken").matchExpr("(").obj()
	if w, err := (BillingPolicyValidator{}).ValidateDelete(context.Background(), broken); err != nil || len(w) != 0 {
		t.Fatalf("deleting a broken policy: warnings %v, error %v", w, err)
	}
}
