package billing

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/cel/library"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// Price is what a server costs: Value credits every Interval.
type Price struct {
	Value    int64
	Interval time.Duration
	// Policy is the BillingPolicy that set the price ("" for the operator's
	// defaults).
	Policy string
}

// Defaults is the price of a server that no policy selects.
type Defaults struct {
	Value    int64
	Interval time.Duration
}

// DefaultPrice is the operator's built-in default: 10 credits every 10m, as
// in jupyterhub-credit-service.
var DefaultPrice = Defaults{Value: hcv1.DefaultBillingValue, Interval: hcv1.DefaultBillingInterval}

// OrDefault is d, or DefaultPrice when d was never set (no interval): the
// one place an unset default price is defaulted.
func (d Defaults) OrDefault() Defaults {
	if d.Interval <= 0 {
		return DefaultPrice
	}
	return d
}

// celCostLimit bounds the work one expression may do on one pod, so an
// expression that could run away is stopped instead of stalling admission.
const celCostLimit = 1_000_000

var celEnv = func() *cel.Env {
	env, err := cel.NewEnv(
		cel.Variable("pod", cel.DynType),
		// groups are the user's JupyterHub groups (the pod's annotation
		// hubcredits.io/groups, read at admission; empty otherwise).
		cel.Variable("groups", cel.ListType(cel.StringType)),
		ext.Strings(),
		library.Quantity(),
		library.Lists(),
		library.Regex(),
	)
	if err != nil {
		panic(fmt.Sprintf("hubcredits: building the CEL environment: %v", err))
	}
	return env
}()

// CompiledPolicy is a BillingPolicy ready to price pods.
type CompiledPolicy struct {
	Name     string
	Priority int32
	Selector labels.Selector
	Match    cel.Program
	ValueFn  cel.Program
	Value    *int64
	Interval time.Duration
}

// CompileExpression checks a CEL expression over `pod` and returns its
// program. want is the type the expression must return (types.IntType or
// types.BoolType); an expression of type dyn is checked when it runs.
func CompileExpression(expr string, want *cel.Type) (cel.Program, error) {
	ast, iss := celEnv.Compile(expr)
	if iss.Err() != nil {
		return nil, iss.Err()
	}
	out := ast.OutputType()
	if !out.IsExactType(want) && !out.IsExactType(cel.DynType) {
		return nil, fmt.Errorf("the expression returns %s, but it must return %s", out, want)
	}
	return celEnv.Program(ast, cel.CostLimit(celCostLimit), cel.InterruptCheckFrequency(100))
}

// FieldError is what is wrong with one field of a BillingPolicy: its text
// is the field's path and the compiler's (or the selector parser's) words.
// The validating webhook turns it into a field.Error.
type FieldError struct {
	Field *field.Path
	// Value is the field as written (field.OmitValueType{} for a selector,
	// whose parts the message names).
	Value any
	Err   error
}

func (e *FieldError) Error() string { return e.Field.String() + ": " + e.Err.Error() }

func (e *FieldError) Unwrap() error { return e.Err }

var specPath = field.NewPath("spec")

