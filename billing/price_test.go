package billing

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

const gpuExpr = "quantity(pod.spec.containers[0].resources.limits['nvidia.com/gpu']).asInteger() * 25"

func TestCompile(t *testing.T) {
	cases := map[string]struct {
		policy *hcv1.BillingPolicy
		// wantErr are substrings of the error; none means success.
		wantErr []string
	}{
		"a fixed price":                                 {policy: testutil.MakePolicy(testNS, "p").Value(10).Obj()},
		"a label selector":                              {policy: testutil.MakePolicy(testNS, "p").Selecting("profile", "gpu").Value(10).Obj()},
		"a matchExpression":                             {policy: testutil.MakePolicy(testNS, "p").Match("has(pod.spec.nodeSelector) && 'gpu' in pod.spec.nodeSelector").Obj()},
		"the GPU pricing expression":                    {policy: testutil.MakePolicy(testNS, "p").ValueExpr(gpuExpr).Obj()},
		"the API doc's int() expression":                {policy: testutil.MakePolicy(testNS, "p").ValueExpr("int(pod.spec.containers[0].resources.limits['nvidia.com/gpu']) * 25").Obj()},
		"a dyn value expression (checked when it runs)": {policy: testutil.MakePolicy(testNS, "p").ValueExpr("pod.spec.priority").Obj()},
		"a dyn match expression":                        {policy: testutil.MakePolicy(testNS, "p").Match("pod.metadata.labels['gpu']").Obj()},
		"value expression syntax error": {
			policy:  testutil.MakePolicy(testNS, "p").ValueExpr("1 +").Obj(),
			wantErr: []string{"spec.billingValueExpression: ", "Syntax error"},
		},
		"value expression returns a string": {
			policy:  testutil.MakePolicy(testNS, "p").ValueExpr("'ten'").Obj(),
			wantErr: []string{"spec.billingValueExpression: the expression returns string, but it must return int"},
		},
		"value expression returns a double": {
			policy:  testutil.MakePolicy(testNS, "p").ValueExpr("1.5 * 2.0").Obj(),
			wantErr: []string{"spec.billingValueExpression: the expression returns double, but it must return int"},
		},
		"value expression returns a uint": {
			policy:  testutil.MakePolicy(testNS, "p").ValueExpr("25u").Obj(),
			wantErr: []string{"spec.billingValueExpression: the expression returns uint, but it must return int"},
		},
		"value expression returns a bool": {
			policy:  testutil.MakePolicy(testNS, "p").ValueExpr("pod.metadata.name == 'x'").Obj(),
			wantErr: []string{"spec.billingValueExpression: the expression returns bool, but it must return int"},
		},
		"match expression returns an int": {
			policy:  testutil.MakePolicy(testNS, "p").Match("1 + 1").Obj(),
			wantErr: []string{"spec.matchExpression: the expression returns int, but it must return bool"},
		},
		"undeclared variable": {
			policy:  testutil.MakePolicy(testNS, "p").Match("user == 'alice'").Obj(),
			wantErr: []string{"spec.matchExpression: ", "undeclared reference to 'user'"},
		},
		"unknown function": {
			policy:  testutil.MakePolicy(testNS, "p").ValueExpr("gpus(pod)").Obj(),
			wantErr: []string{"spec.billingValueExpression: ", "undeclared reference to 'gpus'"},
		},
		"invalid label selector": {
			policy: testutil.MakePolicy(testNS, "p").Selector(&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "profile", Operator: "Near", Values: []string{"gpu"}},
			}}).Obj(),
			wantErr: []string{"spec.podSelector: ", "Near"},
		},
		"every error is reported": {
			policy:  testutil.MakePolicy(testNS, "p").Match("1").ValueExpr("'x'").Obj(),
			wantErr: []string{"spec.matchExpression: the expression returns int", "spec.billingValueExpression: the expression returns string"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := Compile(tc.policy)
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Compile: %v", err)
				}
				if c == nil {
					t.Fatal("Compile returned no policy")
				}
				return
			}
			if err == nil {
				t.Fatalf("Compile succeeded, want an error with %q", tc.wantErr)
			}
			if c != nil {
				t.Errorf("Compile returned a policy with its error")
			}
			for _, s := range tc.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Compile error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestCompileKeepsTheSpec(t *testing.T) {
	c, err := Compile(testutil.MakePolicy(testNS, "gpu").Priority(7).Value(40).Every(time.Hour).Obj())
	if err != nil {
		t.Fatal(err)
	}
	got := struct {
		Name     string
		Priority int32
		Value    int64
		Interval time.Duration
	}{c.Name, c.Priority, *c.Value, c.Interval}
	want := struct {
		Name     string
		Priority int32
		Value    int64
		Interval time.Duration
	}{"gpu", 7, 40, time.Hour}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("compiled policy mismatch (-want +got):\n%s", d)
	}

	// A policy stored without billingInterval (the CRD defaults it, so only
	// a hand-made object) gets the built-in 10m.
	p := testutil.MakePolicy(testNS, "bare").Obj()
	p.Spec.BillingInterval = metav1.Duration{}
	c, err = Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Interval != DefaultPrice.Interval {
		t.Errorf("interval of a policy without one = %s, want %s", c.Interval, DefaultPrice.Interval)
	}
}

