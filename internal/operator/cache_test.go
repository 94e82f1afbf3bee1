package operator

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/indexer"
	"github.com/hubcredits/hubcredits/internal/kubespawner"
)

// memListWatch serves an informer from a list held in memory. It opts out
// of the watch-list protocol, so the reflector makes one list call, as it
// does against an API server without streaming lists.
type memListWatch struct{ *toolscache.ListWatch }

func (memListWatch) IsWatchListSemanticsUnSupported() bool { return true }

// memCache starts the operator's informer cache: controller-runtime's
// cache.New with CacheOptions(o) (its transforms, informers, store and
// cache reader), the indexes registered as Setup does (when indexed), and
// only the API server replaced: every informer's list is decoded from
// lists[kind] (the JSON of a PodList or CreditAccountList) with the
// scheme's codecs, anew for each list, as the client decodes a response.
// With o.Namespace set every object in lists must be in it (each
// namespace's informer is served the same list).
//
// stop stops the cache and waits until its informers have.
func memCache(tb testing.TB, o Options, lists map[string][]byte, indexed bool) (c cache.Cache, stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	s := Scheme()
	mapper := meta.NewDefaultRESTMapper(nil)
	mapper.Add(corev1.SchemeGroupVersion.WithKind("Pod"), meta.RESTScopeNamespace)
	mapper.Add(hcv1.GroupVersion.WithKind("CreditAccount"), meta.RESTScopeNamespace)
	mapper.Add(corev1.SchemeGroupVersion.WithKind("PodList"), meta.RESTScopeNamespace)
	mapper.Add(hcv1.GroupVersion.WithKind("CreditAccountList"), meta.RESTScopeNamespace)
	mapper.Add(hcv1.GroupVersion.WithKind("LedgerPage"), meta.RESTScopeNamespace)
	mapper.Add(hcv1.GroupVersion.WithKind("LedgerPageList"), meta.RESTScopeNamespace)
	decoder := serializer.NewCodecFactory(s).UniversalDeserializer()
	co := CacheOptions(o)
	co.Scheme, co.Mapper = s, mapper
	co.NewInformer = func(_ toolscache.ListerWatcher, obj kruntime.Object, resync time.Duration, idx toolscache.Indexers) toolscache.SharedIndexInformer {
		kind := ""
		if gvks, _, err := s.ObjectKinds(obj); err == nil {
			kind = gvks[0].Kind
		}
		lw := &toolscache.ListWatch{
			ListWithContextFunc: func(context.Context, metav1.ListOptions) (kruntime.Object, error) {
				raw, ok := lists[kind]
				if !ok {
					return nil, fmt.Errorf("no list of %q", kind)
				}
				return kruntime.Decode(decoder, raw)
			},
			WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) {
				return watch.NewFake(), nil
			},
		}
		return toolscache.NewSharedIndexInformer(memListWatch{lw}, obj, resync, idx)
	}
	c, err := NewCache(&rest.Config{Host: "http://127.0.0.1:1"}, co)
	if err != nil {
		tb.Fatal(err)
	}
	if indexed {
		if err := indexer.Setup(ctx, c); err != nil {
			tb.Fatal(err)
		}
	} else {
		for _, obj := range []client.Object{&corev1.Pod{}, &hcv1.CreditAccount{}} {
			if _, err := c.GetInformer(ctx, obj, cache.BlockUntilSynced(false)); err != nil {
				tb.Fatal(err)
			}
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Start(ctx); err != nil {
			tb.Error(err)
		}
	}()
	if !c.WaitForCacheSync(ctx) {
		tb.Fatal("the cache did not sync")
	}
	return c, func() { cancel(); <-done }
}

// uid is a UUID-shaped UID, as the API server gives.
func uid(kind, i int) types.UID {
	return types.UID(fmt.Sprintf("%08x-1c2d-4e5f-8a9b-%012x", kind, i))
}

