package clustersecrets

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/machineconfig"
)

func mode(t *testing.T, p string) os.FileMode {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func TestInstallPKI(t *testing.T) {
	s := secrets(t)
	dir := filepath.Join(t.TempDir(), "etc/kubernetes/pki")
	changed, err := InstallPKI(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ca.key", "ca.crt", "front-proxy-ca.key", "front-proxy-ca.crt", "etcd/ca.key", "etcd/ca.crt", "sa.key", "sa.pub"}
	if !slices.Equal(changed, want) {
		t.Errorf("changed %v, want %v", changed, want)
	}
	for name, content := range map[string]string{
		"ca.crt": s.CA.Cert, "ca.key": s.CA.Key.Reveal(),
		"front-proxy-ca.crt": s.FrontProxyCA.Cert, "front-proxy-ca.key": s.FrontProxyCA.Key.Reveal(),
		"etcd/ca.crt": s.EtcdCA.Cert, "etcd/ca.key": s.EtcdCA.Key.Reveal(),
		"sa.key": s.ServiceAccount.Key.Reveal(), "sa.pub": s.ServiceAccount.Public,
	} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != content {
			t.Errorf("%s: wrong content (%v)", name, err)
		}
		wantMode := os.FileMode(0o600)
		if strings.HasSuffix(name, ".crt") {
			wantMode = 0o644
		}
		if m := mode(t, filepath.Join(dir, name)); m != wantMode {
			t.Errorf("%s mode %o, want %o", name, m, wantMode)
		}
	}
	for _, d := range []string{dir, filepath.Join(dir, "etcd")} {
		if m := mode(t, d); m != 0o700 {
			t.Errorf("%s mode %o, want 0700", d, m)
		}
	}

	// Again: nothing is written, not even a new mtime.
	before, _ := os.Stat(filepath.Join(dir, "ca.key"))
	if changed, err := InstallPKI(dir, s); err != nil || len(changed) != 0 {
		t.Errorf("second install changed %v (%v)", changed, err)
	}
	if after, _ := os.Stat(filepath.Join(dir, "ca.key")); !after.ModTime().Equal(before.ModTime()) {
		t.Error("second install rewrote ca.key")
	}

	// A loosened mode, a directory opened up and a replaced key are repaired.
	os.Chmod(filepath.Join(dir, "sa.key"), 0o644)
	os.Chmod(filepath.Join(dir, "etcd"), 0o755)
	os.WriteFile(filepath.Join(dir, "front-proxy-ca.key"), []byte("other"), 0o600)
	changed, err = InstallPKI(dir, s)
	if err != nil || !slices.Equal(changed, []string{"front-proxy-ca.key", "sa.key"}) {
		t.Errorf("repair changed %v (%v)", changed, err)
	}
	if mode(t, filepath.Join(dir, "sa.key")) != 0o600 || mode(t, filepath.Join(dir, "etcd")) != 0o700 {
		t.Error("modes not repaired")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 7 {
		t.Errorf("%d entries in %s, want 7 (no temporary files)", len(entries), dir)
	}

	// A worker's secrets cannot make a control plane; nothing is written.
	empty := filepath.Join(t.TempDir(), "pki")
	if _, err := InstallPKI(empty, s.ForRole(machineconfig.RoleWorker)); err == nil || !strings.Contains(err.Error(), "no CA keys") {
		t.Errorf("worker secrets: err = %v", err)
	}
	if _, err := os.Stat(empty); err == nil {
		t.Error("a failed install created the directory")
	}
}

// The real kubeadm takes the installed CAs and service-account key instead
// of making its own, and signs its certificates with them.
func TestKubeadmUsesInstalledPKI(t *testing.T) {
	kubeadm := cached(t, "kubeadm")["kubeadm"]
	s := secrets(t)
	tmp := t.TempDir()
	pki := filepath.Join(tmp, "pki")
	if _, err := InstallPKI(pki, s); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(tmp, "kubeadm.yaml")
	os.WriteFile(cfg, []byte(`apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: 172.16.0.11
nodeRegistration:
  name: controller.home.local
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.37.2
controlPlaneEndpoint: controller.home.local:6443
certificatesDir: `+pki+`
networking:
  podSubnet: 172.17.0.0/16
`), 0o600)
	out, err := exec.Command(kubeadm, "init", "phase", "certs", "all", "--config", cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("kubeadm init phase certs all: %v\n%s", err, out)
	}
	for _, want := range []string{
		"Using existing ca certificate authority",
		"Using existing front-proxy-ca certificate authority",
		"Using existing etcd/ca certificate authority",
		`Using the existing "sa" key`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("kubeadm did not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "Generating \"ca\"") || strings.Contains(string(out), "Generating \"sa\"") {
		t.Errorf("kubeadm generated its own CA or sa key:\n%s", out)
	}
	// The installed files are untouched and kubeadm's leaf certificates
	// chain to the bundle's CAs.
	if changed, err := InstallPKI(pki, s); err != nil || len(changed) != 0 {
		t.Errorf("kubeadm changed the installed PKI: %v %v", changed, err)
	}
	for leaf, ca := range map[string]string{"apiserver.crt": s.CA.Cert, "front-proxy-client.crt": s.FrontProxyCA.Cert, "etcd/server.crt": s.EtcdCA.Cert} {
		data, err := os.ReadFile(filepath.Join(pki, leaf))
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(data)
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM([]byte(ca))
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s does not chain to the bundle's CA: %v", leaf, err)
		}
	}
	// kubeadm join --control-plane checks the same shared files
	// (certs.SharedCertificateExists); a second certs run over the full
	// tree must also accept everything as it is.
	if out, err := exec.Command(kubeadm, "init", "phase", "certs", "all", "--config", cfg).CombinedOutput(); err != nil || strings.Contains(string(out), "Generating") {
		t.Errorf("second kubeadm certs run: %v\n%s", err, out)
	}
}
