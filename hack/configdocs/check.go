package main

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"
)

var (
	flagsHeader  = []string{"flag", "default", "meaning", "Helm value"}
	valuesHeader = []string{"key", "default", "meaning", "flag"}
	// A dotted values key, as a code span may name one ("certs.mode:
	// selfSigned" names certs.mode).
	keyLike = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*$`)
)

// flagRow and valueRow are the parsed rows of the two kinds of table.
type flagRow struct {
	line      int
	name      string
	helmValue string
}

type valueRow struct {
	line int
	keys []string
	flag string
}

// checker collects the problems of one document.
type checker struct {
	doc      string
	flags    map[string]Flag
	vals     map[string]any
	problems []string
}

func (c *checker) addf(line int, format string, args ...any) {
	loc := c.doc
	if line > 0 {
		loc = fmt.Sprintf("%s:%d", c.doc, line)
	}
	c.problems = append(c.problems, loc+": "+fmt.Sprintf(format, args...))
}

// Check compares the flags and values tables of doc (named docName in the
// problems) with the manager's flags and the chart's values, and returns
// one line per problem.
func Check(docName, doc string, flags map[string]Flag, vals map[string]any) []string {
	c := &checker{doc: docName, flags: flags, vals: vals}
	var flagRows []flagRow
	var valueRows []valueRow
	nFlagTables, nValueTables := 0, 0
	for _, t := range ParseTables(doc) {
		switch {
		case slices.Equal(t.Header, flagsHeader):
			nFlagTables++
			for _, r := range t.Rows {
				if fr, ok := c.flagRow(r); ok {
					flagRows = append(flagRows, fr)
				}
			}
		case slices.Equal(t.Header, valuesHeader):
			nValueTables++
			for _, r := range t.Rows {
				if vr, ok := c.valueRow(r); ok {
					valueRows = append(valueRows, vr)
				}
			}
		}
	}
	if nFlagTables == 0 {
		c.addf(0, "no flags table (header %q)", "| "+strings.Join(flagsHeader, " | ")+" |")
	}
	if nValueTables == 0 {
		c.addf(0, "no values table (header %q)", "| "+strings.Join(valuesHeader, " | ")+" |")
	}
	c.flagCoverage(flagRows)
	c.valueCoverage(valueRows)
	c.crossCheck(flagRows, valueRows)
	return c.problems
}

// flagRow checks one row of a flags table: the flag exists and the default
// is the manager's.
func (c *checker) flagRow(r Row) (flagRow, bool) {
	if len(r.Cells) != len(flagsHeader) {
		c.addf(r.Line, "flags row has %d cells, want %d", len(r.Cells), len(flagsHeader))
		return flagRow{}, false
	}
	span, ok := SoleCodeSpan(r.Cells[0])
	if !ok || !strings.HasPrefix(span, "-") {
		c.addf(r.Line, "flags row: the first cell %q must be one `--flag`", r.Cells[0])
		return flagRow{}, false
	}
	name := strings.TrimLeft(span, "-")
	f, ok := c.flags[name]
	if !ok {
		c.addf(r.Line, "flags row `--%s`: the manager has no such flag", name)
		return flagRow{}, false
	}
	def := r.Cells[1]
	lit, isLit := SoleCodeSpan(def)
	if isLit && lit == `""` {
		lit = ""
	}
	switch {
	case !f.DefaultKnown && strings.TrimSpace(def) == "":
		c.addf(r.Line, "flags row `--%s`: the default is empty", name)
	case !f.DefaultKnown:
		// A flag.Value that prints no default: the text cannot be checked.
	case !isLit:
		c.addf(r.Line, "flags row `--%s`: default %q must be the manager's, `%s`", name, def, shown(f.Default))
	case lit != f.Default:
		c.addf(r.Line, "flags row `--%s`: default `%s`, but the manager's is `%s`", name, shown(lit), shown(f.Default))
	}
	return flagRow{line: r.Line, name: name, helmValue: r.Cells[3]}, true
}

// shown is a default as the tables write it.
func shown(s string) string {
	if s == "" {
		return `""`
	}
	return s
}

func (c *checker) flagCoverage(rows []flagRow) {
	seen := map[string]int{}
	for _, r := range rows {
		if first, dup := seen[r.name]; dup {
			c.addf(r.line, "flags row `--%s`: documented twice (also line %d)", r.name, first)
			continue
		}
		seen[r.name] = r.line
	}
	for _, name := range sortedKeys(c.flags) {
		if _, ok := seen[name]; !ok {
			c.addf(0, "the manager's flag `--%s` has no row in the flags tables", name)
		}
	}
}

// valueRow checks one row of a values table: its keys (one, or several as
// "`a.b.c` / `.d`") exist with these defaults, and the flags it names
// exist.
func (c *checker) valueRow(r Row) (valueRow, bool) {
	if len(r.Cells) != len(valuesHeader) {
		c.addf(r.Line, "values row has %d cells, want %d", len(r.Cells), len(valuesHeader))
		return valueRow{}, false
	}
	keys, err := rowKeys(r.Cells[0])
	if err != nil {
		c.addf(r.Line, "values row %s: %v", r.Cells[0], err)
		return valueRow{}, false
	}
	defaults := []string{r.Cells[1]}
	if len(keys) > 1 {
		defaults = strings.Split(r.Cells[1], " / ")
		if len(defaults) != len(keys) {
			c.addf(r.Line, "values row %s: %d keys but %d defaults (separate them with \" / \")", r.Cells[0], len(keys), len(defaults))
			return valueRow{}, false
		}
	}
	vr := valueRow{line: r.Line, flag: r.Cells[3]}
	for i, key := range keys {
		v, ok := Lookup(c.vals, key)
		if !ok {
			c.addf(r.Line, "values row `%s`: values.yaml has no such key", key)
			continue
		}
		vr.keys = append(vr.keys, key)
		def := strings.TrimSpace(defaults[i])
		if IsStructure(v) {
			// Described in words: it must mention every value inside.
			if def == "" {
				c.addf(r.Line, "values row `%s`: the default is empty", key)
			}
			for _, s := range ScalarTexts(v) {
				if !strings.Contains(def, s) {
					c.addf(r.Line, "values row `%s`: default %q does not mention %q (values.yaml)", key, def, s)
				}
			}
			continue
		}
		want := Literal(v)
		if lit, ok := SoleCodeSpan(def); !ok || lit != want {
			c.addf(r.Line, "values row `%s`: default %s, but values.yaml's is `%s`", key, def, want)
		}
	}
	if strings.TrimSpace(vr.flag) == "" {
		c.addf(r.Line, "values row %s: the flag column is empty (a flag, chart, any or words)", r.Cells[0])
	}
	for _, ref := range flagRefs(vr.flag) {
		if len(c.resolveFlag(ref)) == 0 {
			c.addf(r.Line, "values row %s: the flag column names `--%s`, which the manager does not define", r.Cells[0], ref)
		}
	}
	return vr, len(vr.keys) > 0
}

// rowKeys parses a values row's key cell: "`a.b`" or "`a.b.c` / `.d`"
// (a.b.c and a.b.d).
func rowKeys(cell string) ([]string, error) {
	var keys []string
	for i, part := range strings.Split(cell, " / ") {
		span, ok := SoleCodeSpan(part)
		if !ok {
			return nil, fmt.Errorf("the key cell must be `key` or `key` / `.sibling`, one code span each")
		}
		switch {
		case i == 0 && strings.HasPrefix(span, "."):
			return nil, fmt.Errorf("the first key %q is not a full key", span)
		case strings.HasPrefix(span, "."):
			parent := keys[0][:strings.LastIndex(keys[0], ".")+1]
			if parent == "" {
				return nil, fmt.Errorf("`%s` has no parent for `%s`", keys[0], span)
			}
			span = parent + span[1:]
		}
		if !keyLike.MatchString(span) {
			return nil, fmt.Errorf("`%s` is not a dotted key", span)
		}
		keys = append(keys, span)
	}
	return keys, nil
}

// valueCoverage: every leaf of values.yaml is documented exactly once, by
// its own row or by a row of a map above it.
func (c *checker) valueCoverage(rows []valueRow) {
	coveredBy := map[string]int{}
	for _, r := range rows {
		for _, key := range r.keys {
			v, _ := Lookup(c.vals, key)
			for _, leaf := range LeafKeys(key, v) {
				if first, dup := coveredBy[leaf]; dup {
					c.addf(r.line, "values row `%s`: `%s` is documented twice (also line %d)", key, leaf, first)
					continue
				}
				coveredBy[leaf] = r.line
			}
		}
	}
	for _, leaf := range LeafKeys("", c.vals) {
		if _, ok := coveredBy[leaf]; !ok {
			c.addf(0, "values.yaml key `%s` has no row in the values tables", leaf)
		}
	}
}

// crossCheck: a values row whose flag column is one flag is named back by
// that flag's row, and a values key named in a flags row's "Helm value"
// column exists and names the flag back (or takes any flag).
func (c *checker) crossCheck(flagRows []flagRow, valueRows []valueRow) {
	byFlag := map[string]flagRow{}
	for _, r := range flagRows {
		byFlag[r.name] = r
	}
	for _, vr := range valueRows {
		span, ok := SoleCodeSpan(vr.flag)
		if !ok || !strings.HasPrefix(span, "-") {
			continue
		}
		for _, name := range c.resolveFlag(flagName(span)) {
			fr, ok := byFlag[name]
			if !ok {
				continue
			}
			for _, key := range vr.keys {
				if !slices.ContainsFunc(c.keyRefs(fr.helmValue), func(ref string) bool { return related(ref, key) }) {
					c.addf(vr.line, "values row `%s` sets `--%s`, but that flag's row (line %d) does not name `%s` in its Helm value column", key, name, fr.line, key)
				}
			}
		}
	}
	for _, fr := range flagRows {
		for _, ref := range c.keyRefs(fr.helmValue) {
			if _, ok := Lookup(c.vals, ref); !ok {
				c.addf(fr.line, "flags row `--%s`: the Helm value column names `%s`, which values.yaml lacks", fr.name, ref)
				continue
			}
			namesBack := false
			for _, vr := range valueRows {
				if !slices.ContainsFunc(vr.keys, func(k string) bool { return related(ref, k) }) {
					continue
				}
				if strings.TrimSpace(vr.flag) == "any" {
					namesBack = true
				}
				for _, f := range flagRefs(vr.flag) {
					if slices.Contains(c.resolveFlag(f), fr.name) {
						namesBack = true
					}
				}
			}
			if !namesBack {
				c.addf(fr.line, "flags row `--%s`: its Helm value `%s` has no values row whose flag column names `--%s`", fr.name, ref, fr.name)
			}
		}
	}
}

// related: one key is the other or lies under it.
func related(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+".") || strings.HasPrefix(b, a+".")
}

// flagRefs returns the flags named by code spans of a cell ("--x",
// "--x=v", "--webhook-*-name"), without dashes and values.
func flagRefs(cell string) []string {
	var refs []string
	for _, span := range CodeSpans(cell) {
		if strings.HasPrefix(span, "-") {
			refs = append(refs, flagName(span))
		}
	}
	return refs
}

func flagName(span string) string {
	name := strings.TrimLeft(span, "-")
	name, _, _ = strings.Cut(name, "=")
	return name
}

// resolveFlag returns the manager's flags a reference names: itself, or
// every match of a pattern with *.
func (c *checker) resolveFlag(ref string) []string {
	if !strings.Contains(ref, "*") {
		if _, ok := c.flags[ref]; ok {
			return []string{ref}
		}
		return nil
	}
	var names []string
	for _, name := range sortedKeys(c.flags) {
		if ok, _ := path.Match(ref, name); ok {
			names = append(names, name)
		}
	}
	return names
}

// keyRefs returns the values keys named by code spans of a cell: a span
// that starts with a dotted key whose first part is a top-level key of
// values.yaml ("wallets.cap", "certs.mode: selfSigned"). The key itself
// need not exist (that is checked).
func (c *checker) keyRefs(cell string) []string {
	var refs []string
	for _, span := range CodeSpans(cell) {
		key, _, _ := strings.Cut(span, ":")
		key, _, _ = strings.Cut(key, " ")
		if !keyLike.MatchString(key) {
			continue
		}
		top, _, _ := strings.Cut(key, ".")
		if _, ok := c.vals[top]; ok {
			refs = append(refs, key)
		}
	}
	return refs
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
