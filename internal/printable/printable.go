// Package printable escapes what a terminal or a log reader would act on
// rather than show: control characters (a newline starts a line that can
// pass for another record, an escape sequence repaints the screen), format
// characters such as U+202E (right-to-left override) and bytes that are
// not UTF-8. Text from a config source, a DHCP server or a volume label is
// shaped by whoever controls it.
package printable

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// String returns s with every such character written as a Go escape
// (\u001b, \xff); printable text, spaces included, is unchanged.
func String(s string) string {
	if isPrintable(s) {
		return s
	}
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

func isPrintable(s string) bool {
	for _, r := range s {
		if r != ' ' && !unicode.IsGraphic(r) || r == utf8.RuneError {
			return false
		}
	}
	return true
}
