package creditscli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

// record is a server of user on account (funded by project when not ""),
// ended ago before now after running for d, with what each payer paid.
func record(user, account, project, policy string, ago, d time.Duration, periods int64, payers ...hcv1.UsagePayer) hcv1.UsageRecord {
	end := now.Add(-ago)
	r := hcv1.UsageRecord{
		ObjectMeta: metav1.ObjectMeta{Namespace: "jhub"},
		User:       user, Account: account, Project: project, Policy: policy,
		Start: metav1.NewTime(end.Add(-d)), End: metav1.NewTime(end), Periods: periods, Payers: payers,
	}
	for _, p := range payers {
		r.Total += p.Credits
	}
	return r
}

func paid(account string, credits int64) hcv1.UsagePayer {
	return hcv1.UsagePayer{Account: account, Credits: credits}
}

func TestSummarize(t *testing.T) {
	records := []hcv1.UsageRecord{
		record("alice", "alice", "", "standard", time.Hour, 30*time.Minute, 3, paid("alice", 30)),
		record("alice", "alice", "", "standard", 2*time.Hour, 10*time.Minute, 1, paid("alice", 10)),
		record("alice", "alice", "", "gpu", 3*time.Hour, 10*time.Minute, 2, paid("alice", 50)),
		record("carol", "carol", "physics", "gpu", time.Hour, 20*time.Minute, 4, paid("physics", 60), paid("carol", 40)),
		record("bob", "bob", "", "standard", 40*24*time.Hour, time.Hour, 6, paid("bob", 60)),
	}
	month := now.Add(-30 * 24 * time.Hour)
	row := func(keys map[string]string, servers, periods int64, run time.Duration, credits int64) UsageRow {
		return UsageRow{Keys: keys, Servers: servers, Periods: periods, Seconds: int64(run.Seconds()), Credits: credits}
	}
	cases := map[string]struct {
		filter    usageFilter
		by        []string
		wantRows  []UsageRow
		wantTotal UsageRow
	}{
		"by user, account and policy, the last 30 days": {
			filter: usageFilter{since: month},
			by:     []string{keyUser, keyAccount, keyPolicy},
			wantRows: []UsageRow{
				row(map[string]string{"user": "carol", "account": "carol", "policy": "gpu"}, 1, 4, 20*time.Minute, 100),
				row(map[string]string{"user": "alice", "account": "alice", "policy": "gpu"}, 1, 2, 10*time.Minute, 50),
				row(map[string]string{"user": "alice", "account": "alice", "policy": "standard"}, 2, 4, 40*time.Minute, 40),
			},
			wantTotal: row(nil, 4, 10, 70*time.Minute, 190),
		},
		"by payer: a pool's share apart": {
			filter: usageFilter{since: month},
			by:     []string{keyPayer},
			wantRows: []UsageRow{
				row(map[string]string{"payer": "alice"}, 3, 6, 50*time.Minute, 90),
				row(map[string]string{"payer": "physics"}, 1, 4, 20*time.Minute, 60),
				row(map[string]string{"payer": "carol"}, 1, 4, 20*time.Minute, 40),
			},
			wantTotal: row(nil, 4, 10, 70*time.Minute, 190),
		},
		"a pool's servers, by payer: only what the pool paid": {
			filter:    usageFilter{since: month, account: "physics"},
			by:        []string{keyPayer, keyUser},
			wantRows:  []UsageRow{row(map[string]string{"payer": "physics", "user": "carol"}, 1, 4, 20*time.Minute, 60)},
			wantTotal: row(nil, 1, 4, 20*time.Minute, 60),
		},
		"a pool's servers: everything they cost": {
			filter:    usageFilter{since: month, account: "physics"},
			by:        []string{keyProject},
			wantRows:  []UsageRow{row(map[string]string{"project": "physics"}, 1, 4, 20*time.Minute, 100)},
			wantTotal: row(nil, 1, 4, 20*time.Minute, 100),
		},
		"one user over a longer window": {
			filter:    usageFilter{since: now.Add(-60 * 24 * time.Hour), user: "bob"},
			by:        []string{keyUser},
			wantRows:  []UsageRow{row(map[string]string{"user": "bob"}, 1, 6, time.Hour, 60)},
			wantTotal: row(nil, 1, 6, time.Hour, 60),
		},
		"nothing in the window": {
			filter:   usageFilter{since: now.Add(-time.Minute)},
			by:       []string{keyUser},
			wantRows: []UsageRow{},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			u := summarize(records, tc.filter, tc.by)
			if d := cmp.Diff(tc.wantRows, u.Rows); d != "" {
				t.Errorf("rows (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantTotal, u.Total); d != "" {
				t.Errorf("total (-want +got):\n%s", d)
			}
		})
	}
}

func TestPrintUsage(t *testing.T) {
	u := summarize([]hcv1.UsageRecord{
		record("alice", "alice", "", "standard", time.Hour, 30*time.Minute, 3, paid("alice", 30)),
		record("carol", "carol", "physics", "", time.Hour, 20*time.Minute, 4, paid("physics", 60), paid("carol", 40)),
	}, usageFilter{since: now.Add(-24 * time.Hour)}, []string{keyUser, keyPolicy})
	var table, csv bytes.Buffer
	if err := printUsageTable(&table, u); err != nil {
		t.Fatal(err)
	}
	wantTable := "USER    POLICY     SERVERS   PERIODS   RUN TIME   CREDITS\n" +
		"carol   <none>     1         4         20m        100\n" +
		"alice   standard   1         3         30m        30\n" +
		"TOTAL              2         7         50m        130\n"
	if d := cmp.Diff(wantTable, table.String()); d != "" {
		t.Errorf("table (-want +got):\n%s", d)
	}
	if err := printUsageCSV(&csv, u); err != nil {
		t.Fatal(err)
	}
	wantCSV := "user,policy,servers,periods,seconds,credits\ncarol,,1,4,1200,100\nalice,standard,1,3,1800,30\n"
	if d := cmp.Diff(wantCSV, csv.String()); d != "" {
		t.Errorf("csv (-want +got):\n%s", d)
	}
}

func TestParseSince(t *testing.T) {
	cases := map[string]struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		"days":      {in: "30d", want: 30 * 24 * time.Hour},
		"weeks":     {in: "2w", want: 14 * 24 * time.Hour},
		"hours":     {in: "12h", want: 12 * time.Hour},
		"Go's":      {in: "1h30m", want: 90 * time.Minute},
		"zero":      {in: "0d", wantErr: "longer than 0"},
		"words":     {in: "a month", wantErr: "not a duration"},
		"empty":     {in: "", wantErr: "not a duration"},
		"negative":  {in: "-3d", wantErr: "not a duration"},
		"bare unit": {in: "d", wantErr: "not a duration"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := parseSince(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestParseBy(t *testing.T) {
	got, err := parseBy("payer, user,payer")
	if d := cmp.Diff([]string{"payer", "user"}, got); d != "" || err != nil {
		t.Errorf("(-want +got):\n%s%v", d, err)
	}
	if _, err := parseBy("user,colour"); err == nil {
		t.Error("an unknown key accepted")
	}
}
