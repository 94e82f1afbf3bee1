package plugin

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hubcredits/hubcredits/internal/localcp"
	"github.com/hubcredits/hubcredits/internal/testutil"
)

// dashboard is the part of a Grafana dashboard the checks read.
type dashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID      int             `json:"id"`
	Type    string          `json:"type"`
	Title   string          `json:"title"`
	GridPos *map[string]int `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
}

// TestDashboard checks the chart's Grafana dashboard: the JSON has what
// Grafana needs, and every PromQL query names only metrics that the
// operator serves on /metrics, after a spawn, a denial and a stop.
func TestDashboard(t *testing.T) {
	root, err := localcp.Root()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "charts", "hubcredits", "files", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	checkDashboardShape(t, d)

	served := servedAfterSpawnDenialAndStop(t)
	for _, p := range d.Panels {
		for _, target := range p.Targets {
			names := metricNames(target.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q, query %s names no metric: %s", p.Title, target.RefID, target.Expr)
			}
			for _, n := range names {
				if !served[n] {
					t.Errorf("panel %q, query %s: the operator serves no metric %s", p.Title, target.RefID, n)
				}
			}
		}
	}
}

// checkDashboardShape checks the fields Grafana needs to import the
// dashboard and draw each panel.
func checkDashboardShape(t *testing.T, d dashboard) {
	t.Helper()
	if d.Title == "" || d.UID == "" || d.SchemaVersion < 30 {
		t.Errorf("title %q, uid %q, schemaVersion %d: want a title, a uid and a schemaVersion >= 30", d.Title, d.UID, d.SchemaVersion)
	}
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name+":"+v.Type)
	}
	if d := cmp.Diff([]string{"datasource:datasource", "namespace:query"}, vars); d != "" {
		t.Errorf("template variables (-want +got):\n%s", d)
	}
	ids := map[int]bool{}
	titles := map[string]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] || p.ID == 0 {
			t.Errorf("panel %q: id %d missing or repeated", p.Title, p.ID)
		}
		ids[p.ID] = true
		titles[p.Title] = true
		if p.Title == "" || p.Type == "" || p.GridPos == nil {
			t.Errorf("panel %d: title %q, type %q, gridPos %v: each is required", p.ID, p.Title, p.Type, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want the prometheus ${datasource} variable", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
	for _, want := range []string{"Balances", "Spend rate", "Denials by reason", "Servers stopped", "Billing lag", "Webhook latency"} {
		if !titles[want] {
			t.Errorf("no panel %q", want)
		}
	}
}

// servedAfterSpawnDenialAndStop makes the operator count a spawn, a
// denial and a stop (labelled counters appear on /metrics once counted),
// and returns the names of the series it then serves.
func servedAfterSpawnDenialAndStop(t *testing.T) map[string]bool {
	t.Helper()
	ns := newNamespace(t)
	create(t,
		testutil.MakeAccount(ns, "erin", "erin").Cap(10).Obj(),
		testutil.MakePolicy(ns, "fast").Value(10).Every(2*time.Second).Obj(),
	)
	opened(t, ns, "erin")
	spawn(t, ns, "erin")
	if err := hub.Create(t.Context(), testutil.MakeKubeSpawnerPod(ns, "frank", "").Obj()); err == nil {
		t.Fatal("frank, who has no account, was admitted")
	}
	var served map[string]bool
	testutil.Eventually(t, 30*time.Second, func() error {
		var err error
		if served, err = scrape(metricsURL); err != nil {
			return err
		}
		for _, n := range []string{"hubcredits_servers_stopped_total", "hubcredits_admission_denials_total", "controller_runtime_webhook_latency_seconds_bucket"} {
			if !served[n] {
				return fmt.Errorf("the operator serves no %s yet", n)
			}
		}
		return nil
	})
	return served
}

// scrape reads the series names of a /metrics page from its TYPE lines
// (a histogram serves name_bucket, name_sum and name_count).
func scrape(url string) (map[string]bool, error) {
	resp, err := http.Get(url) //nolint:noctx // a local test server
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	return seriesNames(resp.Body)
}

func seriesNames(r io.Reader) (map[string]bool, error) {
	out := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" {
			continue
		}
		name := f[2]
		switch f[3] {
		case "histogram":
			out[name+"_bucket"], out[name+"_sum"], out[name+"_count"] = true, true, true
		case "summary":
			out[name], out[name+"_sum"], out[name+"_count"] = true, true, true
		default:
			out[name] = true
		}
	}
	return out, sc.Err()
}

var (
	promString    = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers  = regexp.MustCompile(`\{[^}]*\}`)
	promRange     = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promVariable  = regexp.MustCompile(`\$\{?\w+\}?`)
	promIdent     = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?`)
	promOperators = []string{"and", "or", "unless", "bool", "offset", "inf", "nan"}
)

// metricNames are the metric names a PromQL expression reads: what is
// left once strings, label matchers, ranges, grouping clauses, Grafana
// variables and functions are taken out.
func metricNames(expr string) []string {
	s := promString.ReplaceAllString(expr, `""`)
	s = promMatchers.ReplaceAllString(s, " ")
	s = promRange.ReplaceAllString(s, " ")
	s = promGrouping.ReplaceAllString(s, " ")
	s = promVariable.ReplaceAllString(s, " ")
	seen := map[string]bool{}
	for _, m := range promIdent.FindAllStringSubmatch(s, -1) {
		name := strings.TrimSpace(strings.TrimSuffix(m[0], "("))
		if m[1] != "" || slices.Contains(promOperators, strings.ToLower(name)) {
			continue // a function or an operator
		}
		seen[name] = true
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func TestMetricNames(t *testing.T) {
	cases := map[string]struct {
		expr string
		want []string
	}{
		"a selector": {expr: `hubcredits_account_balance{namespace=~"$namespace"}`, want: []string{"hubcredits_account_balance"}},
		"functions, grouping, ranges and variables": {
			expr: `histogram_quantile(0.99, sum by (le) (rate(hubcredits_billing_lag_seconds_bucket[$__rate_interval])))`,
			want: []string{"hubcredits_billing_lag_seconds_bucket"},
		},
		"strings that look like names": {
			expr: `rate(controller_runtime_webhook_latency_seconds_bucket{webhook="/mutate-v1-pod"}[5m])`,
			want: []string{"controller_runtime_webhook_latency_seconds_bucket"},
		},
		"two metrics and an operator": {
			expr: `count(hubcredits_account_balance <= 0) or vector(0) and on (x) up`,
			want: []string{"hubcredits_account_balance", "up"},
		},
		"only numbers": {expr: `vector(0) * 3600`, want: []string{}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, metricNames(tc.expr)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestSeriesNames(t *testing.T) {
	page := "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n# TYPE lag_seconds histogram\nlag_seconds_bucket{le=\"1\"} 0\n"
	got, err := seriesNames(strings.NewReader(page))
	want := map[string]bool{"a_total": true, "lag_seconds_bucket": true, "lag_seconds_sum": true, "lag_seconds_count": true}
	if d := cmp.Diff(want, got); d != "" || err != nil {
		t.Errorf("(-want +got):\n%s%v", d, err)
	}
}
