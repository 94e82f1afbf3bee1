package controllers

import (
	"strings"
	"testing"

	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/hubcredits/hubcredits/internal/testutil/fakeclient"
)

func TestAccountCollector(t *testing.T) {
	alice := openAccount("alice", "alice").Balance(85).Obj()
	alice.Status.TotalCharged, alice.Status.TotalGranted, alice.Status.RunningServers = 30, 15, 1
	lab := openAccount("lab", "alice", "bob").Balance(0).Obj()
	api := fakeclient.New(nil, alice, lab)
	want := `
# HELP hubcredits_account_balance Credits available in an account.
# TYPE hubcredits_account_balance gauge
hubcredits_account_balance{account="alice",namespace="hub"} 85
hubcredits_account_balance{account="lab",namespace="hub"} 0
# HELP hubcredits_account_charged_credits Credits charged for servers since the account was opened (reservations included).
# TYPE hubcredits_account_charged_credits gauge
hubcredits_account_charged_credits{account="alice",namespace="hub"} 30
hubcredits_account_charged_credits{account="lab",namespace="hub"} 0
# HELP hubcredits_account_granted_credits Credits added by grants since the account was opened.
# TYPE hubcredits_account_granted_credits gauge
hubcredits_account_granted_credits{account="alice",namespace="hub"} 15
hubcredits_account_granted_credits{account="lab",namespace="hub"} 0
# HELP hubcredits_account_running_servers Servers running on an account.
# TYPE hubcredits_account_running_servers gauge
hubcredits_account_running_servers{account="alice",namespace="hub"} 1
hubcredits_account_running_servers{account="lab",namespace="hub"} 0
`
	elected := make(chan struct{})
	c := &AccountCollector{Reader: api, Elected: elected}
	if n := promtestutil.CollectAndCount(c); n != 0 {
		t.Errorf("a replica that is not the leader reported %d series, want none", n)
	}
	close(elected)
	if err := promtestutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	// A deleted account's series go with it: nothing is kept between scrapes.
	if err := api.Delete(t.Context(), lab); err != nil {
		t.Fatal(err)
	}
	if n := promtestutil.CollectAndCount(c); n != 4 {
		t.Errorf("%d series after deleting an account, want 4", n)
	}
}
