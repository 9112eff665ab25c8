package machineconfig

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// Bounds on what a config, however hostile, can make the decoder do and
// report. They hold for every consumer: bootstrapd's failed marker, its
// STATUS= line and the journal, and kubeboot validate's output.
const (
	// MaxSize bounds a machine config (and a netplan network-config).
	// Real configs are a few KiB (configs/controller.yaml is 2 KiB); a
	// quarter MiB leaves room for long kubeadm patches and many users'
	// keys while keeping the parse of the worst input under 100 MiB and
	// 2 s of CPU (docs/bootstrapd.md, TestHostileConfigBounds).
	MaxSize = 128 << 10
	// MaxReported is how many problems Error prints; the rest are counted.
	MaxReported = 50
	// maxMessage bounds one message: messages quote the offending value,
	// which may be as long as the file.
	maxMessage = 400
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

// Error prints one problem per line: the first MaxReported, then how many
// more there are.
func (l ErrorList) Error() string {
	shown := l[:min(len(l), MaxReported)]
	lines := make([]string, len(shown), len(shown)+1)
	for i, e := range shown {
		lines[i] = e.Error()
	}
	if more := len(l) - len(shown); more > 0 {
		lines = append(lines, fmt.Sprintf("... and %d more problems (fix these first)", more))
	}
	return strings.Join(lines, "\n")
}

// clip shortens a message to maxMessage bytes, keeping its start (what is
// wrong) and its end (often the hint), cut at rune boundaries.
func clip(msg string) string {
	if len(msg) <= maxMessage {
		return msg
	}
	head, tail := maxMessage/2, maxMessage/2
	for head > 0 && !utf8.RuneStart(msg[head]) {
		head--
	}
	start := len(msg) - tail
	for start < len(msg) && !utf8.RuneStart(msg[start]) {
		start++
	}
	return fmt.Sprintf("%s [... %d bytes cut ...] %s", msg[:head], start-head, msg[start:])
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
