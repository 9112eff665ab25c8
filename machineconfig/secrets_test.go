package machineconfig_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/clustersecrets"
	mc "kubeboot.dev/kubeboot/machineconfig"
)

var generated = sync.OnceValues(clustersecrets.Generate)

func genSecrets(t *testing.T) *mc.ClusterSecrets {
	t.Helper()
	s, err := generated()
	if err != nil {
		t.Fatal(err)
	}
	c := *s
	return &c
}

// secretValues are the strings no error may contain: the token, the
// certificate key and every line of every private key's PEM body.
func secretValues(s *mc.ClusterSecrets) []string {
	out := []string{s.Token.Reveal(), s.CertificateKey.Reveal()}
	for _, k := range []mc.Secret{s.CA.Key, s.FrontProxyCA.Key, s.EtcdCA.Key, s.ServiceAccount.Key} {
		for _, l := range strings.Split(k.Reveal(), "\n") {
			if len(l) > 20 && !strings.HasPrefix(l, "-----") {
				out = append(out, l)
			}
		}
	}
	return out
}

func noSecretIn(t *testing.T, s *mc.ClusterSecrets, text string) {
	t.Helper()
	for _, v := range secretValues(s) {
		if v != "" && strings.Contains(text, v) {
			t.Fatalf("a secret value appears in:\n%s", text)
		}
	}
}

// body is the bundle without its header, for use as inline secrets.
func body(s *mc.ClusterSecrets) string {
	text := string(clustersecrets.Marshal(s))
	return text[strings.Index(text, "token:"):]
}

func indentBy(s string, n int) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+pad) + "\n"
}

func config(role string, credentials string) string {
	return `apiVersion: kubeboot.dev/v1alpha1
kind: MachineConfig
role: ` + role + `
hostname: n1.home.local
kubernetes:
  version: v1.37.2
  controlPlaneEndpoint: controller.home.local:6443
  credentials:
` + indentBy(credentials, 4)
}

// lineOf is the 1-based line of the first occurrence of s in text.
func lineOf(text, s string) int {
	return strings.Count(text[:strings.Index(text, s)], "\n") + 1
}

func TestBundleErrors(t *testing.T) {
	s := genSecrets(t)
	good := string(clustersecrets.Marshal(s))
	otherKey := genSecrets(t)
	other, err := clustersecrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	otherKey.CA.Key = other.CA.Key
	caKeyLine := lineOf(good, "  key: |")
	for _, tc := range []struct {
		name, text, want string
	}{
		{"unknown key", strings.Replace(good, "token:", "tokn: x\ntoken:", 1), fmt.Sprintf(`b.yaml:%d:1: tokn: unknown key "tokn"; did you mean "token"?`, lineOf(good, "token:"))},
		{"wrong type", strings.Replace(good, "kind: ClusterSecrets\n", "kind: ClusterSecrets\nfrontProxyCA: [1]\n", 1) + "", ""},
		{"key of another CA", string(clustersecrets.Marshal(otherKey)), fmt.Sprintf("b.yaml:%d:8: ca.key: the cluster CA key is not the key of ca.cert", caKeyLine)},
		{"not PEM", regexp.MustCompile(`(?s)  cert: \|\n.*?-----END CERTIFICATE-----\n`).ReplaceAllString(good, "  cert: hello\n"), fmt.Sprintf("b.yaml:%d:9: ca.cert: cluster CA certificate: not PEM", lineOf(good, "  cert: |"))},
		{"worker bundle with more", strings.Replace(string(clustersecrets.Marshal(s.ForRole(mc.RoleWorker))), "ca:", "serviceAccount:\n  pub: x\nca:", 1), "serviceAccount: only a full bundle (one with ca.key) holds serviceAccount"},
		{"a machine config", "apiVersion: kubeboot.dev/v1alpha1\nkind: MachineConfig\n", "b.yaml:2:7: kind: this file is a MachineConfig, not a ClusterSecrets bundle"},
		{"too large", good + "#" + strings.Repeat("x", mc.MaxBundleSize), "b.yaml:1:1: larger than 1024 KiB, the limit for a cluster secrets bundle"},
		{"empty", "", "b.yaml:1:1: the document is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mc.ParseBundle("b.yaml", []byte(tc.text))
			if err == nil {
				t.Fatal("accepted")
			}
			if tc.name == "wrong type" {
				tc.want = fmt.Sprintf("b.yaml:%d:15: frontProxyCA: expected a mapping, found a list", lineOf(tc.text, "frontProxyCA:"))
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("errors:\n%v\nwant one containing:\n%s", err, tc.want)
			}
			noSecretIn(t, s, err.Error())
		})
	}
}

