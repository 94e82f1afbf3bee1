package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Flag is one flag of the manager as its --help shows it.
type Flag struct {
	Name string
	// Type is the flag package's name for its value: "" (bool), "string",
	// "int", "duration", ... or "value" for any other flag.Value.
	Type string
	// Default is the default value as the flag package prints it (a
	// string unquoted), or the type's zero value when none is printed.
	Default string
	// DefaultKnown is false for a "value" flag that prints no default:
	// its zero value is not known from the help text.
	DefaultKnown bool
}

var (
	flagLine   = regexp.MustCompile(`^  -([^\s=]+)(?: ([^\s]+))?(?:\t(.*))?$`)
	defaultEnd = regexp.MustCompile(` \(default (.*)\)$`)
)

// ParseHelp reads the flags of a flag.FlagSet's PrintDefaults output: a
// line "  -name type" per flag, then its usage on lines starting with
// "    \t", the last ending with " (default X)" when the default is not the
// zero value.
func ParseHelp(help string) (map[string]Flag, error) {
	flags := map[string]Flag{}
	var cur *Flag
	var usage []string
	finish := func() error {
		if cur == nil {
			return nil
		}
		u := strings.Join(usage, "\n")
		if m := defaultEnd.FindStringSubmatch(u); m != nil {
			cur.Default, cur.DefaultKnown = m[1], true
			if cur.Type == "string" {
				s, err := strconv.Unquote(m[1])
				if err != nil {
					return fmt.Errorf("-%s: default %s is not a quoted string", cur.Name, m[1])
				}
				cur.Default = s
			}
		} else {
			cur.Default, cur.DefaultKnown = zeroValue(cur.Type)
		}
		flags[cur.Name] = *cur
		cur, usage = nil, nil
		return nil
	}
	inFlags := false
	for line := range strings.SplitSeq(help, "\n") {
		switch {
		case !inFlags:
			inFlags = line == "Flags:"
		case strings.HasPrefix(line, "    \t"):
			if cur == nil {
				return nil, fmt.Errorf("usage line before any flag: %q", line)
			}
			usage = append(usage, strings.TrimPrefix(line, "    \t"))
		case flagLine.MatchString(line):
			if err := finish(); err != nil {
				return nil, err
			}
			m := flagLine.FindStringSubmatch(line)
			if _, dup := flags[m[1]]; dup {
				return nil, fmt.Errorf("flag -%s listed twice", m[1])
			}
			cur = &Flag{Name: m[1], Type: m[2]}
			if m[3] != "" {
				usage = append(usage, m[3])
			}
		case strings.TrimSpace(line) == "":
		default:
			return nil, fmt.Errorf("unexpected line in the flags: %q", line)
		}
	}
	if err := finish(); err != nil {
		return nil, err
	}
	if !inFlags {
		return nil, fmt.Errorf("no %q line", "Flags:")
	}
	if len(flags) == 0 {
		return nil, fmt.Errorf("no flags after %q", "Flags:")
	}
	return flags, nil
}

// zeroValue is what the flag package leaves unprinted for a type.
func zeroValue(typ string) (string, bool) {
	switch typ {
	case "":
		return "false", true
	case "string":
		return "", true
	case "int", "uint", "float":
		return "0", true
	case "duration":
		return "0s", true
	}
	return "", false
}
