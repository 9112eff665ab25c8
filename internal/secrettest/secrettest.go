// Package secrettest finds a cluster's secrets in what a command or a
// stage printed, for tests that check nothing leaks.
package secrettest

import (
	"bytes"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/machineconfig"
)

// Scanner knows every secret of a bundle: the token and its secret half,
// the certificate key, and every private key's PEM body in overlapping
// 16-character base64 fragments (a key cut into pieces still counts).
type Scanner []string

// For returns the scanner of the secrets s.
func For(s *machineconfig.ClusterSecrets) Scanner {
	token := s.Token.Reveal()
	l := Scanner{token, s.CertificateKey.Reveal()}
	if _, secret, ok := strings.Cut(token, "."); ok {
		l = append(l, secret)
	}
	for _, k := range []machineconfig.Secret{s.CA.Key, s.FrontProxyCA.Key, s.EtcdCA.Key, s.ServiceAccount.Key} {
		var body strings.Builder
		for _, line := range strings.Split(k.Reveal(), "\n") {
			if line != "" && !strings.HasPrefix(line, "-----") {
				body.WriteString(line)
			}
		}
		b := body.String()
		for i := 0; i+16 <= len(b); i += 8 {
			l = append(l, b[i:i+16])
		}
	}
	return l
}

// Check fails the test when data holds one of the secrets; where names
// the output in the message (which never quotes the secret).
func (l Scanner) Check(tb testing.TB, where string, data []byte) {
	tb.Helper()
	for _, s := range l {
		if s != "" && bytes.Contains(data, []byte(s)) {
			tb.Errorf("%s holds a secret of the bundle", where)
			return
		}
	}
}
