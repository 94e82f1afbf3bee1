package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

// help is PrintDefaults output as the flag package writes it.
const help = `Usage:
  manager [flags]   run hubcredits

Flags:
  -a	one-letter bool
  -auto
    	A bool (default: off; nothing to see).
  -addr string
    	An address. (default ":8081")
  -ca string
    	A PEM file.
  -cap int
    	Cap. (default -1)
  -every duration
    	Interval
    	on two lines. (default 5m0s)
  -grace duration
    	Zero duration.
  -on
    	Serve. (default true)
  -zap-log-level value
    	Zap level.
`

func TestParseHelp(t *testing.T) {
	got, err := ParseHelp(help)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Flag{
		"a":             {Name: "a", Default: "false", DefaultKnown: true},
		"auto":          {Name: "auto", Default: "false", DefaultKnown: true},
		"addr":          {Name: "addr", Type: "string", Default: ":8081", DefaultKnown: true},
		"ca":            {Name: "ca", Type: "string", Default: "", DefaultKnown: true},
		"cap":           {Name: "cap", Type: "int", Default: "-1", DefaultKnown: true},
		"every":         {Name: "every", Type: "duration", Default: "5m0s", DefaultKnown: true},
		"grace":         {Name: "grace", Type: "duration", Default: "0s", DefaultKnown: true},
		"on":            {Name: "on", Default: "true", DefaultKnown: true},
		"zap-log-level": {Name: "zap-log-level", Type: "value"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("ParseHelp (-want +got):\n%s", d)
	}
}

func TestParseHelpErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		help    string
		wantErr string
	}{
		"no Flags line":       {help: "Usage:\n  -x string\n    \tX.\n", wantErr: `no "Flags:" line`},
		"no flags":            {help: "Flags:\n", wantErr: "no flags"},
		"usage before a flag": {help: "Flags:\n    \tstray\n", wantErr: "usage line before any flag"},
		"twice":               {help: "Flags:\n  -x\n    \tX.\n  -x\n    \tX.\n", wantErr: "-x listed twice"},
		"unquoted string":     {help: "Flags:\n  -x string\n    \tX. (default abc)\n", wantErr: "not a quoted string"},
		"garbage":             {help: "Flags:\n  -x\n    \tX.\nsomething else\n", wantErr: "unexpected line"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseHelp(tc.help)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseHelp error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestSplitRow(t *testing.T) {
	for name, tc := range map[string]struct {
		row  string
		want []string
	}{
		"plain":          {row: "| a | b |", want: []string{"a", "b"}},
		"pipe in code":   {row: "| `a|b` | c |", want: []string{"`a|b`", "c"}},
		"escaped pipe":   {row: `| a \| b | c |`, want: []string{"a | b", "c"}},
		"no outer pipes": {row: "a | b", want: []string{"a", "b"}},
		"empty cell":     {row: "| `x` | | y |", want: []string{"`x`", "", "y"}},
	} {
		t.Run(name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, SplitRow(tc.row)); d != "" {
				t.Errorf("SplitRow(%q) (-want +got):\n%s", tc.row, d)
			}
		})
	}
}

func TestParseTables(t *testing.T) {
	doc := "# T\n" +
		"| h1 | h2 |\n|---|---|\n| a | b |\n| c | d |\n" +
		"text\n" +
		"```markdown\n| in | code |\n|---|---|\n| x | y |\n```\n" +
		"| k |\n|:-:|\n| v |"
	want := []Table{
		{Header: []string{"h1", "h2"}, Rows: []Row{{Line: 4, Cells: []string{"a", "b"}}, {Line: 5, Cells: []string{"c", "d"}}}},
		{Header: []string{"k"}, Rows: []Row{{Line: 14, Cells: []string{"v"}}}},
	}
	if d := cmp.Diff(want, ParseTables(doc)); d != "" {
		t.Errorf("ParseTables (-want +got):\n%s", d)
	}
}