// A CA that is not a CA, an expired one and a too small key are refused
// with the reason, at the certificate.
func TestBundleRefusesBadCAs(t *testing.T) {
	s := genSecrets(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keyDER, _ := x509.MarshalECPrivateKey(key)
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	cert := func(tmpl *x509.Certificate) string {
		tmpl.SerialNumber = big.NewInt(1)
		tmpl.Subject = pkix.Name{CommonName: "kubernetes"}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	now := time.Now()
	for _, tc := range []struct {
		name string
		cert string
		want string
	}{
		{"not a CA", cert(&x509.Certificate{NotBefore: now, NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}), "is not a CA"},
		{"no cert sign", cert(&x509.Certificate{NotBefore: now, NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true}), "may not sign certificates"},
		{"expired", cert(&x509.Certificate{NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour), KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}), "expired on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := *s
			b.CA = mc.CertAndKey{Cert: tc.cert, Key: mc.Secret(keyPEM)}
			_, err := mc.ParseBundle("b.yaml", clustersecrets.Marshal(&b))
			if err == nil || !strings.Contains(err.Error(), "ca.cert: the cluster CA certificate "+tc.want) {
				t.Errorf("err = %v, want ca.cert: ... %s", err, tc.want)
			}
		})
	}
}

// A worker config never carries a private key: every key is reported at
// its own line, without its value.
func TestWorkerInlineKeysRefused(t *testing.T) {
	s := genSecrets(t)
	text := config("worker", "secrets:\n"+indentBy(body(s), 2))
	_, err := mc.Parse("w.yaml", []byte(text))
	if err == nil {
		t.Fatal("a worker config with CA keys was accepted")
	}
	noSecretIn(t, s, err.Error())
	for _, field := range []string{"certificateKey", "ca.key", "frontProxyCA.key", "etcdCA.key", "serviceAccount.key"} {
		want := "kubernetes.credentials.secrets." + field + ": a worker config never carries a private key"
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no error %q in:\n%v", want, err)
		}
	}
	line := strings.Count(text[:strings.Index(text, "  key: |")], "\n") + 1
	if !strings.Contains(err.Error(), fmt.Sprintf("w.yaml:%d:14: kubernetes.credentials.secrets.ca.key:", line)) {
		t.Errorf("ca.key error not at line %d column 14:\n%v", line, err)
	}
	// The worker's share (CA certificate and token) is fine inline.
	cfg, err := mc.Parse("w.yaml", []byte(config("worker", "secrets:\n"+indentBy(body(s.ForRole(mc.RoleWorker)), 2))))
	if err != nil {
		t.Fatal(err)
	}
	cr := cfg.Kubernetes.Credentials
	hash, _ := s.CACertHash()
	if cr.JoinToken() != s.Token || len(cr.DiscoveryHashes()) != 1 || cr.DiscoveryHashes()[0] != hash {
		t.Errorf("worker join token/hashes not taken from the secrets: %v", cr.DiscoveryHashes())
	}
}

func TestControlPlaneInlineSecrets(t *testing.T) {
	s := genSecrets(t)
	cfg, err := mc.Parse("cp.yaml", []byte(config("control-plane", "secrets:\n"+indentBy(body(s), 2))))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Kubernetes.Credentials.ClusterSecrets(); got == nil || *got != *s {
		t.Error("inline secrets not decoded as generated")
	}
	// A worker's share cannot make a control plane.
	_, err = mc.Parse("cp.yaml", []byte(config("control-plane", "secrets:\n"+indentBy(body(s.ForRole(mc.RoleWorker)), 2))))
	if err == nil || !strings.Contains(err.Error(), "cp.yaml:9:5: kubernetes.credentials.secrets: a control-plane node installs the cluster CAs, so it needs their keys") {
		t.Errorf("err = %v", err)
	}
	// Token precedence: credentials.token wins over the secrets' token.
	cfg, err = mc.Parse("cp.yaml", []byte(config("control-plane", "token: abcdef.0123456789abcdef\nsecrets:\n"+indentBy(body(s), 2))))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Kubernetes.Credentials.JoinToken() != "abcdef.0123456789abcdef" {
		t.Error("credentials.token does not take precedence")
	}
}