// billedServer is server i of the billing benchmark (test/bench, one wallet
// per user) as the API server returns its objects: the user's running
// KubeSpawner pod, admitted by the webhook (the account and price pinned),
// and the user's wallet holding it in its ledger, three periods paid.
func billedServer(ns string, i int) (*corev1.Pod, *hcv1.CreditAccount) {
	user := fmt.Sprintf("user-%05d", i)
	start := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond)
	started := metav1.NewTime(start.Add(20 * time.Second))
	res := "res-" + string(uid(3, i))
	p := kubespawner.Pod(ns, user, "", "hubtoken-bench-0123456789abcdef")
	p.UID, p.ResourceVersion = uid(1, i), fmt.Sprint(100000+2*i)
	p.CreationTimestamp = metav1.NewTime(start)
	p.Annotations[hcv1.AnnotationAccount] = user
	p.Annotations[hcv1.AnnotationBillingValue] = "1"
	p.Annotations[hcv1.AnnotationBillingInterval] = "1m0s"
	p.Annotations[hcv1.AnnotationPolicy] = "default"
	p.Annotations[hcv1.AnnotationReservation] = res
	p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubespawner", Operation: metav1.ManagedFieldsOperationUpdate,
		APIVersion: "v1", FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(`{"f:metadata":{"f:annotations":{}}}`)}}
	p.Spec.NodeName = "node-1"
	p.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, StartTime: &started, HostIP: "10.0.0.1", PodIP: fmt.Sprintf("10.1.%d.%d", i/250, i%250),
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: started}},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: "notebook", Image: "quay.io/jupyter/base-notebook:latest", ImageID: "sha256:0123", ContainerID: "containerd://" + string(uid(4, i)),
			Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
		}},
	}
	paid := metav1.NewTime(start.Add(3 * time.Minute))
	a := &hcv1.CreditAccount{
		TypeMeta: metav1.TypeMeta{APIVersion: hcv1.GroupVersion.String(), Kind: "CreditAccount"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user, UID: uid(2, i), ResourceVersion: fmt.Sprint(100001 + 2*i),
			CreationTimestamp: metav1.NewTime(start.Add(-time.Hour)), Generation: 1,
			Labels: map[string]string{hcv1.LabelAutoCreated: "true"}},
		Spec: hcv1.CreditAccountSpec{Users: []string{user}, Cap: 1000},
		Status: hcv1.CreditAccountStatus{
			OpenedAt: &metav1.Time{Time: start.Add(-time.Hour)}, Balance: 97,
			Servers: []hcv1.ServerCharge{{
				ID: res, Pod: p.Name, PodUID: p.UID, User: user, Wallet: user, Policy: "default",
				BillingValue: 1, BillingInterval: metav1.Duration{Duration: time.Minute},
				ReservedAt: metav1.NewTime(start), StartedAt: &started, PeriodsPaid: 3, Paid: 3, PaidThrough: &paid,
			}},
			RunningServers: 1, TotalCharged: 3, TotalGranted: 100,
			Ledger: []hcv1.LedgerEntry{
				{Time: metav1.NewTime(start.Add(-time.Hour)), Kind: "Grant", Amount: 100, Balance: 100},
				{Time: metav1.NewTime(start), Kind: "Charge", Amount: -1, Balance: 99, Subject: p.Name},
				{Time: paid, Kind: "Charge", Amount: -2, Balance: 97, Subject: p.Name, Count: 2},
			},
			ObservedGeneration: 1,
			Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Funded",
				LastTransitionTime: metav1.NewTime(start.Add(-time.Hour)), ObservedGeneration: 1}},
		},
	}
	return p, a
}

// encodeLists returns the JSON lists memCache serves.
func encodeLists(tb testing.TB, pods []corev1.Pod, accounts []hcv1.CreditAccount, pages []hcv1.LedgerPage) map[string][]byte {
	tb.Helper()
	pl, err := json.Marshal(&corev1.PodList{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "PodList"},
		ListMeta: metav1.ListMeta{ResourceVersion: "1"}, Items: pods})
	if err != nil {
		tb.Fatal(err)
	}
	al, err := json.Marshal(&hcv1.CreditAccountList{TypeMeta: metav1.TypeMeta{APIVersion: hcv1.GroupVersion.String(), Kind: "CreditAccountList"},
		ListMeta: metav1.ListMeta{ResourceVersion: "1"}, Items: accounts})
	if err != nil {
		tb.Fatal(err)
	}
	ll, err := json.Marshal(&hcv1.LedgerPageList{TypeMeta: metav1.TypeMeta{APIVersion: hcv1.GroupVersion.String(), Kind: "LedgerPageList"},
		ListMeta: metav1.ListMeta{ResourceVersion: "1"}, Items: pages})
	if err != nil {
		tb.Fatal(err)
	}
	return map[string][]byte{"Pod": pl, "CreditAccount": al, "LedgerPage": ll}
}

// serverLists are the lists of n billed servers' pods and accounts
// (billedServer).
func serverLists(tb testing.TB, ns string, n int) map[string][]byte {
	pods := make([]corev1.Pod, n)
	accounts := make([]hcv1.CreditAccount, n)
	for i := range n {
		p, a := billedServer(ns, i)
		pods[i], accounts[i] = *p, *a
	}
	return encodeLists(tb, pods, accounts, nil)
}

