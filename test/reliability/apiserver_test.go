package reliability

import (
	"context"
	"math/rand/v2"
	"sync"
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
	le := leaderElection(ns)

	// The supervisor restarts the operator whenever it exits.
	var (
		mu      sync.Mutex
		op      = startOperator(t, ns, le...)
		all     = []*operatorProc{op}
		exits   int
		stopSup = make(chan struct{})
		supDone = make(chan struct{})
	)
	go func() {
		defer close(supDone)
		for {
			mu.Lock()
			cur := op
			mu.Unlock()
			select {
			case <-stopSup:
				return
			case <-cur.exited:
			}
			// Back off as the kubelet would (shorter, to keep the test quick):
			// an operator started while the API server is down exits at once.
			select {
			case <-stopSup:
				return
			case <-time.After(time.Second):
			}
			mu.Lock()
			exits++
			op = startOperator(t, ns, le...)
			all = append(all, op)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range all {
			assertNoToken(t, p)
		}
	}()

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

	close(stopSup)
	<-supDone
	mu.Lock()
	op.kill()
	n := exits
	mu.Unlock()
	t.Logf("%d servers on %d accounts, kube-apiserver killed and restarted %d times (down %v), operator exited %d times and was restarted, ledgers exact",
		servers, accounts, restarts, downs, n)
}