func TestCompileExpressionType(t *testing.T) {
	cases := map[string]struct {
		expr    string
		want    *cel.Type
		wantErr string
	}{
		"bool for bool":  {expr: "true", want: cel.BoolType},
		"int for int":    {expr: "3", want: cel.IntType},
		"dyn for int":    {expr: "pod.spec.priority", want: cel.IntType},
		"int for bool":   {expr: "3", want: cel.BoolType, wantErr: "the expression returns int, but it must return bool"},
		"string for int": {expr: "pod.metadata.name + 'x'", want: cel.IntType, wantErr: "the expression returns string, but it must return int"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := CompileExpression(tc.expr, tc.want)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tc.wantErr {
				t.Errorf("CompileExpression(%q) error = %q, want %q", tc.expr, got, tc.wantErr)
			}
		})
	}
}

func TestSortPolicies(t *testing.T) {
	pols := []*CompiledPolicy{
		{Name: "b", Priority: 0}, {Name: "gpu-b", Priority: 10}, {Name: "a", Priority: 0},
		{Name: "low", Priority: -5}, {Name: "gpu-a", Priority: 10}, {Name: "top", Priority: 1_000_000},
	}
	SortPolicies(pols)
	var got []string
	for _, p := range pols {
		got = append(got, p.Name)
	}
	want := []string{"top", "gpu-a", "gpu-b", "a", "b", "low"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("SortPolicies order (-want +got):\n%s", d)
	}
}

