package printable

import "testing"

func TestString(t *testing.T) {
	for in, want := range map[string]string{
		"user-data:3:1: role: unknown role \"x\"": "user-data:3:1: role: unknown role \"x\"",
		"iid\x1b[2J\nfailed:  no":                 `iid\u001b[2J\u000afailed:  no`,
		"a\u202eb\xffc\U000e0001":                 `a\u202eb\xffc\U000e0001`,
		"tab\there é":                             `tab\u0009here é`,
	} {
		if got := String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
}