// Compile prepares a BillingPolicy. Its error is the compiler's message, one
// *FieldError per field in error (joined).
func Compile(p *hcv1.BillingPolicy) (*CompiledPolicy, error) {
	c := &CompiledPolicy{
		Name:     p.Name,
		Priority: p.Spec.Priority,
		Value:    p.Spec.BillingValue,
		Interval: p.Spec.BillingInterval.Duration,
		Selector: labels.Everything(),
	}
	if c.Interval <= 0 {
		c.Interval = DefaultPrice.Interval
	}
	var errs []error
	if p.Spec.PodSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.PodSelector)
		if err != nil {
			errs = append(errs, &FieldError{Field: specPath.Child("podSelector"), Value: field.OmitValueType{}, Err: err})
		} else {
			c.Selector = sel
		}
	}
	if p.Spec.MatchExpression != "" {
		prg, err := CompileExpression(p.Spec.MatchExpression, cel.BoolType)
		if err != nil {
			errs = append(errs, &FieldError{Field: specPath.Child("matchExpression"), Value: p.Spec.MatchExpression, Err: err})
		}
		c.Match = prg
	}
	if p.Spec.BillingValueExpression != "" {
		prg, err := CompileExpression(p.Spec.BillingValueExpression, cel.IntType)
		if err != nil {
			errs = append(errs, &FieldError{Field: specPath.Child("billingValueExpression"), Value: p.Spec.BillingValueExpression, Err: err})
		}
		c.ValueFn = prg
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// PodInput is a pod as CEL expressions see it (`pod`), with its user's
// JupyterHub groups (`groups`); build it once per pod.
type PodInput struct {
	Pod    *corev1.Pod
	Groups []string
	obj    map[string]any
}

func (in *PodInput) activation() (map[string]any, error) {
	if in.obj == nil {
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(in.Pod)
		if err != nil {
			return nil, err
		}
		in.obj = obj
	}
	groups := in.Groups
	if groups == nil {
		groups = []string{}
	}
	return map[string]any{"pod": in.obj, "groups": groups}, nil
}

// Matches reports whether the policy selects the pod.
func (c *CompiledPolicy) Matches(in *PodInput) (bool, error) {
	if !c.Selector.Matches(labels.Set(in.Pod.Labels)) {
		return false, nil
	}
	if c.Match == nil {
		return true, nil
	}
	act, err := in.activation()
	if err != nil {
		return false, err
	}
	out, _, err := c.Match.Eval(act)
	if err != nil {
		return false, fmt.Errorf("matchExpression: %w", err)
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("matchExpression returned %s, not a bool", out.Type())
	}
	return b, nil
}

// PriceOf computes the price the policy sets for the pod.
func (c *CompiledPolicy) PriceOf(in *PodInput, d Defaults) (Price, error) {
	p := Price{Value: d.Value, Interval: c.Interval, Policy: c.Name}
	switch {
	case c.ValueFn != nil:
		act, err := in.activation()
		if err != nil {
			return p, err
		}
		out, _, err := c.ValueFn.Eval(act)
		if err != nil {
			return p, fmt.Errorf("billingValueExpression: %w", err)
		}
		if out.Type() != types.IntType {
			return p, fmt.Errorf("billingValueExpression returned %s, not an int", out.Type())
		}
		v := out.Value().(int64)
		if v < 0 || v > hcv1.MaxCredits {
			return p, fmt.Errorf("billingValueExpression returned %d, outside 0..%d", v, hcv1.MaxCredits)
		}
		p.Value = v
	case c.Value != nil:
		p.Value = *c.Value
	}
	return p, nil
}

// SortPolicies orders policies by priority (highest first), then by name, so
// the first matching one is the one that prices a pod.
func SortPolicies(pols []*CompiledPolicy) {
	sort.SliceStable(pols, func(i, j int) bool {
		if pols[i].Priority != pols[j].Priority {
			return pols[i].Priority > pols[j].Priority
		}
		return pols[i].Name < pols[j].Name
	})
}

// ResolvePrice returns the price of the pod: that of the first matching
// policy in pols (sorted with SortPolicies), else the defaults. An error
// names the policy that failed.
func ResolvePrice(pols []*CompiledPolicy, pod *corev1.Pod, d Defaults) (Price, error) {
	return ResolvePriceInGroups(pols, pod, nil, d)
}

// ResolvePriceInGroups is ResolvePrice for a pod whose user is in groups
// (the expressions' `groups`): admission's price, from the groups the hub
// put on the pod (PodGroups).
func ResolvePriceInGroups(pols []*CompiledPolicy, pod *corev1.Pod, groups []string, d Defaults) (Price, error) {
	in := &PodInput{Pod: pod, Groups: groups}
	for _, c := range pols {
		ok, err := c.Matches(in)
		if err != nil {
			return Price{}, &PolicyError{Policy: c.Name, Err: err}
		}
		if !ok {
			continue
		}
		p, err := c.PriceOf(in, d)
		if err != nil {
			return Price{}, &PolicyError{Policy: c.Name, Err: err}
		}
		return p, nil
	}
	return Price{Value: d.Value, Interval: d.Interval}, nil
}

// PolicyError says that a policy could not price a pod.
type PolicyError struct {
	Policy string
	Err    error
}

func (e *PolicyError) Error() string {
	return fmt.Sprintf("billing policy %q could not price this server: %v", e.Policy, e.Err)
}

func (e *PolicyError) Unwrap() error { return e.Err }
