package billing

import (
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/types"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

func versioned(p *hcv1.BillingPolicy, uid types.UID, generation int64) *hcv1.BillingPolicy {
	p.UID, p.Generation = uid, generation
	return p
}

func TestPolicyCacheGet(t *testing.T) {
	cases := map[string]struct {
		first, second *hcv1.BillingPolicy
		wantSame      bool
		wantErr       bool
	}{
		"the same version compiles once": {
			first:    versioned(testutil.MakePolicy(testNS, "gpu").ValueExpr(gpuExpr).Obj(), "uid-1", 1),
			second:   versioned(testutil.MakePolicy(testNS, "gpu").ValueExpr(gpuExpr).Obj(), "uid-1", 1),
			wantSame: true,
		},
		"a new generation compiles again": {
			first:  versioned(testutil.MakePolicy(testNS, "gpu").ValueExpr(gpuExpr).Obj(), "uid-1", 1),
			second: versioned(testutil.MakePolicy(testNS, "gpu").Value(5).Obj(), "uid-1", 2),
		},
		"another policy with the same generation compiles on its own": {
			first:  versioned(testutil.MakePolicy(testNS, "gpu").ValueExpr(gpuExpr).Obj(), "uid-1", 1),
			second: versioned(testutil.MakePolicy(testNS, "cpu").Value(5).Obj(), "uid-2", 1),
		},
		"an object without a UID is never cached": {
			first:  testutil.MakePolicy(testNS, "gpu").Value(5).Obj(),
			second: testutil.MakePolicy(testNS, "gpu").Value(5).Obj(),
		},
		"a compile error is remembered for that version": {
			first:    versioned(testutil.MakePolicy(testNS, "bad").ValueExpr("'x'").Obj(), "uid-3", 1),
			second:   versioned(testutil.MakePolicy(testNS, "bad").ValueExpr("'x'").Obj(), "uid-3", 1),
			wantSame: true,
			wantErr:  true,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var c PolicyCache
			p1, err1 := c.Get(tc.first)
			p2, err2 := c.Get(tc.second)
			if tc.wantErr {
				if err1 == nil || err2 == nil {
					t.Fatalf("Get errors = %v, %v; want both", err1, err2)
				}
				if err1 != err2 { //nolint:errorlint // identity, not kind: the cache hands back the very error value it stored
					t.Errorf("the cached error is not the one first returned")
				}
				return
			}
			if err1 != nil || err2 != nil {
				t.Fatalf("Get errors = %v, %v", err1, err2)
			}
			if same := p1 == p2; same != tc.wantSame {
				t.Errorf("second Get returned the cached policy = %v, want %v", same, tc.wantSame)
			}
			if p2.Name != tc.second.Name {
				t.Errorf("second Get returned policy %q, want %q", p2.Name, tc.second.Name)
			}
		})
	}
}

func TestPolicyCacheSorted(t *testing.T) {
	var c PolicyCache
	items := []hcv1.BillingPolicy{
		*versioned(testutil.MakePolicy(testNS, "zeta").Value(1).Obj(), "u1", 1),
		*versioned(testutil.MakePolicy(testNS, "broken").Priority(100).ValueExpr("1 +").Obj(), "u2", 1),
		*versioned(testutil.MakePolicy(testNS, "gpu").Priority(10).ValueExpr(gpuExpr).Obj(), "u3", 1),
		*versioned(testutil.MakePolicy(testNS, "alpha").Value(2).Obj(), "u4", 1),
	}
	var got []string
	for _, p := range c.Sorted(items) {
		got = append(got, p.Name)
	}
	if d := cmp.Diff([]string{"gpu", "alpha", "zeta"}, got); d != "" {
		t.Errorf("Sorted (the broken policy skipped, by priority then name) (-want +got):\n%s", d)
	}
	if got := c.Sorted(nil); got == nil || len(got) != 0 {
		t.Errorf("Sorted(nil) = %v, want an empty list", got)
	}
}

// TestPolicyCacheConcurrent has the webhook's handlers share one cache.
func TestPolicyCacheConcurrent(t *testing.T) {
	var c PolicyCache
	p := versioned(testutil.MakePolicy(testNS, "gpu").ValueExpr(gpuExpr).Obj(), "uid-1", 1)
	first, err := c.Get(p)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make([]*CompiledPolicy, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], _ = c.Get(p)
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r != first {
			t.Errorf("goroutine %d got a different compiled policy", i)
		}
	}
}
