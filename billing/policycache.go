package billing

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// PolicyCache keeps compiled policies by UID and generation, so CEL is
// compiled once per policy version rather than once per spawn.
type PolicyCache struct {
	mu sync.Mutex
	m  map[types.UID]compiledEntry
}

type compiledEntry struct {
	generation int64
	policy     *CompiledPolicy
	err        error
}

// Get returns the compiled policy (or its compile error).
func (c *PolicyCache) Get(p *hcv1.BillingPolicy) (*CompiledPolicy, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[types.UID]compiledEntry{}
	}
	if e, ok := c.m[p.UID]; ok && e.generation == p.Generation && p.UID != "" {
		return e.policy, e.err
	}
	cp, err := Compile(p)
	if p.UID != "" {
		if len(c.m) > 10000 {
			clear(c.m) // policies come and go rarely; a reset is cheap
		}
		c.m[p.UID] = compiledEntry{generation: p.Generation, policy: cp, err: err}
	}
	return cp, err
}

// Sorted compiles the policies (skipping ones that do not compile; their
// status says why) and sorts them by precedence.
func (c *PolicyCache) Sorted(items []hcv1.BillingPolicy) []*CompiledPolicy {
	out := make([]*CompiledPolicy, 0, len(items))
	for i := range items {
		get := Compile
		if c != nil {
			get = c.Get
		}
		if cp, err := get(&items[i]); err == nil {
			out = append(out, cp)
		}
	}
	SortPolicies(out)
	return out
}