func TestRowKeys(t *testing.T) {
	for name, tc := range map[string]struct {
		cell    string
		want    []string
		wantErr string
	}{
		"one":            {cell: "`a.b`", want: []string{"a.b"}},
		"siblings":       {cell: "`a.b.c` / `.d` / `.e`", want: []string{"a.b.c", "a.b.d", "a.b.e"}},
		"full second":    {cell: "`a.b` / `c.d`", want: []string{"a.b", "c.d"}},
		"sibling first":  {cell: "`.d`", wantErr: "not a full key"},
		"top sibling":    {cell: "`a` / `.b`", wantErr: "no parent"},
		"words":          {cell: "the `a` key", wantErr: "one code span each"},
		"not a key":      {cell: "`--flag`", wantErr: "not a dotted key"},
		"trailing words": {cell: "`a` (old)", wantErr: "one code span each"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := rowKeys(tc.cell)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("rowKeys(%q) error = %v, want one containing %q", tc.cell, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("rowKeys(%q) (-want +got):\n%s", tc.cell, d)
			}
		})
	}
}

func TestLeafKeysAndLiteral(t *testing.T) {
	vals := mustValues(t, "a: 1\nb: {c: \"\", d: [], e: {}, f: [x], g: {h: null}}\nempty: {}\n")
	if d := cmp.Diff([]string{"a", "b.c", "b.d", "b.e", "b.f", "b.g.h", "empty"}, LeafKeys("", vals)); d != "" {
		t.Errorf("LeafKeys (-want +got):\n%s", d)
	}
	for key, want := range map[string]string{"a": "1", "b.c": `""`, "b.d": "[]", "b.e": "{}", "b.g.h": "null", "empty": "{}"} {
		v, ok := Lookup(vals, key)
		if !ok || Literal(v) != want {
			t.Errorf("Literal(%s) = %q (found %v), want %q", key, Literal(v), ok, want)
		}
	}
}

// The flags and values of the TestCheck documents.
const (
	checkHelp = `Flags:
  -cap int
    	Cap. (default 100)
  -enable-webhooks
    	Serve. (default true)
  -metrics-bind-address string
    	Metrics. (default ":8080")
  -namespace string
    	Namespace.
  -webhook-secret-name string
    	Secret. (default "s")
  -webhook-service-name string
    	Service. (default "svc")
  -zap-log-level value
    	Level.
`
	checkValues = `
wallets:
  cap: 100
hubNamespace: ""
logLevel: info
metrics:
  port: 8080
resources:
  limits: {memory: 256Mi}
extraArgs: []
clientCA:
  configMap: ""
  key: ca.crt
`
	flagsTable = "| flag | default | meaning | Helm value |\n|---|---|---|---|\n"
	valsTable  = "| key | default | meaning | flag |\n|---|---|---|---|\n"
	// goodDoc agrees with checkHelp and checkValues; each case of
	// TestCheck edits one line of it.
	goodDoc = "# Flags\n" + // line 1
		flagsTable + // lines 2-3
		"| `--cap` | `100` | Cap. | `wallets.cap` |\n" + // 4
		"| `--enable-webhooks` | `true` | Serve. | — (always on) |\n" + // 5
		"| `--metrics-bind-address` | `:8080` | Metrics. | `metrics.port` (as `:<port>`) |\n" + // 6
		"| `--namespace` | `\"\"` | Namespace. | `hubNamespace` |\n" + // 7
		"| `--webhook-secret-name` | `s` | Secret. | set by the chart |\n" + // 8
		"| `--webhook-service-name` | `svc` | Service. | set by the chart |\n" + // 9
		"| `--zap-log-level` | `info` | Level. | `logLevel` |\n" + // 10
		"\n# Values\n" + // 11-12
		valsTable + // 13-14
		"| `wallets.cap` | `100` | Cap. | `--cap` |\n" + // 15
		"| `hubNamespace` | `\"\"` | The hub. | `--namespace` |\n" + // 16
		"| `logLevel` | `info` | Level. | `--zap-log-level` |\n" + // 17
		"| `metrics.port` | `8080` | Port. | `--metrics-bind-address=:<port>` |\n" + // 18
		"| `resources` | limits `memory: 256Mi` | Resources. | chart |\n" + // 19
		"| `extraArgs` | `[]` | More flags. | any |\n" + // 20
		"| `clientCA.configMap` / `.key` | `\"\"` / `ca.crt` | The CA. | chart (and the `--webhook-*-name` flags) |\n" // 21
)

