package reliability

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// warned waits until the account carries a Warning Event of reason whose
// message holds text.
func (p *pagedPool) warned(reason, text string) {
	p.t.Helper()
	testutil.Eventually(p.t, 30*time.Second, func() error {
		var evs corev1.EventList
		if err := p.c.List(context.Background(), &evs, client.InNamespace(p.ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && e.Reason == reason && e.InvolvedObject.Name == "course" && strings.Contains(e.Message, text) {
				p.t.Logf("event %s: %s", e.Reason, e.Message)
				return nil
			}
		}
		return fmt.Errorf("no %s Warning on the account mentioning %q", reason, text)
	})
}

// frozen checks that nothing moves on the account for a while: no charge,
// no refund, no grant (billing waits for the repair).
func (p *pagedPool) frozen(d time.Duration) {
	p.t.Helper()
	before := testutil.GetAccount(p.t, p.c, p.ns, "course").Status
	time.Sleep(d)
	after := testutil.GetAccount(p.t, p.c, p.ns, "course").Status
	if after.Balance != before.Balance || after.TotalCharged != before.TotalCharged || after.TotalRefunded != before.TotalRefunded {
		p.t.Errorf("credits moved while the pages were broken: balance %d -> %d, charged %d -> %d, refunded %d -> %d",
			before.Balance, after.Balance, before.TotalCharged, after.TotalCharged, before.TotalRefunded, after.TotalRefunded)
	}
}

func (p *pagedPool) page(name string) *hcv1.LedgerPage {
	p.t.Helper()
	pg := &hcv1.LedgerPage{}
	must(p.t, p.c.Get(context.Background(), client.ObjectKey{Namespace: p.ns, Name: name}, pg))
	return pg
}

// endAll ends every server and checks the pool to the credit (final).
func (p *pagedPool) endAll() {
	p.t.Helper()
	p.mu.Lock()
	servers := append([]*server(nil), p.servers...)
	p.mu.Unlock()
	stopAllWith(p.t, p.c, servers)
	p.final()
}

// TestMisuseOnPages: admin mistakes on a pool's LedgerPages while its
// servers run. Each fails closed: the operator says so on the account (a
// LedgerPageInconsistent Warning, and the reconcile error in its log),
// moves no credit while the pages are broken, and once an admin repairs
// them bills every boundary it held back: the servers are charged exactly
// once per boundary they ran, nothing is created or lost.
//
//   - a page deleted: the page's finalizer holds it and billing goes on;
//     deleted for good (its finalizer taken off by hand too), its entries
//     (and the credits they hold) lived only on it, so the account waits
//     until it is restored from a backup; its servers are not adopted
//     again meanwhile (they would pay twice);
//   - a page's status edited (a server's periodsPaid and paid raised:
//     periods it would not pay, credits the account never took): the
//     account's aggregates disagree with the page on a consistent read;
//     the account waits until the page is put back (an edit that keeps
//     every aggregate — pagedServers, pagedPaid, the counters, the page's
//     earliest due — is not seen: a per-page digest would be needed);
//   - a LedgerPage named like the pool's next page, for another account:
//     a spawn that needs that page is refused with the reason (the pool's
//     other pages bill on); once it is deleted, spawns go on.
func TestMisuseOnPages(t *testing.T) {
	for _, what := range []string{"delete", "edit", "squat"} {
		t.Run(what, func(t *testing.T) {
			p := newPagedPool(t)
			for i := range 8 {
				p.spawn(fmt.Sprintf("s%d", i))
			}
			time.Sleep(2 * period)
			ctx := context.Background()
			switch what {
			case "delete":
				// The admin's backup, then the mistake.
				p.webhook.stop() // no spawn writes the page meanwhile
				backup := p.page("course-1")
				// A plain delete is held by the page's finalizer: the page
				// stays, its servers are charged on.
				must(t, p.c.Delete(ctx, backup.DeepCopy()))
				held := p.page("course-1")
				if held.DeletionTimestamp == nil || !controllerutil.ContainsFinalizer(held, hcv1.FinalizerLedger) {
					t.Fatalf("page course-1 after a delete: deletionTimestamp %v, finalizers %v; want it held by %s",
						held.DeletionTimestamp, held.Finalizers, hcv1.FinalizerLedger)
				}
				charged := testutil.GetAccount(t, p.c, p.ns, "course").Status.TotalCharged
				testutil.Eventually(t, 6*period, func() error {
					if now := testutil.GetAccount(t, p.c, p.ns, "course").Status.TotalCharged; now <= charged {
						return fmt.Errorf("nothing charged since the delete (%d)", now)
					}
					return nil
				})
				// Forced: the finalizer taken off by hand as well. The
				// backup is the page as that update left it (a charge
				// written in between makes the update conflict: again).
				testutil.Eventually(t, 10*time.Second, func() error {
					held = p.page("course-1")
					controllerutil.RemoveFinalizer(held, hcv1.FinalizerLedger)
					return p.c.Update(ctx, held)
				})
				backup = held.DeepCopy()
				testutil.Eventually(t, 10*time.Second, func() error {
					err := p.c.Get(ctx, client.ObjectKey{Namespace: p.ns, Name: "course-1"}, &hcv1.LedgerPage{})
					if apierrors.IsNotFound(err) {
						return nil
					}
					return fmt.Errorf("page course-1 still there: %w", err)
				})
				p.warned(billing.EventPageIntegrity, "course-1")
				p.frozen(2 * period)
				restored := &hcv1.LedgerPage{ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: backup.Name,
					Labels: backup.Labels, OwnerReferences: backup.OwnerReferences}, Spec: backup.Spec}
				must(t, p.c.Create(ctx, restored))
				restored.Status = backup.Status
				must(t, p.c.Status().Update(ctx, restored))
				p.webhook.start()
			case "edit":
				p.webhook.stop()
				pg := p.page("course-2")
				want := pg.Status.DeepCopy()
				pg.Status.Servers[0].PeriodsPaid += 5
				pg.Status.Servers[0].Paid += 5 * pg.Status.Servers[0].BillingValue
				must(t, p.c.Status().Update(ctx, pg))
				p.warned(billing.EventPageIntegrity, "was edited")
				p.frozen(2 * period)
				pg = p.page("course-2")
				pg.Status = *want
				must(t, p.c.Status().Update(ctx, pg))
				p.webhook.start()
			case "squat":
				a := testutil.GetAccount(t, p.c, p.ns, "course")
				next := billing.PageName("course", a.Status.Pages+1)
				squat := &hcv1.LedgerPage{ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: next}, Spec: hcv1.LedgerPageSpec{Account: "other"}}
				must(t, p.c.Create(ctx, squat))
				// Fill the last page; the spawn after it needs the next one.
				var refused error
				for i := 8; i < 8+pagedLimits.PerPage+1 && refused == nil; i++ {
					refused = p.c.Create(ctx, userPod(p.ns, "u", fmt.Sprintf("s%d", i)))
					if refused == nil {
						must(t, p.c.Delete(ctx, userPod(p.ns, "u", fmt.Sprintf("s%d", i))))
					}
				}
				if refused == nil || !strings.Contains(refused.Error(), "not this account's page") {
					t.Fatalf("a spawn onto the squatted page %s: %v; want it refused with the reason", next, refused)
				}
				t.Logf("refused: %v", refused)
				must(t, p.c.Delete(ctx, squat))
				p.spawn("after")
			}
			time.Sleep(2 * period)
			p.endAll()
		})
	}
}
