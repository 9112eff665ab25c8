package main

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// printable escapes what a terminal would act on rather than show: control
// characters (a newline, an escape sequence), format characters such as
// U+202E (right-to-left override) and bytes that are not UTF-8. Fields
// printed by status come from the config's sources (a NoCloud instance-id,
// a volume label, an error quoting a value), which an attacker shapes; so
// no field can start a line of its own or repaint the screen.
func printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == ' ' || unicode.IsGraphic(r):
			b.WriteString(s[i : i+n])
		case r < 0x10000:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
		i += n
	}
	return b.String()
}

// printableLines is printable for text of several lines (an error list),
// each line after the first indented, so none can pass for a field.
func printableLines(s, indent string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = printable(l)
	}
	return strings.Join(lines, "\n"+indent)
}

// maxStatusLine bounds sd_notify's STATUS=, which systemctl status shows
// on one line.
const maxStatusLine = 300

// statusLine is s as one printable line of at most maxStatusLine bytes.
func statusLine(s string) string {
	first, rest, multi := strings.Cut(s, "\n")
	first = printable(first)
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
