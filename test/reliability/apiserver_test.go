package reliability

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// TestAPIServerRestart: kube-apiserver itself crashes (SIGKILL, requests in
// flight cut wherever they are: a status write may have reached etcd or
// not) and comes back on the same etcd, again and again, while the operator
// bills. Some outages span billing boundaries, some outlast the leader's
// renew deadline, so the operator loses its lease and exits; a supervisor
// restarts it, as the kubelet would. Every account ends exact to the credit.
//
// It runs first (file order): the shared API server is the one restarted,
// so every later test also runs against an API server that has crashed.
func TestAPIServerRestart(t *testing.T) {
	servers, accounts, restarts := 30, 6, 5
	if full() {
		servers, accounts, restarts = 100, 20, 20
	}
	ns := "apirestart"
	srv := setup(t, ns, accounts, servers)
	sup := supervise(t, ns, leaderElection(ns)...)

	rng := rand.New(rand.NewPCG(2, uint64(time.Now().UnixNano())))
	ctx := context.Background()
	var downs []time.Duration
	for i := range restarts {
		time.Sleep(time.Duration(300+rng.IntN(2500)) * time.Millisecond)
		// Short outages (within a period), outages across a boundary, and
		// every third one longer than the renew deadline.
		down := time.Duration(rng.IntN(1500)) * time.Millisecond
		switch i % 3 {
		case 1:
			down = period + time.Duration(rng.IntN(1000))*time.Millisecond
		case 2:
			down = 4*time.Second + time.Duration(rng.IntN(2000))*time.Millisecond
		}
		if err := env.RestartAPIServer(ctx, down); err != nil {
			t.Fatalf("restart %d: %v", i+1, err)
		}
		downs = append(downs, down)
	}
	// Let the operator bill at least one more period on the last API server.
	time.Sleep(2 * period)
	stopAll(t, srv)
	checkLedgers(t, ns, srv, accounts)

	n := sup.shutdown(t)
	t.Logf("%d servers on %d accounts, kube-apiserver killed and restarted %d times (down %v), operator exited %d times and was restarted, ledgers exact",
		servers, accounts, restarts, downs, n)
}