func TestCheck(t *testing.T) {
	for name, tc := range map[string]struct {
		line    int    // the line of goodDoc to replace (1-based); 0 keeps it
		newLine string // its replacement ("" deletes it)
		values  string // replaces checkValues when set
		want    []string
	}{
		"agrees": {},
		"flag default": {line: 4, newLine: "| `--cap` | `10` | Cap. | `wallets.cap` |",
			want: []string{"doc.md:4: flags row `--cap`: default `10`, but the manager's is `100`"}},
		"bool default": {line: 5, newLine: "| `--enable-webhooks` | `false` | Serve. | — |",
			want: []string{"doc.md:5: flags row `--enable-webhooks`: default `false`, but the manager's is `true`"}},
		"empty string default": {line: 7, newLine: "| `--namespace` | `default` | Namespace. | `hubNamespace` |",
			want: []string{"doc.md:7: flags row `--namespace`: default `default`, but the manager's is `\"\"`"}},
		"described default of a printed default": {line: 9, newLine: "| `--webhook-service-name` | the Service | Service. | x |",
			want: []string{"doc.md:9: flags row `--webhook-service-name`: default \"the Service\" must be the manager's, `svc`"}},
		"unknown flag": {line: 9, newLine: "| `--webhook-service` | `svc` | Service. | x |",
			want: []string{
				"doc.md:9: flags row `--webhook-service`: the manager has no such flag",
				"doc.md: the manager's flag `--webhook-service-name` has no row in the flags tables",
			}},
		"missing flag": {line: 8,
			want: []string{"doc.md: the manager's flag `--webhook-secret-name` has no row in the flags tables"}},
		"flag twice": {line: 8, newLine: "| `--webhook-service-name` | `svc` | Service. | x |",
			want: []string{
				"doc.md:9: flags row `--webhook-service-name`: documented twice (also line 8)",
				"doc.md: the manager's flag `--webhook-secret-name` has no row in the flags tables",
			}},
		"flag row not a flag": {line: 8, newLine: "| webhook-secret-name | `s` | Secret. | x |",
			want: []string{
				"doc.md:8: flags row: the first cell \"webhook-secret-name\" must be one `--flag`",
				"doc.md: the manager's flag `--webhook-secret-name` has no row in the flags tables",
			}},
		"value default": {line: 15, newLine: "| `wallets.cap` | `99` | Cap. | `--cap` |",
			want: []string{"doc.md:15: values row `wallets.cap`: default `99`, but values.yaml's is `100`"}},
		"value default not literal": {line: 17, newLine: "| `logLevel` | info | Level. | `--zap-log-level` |",
			want: []string{"doc.md:17: values row `logLevel`: default info, but values.yaml's is `info`"}},
		"unknown key": {line: 20, newLine: "| `extraArg` | `[]` | More flags. | any |",
			want: []string{
				"doc.md:20: values row `extraArg`: values.yaml has no such key",
				"doc.md: values.yaml key `extraArgs` has no row in the values tables",
			}},
		"new key in values.yaml": {values: checkValues + "dashboard:\n  enabled: false\n",
			want: []string{"doc.md: values.yaml key `dashboard.enabled` has no row in the values tables"}},
		"structure changed": {values: strings.Replace(checkValues, "256Mi", "512Mi", 1),
			want: []string{"doc.md:19: values row `resources`: default \"limits `memory: 256Mi`\" does not mention \"512Mi\" (values.yaml)"}},
		"compound default": {line: 21, newLine: "| `clientCA.configMap` / `.key` | `\"\"` / `tls.crt` | The CA. | chart |",
			want: []string{"doc.md:21: values row `clientCA.key`: default `tls.crt`, but values.yaml's is `ca.crt`"}},
		"compound count": {line: 21, newLine: "| `clientCA.configMap` / `.key` | `\"\"` | The CA. | chart |",
			want: []string{
				"doc.md:21: values row `clientCA.configMap` / `.key`: 2 keys but 1 defaults (separate them with \" / \")",
				"doc.md: values.yaml key `clientCA.configMap` has no row in the values tables",
				"doc.md: values.yaml key `clientCA.key` has no row in the values tables",
			}},
		"key twice through its parent": {line: 21, newLine: "| `clientCA` | `configMap: \"\"`, `key: ca.crt` | The CA. | chart |\n| `clientCA.key` | `ca.crt` | Key. | chart |",
			want: []string{"doc.md:22: values row `clientCA.key`: `clientCA.key` is documented twice (also line 21)"}},
		"flag column names no flag": {line: 17, newLine: "| `logLevel` | `info` | Level. | `--log-level` |",
			want: []string{
				"doc.md:17: values row `logLevel`: the flag column names `--log-level`, which the manager does not define",
				"doc.md:10: flags row `--zap-log-level`: its Helm value `logLevel` has no values row whose flag column names `--zap-log-level`",
			}},
		"pattern names no flag": {line: 21, newLine: "| `clientCA.configMap` / `.key` | `\"\"` / `ca.crt` | The CA. | `--webhook-*-names` |",
			want: []string{"doc.md:21: values row `clientCA.configMap` / `.key`: the flag column names `--webhook-*-names`, which the manager does not define"}},
		"empty flag column": {line: 20, newLine: "| `extraArgs` | `[]` | More flags. | |",
			want: []string{"doc.md:20: values row `extraArgs`: the flag column is empty (a flag, chart, any or words)"}},
		"flag row does not name its value": {line: 4, newLine: "| `--cap` | `100` | Cap. | — |",
			want: []string{"doc.md:15: values row `wallets.cap` sets `--cap`, but that flag's row (line 4) does not name `wallets.cap` in its Helm value column"}},
		"Helm value names a missing key": {line: 7, newLine: "| `--namespace` | `\"\"` | Namespace. | `hubNamespace` or `wallets.size` |",
			want: []string{"doc.md:7: flags row `--namespace`: the Helm value column names `wallets.size`, which values.yaml lacks"}},
		"no tables": {line: 2, newLine: "| flags | default | meaning | Helm value |",
			want: []string{
				"doc.md: no flags table (header \"| flag | default | meaning | Helm value |\")",
				"doc.md: the manager's flag `--cap` has no row in the flags tables",
				"doc.md: the manager's flag `--enable-webhooks` has no row in the flags tables",
				"doc.md: the manager's flag `--metrics-bind-address` has no row in the flags tables",
				"doc.md: the manager's flag `--namespace` has no row in the flags tables",
				"doc.md: the manager's flag `--webhook-secret-name` has no row in the flags tables",
				"doc.md: the manager's flag `--webhook-service-name` has no row in the flags tables",
				"doc.md: the manager's flag `--zap-log-level` has no row in the flags tables",
			}},
	} {
		t.Run(name, func(t *testing.T) {
			flags, err := ParseHelp(checkHelp)
			if err != nil {
				t.Fatal(err)
			}
			values := checkValues
			if tc.values != "" {
				values = tc.values
			}
			doc := goodDoc
			if tc.line > 0 {
				lines := strings.Split(goodDoc, "\n")
				if tc.newLine == "" {
					lines = append(lines[:tc.line-1], lines[tc.line:]...)
				} else {
					lines[tc.line-1] = tc.newLine
				}
				doc = strings.Join(lines, "\n")
			}
			got := Check("doc.md", doc, flags, mustValues(t, values))
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("Check (-want +got):\n%s", d)
			}
		})
	}
}

