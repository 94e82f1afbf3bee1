package main

import (
	"sort"
	"strconv"
	"strings"
)

// Values are the chart's values as sigs.k8s.io/yaml decodes them:
// map[string]any, []any, string, float64, bool and nil.

// Lookup returns the value at a dotted key ("wallets.grant.amount").
func Lookup(vals map[string]any, key string) (any, bool) {
	var cur any = vals
	for seg := range strings.SplitSeq(key, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[seg]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// LeafKeys returns the dotted keys a values table must document, sorted:
// every scalar, null, empty map and list (non-empty lists are leaves too:
// their items are not keys).
func LeafKeys(prefix string, v any) []string {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		if prefix == "" {
			return nil
		}
		return []string{prefix}
	}
	var keys []string
	for k, sub := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		keys = append(keys, LeafKeys(p, sub)...)
	}
	sort.Strings(keys)
	return keys
}

// IsStructure reports whether v is a non-empty map or list: its default
// is described in words, not shown as a literal.
func IsStructure(v any) bool {
	switch x := v.(type) {
	case map[string]any:
		return len(x) > 0
	case []any:
		return len(x) > 0
	}
	return false
}

// Literal is how a table shows a scalar, null or empty default: `""`,
// `null`, `[]`, `{}`, `true`, `10`, `10m`.
func Literal(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case string:
		if x == "" {
			return `""`
		}
		return x
	case map[string]any:
		if len(x) == 0 {
			return "{}"
		}
	case []any:
		if len(x) == 0 {
			return "[]"
		}
	}
	return "<structure>"
}

// ScalarTexts returns the non-empty strings and the numbers inside a
// structure, in order, which its described default must mention.
func ScalarTexts(v any) []string {
	var out []string
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			out = append(out, ScalarTexts(x[k])...)
		}
	case []any:
		for _, item := range x {
			out = append(out, ScalarTexts(item)...)
		}
	case string:
		if x != "" {
			out = append(out, x)
		}
	case float64:
		out = append(out, Literal(x))
	}
	return out
}
