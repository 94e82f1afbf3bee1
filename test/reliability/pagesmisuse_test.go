package reliability

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/ledgerpages"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

func (p *pagedPool) dump(stage string) {
	ctx := context.Background()
	a := testutil.GetAccount(p.t, p.c, p.ns, "course")
	pages, err := (&ledgerpages.Store{Client: p.c, APIReader: p.c}).Pages(ctx, a, true)
	p.t.Logf("%s: balance %d charged %d refunded %d inline %d paged %d pages %d pending %v pagedDue %v err %v", stage, a.Status.Balance,
		a.Status.TotalCharged, a.Status.TotalRefunded, len(a.Status.Servers), a.Status.PagedServers, a.Status.Pages, a.Status.Pending, a.Status.PagedDue, err)
	if err == nil {
		p.t.Logf("  CheckPaged: %v", billing.CheckPaged(a, pages))
	}
	for _, c := range a.Status.Conditions {
		p.t.Logf("  condition %s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message)
	}
	for _, e := range a.Status.Servers {
		p.t.Logf("  inline %s pod %s paid %d periods %d", e.ID, e.Pod, e.Paid, e.PeriodsPaid)
	}
	var evs corev1.EventList
	_ = p.c.List(ctx, &evs, client.InNamespace(p.ns))
	for _, e := range evs.Items {
		if e.Type == corev1.EventTypeWarning {
			p.t.Logf("  event %s %s: %s", e.InvolvedObject.Name, e.Reason, e.Message)
		}
	}
	n := len(a.Status.Ledger)
	for _, e := range a.Status.Ledger[max(0, n-6):] {
		p.t.Logf("  ledger %s %+d -> %d %s %s", e.Kind, e.Amount, e.Balance, e.Subject, e.Message)
	}
}

func TestExplorePagesMisuse(t *testing.T) {
	for _, what := range []string{"delete", "edit", "squat"} {
		t.Run(what, func(t *testing.T) {
			p := newPagedPool(t)
			for i := range 8 {
				p.spawn(fmt.Sprintf("s%d", i))
			}
			time.Sleep(2 * period)
			p.dump("before")
			ctx := context.Background()
			switch what {
			case "delete":
				must(t, p.c.Delete(ctx, &hcv1.LedgerPage{ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: "course-1"}}))
			case "edit":
				pg := &hcv1.LedgerPage{}
				must(t, p.c.Get(ctx, client.ObjectKey{Namespace: p.ns, Name: "course-1"}, pg))
				pg.Status.Servers[0].PeriodsPaid += 5
				pg.Status.Servers[0].Paid += 25
				must(t, p.c.Status().Update(ctx, pg))
			case "squat":
				a := testutil.GetAccount(t, p.c, p.ns, "course")
				must(t, p.c.Create(ctx, &hcv1.LedgerPage{ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: billing.PageName("course", a.Status.Pages+1)},
					Spec: hcv1.LedgerPageSpec{Account: "other"}}))
				for i := 8; i < 12; i++ {
					pod := userPod(p.ns, "u", fmt.Sprintf("s%d", i))
					err := p.c.Create(ctx, pod)
					t.Logf("spawn s%d: %v", i, err)
				}
			}
			time.Sleep(3 * period)
			p.dump("after")
		})
	}
}
