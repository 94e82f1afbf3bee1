package creditscli

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"
)

// Output formats (-o).
const (
	outputTable = "table"
	outputJSON  = "json"
	outputYAML  = "yaml"
	outputCSV   = "csv"
)

// addOutputFlag adds -o with the formats allowed.
func addOutputFlag(cmd *cobra.Command, target *string, formats ...string) {
	cmd.Flags().StringVarP(target, "output", "o", outputTable, "Output format: "+strings.Join(formats, "|")+".")
}

// checkOutput refuses a format the command does not print.
func checkOutput(format string, formats ...string) error {
	if slices.Contains(formats, format) {
		return nil
	}
	return fmt.Errorf("unknown output format %q (use %s)", format, strings.Join(formats, ", "))
}

// printStructured prints v as JSON or YAML.
func printStructured(w io.Writer, format string, v any) error {
	data, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		return err
	}
	if format == outputYAML {
		if data, err = yaml.JSONToYAML(data); err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	_, err = fmt.Fprintln(w, string(data))
	return err
}

// age is kubectl's short age ("5m", "3h2m"), or "<unknown>".
func age(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t))
}

// orNone is s, or "<none>" as kubectl prints an empty value.
func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
