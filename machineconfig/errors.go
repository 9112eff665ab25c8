package machineconfig

import (
	"fmt"
	"sort"
	"strings"
)

// Error is one problem in a machine config, with where it is.
// Line and Column are 1-based; 0 means the position is unknown (for example
// a config built in code and checked with Validate).
type Error struct {
	File   string
	Line   int
	Column int
	// Path is the field path as written in the file, e.g.
	// network.interfaces[0].addresses[1]; empty for YAML syntax errors.
	Path    string
	Message string
}

// Error formats the problem as FILE:LINE:COL: field.path: message.
func (e Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
	}
	if e.Line > 0 {
		if b.Len() > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%d:%d", e.Line, e.Column)
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	return b.String()
}

// ErrorList is every problem found in one config, sorted by position.
type ErrorList []Error

// Error prints one problem per line.
func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// sort orders the problems by file, line and column, keeping the order in
// which they were found for problems at the same place.
func (l ErrorList) sort() {
	sort.SliceStable(l, func(i, j int) bool {
		a, b := l[i], l[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
}

// errOrNil returns nil for an empty list, so callers can compare with nil.
func (l ErrorList) errOrNil() error {
	if len(l) == 0 {
		return nil
	}
	l.sort()
	return l
}
