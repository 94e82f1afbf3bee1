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
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// podBuilder builds a KubeSpawner singleuser pod.
type podBuilder struct{ p corev1.Pod }

func makePod(name string) *podBuilder {
	b := &podBuilder{}
	b.p.Name = name
	b.p.Namespace = "hub"
	b.p.Labels = map[string]string{hcv1.ComponentLabel: hcv1.SingleuserComponent}
	b.p.Annotations = map[string]string{hcv1.AnnotationUsername: "alice"}
	b.p.Spec.Containers = []corev1.Container{{Name: "notebook", Image: "jupyter/base-notebook"}}
	return b
}

func (b *podBuilder) withLabel(k, v string) *podBuilder { b.p.Labels[k] = v; return b }
func (b *podBuilder) withNodeSelector(k, v string) *podBuilder {
	if b.p.Spec.NodeSelector == nil {
		b.p.Spec.NodeSelector = map[string]string{}
	}
	b.p.Spec.NodeSelector[k] = v
	return b
}

func (b *podBuilder) withGPU(n int64) *podBuilder {
	b.p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{
		"nvidia.com/gpu": *resource.NewQuantity(n, resource.DecimalSI),
	}
	return b
}

func (b *podBuilder) obj() *corev1.Pod { return b.p.DeepCopy() }

// policyBuilder builds a BillingPolicy as the API server stores it (the
// billingInterval default of 10m applied).
type policyBuilder struct{ p hcv1.BillingPolicy }

func makePolicy(name string) *policyBuilder {
	b := &policyBuilder{}
	b.p.Name = name
	b.p.Spec.BillingInterval = metav1.Duration{Duration: tenMin}
	return b
}

func (b *policyBuilder) value(v int64) *policyBuilder  { b.p.Spec.BillingValue = &v; return b }
func (b *policyBuilder) expr(e string) *policyBuilder  { b.p.Spec.BillingValueExpression = e; return b }
func (b *policyBuilder) match(e string) *policyBuilder { b.p.Spec.MatchExpression = e; return b }
func (b *policyBuilder) priority(p int32) *policyBuilder {
	b.p.Spec.Priority = p
	return b
}

func (b *policyBuilder) every(d time.Duration) *policyBuilder {
	b.p.Spec.BillingInterval = metav1.Duration{Duration: d}
	return b
}

func (b *policyBuilder) selectLabel(k, v string) *policyBuilder {
	b.p.Spec.PodSelector = &metav1.LabelSelector{MatchLabels: map[string]string{k: v}}
	return b
}

func (b *policyBuilder) selector(s *metav1.LabelSelector) *policyBuilder {
	b.p.Spec.PodSelector = s
	return b
}

func (b *policyBuilder) obj() *hcv1.BillingPolicy { return b.p.DeepCopy() }

const gpuExpr = "quantity(pod.spec.containers[0].resources.limits['nvidia.com/gpu']).asInteger() * 25"

