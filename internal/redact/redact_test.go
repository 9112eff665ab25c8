package redact

import (
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://10.0.0.1/m.yaml", "https://10.0.0.1/m.yaml"},
		{"https://alice:hunter2@10.0.0.1:8443/m.yaml", "https://REDACTED@10.0.0.1:8443/m.yaml"},
		{"https://alice@h/m.yaml", "https://REDACTED@h/m.yaml"},
		{"https://h/m.yaml?X-Amz-Credential=AKIA123&X-Amz-Signature=deadbeef&flag", "https://h/m.yaml?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&REDACTED"},
		{"https://h/m.yaml#token=abc", "https://h/m.yaml#REDACTED"},
		{"https://h/m.yaml?", "https://h/m.yaml"},
		// Malformed: a password holding '/' makes the host "alice:pa" with a bad port.
		{"https://alice:pa/ss@10.0.0.1/m.yaml", "https://REDACTED"},
		{"https://alice:hunter 2@h/m.yaml", "https://REDACTED"},
		{"%zz://alice:hunter2@h", "REDACTED"},
	} {
		got := URL(tc.in)
		if got != tc.want {
			t.Errorf("URL(%q) = %q, want %q", tc.in, got, tc.want)
		}
		for _, secret := range []string{"hunter", "AKIA", "deadbeef", "token=abc", "pa/ss", "alice"} {
			if strings.Contains(got, secret) {
				t.Errorf("URL(%q) = %q still holds %q", tc.in, got, secret)
			}
		}
	}
}
