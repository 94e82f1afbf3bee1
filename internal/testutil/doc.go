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
// Old builder → wrapper (for tests written against the per-package
// builders; "unit" is billing, controllers and webhooks, t0 is T0):
//
//	accounts
//	  billing     makeAccount(n)                MakeAccount("hub", n).CreatedAt(0).OpenedAt(0)
//	  controllers makeAccount(n, u...)          MakeAccount("hub", n, u...).CreatedAt(0).OpenedAt(0).Balance(100).Generation(1)
//	  webhooks    makeAccount(n, u...)          MakeAccount("hub", n, u...).CreatedAt(0).OpenedAt(0).Balance(100)
//	  integration makeAccount(ns, n, u...)      MakeAccount(ns, n, u...)  (then createAccount(t, w.Obj()))
//	  (each unit package keeps that baseline as a one-line openAccount)
//	  .withUsers(u...)                          .Users(u...)
//	  .withCap(c) / .cap(c)                     .Cap(c)
//	  .withBalance(v) / .balance(v) (unit)      .Balance(v)            status.balance
//	  .balance(v) (integration)                 .InitialBalance(v)     spec.initialBalance
//	  .withInitial(v)                           .InitialBalance(v)
//	  .withProject(p) / .project(p)             .Project(p)
//	  .withGrant(a, d) / .grant(a, d)           .Grant(a, d)
//	  .withTopUp(id, a) / .topUp(id, a)         .TopUp(id, a)
//	  .withApplied(ids...)                      .Applied(ids...)
//	  .grantedThrough(d)                        .GrantedThrough(d)
//	  .createdAt(d)                             .CreatedAt(d)
//	  .unopened()                               leave out .OpenedAt
//	  .withServers(s...) / .servers(s...)       .Servers(s...)
//	  .withCondition(t, s, r)                   .Condition(t, s, r)
//	  .create(t) (integration)                  createAccount(t, w.Obj())
//	server entries (billing, controllers)
//	  makeServer(id)                            MakeServerCharge(id)
//	  .pod(name) (billing)                      .Pod(name)
//	  .pod(name, uid) (controllers)             .Pod(name).UID(uid)
//	  .uid/.user/.wallet/.project/.policy(x)    .UID/.User/.Wallet/.Project/.Policy(x)
//	  .serverName(s)                            .ServerName(s)
//	  .reservedAt(d)                            .ReservedAt(d)
//	  .price(v, d)                              .Price(v, d)
//	  .started(d) (billing)                     .Started(d)
//	  .startedAt(d) (controllers)               .Running(d)   started and paid through period 0
//	  .paid(periods, credits)                   .Paid(periods, credits)
//	  .projectPaid(v) / .paidThrough(d)         .ProjectPaid(v) / .PaidThrough(d)
//	  .stopRequested(d) / .endedAt(d)           .StopRequested(d) / .Ended(d)
//	policies
//	  billing     makePolicy(n)                 MakePolicy("", n)
//	  controllers makePolicy(n, prio)           MakePolicy("hub", n).UID("uid-"+n).Generation(3).Priority(prio).Value(10)
//	  webhooks    makePolicy(n)                 MakePolicy("hub", n).UID("uid-"+n).Generation(1)
//	  integration makePolicy(ns, n, v, d)       MakePolicy(ns, n).Value(v).Every(d).Obj()
//	  .value(v) / .every(d) / .priority(p)      .Value(v) / .Every(d) / .Priority(p)
//	  .expr(e) / .valueExpr(e)                  .ValueExpr(e)
//	  .match(e) / .matchExpr(e)                 .Match(e)
//	  .selectLabel(k, v) / .selecting(k, v)     .Selecting(k, v)
//	  .selector(s)                              .Selector(s)
//	pods
//	  billing     makePod(n)                    MakePod("hub", n).User("alice").Container("notebook", "jupyter/base-notebook")
//	  controllers makePod(n, uid, acct, id)     MakePod("hub", n).UID(uid).CreatedAt(0).User("alice").Account(acct).Reservation(id).Pending()
//	  webhooks    makePod(u).server(s)          MakeKubeSpawnerPod("hub", u, s)
//	  integration kubespawnerPod(ns, u, s)      MakeKubeSpawnerPod(ns, u, s).Obj()
//	  withLabel(p, k, v) / .label / .withLabel  .Label(k, v)
//	  .annotation(k, v) / .noUsername()         .Annotation(k, v) / .NoUsername()
//	  .withGPU(n) / .gpus("n") / withGPUs       .GPUs("n")   limits and requests
//	  .withNodeSelector(k, v)                   .NodeSelector(k, v)
//	  .running(d) / .deleted(d, grace)          .Running(d) / .Deleting(d, grace)
//	the rest
//	  t0, at(d), mt(d), tp(d)                   T0, At(d), MetaAt(d), TimeAt(d)
//	  tenMin                                    Interval
//	  plantedToken                              HubToken
//	  newAPI(funcs, objs...)                    NewFakeClient(funcs, objs...)
//	  eventually(t, timeout, f)                 Eventually(t, timeout, f)
//	  consistently(t, d, f)                     Consistently(t, d, f)
//	  getAccount(t, r, n) / (t, ns, n)          GetAccount(t, r, ns, n)
package testutil
