// Package testutil is the one fixtures package of the hubcredits tests:
// wrappers that build API objects (MakeAccount(...).Balance(40).Obj(), after
// Kueue's pkg/util/testing), the fixed clock the unit tests speak in offsets
// from, a fake API server with every field index, Eventually for the
// integration tests, and Diff.
//
// It imports the API types, internal/indexer, internal/scheme,
// internal/kubespawner and Kubernetes only, never billing, controllers or
// webhooks, so every package's tests (billing's internal ones included)
// can use it. The operator binary must not link it (main_test.go checks).
//
// Old builder → wrapper, for tests written against the per-package
// builders. The wrappers' time arguments are offsets from T0, as the old
// ones were from t0. Each unit package keeps its baseline as a one-line
// preset over the wrappers (in its builders_test.go), named below:
//
//	accounts
//	  billing      makeAccount(n)                openAccount(n)            = MakeAccount("hub", n).CreatedAt(0).OpenedAt(0)
//	  billing      makeAccount(n)....unopened()  MakeAccount(testNS, n).CreatedAt(0)...   (no OpenedAt)
//	  controllers  makeAccount(n, u...)          openAccount(n, u...)      = ...same....Balance(100).Generation(1)
//	  webhooks     makeAccount(n, u...)          openAccount(n, u...)      = ...same....Balance(100)
//	  integration  makeAccount(ns, n, u...)...create(t)
//	                                             createAccount(t, MakeAccount(ns, n, u...)....Obj())
//	  .withUsers(u...)                           .Users(u...)
//	  .withCap(c) / .cap(c)                      .Cap(c)
//	  .withBalance(v) / .balance(v) (unit)       .Balance(v)               status.balance
//	  .balance(v) (integration) / .withInitial   .InitialBalance(v)        spec.initialBalance
//	  .withProject(p) / .project(p)              .Project(p)
//	  .withGrant(a, d) / .grant(a, d)            .Grant(a, d)
//	  .withTopUp(id, a) / .topUp(id, a)          .TopUp(id, a)
//	  .withApplied(ids...)                       .Applied(ids...)
//	  .grantedThrough(d) / .createdAt(d)         .GrantedThrough(d) / .CreatedAt(d)
//	  .withServers(s...) / .servers(s...)        .Servers(s...)
//	  .withCondition(t, s, r)                    .Condition(t, s, r)
//	  .obj()                                     .Obj()                    (every wrapper)
//	server entries (billing, controllers)
//	  makeServer(id)                             MakeServerCharge(id)
//	  .pod(name) (billing)                       .Pod(name)
//	  .pod(name, uid) (controllers)              .Pod(name).UID(uid)
//	  .uid/.user/.wallet/.project/.policy(x)     .UID/.User/.Wallet/.Project/.Policy(x)
//	  .serverName(s) / .reservedAt(d)            .ServerName(s) / .ReservedAt(d)
//	  .price(v, d)                               .Price(v, d)
//	  .started(d) (billing)                      .Started(d)
//	  .startedAt(d) (controllers)                .Running(d)               started, paid through period 0
//	  .paid(periods, credits)                    .Paid(periods, credits)
//	  .projectPaid(v) / .paidThrough(d)          .ProjectPaid(v) / .PaidThrough(d)
//	  .stopRequested(d) / .endedAt(d)            .StopRequested(d) / .Ended(d)
//	policies
//	  billing      makePolicy(n)                 MakePolicy(testNS, n)
//	  controllers  makePolicy(n, prio)           pricedPolicy(n, prio)     = MakePolicy("hub", n).UID("uid-"+n).Generation(3).Priority(prio).Value(10)
//	  webhooks     makePolicy(n)                 storedPolicy(n)           = MakePolicy("hub", n).UID("uid-"+n).Generation(1)
//	  integration  makePolicy(ns, n, v, d)       MakePolicy(ns, n).Value(v).Every(d).Obj()
//	  .value(v) / .every(d) / .priority(p)       .Value(v) / .Every(d) / .Priority(p)
//	  .expr(e) / .valueExpr(e)                   .ValueExpr(e)
//	  .match(e) / .matchExpr(e)                  .Match(e)
//	  .selectLabel(k, v) / .selecting(k, v)      .Selecting(k, v)
//	  .selector(s)                               .Selector(s)
//	pods
//	  billing      makePod(n)                    alicePod(n)               = MakePod("hub", n).User("alice").Container("notebook", "jupyter/base-notebook")
//	  controllers  makePod(n, uid, acct, id)     billedPod(n, uid, acct, id) = MakePod("hub", n).UID(uid).CreatedAt(0).User("alice").Account(acct).Reservation(id).Pending()
//	  billing      makeServerPod(n, uid)         seenPod(n, uid)           = alicePod(n).UID(uid).CreatedAt(0).Pending()
//	  webhooks     makePod(u) / .server(s)       MakeKubeSpawnerPod(testNS, u, "") / MakeKubeSpawnerPod(testNS, u, s)
//	  integration  kubespawnerPod(ns, u, s)      MakeKubeSpawnerPod(ns, u, s).Obj()
//	  withLabel(p, k, v) / .label / .withLabel   .Label(k, v)
//	  .annotation(k, v) / .noUsername()          .Annotation(k, v) / .NoUsername()
//	  .withGPU(n) / .gpus("n") / withGPUs(p, n)  .GPUs("n")                limit and request
//	  .withNodeSelector(k, v)                    .NodeSelector(k, v)
//	  .running(d) / .deleted(d, grace)           .Running(d) / .Deleting(d, grace)
//	  .deleted(d) (billing's makeServerPod)      .Deleting(d, 0)
//	  .user(u) / .account(a) / .reservation(r)   .User(u) / .Account(a) / .Reservation(r)
//	  .label(a) (billing's makeServerPod)        .Label(hcv1.LabelAccount, a)
//	  .failedByPodGC()                           .FailedByPodGC()          Failed, container statuses left running
//	webhooks' admission requests (still webhooks/builders_test.go)
//	  makeRequest(t, pod).uid/.op/.by/.dryRun/.raw/.kind(x).obj()
//	                                             makeRequest(t, pod).UID/.Op/.By/.DryRun/.Raw/.Kind(x).Obj()
//	the rest
//	  t0, at(d), mt(d), tp(d)                    T0, At(d), MetaAt(d), TimeAt(d)  (billing, controllers, webhooks keep t0/at/mt/tp as aliases)
//	  tenMin (billing)                           interval                  = Interval
//	  plantedToken                               HubToken                  (webhooks keeps plantedToken as an alias)
//	  newAPI(funcs, objs...)                     fakeclient.New(funcs, objs...) (internal/testutil/fakeclient)
//	  eventually(t, timeout, f)                  Eventually(t, timeout, f)
//	  consistently(t, d, f)                      Consistently(t, d, f)
//	  getAccount(t, r, n) (controllers)          GetAccount(t, r, testNS, n)
//	  getAccount(t, ns, n) (integration)         GetAccount(t, k8s, ns, n)
//	  deletePod (integration)                    gone (it had no caller)
package testutil
