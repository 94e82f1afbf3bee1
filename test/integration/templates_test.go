package integration

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// TestTemplateWalletIsCreatedOnceUnderASpawnRace: a new member of a
// course's group spawns 8 servers at once, through the real webhook on a
// real API server, right after the admin created the course's template
// (the webhook's cache may not have it yet). Exactly one wallet is created,
// from the template; every admitted server's first period is paid from it
// exactly once; the others are denied only for lack of credits; the
// ledger is conserved, also once the billing controllers have seen it.
func TestTemplateWalletIsCreatedOnceUnderASpawnRace(t *testing.T) {
	ns := newNamespace(t)
	startBilling(t, ns, nil)
	const (
		n       = 8
		initial = 35 // 3 servers at the default 10 credits
		price   = 10
	)
	tmpl := testutil.MakeTemplate(ns, "physics", "physics-101").Cap(100).InitialBalance(initial).Grant(5, time.Hour).Obj()
	if err := k8s.Create(context.Background(), tmpl); err != nil {
		t.Fatal(err)
	}

	pods := make([]*corev1.Pod, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		pods[i] = testutil.MakeKubeSpawnerPod(ns, "newbie", fmt.Sprintf("s%d", i)).
			Annotation(hcv1.AnnotationGroups, `["staff","physics-101"]`).Obj()
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = createPod(pods[i])
		}()
	}
	close(start)
	wg.Wait()

	admitted := map[string]*corev1.Pod{} // by reservation id
	denied, timedOut := 0, 0
	for i, err := range errs {
		switch {
		case err == nil:
			admitted[pods[i].Annotations[hcv1.AnnotationReservation]] = pods[i]
		case apierrors.IsForbidden(err) && strings.Contains(err.Error(), "Not enough credits"):
			denied++
		case strings.Contains(err.Error(), `failed calling webhook "pods.hubcredits.io"`) && strings.Contains(err.Error(), "deadline exceeded"):
			timedOut++ // a loaded machine; its reservation, if written, is refunded
		default:
			t.Fatalf("spawn %d: %v, want admitted or denied for lack of credits", i, err)
		}
	}

	var list hcv1.CreditAccountList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Name != "wallet-newbie" {
		names := []string{}
		for _, a := range list.Items {
			names = append(names, a.Name)
		}
		t.Fatalf("accounts %v, want exactly [wallet-newbie]", names)
	}
	w := list.Items[0]
	if d := testutil.Diff(map[string]string{hcv1.LabelAutoCreated: "true", hcv1.LabelTemplate: "physics"}, w.Labels); d != "" {
		t.Errorf("wallet labels (-want +got):\n%s", d)
	}
	wantSpec := hcv1.CreditAccountSpec{Users: []string{"newbie"}, Cap: 100, InitialBalance: tmpl.Spec.InitialBalance, Grant: tmpl.Spec.Grant}
	if d := testutil.Diff(wantSpec, w.Spec); d != "" {
		t.Errorf("wallet spec (-want +got):\n%s", d)
	}

	if timedOut == 0 && (len(admitted) != initial/price || denied != n-initial/price) {
		t.Errorf("admitted %d, denied %d; want %d and %d", len(admitted), denied, initial/price, n-initial/price)
	}
	if len(admitted) > initial/price {
		t.Fatalf("admitted %d servers, the wallet covers %d", len(admitted), initial/price)
	}
	// Every admitted server's first period, paid once, from the wallet.
	for id, p := range admitted {
		if p.Annotations[hcv1.AnnotationAccount] != "wallet-newbie" {
			t.Errorf("pod %s billed to %q", p.Name, p.Annotations[hcv1.AnnotationAccount])
		}
		found := 0
		for _, s := range w.Status.Servers {
			if s.ID == id {
				found++
				if s.Pod != p.Name || s.Paid != price || s.PeriodsPaid != 1 || s.Wallet != "wallet-newbie" {
					t.Errorf("entry of %s: pod %s paid %d for %d periods to %s", p.Name, s.Pod, s.Paid, s.PeriodsPaid, s.Wallet)
				}
			}
		}
		if found != 1 {
			t.Errorf("pod %s (reservation %s) has %d entries, want 1", p.Name, id, found)
		}
	}
	if timedOut == 0 {
		if len(w.Status.Servers) != len(admitted) || w.Status.Balance != initial-int64(len(admitted))*price {
			t.Errorf("wallet: balance %d with %d entries; want %d with %d",
				w.Status.Balance, len(w.Status.Servers), initial-int64(len(admitted))*price, len(admitted))
		}
	} else {
		t.Logf("%d of %d requests timed out at the API server (machine under load)", timedOut, n)
	}
	testutil.Eventually(t, 10*time.Second, conservedAccount(t, ns, "wallet-newbie", initial))
	// The controller takes the wallet over as it is (nothing charged twice
	// or lost; a timed-out reservation without a pod is refunded).
	testutil.Eventually(t, 20*time.Second, func() error {
		a := testutil.GetAccount(t, k8s, ns, "wallet-newbie")
		if len(a.Finalizers) == 0 {
			return fmt.Errorf("the controller has not claimed the wallet yet")
		}
		if want := initial - int64(len(admitted))*price; a.Status.Balance != want || len(a.Status.Servers) != len(admitted) {
			return fmt.Errorf("balance %d with %d entries; want %d with %d", a.Status.Balance, len(a.Status.Servers), want, len(admitted))
		}
		return conservedAccount(t, ns, "wallet-newbie", initial)()
	})

	// A dry run of a new member's spawn is priced from the template and
	// creates nothing (sideEffects: NoneOnDryRun).
	dry := testutil.MakeKubeSpawnerPod(ns, "dryrunner", "").Annotation(hcv1.AnnotationGroups, `["physics-101"]`).Obj()
	if err := k8s.Create(context.Background(), dry, client.DryRunAll); err != nil {
		t.Fatalf("a dry run of a new member's spawn: %v", err)
	}
	if got := dry.Annotations[hcv1.AnnotationAccount]; got != "wallet-dryrunner" {
		t.Errorf("the dry run was priced for %q, want wallet-dryrunner", got)
	}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "wallet-dryrunner"}, &hcv1.CreditAccount{}); !apierrors.IsNotFound(err) {
		t.Errorf("after a dry run, wallet-dryrunner: %v, want NotFound", err)
	}
	// A user in no templated group gets no wallet (no global template).
	err := createPod(testutil.MakeKubeSpawnerPod(ns, "stranger", "").Annotation(hcv1.AnnotationGroups, `["history"]`).Obj())
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `No credit account for user "stranger"`) {
		t.Fatalf("a user in no templated group: %v", err)
	}
}

// TestTemplateSampleIsValid: the sample of config/samples (and of
// docs/operations.md) is accepted as it is, strictly.
func TestTemplateSampleIsValid(t *testing.T) {
	ns := newNamespace(t)
	raw, err := os.ReadFile("../../config/samples/hubcredits_v1alpha1_creditaccounttemplate_course.yaml")
	if err != nil {
		t.Fatal(err)
	}
	body, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	err = clientset.RESTClient().Post().
		AbsPath("/apis/hubcredits.io/v1alpha1/namespaces", ns, "creditaccounttemplates").
		Param("fieldValidation", "Strict").
		SetHeader("Content-Type", "application/json").
		Body(body).Do(context.Background()).Error()
	if err != nil {
		t.Fatalf("the sample was refused: %v", err)
	}
	got := &hcv1.CreditAccountTemplate{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "physics-101"}, got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Cap != 50 || got.Spec.Project != "physics" || len(got.Spec.Groups) != 1 {
		t.Errorf("sample stored as %+v", got.Spec)
	}
}