func TestResolvePrice(t *testing.T) {
	custom := Defaults{Value: 3, Interval: time.Hour}
	cases := map[string]struct {
		policies []*hcv1.BillingPolicy
		pod      *corev1.Pod
		groups   []string
		defaults Defaults
		want     Price
		// wantErr is a substring of the error; wantPolicyErr the policy a
		// *PolicyError names.
		wantErr       string
		wantPolicyErr string
	}{
		"no policies: the operator's defaults": {
			pod:      alicePod("jupyter-alice").Obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 10, Interval: interval},
		},
		"no policies: configured defaults": {
			pod:      alicePod("jupyter-alice").Obj(),
			defaults: custom,
			want:     Price{Value: 3, Interval: time.Hour},
		},
		"nothing matches: defaults, no policy named": {
			policies: []*hcv1.BillingPolicy{testutil.MakePolicy(testNS, "gpu").Selecting("profile", "gpu").Value(50).Obj()},
			pod:      alicePod("jupyter-alice").Label("profile", "cpu").Obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 10, Interval: interval},
		},
		"a label selector selects the pod": {
			policies: []*hcv1.BillingPolicy{testutil.MakePolicy(testNS, "gpu").Selecting("profile", "gpu").Value(50).Every(time.Hour).Obj()},
			pod:      alicePod("jupyter-alice").Label("profile", "gpu").Obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 50, Interval: time.Hour, Policy: "gpu"},
		},
		"an empty selector selects every pod": {
			policies: []*hcv1.BillingPolicy{testutil.MakePolicy(testNS, "all").Value(7).Obj()},
			pod:      alicePod("jupyter-alice").Obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 7, Interval: interval, Policy: "all"},
		},
		"the highest priority wins": {
			policies: []*hcv1.BillingPolicy{
				testutil.MakePolicy(testNS, "all").Value(7).Obj(),
				testutil.MakePolicy(testNS, "gpu").Priority(10).Selecting("profile", "gpu").Value(50).Obj(),
				testutil.MakePolicy(testNS, "gpu-cheap").Priority(5).Selecting("profile", "gpu").Value(1).Obj(),
			},
			pod:      alicePod("jupyter-alice").Label("profile", "gpu").Obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 50, Interval: interval, Policy: "gpu"},
		},
		"a tie goes to the name that sorts first": {
			policies: []*hcv1.BillingPolicy{
				testutil.MakePolicy(testNS, "zeta").Priority(3).Value(9).Obj(),
				testutil.MakePolicy(testNS, "alpha").Priority(3).Value(8).Obj(),
			},
			pod:      alicePod("jupyter-alice").Obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 8, Interval: interval, Policy: "alpha"},
		},
		"a higher policy that does not match falls through": {
			policies: []*hcv1.BillingPolicy{
				testutil.MakePolicy(testNS, "gpu").Priority(10).Selecting("profile", "gpu").Value(50).Obj(),
				testutil.MakePolicy(testNS, "all").Value(7).Obj(),
			},
			pod:      alicePod("jupyter-alice").Label("profile", "cpu").Obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 7, Interval: interval, Policy: "all"},
		},
		"groups: a staff price through the user's JupyterHub groups": {
			policies: []*hcv1.BillingPolicy{
				testutil.MakePolicy(testNS, "staff").Priority(1).Match("'staff' in groups").Value(0).Obj(),
				testutil.MakePolicy(testNS, "all").Value(7).Obj(),
			},
			pod:      alicePod("jupyter-alice").Obj(),
			groups:   []string{"physics-101", "staff"},
			defaults: DefaultPrice,
			want:     Price{Value: 0, Interval: interval, Policy: "staff"},
		},
		"groups: none (an adopted pod) is an empty list": {
			policies: []*hcv1.BillingPolicy{
				testutil.MakePolicy(testNS, "staff").Priority(1).Match("'staff' in groups").Value(0).Obj(),
				testutil.MakePolicy(testNS, "per-group").ValueExpr("5 + size(groups)").Obj(),
			},
			pod:      alicePod("jupyter-alice").Obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 5, Interval: interval, Policy: "per-group"},
		},
		"matchExpression selects a GPU node selector": {
			policies: []*hcv1.BillingPolicy{
				testutil.MakePolicy(testNS, "gpu-nodes").Priority(1).Match("has(pod.spec.nodeSelector) && 'gpu' in pod.spec.nodeSelector").Value(40).Obj(),
				testutil.MakePolicy(testNS, "all").Value(7).Obj(),
			},
			pod:      alicePod("jupyter-alice").NodeSelector("gpu", "a100").Obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 40, Interval: interval, Policy: "gpu-nodes"},
		},
		"matchExpression false falls through": {
			policies: []*hcv1.BillingPolicy{
				testutil.MakePolicy(testNS, "gpu-nodes").Priority(1).Match("has(pod.spec.nodeSelector) && 'gpu' in pod.spec.nodeSelector").Value(40).Obj(),
				testutil.MakePolicy(testNS, "all").Value(7).Obj(),
			},
			pod:      alicePod("jupyter-alice").Obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 7, Interval: interval, Policy: "all"},
		},
		"selector and matchExpression must both hold": {
			policies: []*hcv1.BillingPolicy{
				testutil.MakePolicy(testNS, "gpu").Priority(1).Selecting("profile", "gpu").Match("pod.metadata.name.startsWith('jupyter-bob')").Value(40).Obj(),
			},
			pod:      alicePod("jupyter-alice").Label("profile", "gpu").Obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 10, Interval: interval},
		},
		"GPU pods priced by quantity × 25": {
			policies: []*hcv1.BillingPolicy{testutil.MakePolicy(testNS, "gpu").Selecting("profile", "gpu").ValueExpr(gpuExpr).Obj()},
			pod:      alicePod("jupyter-alice").Label("profile", "gpu").GPUs("2").Obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 50, Interval: interval, Policy: "gpu"},
		},
		// The example in the BillingPolicy API doc compiles but fails on every
		// pod: cel-go finds no int(string) overload for an index into a dyn map
		// (int(pod.metadata.name) would convert). Pinned here so a doc fix
		// (quantity(...).asInteger(), or int(string(...))) is not forgotten.
		"the API doc's int() example is refused at runtime": {
			policies:      []*hcv1.BillingPolicy{testutil.MakePolicy(testNS, "gpu").ValueExpr("int(pod.spec.containers[0].resources.limits['nvidia.com/gpu']) * 25").Obj()},
			pod:           alicePod("jupyter-alice").GPUs("3").Obj(),
			defaults:      DefaultPrice,
			wantErr:       "no such overload: int(string)",
			wantPolicyErr: "gpu",
		},
		"int(string(...)) prices the GPU pod": {
			policies: []*hcv1.BillingPolicy{testutil.MakePolicy(testNS, "gpu").ValueExpr("int(string(pod.spec.containers[0].resources.limits['nvidia.com/gpu'])) * 25").Obj()},
			pod:      alicePod("jupyter-alice").GPUs("3").Obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 75, Interval: interval, Policy: "gpu"},
		},
		"billingValue 0 is free": {
			policies: []*hcv1.BillingPolicy{testutil.MakePolicy(testNS, "free").Value(0).Obj()},
			pod:      alicePod("jupyter-alice").Obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 0, Interval: interval, Policy: "free"},
		},
		"neither value nor expression: the default value at the policy's interval": {
			policies: []*hcv1.BillingPolicy{testutil.MakePolicy(testNS, "hourly").Every(time.Hour).Obj()},
			pod:      alicePod("jupyter-alice").Obj(),
			defaults: custom,
			want:     Price{Value: 3, Interval: time.Hour, Policy: "hourly"},
		},
		"an expression may return MaxCredits": {
			policies: []*hcv1.BillingPolicy{testutil.MakePolicy(testNS, "max").ValueExpr(fmt.Sprint(hcv1.MaxCredits)).Obj()},
			pod:      alicePod("jupyter-alice").Obj(),
			defaults: DefaultPrice,
			want:     Price{Value: hcv1.MaxCredits, Interval: interval, Policy: "max"},
		},
		"a pod the expression cannot price is refused, naming the policy": {
			policies:      []*hcv1.BillingPolicy{testutil.MakePolicy(testNS, "gpu").ValueExpr(gpuExpr).Obj()},
			pod:           alicePod("jupyter-alice").Obj(), // no limits at all
			defaults:      DefaultPrice,
			wantErr:       `billing policy "gpu" could not price this server: billingValueExpression: `,
			wantPolicyErr: "gpu",
		},
		"a matchExpression that fails at runtime is refused": {
			policies:      []*hcv1.BillingPolicy{testutil.MakePolicy(testNS, "labelled").Match("pod.metadata.labels['team'] == 'ml'").Value(5).Obj()},
			pod:           alicePod("jupyter-alice").Obj(),
			defaults:      DefaultPrice,
			wantErr:       `billing policy "labelled" could not price this server: matchExpression: no such key: team`,
			wantPolicyErr: "labelled",
		},
		"a dyn matchExpression that returns a string is refused": {
			policies:      []*hcv1.BillingPolicy{testutil.MakePolicy(testNS, "odd").Match("pod.metadata.name").Value(5).Obj()},
			pod:           alicePod("jupyter-alice").Obj(),
			defaults:      DefaultPrice,
			wantErr:       "matchExpression returned string, not a bool",
			wantPolicyErr: "odd",
		},
		"a dyn value expression that returns a string is refused": {
			policies:      []*hcv1.BillingPolicy{testutil.MakePolicy(testNS, "odd").ValueExpr("pod.metadata.name").Obj()},
			pod:           alicePod("jupyter-alice").Obj(),
			defaults:      DefaultPrice,
			wantErr:       "billingValueExpression returned string, not an int",
			wantPolicyErr: "odd",
		},
		"a negative price is refused": {
			policies:      []*hcv1.BillingPolicy{testutil.MakePolicy(testNS, "neg").ValueExpr("0 - 5").Obj()},
			pod:           alicePod("jupyter-alice").Obj(),
			defaults:      DefaultPrice,
			wantErr:       fmt.Sprintf("billingValueExpression returned -5, outside 0..%d", hcv1.MaxCredits),
			wantPolicyErr: "neg",
		},
		"a price above MaxCredits is refused": {
			policies:      []*hcv1.BillingPolicy{testutil.MakePolicy(testNS, "huge").ValueExpr(fmt.Sprintf("%d + 1", hcv1.MaxCredits)).Obj()},
			pod:           alicePod("jupyter-alice").Obj(),
			defaults:      DefaultPrice,
			wantErr:       fmt.Sprintf("billingValueExpression returned %d, outside 0..%d", hcv1.MaxCredits+1, hcv1.MaxCredits),
			wantPolicyErr: "huge",
		},
		"an int overflow is a runtime error, not a wrapped price": {
			policies:      []*hcv1.BillingPolicy{testutil.MakePolicy(testNS, "overflow").ValueExpr("9223372036854775807 * 2").Obj()},
			pod:           alicePod("jupyter-alice").Obj(),
			defaults:      DefaultPrice,
			wantErr:       "overflow",
			wantPolicyErr: "overflow",
		},
		"a runaway expression is stopped by the cost limit": {
			policies:      []*hcv1.BillingPolicy{testutil.MakePolicy(testNS, "runaway").Match(runaway).Value(1).Obj()},
			pod:           alicePod("jupyter-alice").Obj(),
			defaults:      DefaultPrice,
			wantErr:       "cost limit exceeded",
			wantPolicyErr: "runaway",
		},
		"a failing higher policy blocks lower ones": {
			policies: []*hcv1.BillingPolicy{
				testutil.MakePolicy(testNS, "gpu").Priority(10).ValueExpr(gpuExpr).Obj(),
				testutil.MakePolicy(testNS, "all").Value(7).Obj(),
			},
			pod:           alicePod("jupyter-alice").Obj(),
			defaults:      DefaultPrice,
			wantErr:       `billing policy "gpu"`,
			wantPolicyErr: "gpu",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var pols []*CompiledPolicy
			for _, p := range tc.policies {
				c, err := Compile(p)
				if err != nil {
					t.Fatalf("Compile(%s): %v", p.Name, err)
				}
				pols = append(pols, c)
			}
			SortPolicies(pols)
			got, err := ResolvePriceInGroups(pols, tc.pod, tc.groups, tc.defaults)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ResolvePrice: %v", err)
				}
				if d := cmp.Diff(tc.want, got); d != "" {
					t.Errorf("price mismatch (-want +got):\n%s", d)
				}
				return
			}
			if err == nil {
				t.Fatalf("ResolvePrice = %+v, want an error with %q", got, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ResolvePrice error %q does not contain %q", err, tc.wantErr)
			}
			var pe *PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("ResolvePrice error %T is not a *PolicyError", err)
			}
			if pe.Policy != tc.wantPolicyErr {
				t.Errorf("PolicyError names %q, want %q", pe.Policy, tc.wantPolicyErr)
			}
			if errors.Unwrap(err) == nil {
				t.Errorf("PolicyError does not unwrap to the cause")
			}
		})
	}
}

