// Package redact hides the parts of a URL that carry secrets before the URL
// is shown (errors, logs, systemd's STATUS=, bootstrapd status) or stored
// (state records, lock files): the userinfo (user:password@), query values
// (a signed URL's signature and credentials) and the fragment.
package redact

import (
	"net/url"
	"strings"
)

// Mark replaces each secret part.
const Mark = "REDACTED"

// URL returns s with its userinfo, query values and fragment replaced by
// Mark; the scheme, host, path and query keys stay, so the URL still says
// where it points. A string that does not parse as a URL keeps only its
// scheme: where a malformed URL's host ends and its password begins
// cannot be told.
func URL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" {
		if scheme, _, ok := strings.Cut(s, "://"); ok && isScheme(scheme) {
			return scheme + "://" + Mark
		}
		return Mark
	}
	if u.User != nil {
		u.User = url.User(Mark)
	}
	if u.RawQuery != "" || u.ForceQuery {
		parts := strings.Split(u.RawQuery, "&")
		for i, p := range parts {
			if k, _, ok := strings.Cut(p, "="); ok {
				parts[i] = k + "=" + Mark
			} else if p != "" {
				parts[i] = Mark
			}
		}
		u.RawQuery, u.ForceQuery = strings.Join(parts, "&"), false
	}
	if u.Fragment != "" || u.RawFragment != "" {
		u.Fragment, u.RawFragment = Mark, ""
	}
	return u.String()
}

// isScheme checks RFC 3986's scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
func isScheme(s string) bool {
	for i, c := range s {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return s != ""
}
