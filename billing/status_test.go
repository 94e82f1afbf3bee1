package billing

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

func TestSetReady(t *testing.T) {
	cases := map[string]struct {
		wallet      *hcv1.CreditAccount
		pool        *hcv1.CreditAccount
		wantReady   string
		wantMessage string
	}{
		"a wallet": {wallet: makeAccount("alice").obj(), wantReady: "True/LedgerOpen", wantMessage: "The ledger is kept."},
		"a wallet funded by a pool": {
			wallet: makeAccount("alice").withProject("lab").obj(), pool: makeAccount("lab").obj(),
			wantReady: "True/LedgerOpen", wantMessage: "The ledger is kept.",
		},
		"the pool is missing": {
			wallet:      makeAccount("alice").withProject("lab").obj(),
			wantReady:   "False/" + hcv1.ReasonProjectNotFound,
			wantMessage: ProjectMissingMessage("alice", "lab"),
		},
		"the pool names a project itself": {
			wallet: makeAccount("alice").withProject("lab").obj(), pool: makeAccount("lab").withProject("faculty").obj(),
			wantReady:   "False/" + hcv1.ReasonProjectChain,
			wantMessage: ProjectChainMessage("alice", "lab"),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if !SetReady(tc.wallet, tc.pool, at(0)) {
				t.Errorf("SetReady on an account without conditions reports no change")
			}
			if got := conds(tc.wallet)[hcv1.ConditionReady]; got != tc.wantReady {
				t.Errorf("Ready %s, want %s", got, tc.wantReady)
			}
			if got := tc.wallet.Status.Conditions[0].Message; got != tc.wantMessage {
				t.Errorf("Ready message %q, want %q", got, tc.wantMessage)
			}
			if SetReady(tc.wallet, tc.pool, at(0)) {
				t.Errorf("SetReady reports a change on the second call")
			}
		})
	}
}

func TestUpdateCounters(t *testing.T) {
	runningServer := makeServer("r1").started(0).obj()
	stopping := makeServer("r2").started(0).stopRequested(tenMin).obj()
	cases := map[string]struct {
		account      *hcv1.CreditAccount
		poolBalance  int64
		creditsAdded bool
		wantRunning  int32
		wantConds    map[string]string
		wantNotes    []string
	}{
		"nothing runs": {
			account:   makeAccount("alice").withBalance(0).obj(),
			wantConds: map[string]string{"Low": "False/BalanceSufficient", "Exhausted": "False/CreditsAvailable"},
		},
		"enough for two more periods": {
			account:     makeAccount("alice").withBalance(20).withServers(runningServer).obj(),
			wantRunning: 1,
			wantConds:   map[string]string{"Low": "False/BalanceSufficient", "Exhausted": "False/CreditsAvailable"},
		},
		"low: fewer than two periods": {
			account:     makeAccount("alice").withBalance(19).withServers(runningServer).obj(),
			wantRunning: 1,
			wantConds:   map[string]string{"Low": "True/BalanceLow", "Exhausted": "False/CreditsAvailable"},
			wantNotes:   []string{EventLow},
		},
		"the pool's balance counts": {
			account:     makeAccount("alice").withBalance(10).withServers(runningServer).obj(),
			poolBalance: 10, wantRunning: 1,
			wantConds: map[string]string{"Low": "False/BalanceSufficient", "Exhausted": "False/CreditsAvailable"},
		},
		"low again: no second note": {
			account: makeAccount("alice").withBalance(0).withServers(runningServer).
				withCondition(hcv1.ConditionLow, metav1.ConditionTrue, hcv1.ReasonBalanceLow).obj(),
			wantRunning: 1,
			wantConds:   map[string]string{"Low": "True/BalanceLow", "Exhausted": "False/CreditsAvailable"},
		},
		"exhausted stays while a stop is pending": {
			account: makeAccount("alice").withBalance(500).withServers(stopping).
				withCondition(hcv1.ConditionExhausted, metav1.ConditionTrue, hcv1.ReasonServerStopped).obj(),
			creditsAdded: true,
			wantConds:    map[string]string{"Low": "False/BalanceSufficient", "Exhausted": "True/ServerStopped"},
		},
		"exhausted stays until credits are added": {
			account: makeAccount("alice").withBalance(500).
				withCondition(hcv1.ConditionExhausted, metav1.ConditionTrue, hcv1.ReasonServerStopped).obj(),
			wantConds: map[string]string{"Low": "False/BalanceSufficient", "Exhausted": "True/ServerStopped"},
		},
		"credits added clear exhausted": {
			account: makeAccount("alice").withBalance(500).
				withCondition(hcv1.ConditionExhausted, metav1.ConditionTrue, hcv1.ReasonServerStopped).obj(),
			creditsAdded: true,
			wantConds:    map[string]string{"Low": "False/BalanceSufficient", "Exhausted": "False/CreditsAvailable"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			res := &Result{}
			updateCounters(tc.account, at(0), tc.poolBalance, testOptions, res, tc.creditsAdded)
			if tc.account.Status.RunningServers != tc.wantRunning {
				t.Errorf("runningServers %d, want %d", tc.account.Status.RunningServers, tc.wantRunning)
			}
			if d := cmp.Diff(tc.wantConds, conds(tc.account)); d != "" {
				t.Errorf("conditions (-want +got):\n%s", d)
			}
			var notes []string
			for _, n := range res.Notes {
				notes = append(notes, n.Reason)
			}
			if d := cmp.Diff(tc.wantNotes, notes); d != "" {
				t.Errorf("notes (-want +got):\n%s", d)
			}
		})
	}
}
