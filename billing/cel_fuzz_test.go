package billing

import (
	"encoding/json"
	"testing"

	"github.com/google/cel-go/cel"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// FuzzPriceExpression compiles arbitrary CEL as a policy's value and match
// expressions and runs it on arbitrary pods: no panic, no run-away (the
// cost limit stops it), and any price it returns is within 0..MaxCredits.
func FuzzPriceExpression(f *testing.F) {
	gpu := `{"metadata":{"labels":{"hubcredits.io/policy":"gpu"}},"spec":{"containers":[{"name":"n","resources":{"limits":{"nvidia.com/gpu":"2"}}}]}}`
	f.Add("25 * quantity(pod.spec.containers[0].resources.limits['nvidia.com/gpu']).asInteger()", "true", gpu)
	f.Add("int(pod.metadata.labels['x'])", "has(pod.metadata.labels)", `{"metadata":{"labels":{"x":"12"}}}`)
	f.Add("[1,2,3].map(a, [1,2,3].map(b, a*b)).size()", "pod.spec.containers.size() > 0", gpu)
	f.Add("-1", "", "{}")
	f.Add("9223372036854775807", "", "{}")
	f.Add("pod.spec +", "1", "{}")
	f.Fuzz(func(t *testing.T, valueExpr, matchExpr, podJSON string) {
		pod := &corev1.Pod{}
		if json.Unmarshal([]byte(podJSON), pod) != nil {
			return
		}
		pol := &hcv1.BillingPolicy{ObjectMeta: metav1.ObjectMeta{Name: "fuzz"}, Spec: hcv1.BillingPolicySpec{
			BillingValueExpression: valueExpr, MatchExpression: matchExpr,
			BillingInterval: metav1.Duration{Duration: DefaultPrice.Interval}}}
		cp, err := Compile(pol)
		if err != nil {
			if _, err2 := CompileExpression(valueExpr, cel.IntType); err2 == nil && matchExpr == "" {
				t.Fatalf("Compile refused what CompileExpression accepts: %v", err)
			}
			return
		}
		price, err := ResolvePrice([]*CompiledPolicy{cp}, pod, DefaultPrice)
		if err != nil {
			return // a denial with the policy's name
		}
		if price.Value < 0 || price.Value > hcv1.MaxCredits {
			t.Fatalf("price %d outside 0..%d", price.Value, hcv1.MaxCredits)
		}
	})
}
