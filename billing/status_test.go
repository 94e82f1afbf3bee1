package billing

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

func TestSetReady(t *testing.T) {
	cases := map[string]struct {
		wallet      *hcv1.CreditAccount
		pool        *hcv1.CreditAccount
		wantReady   string
		wantMessage string
	}{
		"a wallet": {wallet: openAccount("alice").Obj(), wantReady: "True/LedgerOpen", wantMessage: "The ledger is kept."},
		"a wallet funded by a pool": {
			wallet: openAccount("alice").Project("lab").Obj(), pool: openAccount("lab").Obj(),
			wantReady: "True/LedgerOpen", wantMessage: "The ledger is kept.",
		},
		"the pool is missing": {
			wallet:      openAccount("alice").Project("lab").Obj(),
			wantReady:   "False/" + hcv1.ReasonProjectNotFound,
			wantMessage: ProjectMissingMessage("alice", "lab"),
		},
		"the pool names a project itself": {
			wallet: openAccount("alice").Project("lab").Obj(), pool: openAccount("lab").Project("faculty").Obj(),
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
	runningServer := testutil.MakeServerCharge("r1").Started(0).Obj()
	stopping := testutil.MakeServerCharge("r2").Started(0).StopRequested(interval).Obj()
	cases := map[string]struct {
		account      *hcv1.CreditAccount
		poolBalance  int64
		creditsAdded bool
		wantRunning  int32
		wantConds    map[string]string
		wantNotes    []string
	}{
		"nothing runs": {
			account:   openAccount("alice").Balance(0).Obj(),
			wantConds: map[string]string{"Low": "False/BalanceSufficient", "Exhausted": "False/CreditsAvailable"},
		},
		"enough for two more periods": {
			account:     openAccount("alice").Balance(20).Servers(runningServer).Obj(),
			wantRunning: 1,
			wantConds:   map[string]string{"Low": "False/BalanceSufficient", "Exhausted": "False/CreditsAvailable"},
		},
		"low: fewer than two periods": {
			account:     openAccount("alice").Balance(19).Servers(runningServer).Obj(),
			wantRunning: 1,
			wantConds:   map[string]string{"Low": "True/BalanceLow", "Exhausted": "False/CreditsAvailable"},
			wantNotes:   []string{EventLow},
		},
		"the pool's balance counts": {
			account:     openAccount("alice").Balance(10).Servers(runningServer).Obj(),
			poolBalance: 10, wantRunning: 1,
			wantConds: map[string]string{"Low": "False/BalanceSufficient", "Exhausted": "False/CreditsAvailable"},
		},
		"low again: no second note": {
			account: openAccount("alice").Balance(0).Servers(runningServer).
				Condition(hcv1.ConditionLow, metav1.ConditionTrue, hcv1.ReasonBalanceLow).Obj(),
			wantRunning: 1,
			wantConds:   map[string]string{"Low": "True/BalanceLow", "Exhausted": "False/CreditsAvailable"},
		},
		"exhausted stays while a stop is pending": {
			account: openAccount("alice").Balance(500).Servers(stopping).
				Condition(hcv1.ConditionExhausted, metav1.ConditionTrue, hcv1.ReasonServerStopped).Obj(),
			creditsAdded: true,
			wantConds:    map[string]string{"Low": "False/BalanceSufficient", "Exhausted": "True/ServerStopped"},
		},
		"exhausted stays until credits are added": {
			account: openAccount("alice").Balance(500).
				Condition(hcv1.ConditionExhausted, metav1.ConditionTrue, hcv1.ReasonServerStopped).Obj(),
			wantConds: map[string]string{"Low": "False/BalanceSufficient", "Exhausted": "True/ServerStopped"},
		},
		"credits added clear exhausted": {
			account: openAccount("alice").Balance(500).
				Condition(hcv1.ConditionExhausted, metav1.ConditionTrue, hcv1.ReasonServerStopped).Obj(),
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
