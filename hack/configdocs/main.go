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
	if updated != string(doc) {
		if err := os.WriteFile(docPath, []byte(updated), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "configdocs: updated the --help block of %s\n", docPath)
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
	begin := strings.Index(doc, BeginMarker+"\n")
	if begin < 0 {
		return "", fmt.Errorf("no line %q", BeginMarker)
	}
	body := begin + len(BeginMarker) + 1
	end := strings.Index(doc[body:], EndMarker+"\n")
	if end < 0 {
		return "", fmt.Errorf("no line %q after %q", EndMarker, BeginMarker)
	}
	if strings.Contains(doc[body+end+len(EndMarker):], BeginMarker) {
		return "", errors.New("more than one generated --help block")
	}
	block := "```console\n" + helpCommand + "\n" + strings.TrimRight(help, "\n") + "\n```\n"
	return doc[:body] + block + doc[body+end:], nil
}
