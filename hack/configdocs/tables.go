package main

import (
	"regexp"
	"strings"
)

// Row is one body row of a Markdown table.
type Row struct {
	Line  int // 1-based line number in the document
	Cells []string
}

// Table is a Markdown table: a header row, a delimiter row, body rows.
type Table struct {
	Header []string
	Rows   []Row
}

var delimiterRow = regexp.MustCompile(`^\|(\s*:?-+:?\s*\|)+\s*$`)

// ParseTables returns the pipe tables of a Markdown document, outside
// fenced code blocks.
func ParseTables(doc string) []Table {
	lines := strings.Split(doc, "\n")
	var tables []Table
	fence := ""
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		trimmed := strings.TrimSpace(line)
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			continue
		}
		if !strings.HasPrefix(trimmed, "|") || i+1 >= len(lines) || !delimiterRow.MatchString(strings.TrimSpace(lines[i+1])) {
			continue
		}
		t := Table{Header: SplitRow(trimmed)}
		for i += 2; i < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[i]), "|"); i++ {
			t.Rows = append(t.Rows, Row{Line: i + 1, Cells: SplitRow(strings.TrimSpace(lines[i]))})
		}
		i-- // the line that ended the table is looked at again
		tables = append(tables, t)
	}
	return tables
}

// SplitRow splits "| a | b |" into its trimmed cells. A pipe inside a code
// span or escaped as \| does not split.
func SplitRow(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(line, "|")
	if strings.HasSuffix(line, "|") && !strings.HasSuffix(line, `\|`) {
		line = line[:len(line)-1]
	}
	var cells []string
	var cur strings.Builder
	inCode := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\\' && i+1 < len(line) && line[i+1] == '|':
			cur.WriteByte('|')
			i++
		case c == '`':
			inCode = !inCode
			cur.WriteByte(c)
		case c == '|' && !inCode:
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(cells, strings.TrimSpace(cur.String()))
}

var codeSpan = regexp.MustCompile("`([^`]*)`")

// CodeSpans returns the contents of the `code spans` of a cell.
func CodeSpans(cell string) []string {
	var spans []string
	for _, m := range codeSpan.FindAllStringSubmatch(cell, -1) {
		spans = append(spans, m[1])
	}
	return spans
}

// SoleCodeSpan returns the content of a cell that is exactly one code span.
func SoleCodeSpan(cell string) (string, bool) {
	cell = strings.TrimSpace(cell)
	if m := codeSpan.FindStringSubmatch(cell); len(m) == 2 && m[0] == cell {
		return m[1], true
	}
	return "", false
}