// runaway is a matchExpression of 200³ steps, far above the cost limit.
var runaway = func() string {
	var xs []string
	for i := range 200 {
		xs = append(xs, fmt.Sprint(i))
	}
	l := "[" + strings.Join(xs, ",") + "]"
	return fmt.Sprintf("%s.all(x, %s.all(y, %s.all(z, x + y + z >= 0)))", l, l, l)
}()

// TestPodInputIsConvertedOnce checks that one PodInput serves every policy:
// the conversion to unstructured is cached.
func TestPodInputIsConvertedOnce(t *testing.T) {
	in := &PodInput{Pod: alicePod("jupyter-alice").GPUs("1").Obj()}
	m, err := Compile(testutil.MakePolicy(testNS, "m").Match("pod.metadata.name == 'jupyter-alice'").ValueExpr(gpuExpr).Obj())
	if err != nil {
		t.Fatal(err)
	}
	ok, err := m.Matches(in)
	if err != nil || !ok {
		t.Fatalf("Matches = %v, %v; want true", ok, err)
	}
	in.Pod.Name = "changed-after-first-use"
	ok, err = m.Matches(in)
	if err != nil || !ok {
		t.Errorf("Matches after a change to the pod = %v, %v; want the cached view (true)", ok, err)
	}
	p, err := m.PriceOf(in, DefaultPrice)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(Price{Value: 25, Interval: interval, Policy: "m"}, p); d != "" {
		t.Errorf("PriceOf mismatch (-want +got):\n%s", d)
	}
}
