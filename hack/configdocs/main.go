// Command configdocs keeps docs/configuration.md true to the manager's flags
// and the chart's values.yaml.
//
// Without -check it builds the manager (go build .) into a temporary
// directory, runs its --help and writes the output into the block of
// docs/configuration.md between the lines BeginMarker and EndMarker (called
// by `make manifests`, so `make verify` fails when the block is stale).
//
// With -check it also checks the hand-written tables of that file, and
// exits 1 with one line per problem (called by `make verify`):
//   - every flag of the manager has one row in a flags table (header
//     "flag | default | meaning | Helm value") with the manager's default,
//     and every row names a flag the manager defines;
//   - every leaf key of values.yaml has one row in a values table (header
//     "key | default | meaning | flag") with its default, and every row names
//     a key values.yaml has;
//   - a flag named in a values row's "flag" column exists, and the values
//     keys named in a flags row's "Helm value" column exist; where one names
//     the other as its mapping, the other names it back.
//
// The flag set is built inside the manager's package main, which no other
// package can import, so the flags are read from --help (the flag package's
// PrintDefaults format, which is stable). Go rather than a shell script:
// the tables, the help text and the YAML are parsed with a unit test
// (configdocs_test.go) instead of with sed.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

const (
	// BeginMarker and EndMarker delimit the generated --help block.
	BeginMarker = "<!-- BEGIN GENERATED: manager --help, written by `make manifests` (hack/configdocs); do not edit -->"
	EndMarker   = "<!-- END GENERATED: manager --help -->"
	// helpCommand is the command line shown to readers above the output.
	helpCommand = "$ go build -o /tmp/hcmanager . && /tmp/hcmanager --help"
	// podNamespaceEnv is the only environment variable the manager reads
	// (the default of --operator-namespace).
	podNamespaceEnv = "POD_NAMESPACE"
)

func main() {
	check := flag.Bool("check", false, "Also check the flags and values tables against the manager and values.yaml (make verify).")
	doc := flag.String("doc", "docs/configuration.md", "The configuration reference to update and check.")
	values := flag.String("values", "charts/hubcredits/values.yaml", "The chart's values file.")
	pkg := flag.String("manager", ".", "The manager's package, built with go build.")
	flag.Parse()
	if err := run(*doc, *values, *pkg, *check); err != nil {
		fmt.Fprintln(os.Stderr, "configdocs:", err)
		os.Exit(1)
	}
}

func run(docPath, valuesPath, pkg string, check bool) error {
	tmp, err := os.MkdirTemp("", "configdocs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "hcmanager")
	goCmd := os.Getenv("GO")
	if goCmd == "" {
		goCmd = "go"
	}
	build := exec.Command(goCmd, "build", "-o", bin, pkg)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	// An empty environment: the output depends on nothing but the binary.
	help, err := managerHelp(bin, nil)
	if err != nil {
		return err
	}
	doc, err := os.ReadFile(docPath)
	if err != nil {
		return err
	}
	updated, err := replaceBlock(string(doc), help)
	if err != nil {
		return fmt.Errorf("%s: %w", docPath, err)
	}
	checks, err := checksTranscript(bin)
	if err != nil {
		return err
	}
	if updated, err = replaceBetween(updated, ChecksBeginMarker, ChecksEndMarker, checks); err != nil {
		return fmt.Errorf("%s: %w", docPath, err)
	}
	if updated != string(doc) {
		if err := os.WriteFile(docPath, []byte(updated), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "configdocs: updated the generated blocks of %s\n", docPath)
	}
	if !check {
		return nil
	}
	// POD_NAMESPACE set to its own name, so that the default taken from it
	// reads `$POD_NAMESPACE`, as the flags table says.
	helpEnv, err := managerHelp(bin, []string{podNamespaceEnv + "=$" + podNamespaceEnv})
	if err != nil {
		return err
	}
	flags, err := ParseHelp(helpEnv)
	if err != nil {
		return fmt.Errorf("the manager's --help: %w", err)
	}
	valuesYAML, err := os.ReadFile(valuesPath)
	if err != nil {
		return err
	}
	var vals map[string]any
	if err := yaml.Unmarshal(valuesYAML, &vals); err != nil {
		return fmt.Errorf("%s: %w", valuesPath, err)
	}
	problems := Check(docPath, updated, flags, vals)
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, p)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s disagrees with the manager's flags or %s: %d problems (above)", docPath, valuesPath, len(problems))
	}
	return nil
}