func TestReplaceBlock(t *testing.T) {
	doc := "intro\n" + BeginMarker + "\nold\n" + EndMarker + "\nafter\n"
	want := "intro\n" + BeginMarker + "\n```console\n" + helpCommand + "\nUsage:\nFlags:\n```\n" + EndMarker + "\nafter\n"
	got, err := replaceBlock(doc, "Usage:\nFlags:\n\n")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("replaceBlock (-want +got):\n%s", d)
	}
	again, err := replaceBlock(got, "Usage:\nFlags:\n")
	if err != nil || again != got {
		t.Errorf("replaceBlock is not idempotent: %v\n%s", err, again)
	}
	for name, bad := range map[string]string{
		"no begin": "intro\n" + EndMarker + "\n",
		"no end":   BeginMarker + "\nold\n",
		"two":      BeginMarker + "\n" + EndMarker + "\n" + BeginMarker + "\n" + EndMarker + "\n",
	} {
		if _, err := replaceBlock(bad, "x"); err == nil {
			t.Errorf("%s: replaceBlock accepted %q", name, bad)
		}
	}
}

func mustValues(t *testing.T, s string) map[string]any {
	t.Helper()
	var vals map[string]any
	if err := yaml.Unmarshal([]byte(s), &vals); err != nil {
		t.Fatal(err)
	}
	return vals
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"--cert-rotation":                   "--cert-rotation",
		"--usage-retention=-1h":             "--usage-retention=-1h",
		"--singleuser-selector=a in b":      "--singleuser-selector='a in b'",
		"--singleuser-selector=it's a in b": `--singleuser-selector='it'\''s a in b'`,
	} {
		if got := shellQuote([]string{in}); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