func TestCompile(t *testing.T) {
	cases := map[string]struct {
		policy *hcv1.BillingPolicy
		// wantErr are substrings of the error; none means success.
		wantErr []string
	}{
		"a fixed price":                                 {policy: makePolicy("p").value(10).obj()},
		"a label selector":                              {policy: makePolicy("p").selectLabel("profile", "gpu").value(10).obj()},
		"a matchExpression":                             {policy: makePolicy("p").match("has(pod.spec.nodeSelector) && 'gpu' in pod.spec.nodeSelector").obj()},
		"the GPU pricing expression":                    {policy: makePolicy("p").expr(gpuExpr).obj()},
		"the API doc's int() expression":                {policy: makePolicy("p").expr("int(pod.spec.containers[0].resources.limits['nvidia.com/gpu']) * 25").obj()},
		"a dyn value expression (checked when it runs)": {policy: makePolicy("p").expr("pod.spec.priority").obj()},
		"a dyn match expression":                        {policy: makePolicy("p").match("pod.metadata.labels['gpu']").obj()},
		"value expression syntax error": {
			policy:  makePolicy("p").expr("1 +").obj(),
			wantErr: []string{"spec.billingValueExpression: ", "Syntax error"},
		},
		"value expression returns a string": {
			policy:  makePolicy("p").expr("'ten'").obj(),
			wantErr: []string{"spec.billingValueExpression: the expression returns string, but it must return int"},
		},
		"value expression returns a double": {
			policy:  makePolicy("p").expr("1.5 * 2.0").obj(),
			wantErr: []string{"spec.billingValueExpression: the expression returns double, but it must return int"},
		},
		"value expression returns a uint": {
			policy:  makePolicy("p").expr("25u").obj(),
			wantErr: []string{"spec.billingValueExpression: the expression returns uint, but it must return int"},
		},
		"value expression returns a bool": {
			policy:  makePolicy("p").expr("pod.metadata.name == 'x'").obj(),
			wantErr: []string{"spec.billingValueExpression: the expression returns bool, but it must return int"},
		},
		"match expression returns an int": {
			policy:  makePolicy("p").match("1 + 1").obj(),
			wantErr: []string{"spec.matchExpression: the expression returns int, but it must return bool"},
		},
		"undeclared variable": {
			policy:  makePolicy("p").match("user == 'alice'").obj(),
			wantErr: []string{"spec.matchExpression: ", "undeclared reference to 'user'"},
		},
		"unknown function": {
			policy:  makePolicy("p").expr("gpus(pod)").obj(),
			wantErr: []string{"spec.billingValueExpression: ", "undeclared reference to 'gpus'"},
		},
		"invalid label selector": {
			policy: makePolicy("p").selector(&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "profile", Operator: "Near", Values: []string{"gpu"}},
			}}).obj(),
			wantErr: []string{"spec.podSelector: ", "Near"},
		},
		"every error is reported": {
			policy:  makePolicy("p").match("1").expr("'x'").obj(),
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
	c, err := Compile(makePolicy("gpu").priority(7).value(40).every(time.Hour).obj())
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
	p := makePolicy("bare").obj()
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
		defaults Defaults
		want     Price
		// wantErr is a substring of the error; wantPolicyErr the policy a
		// *PolicyError names.
		wantErr       string
		wantPolicyErr string
	}{
		"no policies: the operator's defaults": {
			pod:      makePod("jupyter-alice").obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 10, Interval: tenMin},
		},
		"no policies: configured defaults": {
			pod:      makePod("jupyter-alice").obj(),
			defaults: custom,
			want:     Price{Value: 3, Interval: time.Hour},
		},
		"nothing matches: defaults, no policy named": {
			policies: []*hcv1.BillingPolicy{makePolicy("gpu").selectLabel("profile", "gpu").value(50).obj()},
			pod:      makePod("jupyter-alice").withLabel("profile", "cpu").obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 10, Interval: tenMin},
		},
		"a label selector selects the pod": {
			policies: []*hcv1.BillingPolicy{makePolicy("gpu").selectLabel("profile", "gpu").value(50).every(time.Hour).obj()},
			pod:      makePod("jupyter-alice").withLabel("profile", "gpu").obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 50, Interval: time.Hour, Policy: "gpu"},
		},
		"an empty selector selects every pod": {
			policies: []*hcv1.BillingPolicy{makePolicy("all").value(7).obj()},
			pod:      makePod("jupyter-alice").obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 7, Interval: tenMin, Policy: "all"},
		},
		"the highest priority wins": {
			policies: []*hcv1.BillingPolicy{
				makePolicy("all").value(7).obj(),
				makePolicy("gpu").priority(10).selectLabel("profile", "gpu").value(50).obj(),
				makePolicy("gpu-cheap").priority(5).selectLabel("profile", "gpu").value(1).obj(),
			},
			pod:      makePod("jupyter-alice").withLabel("profile", "gpu").obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 50, Interval: tenMin, Policy: "gpu"},
		},
		"a tie goes to the name that sorts first": {
			policies: []*hcv1.BillingPolicy{
				makePolicy("zeta").priority(3).value(9).obj(),
				makePolicy("alpha").priority(3).value(8).obj(),
			},
			pod:      makePod("jupyter-alice").obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 8, Interval: tenMin, Policy: "alpha"},
		},
		"a higher policy that does not match falls through": {
			policies: []*hcv1.BillingPolicy{
				makePolicy("gpu").priority(10).selectLabel("profile", "gpu").value(50).obj(),
				makePolicy("all").value(7).obj(),
			},
			pod:      makePod("jupyter-alice").withLabel("profile", "cpu").obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 7, Interval: tenMin, Policy: "all"},
		},
		"matchExpression selects a GPU node selector": {
			policies: []*hcv1.BillingPolicy{
				makePolicy("gpu-nodes").priority(1).match("has(pod.spec.nodeSelector) && 'gpu' in pod.spec.nodeSelector").value(40).obj(),
				makePolicy("all").value(7).obj(),
			},
			pod:      makePod("jupyter-alice").withNodeSelector("gpu", "a100").obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 40, Interval: tenMin, Policy: "gpu-nodes"},
		},
		"matchExpression false falls through": {
			policies: []*hcv1.BillingPolicy{
				makePolicy("gpu-nodes").priority(1).match("has(pod.spec.nodeSelector) && 'gpu' in pod.spec.nodeSelector").value(40).obj(),
				makePolicy("all").value(7).obj(),
			},
			pod:      makePod("jupyter-alice").obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 7, Interval: tenMin, Policy: "all"},
		},
		"selector and matchExpression must both hold": {
			policies: []*hcv1.BillingPolicy{
				makePolicy("gpu").priority(1).selectLabel("profile", "gpu").match("pod.metadata.name.startsWith('jupyter-bob')").value(40).obj(),
			},
			pod:      makePod("jupyter-alice").withLabel("profile", "gpu").obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 10, Interval: tenMin},
		},
		"GPU pods priced by quantity × 25": {
			policies: []*hcv1.BillingPolicy{makePolicy("gpu").selectLabel("profile", "gpu").expr(gpuExpr).obj()},
			pod:      makePod("jupyter-alice").withLabel("profile", "gpu").withGPU(2).obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 50, Interval: tenMin, Policy: "gpu"},
		},
		// The example in the BillingPolicy API doc compiles but fails on every
		// pod: cel-go finds no int(string) overload for an index into a dyn map
		// (int(pod.metadata.name) would convert). Pinned here so a doc fix
		// (quantity(...).asInteger(), or int(string(...))) is not forgotten.
		"the API doc's int() example is refused at runtime": {
			policies:      []*hcv1.BillingPolicy{makePolicy("gpu").expr("int(pod.spec.containers[0].resources.limits['nvidia.com/gpu']) * 25").obj()},
			pod:           makePod("jupyter-alice").withGPU(3).obj(),
			defaults:      DefaultPrice,
			wantErr:       "no such overload: int(string)",
			wantPolicyErr: "gpu",
		},
		"int(string(...)) prices the GPU pod": {
			policies: []*hcv1.BillingPolicy{makePolicy("gpu").expr("int(string(pod.spec.containers[0].resources.limits['nvidia.com/gpu'])) * 25").obj()},
			pod:      makePod("jupyter-alice").withGPU(3).obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 75, Interval: tenMin, Policy: "gpu"},
		},
		"billingValue 0 is free": {
			policies: []*hcv1.BillingPolicy{makePolicy("free").value(0).obj()},
			pod:      makePod("jupyter-alice").obj(),
			defaults: DefaultPrice,
			want:     Price{Value: 0, Interval: tenMin, Policy: "free"},
		},
		"neither value nor expression: the default value at the policy's interval": {
			policies: []*hcv1.BillingPolicy{makePolicy("hourly").every(time.Hour).obj()},
			pod:      makePod("jupyter-alice").obj(),
			defaults: custom,
			want:     Price{Value: 3, Interval: time.Hour, Policy: "hourly"},
		},
		"an expression may return MaxCredits": {
			policies: []*hcv1.BillingPolicy{makePolicy("max").expr(fmt.Sprint(hcv1.MaxCredits)).obj()},
			pod:      makePod("jupyter-alice").obj(),
			defaults: DefaultPrice,
			want:     Price{Value: hcv1.MaxCredits, Interval: tenMin, Policy: "max"},
		},
		"a pod the expression cannot price is refused, naming the policy": {
			policies:      []*hcv1.BillingPolicy{makePolicy("gpu").expr(gpuExpr).obj()},
			pod:           makePod("jupyter-alice").obj(), // no limits at all
			defaults:      DefaultPrice,
			wantErr:       `billing policy "gpu" could not price this server: billingValueExpression: `,
			wantPolicyErr: "gpu",
		},
		"a matchExpression that fails at runtime is refused": {
			policies:      []*hcv1.BillingPolicy{makePolicy("labelled").match("pod.metadata.labels['team'] == 'ml'").value(5).obj()},
			pod:           makePod("jupyter-alice").obj(),
			defaults:      DefaultPrice,
			wantErr:       `billing policy "labelled" could not price this server: matchExpression: no such key: team`,
			wantPolicyErr: "labelled",
		},
		"a dyn matchExpression that returns a string is refused": {
			policies:      []*hcv1.BillingPolicy{makePolicy("odd").match("pod.metadata.name").value(5).obj()},
			pod:           makePod("jupyter-alice").obj(),
			defaults:      DefaultPrice,
			wantErr:       "matchExpression returned string, not a bool",
			wantPolicyErr: "odd",
		},
		"a dyn value expression that returns a string is refused": {
			policies:      []*hcv1.BillingPolicy{makePolicy("odd").expr("pod.metadata.name").obj()},
			pod:           makePod("jupyter-alice").obj(),
			defaults:      DefaultPrice,
			wantErr:       "billingValueExpression returned string, not an int",
			wantPolicyErr: "odd",
		},
		"a negative price is refused": {
			policies:      []*hcv1.BillingPolicy{makePolicy("neg").expr("0 - 5").obj()},
			pod:           makePod("jupyter-alice").obj(),
			defaults:      DefaultPrice,
			wantErr:       fmt.Sprintf("billingValueExpression returned -5, outside 0..%d", hcv1.MaxCredits),
			wantPolicyErr: "neg",
		},
		"a price above MaxCredits is refused": {
			policies:      []*hcv1.BillingPolicy{makePolicy("huge").expr(fmt.Sprintf("%d + 1", hcv1.MaxCredits)).obj()},
			pod:           makePod("jupyter-alice").obj(),
			defaults:      DefaultPrice,
			wantErr:       fmt.Sprintf("billingValueExpression returned %d, outside 0..%d", hcv1.MaxCredits+1, hcv1.MaxCredits),
			wantPolicyErr: "huge",
		},
		"an int overflow is a runtime error, not a wrapped price": {
			policies:      []*hcv1.BillingPolicy{makePolicy("overflow").expr("9223372036854775807 * 2").obj()},
			pod:           makePod("jupyter-alice").obj(),
			defaults:      DefaultPrice,
			wantErr:       "overflow",
			wantPolicyErr: "overflow",
		},
		"a runaway expression is stopped by the cost limit": {
			policies:      []*hcv1.BillingPolicy{makePolicy("runaway").match(runaway).value(1).obj()},
			pod:           makePod("jupyter-alice").obj(),
			defaults:      DefaultPrice,
			wantErr:       "cost limit exceeded",
			wantPolicyErr: "runaway",
		},
		"a failing higher policy blocks lower ones": {
			policies: []*hcv1.BillingPolicy{
				makePolicy("gpu").priority(10).expr(gpuExpr).obj(),
				makePolicy("all").value(7).obj(),
			},
			pod:           makePod("jupyter-alice").obj(),
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
			got, err := ResolvePrice(pols, tc.pod, tc.defaults)
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
	for i := 0; i < 200; i++ {
		xs = append(xs, fmt.Sprint(i))
	}
	l := "[" + strings.Join(xs, ",") + "]"
	return fmt.Sprintf("%s.all(x, %s.all(y, %s.all(z, x + y + z >= 0)))", l, l, l)
}()

// TestPodInputIsConvertedOnce checks that one PodInput serves every policy:
// the conversion to unstructured is cached.
func TestPodInputIsConvertedOnce(t *testing.T) {
	in := &PodInput{Pod: makePod("jupyter-alice").withGPU(1).obj()}
	m, err := Compile(makePolicy("m").match("pod.metadata.name == 'jupyter-alice'").expr(gpuExpr).obj())
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
	if d := cmp.Diff(Price{Value: 25, Interval: tenMin, Policy: "m"}, p); d != "" {
		t.Errorf("PriceOf mismatch (-want +got):\n%s", d)
	}
}