// managerHelp runs `bin --help` with exactly env as its environment and
// returns what it printed (the flag package prints usage on stderr).
func managerHelp(bin string, env []string) (string, error) {
	var out, errOut bytes.Buffer
	cmd := exec.Command(bin, "--help")
	cmd.Env = append([]string{}, env...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("manager --help: %w: %s", err, strings.TrimSpace(errOut.String()))
	}
	help := out.String() + errOut.String()
	if !strings.Contains(help, "\nFlags:\n") {
		return "", errors.New("manager --help printed no \"Flags:\" section")
	}
	return help, nil
}

// replaceBlock puts help, as a console block under helpCommand, between
// the markers of doc.
func replaceBlock(doc, help string) (string, error) {
	return replaceBetween(doc, BeginMarker, EndMarker, "```console\n"+helpCommand+"\n"+strings.TrimRight(help, "\n")+"\n```\n")
}

// replaceBetween puts block between the lines beginMarker and endMarker,
// which doc must hold once.
func replaceBetween(doc, beginMarker, endMarker, block string) (string, error) {
	begin := strings.Index(doc, beginMarker+"\n")
	if begin < 0 {
		return "", fmt.Errorf("no line %q", beginMarker)
	}
	body := begin + len(beginMarker) + 1
	end := strings.Index(doc[body:], endMarker+"\n")
	if end < 0 {
		return "", fmt.Errorf("no line %q after %q", endMarker, beginMarker)
	}
	if strings.Contains(doc[body+end+len(endMarker):], beginMarker) {
		return "", fmt.Errorf("more than one line %q", beginMarker)
	}
	return doc[:body] + block + doc[body+end:], nil
}

// ChecksBeginMarker and ChecksEndMarker delimit the generated transcript
// of the manager refusing bad values at start.
const (
	ChecksBeginMarker = "<!-- BEGIN GENERATED: checks at start, written by `make manifests` (hack/configdocs); do not edit -->"
	ChecksEndMarker   = "<!-- END GENERATED: checks at start -->"
)

// startChecks are the bad command lines the transcript shows.
var startChecks = [][]string{
	{"--default-billing-interval=500ms"},
	{"--usage-retention=-1h"},
	{"--singleuser-selector=component in singleuser-server"},
	{"--cert-rotation"},
	{"--hub-api-url=http://hub:8081/hub/api"},
}

// checksTranscript runs the manager with each of startChecks, in an empty
// environment, and renders what it printed; each must exit with status 1
// and print one line on stderr, before connecting to anything.
func checksTranscript(bin string) (string, error) {
	var b strings.Builder
	b.WriteString("```console\n")
	for _, args := range startChecks {
		var out, errOut bytes.Buffer
		cmd := exec.Command(bin, args...)
		cmd.Env = []string{}
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			return "", fmt.Errorf("manager %s: want exit status 1, got %w", strings.Join(args, " "), err)
		}
		msg := strings.TrimRight(errOut.String(), "\n")
		if out.Len() > 0 || strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "hubcredits: ") {
			return "", fmt.Errorf("manager %s: want one line on stderr, got %q and %q", strings.Join(args, " "), out.String(), errOut.String())
		}
		fmt.Fprintf(&b, "$ /tmp/hcmanager %s\n%s\n", shellQuote(args), msg)
	}
	b.WriteString("```\n")
	return b.String(), nil
}

// shellQuote joins args as a reader would type them.
func shellQuote(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok && strings.ContainsAny(v, " '\"$") {
			a = k + "='" + strings.ReplaceAll(v, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}
