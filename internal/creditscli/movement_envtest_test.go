package creditscli

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/localcp"
	"github.com/hubcredits/hubcredits/internal/operator"
)

// TestRecordOnceOnTheAPIServer: recordOnce's JSON patch
// against a real API server: spec.topUps absent and empty, a write in
// between (the resourceVersion precondition), and a write whose response
// is lost (the patch landed, the client saw a timeout): the entry is there
// once, and the command must not then say it added nothing.
func TestRecordOnceOnTheAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	env, err := localcp.Start(localcp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	c, err := client.NewWithWatch(env.Config, client.Options{Scheme: operator.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mk := func(name string, topUps []hcv1.TopUp) client.ObjectKey {
		a := &hcv1.CreditAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: hcv1.CreditAccountSpec{Users: []string{name}, Cap: 100, TopUps: topUps}}
		if err := c.Create(ctx, a); err != nil {
			t.Fatal(err)
		}
		return client.ObjectKeyFromObject(a)
	}
	topUp := func(id string) func(*hcv1.CreditAccount) (*appendOp, error) {
		return func(a *hcv1.CreditAccount) (*appendOp, error) {
			tu := hcv1.TopUp{ID: id, Amount: 5, Reason: "r"}
			changed, err := addTopUp(a, tu)
			return appendTo("topUps", len(a.Spec.TopUps), tu, changed, err)
		}
	}
	ids := func(key client.ObjectKey) []string {
		a := &hcv1.CreditAccount{}
		if err := c.Get(ctx, key, a); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, tu := range a.Spec.TopUps {
			out = append(out, tu.ID)
		}
		return out
	}

	t.Run("absent, then appended", func(t *testing.T) {
		key := mk("absent", nil)
		for _, id := range []string{"a", "b"} {
			if wrote, err := recordOnce(ctx, c, key, topUp(id)); err != nil || !wrote {
				t.Fatalf("%s: wrote %v, %v", id, wrote, err)
			}
		}
		if got := ids(key); len(got) != 2 || got[0] != "a" || got[1] != "b" {
			t.Errorf("topUps %v", got)
		}
	})
	t.Run("a write in between conflicts, and is retried", func(t *testing.T) {
		key := mk("between", []hcv1.TopUp{{ID: "x", Amount: 1, Reason: "r"}})
		first := true
		racing := interceptor.NewClient(c, interceptor.Funcs{
			Patch: func(ctx context.Context, cl client.WithWatch, obj client.Object, p client.Patch, o ...client.PatchOption) error {
				if first { // another admin's top-up lands first
					first = false
					other := &hcv1.CreditAccount{}
					if err := cl.Get(ctx, key, other); err != nil {
						return err
					}
					other.Spec.TopUps = append(other.Spec.TopUps, hcv1.TopUp{ID: "other", Amount: 2, Reason: "r"})
					if err := cl.Update(ctx, other); err != nil {
						return err
					}
				}
				return cl.Patch(ctx, obj, p, o...)
			},
		})
		if wrote, err := recordOnce(ctx, racing, key, topUp("mine")); err != nil || !wrote {
			t.Fatalf("wrote %v, %v", wrote, err)
		}
		if got := ids(key); len(got) != 3 || got[0] != "x" || got[1] != "other" || got[2] != "mine" {
			t.Errorf("topUps %v, want [x other mine]", got)
		}
	})
	t.Run("a lost response", func(t *testing.T) {
		key := mk("lost", nil)
		lost := true
		flaky := interceptor.NewClient(c, interceptor.Funcs{
			Patch: func(ctx context.Context, cl client.WithWatch, obj client.Object, p client.Patch, o ...client.PatchOption) error {
				if err := cl.Patch(ctx, obj, p, o...); err != nil {
					return err
				}
				if lost {
					lost = false
					return apierrors.NewServerTimeout(schema.GroupResource{Group: "hubcredits.io", Resource: "creditaccounts"}, "patch", 1)
				}
				return nil
			},
		})
		wrote, err := recordOnce(ctx, flaky, key, topUp("once"))
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(key); len(got) != 1 {
			t.Fatalf("topUps %v, want [once]", got)
		}
		if !wrote {
			t.Error("the entry this command wrote is reported as not recorded: `Already recorded (the same id and amount): nothing added.`, recorded: false in -o json")
		}
	})
}
