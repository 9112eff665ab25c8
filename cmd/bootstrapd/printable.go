package main

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"kubeboot.dev/kubeboot/internal/printable"
)

// printableLines escapes text of several lines (an error list) line by
// line (package printable), each line after the first indented, so none
// can pass for a field of status.
func printableLines(s, indent string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = printable.String(l)
	}
	return strings.Join(lines, "\n"+indent)
}

// maxStatusLine bounds sd_notify's STATUS=, which systemctl status shows
// on one line.
const maxStatusLine = 300

// statusLine is s as one printable line of at most maxStatusLine bytes.
func statusLine(s string) string {
	first, rest, multi := strings.Cut(s, "\n")
	first = printable.String(first)
	if len(first) > maxStatusLine {
		cut := maxStatusLine
		for cut > 0 && !utf8.RuneStart(first[cut]) {
			cut--
		}
		first, multi = first[:cut]+"...", true
	}
	if multi {
		n := strings.Count(rest, "\n") + 1
		if rest == "" {
			n = 0
		}
		return fmt.Sprintf("%s (and %d more lines: bootstrapd status)", first, n)
	}
	return first
}
