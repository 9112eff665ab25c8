package clustersecrets

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"kubeboot.dev/kubeboot/machineconfig"
)

// generated makes one set of secrets for all tests of the package: RSA
// key generation is the slow part.
var generated = sync.OnceValues(Generate)

func secrets(t *testing.T) *machineconfig.ClusterSecrets {
	t.Helper()
	s, err := generated()
	if err != nil {
		t.Fatal(err)
	}
	c := *s
	return &c
}

func TestGenerateRoundTrips(t *testing.T) {
	s := secrets(t)
	data := Marshal(s)
	b, err := machineconfig.ParseBundle("secrets.yaml", data)
	if err != nil {
		t.Fatalf("a generated bundle does not parse:\n%v\n%s", err, data)
	}
	if diff := cmp.Diff(*s, b.ClusterSecrets); diff != "" {
		t.Errorf("round trip differs (-generated +parsed):\n%s", diff)
	}
	if b.APIVersion != machineconfig.APIVersion || b.Kind != machineconfig.BundleKind {
		t.Errorf("header %s %s", b.APIVersion, b.Kind)
	}
	if !bytes.Equal(Marshal(&b.ClusterSecrets), data) {
		t.Error("Marshal is not stable across a round trip")
	}
	if !regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`).MatchString(s.Token.Reveal()) {
		t.Error("token does not have the bootstrap token format")
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(s.CertificateKey.Reveal()) {
		t.Error("certificate key is not 64 hex digits")
	}
	other, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	if other.Token == s.Token || other.CertificateKey == s.CertificateKey || other.CA.Cert == s.CA.Cert {
		t.Error("two generated sets share values")
	}
}

// The CAs are what kubeadm's pkiutil.NewSelfSignedCACert makes
// (k8s.io/kubernetes v1.37.2 cmd/kubeadm/app/util/pkiutil/pki_helpers.go).
func TestGeneratedCAsAreKubeadms(t *testing.T) {
	s := secrets(t)
	for _, ca := range []struct {
		cn   string
		pair machineconfig.CertAndKey
	}{{"kubernetes", s.CA}, {"front-proxy-ca", s.FrontProxyCA}, {"etcd-ca", s.EtcdCA}} {
		cert, err := ca.pair.Certificate()
		if err != nil {
			t.Fatal(err)
		}
		if cert.Subject.CommonName != ca.cn || len(cert.DNSNames) != 1 || cert.DNSNames[0] != ca.cn {
			t.Errorf("%s: subject %s, DNS names %v", ca.cn, cert.Subject, cert.DNSNames)
		}
		if !cert.IsCA || !cert.BasicConstraintsValid {
			t.Errorf("%s is not a CA", ca.cn)
		}
		if want := x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign; cert.KeyUsage != want {
			t.Errorf("%s key usage %b, want %b", ca.cn, cert.KeyUsage, want)
		}
		if v := cert.NotAfter.Sub(cert.NotBefore); v != 10*365*24*time.Hour {
			t.Errorf("%s valid for %v, want 10 years (kubeadm's CACertificateValidityPeriod)", ca.cn, v)
		}
		if age := time.Since(cert.NotBefore); age < 5*time.Minute || age > 10*time.Minute {
			t.Errorf("%s NotBefore is %v ago, want backdated 5 minutes", ca.cn, age)
		}
		if k, ok := cert.PublicKey.(*rsa.PublicKey); !ok || k.N.BitLen() != 2048 {
			t.Errorf("%s key is not RSA-2048", ca.cn)
		}
		if cert.SignatureAlgorithm != x509.SHA256WithRSA {
			t.Errorf("%s signature %v", ca.cn, cert.SignatureAlgorithm)
		}
		if err := cert.CheckSignatureFrom(cert); err != nil {
			t.Errorf("%s is not self-signed: %v", ca.cn, err)
		}
	}
}

func TestCACertHashMatchesOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	s := secrets(t)
	crt := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(crt, []byte(s.CA.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
	// The command kubeadm's documentation gives for the hash.
	out, err := exec.Command("sh", "-c", "openssl x509 -pubkey -noout -in "+crt+" | openssl pkey -pubin -outform der | sha256sum").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "sha256:" + strings.Fields(string(out))[0]
	got, err := s.CACertHash()
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("CACertHash = %s, openssl says %s", got, want)
	}
}

func TestForRoleWorkerHoldsNoKey(t *testing.T) {
	s := secrets(t)
	w := s.ForRole(machineconfig.RoleWorker)
	if w.HasPrivateKeys() || w.Token != s.Token || w.CA.Cert != s.CA.Cert {
		t.Errorf("worker subset: keys %v, token kept %v, CA kept %v", w.HasPrivateKeys(), w.Token == s.Token, w.CA.Cert == s.CA.Cert)
	}
	data := Marshal(w)
	for _, marker := range []string{"PRIVATE KEY", s.CertificateKey.Reveal(), "frontProxyCA", "serviceAccount"} {
		if bytes.Contains(data, []byte(marker)) {
			t.Errorf("worker bundle contains %q", marker)
		}
	}
	if _, err := machineconfig.ParseBundle("worker.yaml", data); err != nil {
		t.Errorf("worker bundle does not parse: %v", err)
	}
	for _, r := range []machineconfig.Role{machineconfig.RoleInit, machineconfig.RoleControlPlane} {
		if cp := s.ForRole(r); *cp != *s {
			t.Errorf("%s does not get every secret", r)
		}
	}
}