// BenchmarkCacheRetained reports the heap the operator's informer cache
// keeps per billed server (retained-B/server) at 10,000 servers, as in the
// billing benchmark: a pod and a wallet per server, through
// controller-runtime's cache (the pod transform, the stores, and with
// "indexed" every index Setup registers; "unindexed" is the floor without
// any field index).
func BenchmarkCacheRetained(b *testing.B) {
	const n = 10000
	lists := serverLists(b, "jhub", n)
	for _, indexed := range []bool{true, false} {
		name := map[bool]string{true: "indexed", false: "unindexed"}[indexed]
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				c, stop := memCache(b, Options{Namespace: "jhub"}, lists, indexed)
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/n, "retained-B/server")
				runtime.KeepAlive(c)
				stop()
			}
		})
	}
}

// TestCacheIndexes lists through the operator's cache by every index, as
// the controllers and the webhook do (client.InNamespace and
// client.MatchingFields), and checks each list returns exactly the objects
// of that namespace whose extractor gives the value: the indexes Setup
// registers answer controller-runtime's cache reader. The same names live
// in two namespaces (a list must not cross them), both with a cache of
// all namespaces and with one restricted to the hub's (--namespace).
func TestCacheIndexes(t *testing.T) {
	objects := func(ns string) ([]corev1.Pod, []hcv1.CreditAccount, []hcv1.LedgerPage) {
		var pods []corev1.Pod
		var accounts []hcv1.CreditAccount
		for i := range 3 {
			p, a := billedServer(ns, i)
			p.UID, a.UID = types.UID(ns+"-"+string(p.UID)), types.UID(ns+"-"+string(a.UID))
			a.Status.Servers[0].PodUID = p.UID
			pods, accounts = append(pods, *p), append(accounts, *a)
		}
		// user-00001's wallet is funded by the lab pool, its server billed
		// to the pool's members' group; user-00002 has an unbilled server.
		accounts[1].Spec.Project = "lab"
		accounts[1].Spec.Groups = []string{"physics", "chemistry"}
		pods[1].Annotations[hcv1.AnnotationProject] = "lab"
		lab := *accounts[0].DeepCopy()
		lab.Name, lab.UID = "lab", types.UID(ns+"-lab")
		lab.Spec = hcv1.CreditAccountSpec{Users: []string{"user-00000", "user-00001"}, Groups: []string{"physics"}, Cap: 1000}
		lab.Status.Servers = []hcv1.ServerCharge{{ID: "adopted-x", Pod: pods[1].Name, PodUID: pods[1].UID, Wallet: accounts[1].Name}}
		accounts = append(accounts, lab)
		delete(pods[2].Annotations, hcv1.AnnotationAccount)
		pods = append(pods, *pods[0].DeepCopy())
		pods[3].Name, pods[3].UID = "jupyter-profile", types.UID(ns+"-profile")
		delete(pods[3].Annotations, hcv1.AnnotationAccount)
		pods[3].Labels[hcv1.LabelAccount] = "lab"
		// The lab pool's first ledger page holds the profile pod's server
		// and a reservation whose pod is not bound yet.
		page := hcv1.LedgerPage{
			ObjectMeta: metav1.ObjectMeta{Name: "lab-1", Namespace: ns, UID: types.UID(ns + "-lab-1"), ResourceVersion: "1"},
			Spec:       hcv1.LedgerPageSpec{Account: "lab"},
			Status: hcv1.LedgerPageStatus{Servers: []hcv1.ServerCharge{
				{ID: "paged-a", Pod: pods[3].Name, PodUID: pods[3].UID, Wallet: "lab"},
				{ID: "paged-b", Pod: "jupyter-next", Wallet: "lab"},
			}},
		}
		return pods, accounts, []hcv1.LedgerPage{page}
	}
	check := func(t *testing.T, c cache.Cache, pods []corev1.Pod, accounts []hcv1.CreditAccount, pages []hcv1.LedgerPage) {
		ctx := context.Background()
		var podObjs, accountObjs []client.Object
		for i := range pods {
			podObjs = append(podObjs, &pods[i])
		}
		for i := range accounts {
			accountObjs = append(accountObjs, &accounts[i])
		}
		var pageObjs []client.Object
		for i := range pages {
			pageObjs = append(pageObjs, &pages[i])
		}
		keys := map[string]struct {
			extract client.IndexerFunc
			objs    []client.Object
		}{
			indexer.AccountUsersKey:    {indexer.AccountUsers, accountObjs},
			indexer.AccountGroupsKey:   {indexer.AccountGroups, accountObjs},
			indexer.AccountProjectKey:  {indexer.AccountProject, accountObjs},
			indexer.AccountServerKey:   {indexer.AccountServers, accountObjs},
			indexer.PodAccountKey:      {indexer.PodAccounts, podObjs},
			indexer.UnbilledPodUserKey: {indexer.UnbilledPodUser, podObjs},
			indexer.PageServerKey:      {indexer.PageServers, pageObjs},
		}
		lists := 0
		for key, ix := range keys {
			// want: namespace/value -> the names of the objects of the
			// indexed kind with that value.
			want := map[[2]string][]string{}
			kindOf := ix.objs[0]
			for _, o := range ix.objs {
				for _, v := range ix.extract(o) {
					k := [2]string{o.GetNamespace(), v}
					want[k] = append(want[k], o.GetName())
				}
			}
			if len(want) == 0 {
				t.Fatalf("no object has a value for %s: the fixture does not test it", key)
			}
			for k, names := range want {
				sort.Strings(names)
				var got []string
				switch kindOf.(type) {
				case *corev1.Pod:
					var l corev1.PodList
					if err := c.List(ctx, &l, client.InNamespace(k[0]), client.MatchingFields{key: k[1]}); err != nil {
						t.Fatalf("listing pods by %s=%s in %s: %v", key, k[1], k[0], err)
					}
					for _, p := range l.Items {
						got = append(got, p.Name)
					}
				case *hcv1.LedgerPage:
					var l hcv1.LedgerPageList
					if err := c.List(ctx, &l, client.InNamespace(k[0]), client.MatchingFields{key: k[1]}); err != nil {
						t.Fatalf("listing ledger pages by %s=%s in %s: %v", key, k[1], k[0], err)
					}
					for _, p := range l.Items {
						got = append(got, p.Name)
					}
				default:
					var l hcv1.CreditAccountList
					if err := c.List(ctx, &l, client.InNamespace(k[0]), client.MatchingFields{key: k[1]}); err != nil {
						t.Fatalf("listing accounts by %s=%s in %s: %v", key, k[1], k[0], err)
					}
					for _, a := range l.Items {
						got = append(got, a.Name)
					}
				}
				sort.Strings(got)
				if d := cmp.Diff(names, got); d != "" {
					t.Errorf("list by %s=%s in %s (-want +got):\n%s", key, k[1], k[0], d)
				}
				lists++
			}
			// A value no object has finds nothing.
			var l hcv1.CreditAccountList
			if _, isAccount := kindOf.(*hcv1.CreditAccount); isAccount {
				if err := c.List(ctx, &l, client.InNamespace(kindOf.GetNamespace()), client.MatchingFields{key: "nobody"}); err != nil || len(l.Items) != 0 {
					t.Errorf("list by %s=nobody: %d accounts, %v", key, len(l.Items), err)
				}
			}
		}
		t.Logf("%d lists checked", lists)

		// No list is made across namespaces by an index: the cache says so
		// rather than finding nothing. Other lists across namespaces work.
		for key, ix := range keys {
			var err error
			switch ix.objs[0].(type) {
			case *corev1.Pod:
				err = c.List(ctx, &corev1.PodList{}, client.MatchingFields{key: "user-00000"})
			case *hcv1.LedgerPage:
				err = c.List(ctx, &hcv1.LedgerPageList{}, client.MatchingFields{key: "user-00000"})
			default:
				err = c.List(ctx, &hcv1.CreditAccountList{}, client.MatchingFields{key: "user-00000"})
			}
			if err == nil || !strings.Contains(err.Error(), "needs a namespace") {
				t.Errorf("a list by %s across namespaces: %v, want an error saying it needs a namespace", key, err)
			}
		}
		var all hcv1.CreditAccountList
		if err := c.List(ctx, &all); err != nil || len(all.Items) != len(accounts) {
			t.Errorf("listing every account: %d of %d, %v", len(all.Items), len(accounts), err)
		}
	}

	t.Run("all namespaces", func(t *testing.T) {
		p1, a1, l1 := objects("jhub")
		p2, a2, l2 := objects("other")
		pods, accounts, pages := slices.Concat(p1, p2), slices.Concat(a1, a2), slices.Concat(l1, l2)
		c, stop := memCache(t, Options{}, encodeLists(t, pods, accounts, pages), true)
		defer stop()
		check(t, c, pods, accounts, pages)
	})
	t.Run("the hub's namespace", func(t *testing.T) {
		pods, accounts, pages := objects("jhub")
		c, stop := memCache(t, Options{Namespace: "jhub"}, encodeLists(t, pods, accounts, pages), true)
		defer stop()
		check(t, c, pods, accounts, pages)
	})
}