// ParseWithFiles reads the bundle a config names: a worker keeps only its
// share; a missing or broken bundle is an error at the field naming it,
// and the bundle's own problems at its own lines.
func TestParseWithFilesReadsTheBundle(t *testing.T) {
	s := genSecrets(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "secrets.yaml"), clustersecrets.Marshal(s), 0o600); err != nil {
		t.Fatal(err)
	}
	files := mc.FilesFrom("", dir)
	for _, role := range []string{"init", "control-plane", "worker"} {
		cfg, err := mc.ParseWithFiles(filepath.Join(dir, "n.yaml"), []byte(config(role, "secretsBundle: secrets.yaml")), files)
		if err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		got := cfg.Kubernetes.Credentials.ClusterSecrets()
		if want := s.ForRole(mc.Role(role)); got == nil || *got != *want {
			t.Errorf("%s: the bundle was not read or not reduced to the role's share", role)
		}
		if role == "worker" && got.HasPrivateKeys() {
			t.Error("a worker kept a private key")
		}
		if cfg.Kubernetes.Credentials.SecretsBundle != "secrets.yaml" {
			t.Errorf("secretsBundle changed to %q", cfg.Kubernetes.Credentials.SecretsBundle)
		}
	}
	// New secrets are a new config.
	a, _ := mc.ParseWithFiles("n.yaml", []byte(config("worker", "secretsBundle: secrets.yaml")), files)
	other, _ := clustersecrets.Generate()
	os.WriteFile(filepath.Join(dir, "other.yaml"), clustersecrets.Marshal(other), 0o600)
	b, _ := mc.ParseWithFiles("n.yaml", []byte(config("worker", "secretsBundle: other.yaml")), files)
	if a.Hash() == b.Hash() {
		t.Error("the hash does not cover the bundle's content")
	}

	text := config("control-plane", "secretsBundle: missing.yaml")
	_, err := mc.ParseWithFiles("n.yaml", []byte(text), files)
	if err == nil || !strings.Contains(err.Error(), `n.yaml:9:20: kubernetes.credentials.secretsBundle: secretsBundle "missing.yaml": open `) ||
		!strings.Contains(err.Error(), "kubeboot secrets gen") {
		t.Errorf("missing bundle: %v", err)
	}
	broken := strings.Replace(string(clustersecrets.Marshal(s)), "etcdCA:", "etcdCa:", 1)
	os.WriteFile(filepath.Join(dir, "broken.yaml"), []byte(broken), 0o600)
	_, err = mc.ParseWithFiles(filepath.Join(dir, "n.yaml"), []byte(config("init", "secretsBundle: broken.yaml")), files)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "broken.yaml")+fmt.Sprintf(":%d:1: etcdCa: unknown key", lineOf(broken, "etcdCa:"))) ||
		!strings.Contains(err.Error(), "n.yaml:9:20: kubernetes.credentials.secretsBundle: secretsBundle \"broken.yaml\" is not a valid cluster secrets bundle") {
		t.Errorf("broken bundle: %v", err)
	}
	noSecretIn(t, s, err.Error())
	// A worker's bundle cannot make a control plane.
	os.WriteFile(filepath.Join(dir, "worker.yaml"), clustersecrets.Marshal(s.ForRole(mc.RoleWorker)), 0o600)
	_, err = mc.ParseWithFiles("n.yaml", []byte(config("control-plane", "secretsBundle: worker.yaml")), files)
	if err == nil || !strings.Contains(err.Error(), "n.yaml:9:20: kubernetes.credentials.secretsBundle: a control-plane node installs the cluster CAs") {
		t.Errorf("worker bundle on a control plane: %v", err)
	}
	// A device is not read (a hostile path cannot exhaust memory).
	_, err = mc.ParseWithFiles("n.yaml", []byte(config("worker", "secretsBundle: /dev/zero")), files)
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("/dev/zero as a bundle: %v", err)
	}
}

func TestLoadWithFilesResolvesNextToTheConfig(t *testing.T) {
	s := genSecrets(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "secrets.yaml"), clustersecrets.Marshal(s), 0o600)
	os.WriteFile(filepath.Join(dir, "w.yaml"), []byte(config("worker", "secretsBundle: secrets.yaml")), 0o600)
	cfg, err := mc.LoadWithFiles(filepath.Join(dir, "w.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Kubernetes.Credentials.JoinToken() != s.Token {
		t.Error("the token is not the bundle's")
	}
	// Load reads no file: the path stays as written.
	cfg, err = mc.Load(filepath.Join(dir, "w.yaml"))
	if err != nil || cfg.Kubernetes.Credentials.ClusterSecrets() != nil || cfg.Kubernetes.Credentials.SecretsBundle != "secrets.yaml" {
		t.Errorf("Load: %v", err)
	}
}
