package reliability

import (
	"sync"
	"testing"
	"time"
)

// supervisor runs one operator process and restarts it whenever it exits
// (after a 1 s backoff, shorter than the kubelet's, to keep tests quick):
// with leader election the operator exits when it loses its lease, e.g.
// while kube-apiserver is down.
type supervisor struct {
	t    *testing.T
	ns   string
	args []string

	mu     sync.Mutex
	op     *operatorProc
	all    []*operatorProc
	exits  int  // restarts after the operator exited on its own
	paused bool // killAndRestart keeps it down: no restart meanwhile
	stop   chan struct{}
	done   chan struct{}
}

func supervise(t *testing.T, ns string, args ...string) *supervisor {
	t.Helper()
	s := &supervisor{t: t, ns: ns, args: args, stop: make(chan struct{}), done: make(chan struct{})}
	s.op = startOperator(t, ns, args...)
	s.all = []*operatorProc{s.op}
	go s.loop()
	return s
}

func (s *supervisor) loop() {
	defer close(s.done)
	for {
		s.mu.Lock()
		cur := s.op
		s.mu.Unlock()
		select {
		case <-s.stop:
			return
		case <-cur.exited:
		}
		// An operator started while the API server is down exits at once.
		select {
		case <-s.stop:
			return
		case <-time.After(time.Second):
		}
		s.mu.Lock()
		if s.op == cur && !s.paused {
			s.exits++
			s.op = startOperator(s.t, s.ns, s.args...)
			s.all = append(s.all, s.op)
		}
		s.mu.Unlock()
	}
}

// killAndRestart kills the running operator with SIGKILL, keeps it down for
// down, and starts a new one.
func (s *supervisor) killAndRestart(down time.Duration) {
	s.mu.Lock()
	s.paused = true
	s.op.kill()
	s.mu.Unlock()
	time.Sleep(down)
	s.mu.Lock()
	s.op = startOperator(s.t, s.ns, s.args...)
	s.all = append(s.all, s.op)
	s.paused = false
	s.mu.Unlock()
}

// shutdown stops supervising, kills the operator and checks every log it
// wrote for the planted Hub token. It returns how often the operator exited
// on its own and was restarted.
func (s *supervisor) shutdown(t *testing.T) int {
	t.Helper()
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	s.op.kill()
	for _, p := range s.all {
		assertNoToken(t, p)
	}
	return s.exits
}
